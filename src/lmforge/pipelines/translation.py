"""The translation pipeline: HF's `[{"translation_text": ...}]` over lmforge's seq2seq decoding.

As in HF, one string gives a list of one dict and a list of strings gives one dict per string
(a flat list). `translation_en_to_fr` and plain `translation` are the same pipeline: the model
translates the one direction it was trained for. Keywords are transformers' where they mean the
same (num_beams, length_penalty, batch_size, max_new_tokens, do_sample=False); any other is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.options import check_keywords, check_options, check_texts, keyword_names
from lmforge.inference.translate import load_translator, translate_texts


class TranslationPipeline:
    def __init__(self, model: str | Path, dtype: str = "fp32") -> None:
        check_options(dtype=dtype)
        self.model, self.tokenizer = load_translator(model, dtype)

    def __call__(
        self,
        text: str | list[str],
        *,
        num_beams: int | None = None,  # None: the model's default (opus-mt's generation config: 4)
        length_penalty: float = 1.0,
        batch_size: int = 32,
        max_new_tokens: int | None = None,  # None: the length limit alone (see seq2seq_decode)
        do_sample: bool = False,
        **unknown: Any,
    ) -> list[dict[str, str]]:
        check_keywords(unknown, keyword_names(TranslationPipeline.__call__), "translation")
        check_options(
            num_beams=num_beams, length_penalty=length_penalty, batch_size=batch_size, do_sample=do_sample
        )
        if max_new_tokens is not None:
            check_options(max_new_tokens=max_new_tokens)
        if do_sample:
            raise LmforgeError("do_sample=True: translation decodes by greedy or beam search, not sampling")
        outs = translate_texts(
            self.model,
            self.tokenizer,
            check_texts(text),
            beam=num_beams,
            length_penalty=length_penalty,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
        )
        return [{"translation_text": t} for t in outs]
