"""The translation pipeline: HF's `[{"translation_text": ...}]` over lmforge's seq2seq decoding.

As in HF, one string gives a list of one dict and a list of strings gives one dict per string
(a flat list). `translation_XX_to_YY` is `translation` with src_lang=XX, tgt_lang=YY, as in
transformers: the model translates the one direction it was trained for, and where it names that
direction (lmforge's translation runs record data.src_lang/tgt_lang; opus-mt's
tokenizer_config.json has source_lang/target_lang) another is refused rather than silently
ignored. Keywords are transformers' where they mean the same (num_beams, length_penalty,
batch_size, max_new_tokens, do_sample=False, truncation, early_stopping); any other is an error.
num_beams defaults to 4, transformers 4.x TranslationPipeline's (its _default_generation_config,
which wins over the model's generation_config.json), not the model's own default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.options import check_keywords, check_options, check_texts, keyword_names
from lmforge.inference.translate import check_given, load_translator, model_languages, translate_texts
from lmforge.pipelines.streaming import streams

BATCH_SIZE = 32  # sentences decoded together (sorted by length: little padding)
NUM_BEAMS = 4  # transformers 4.x TranslationPipeline's default, whatever the model's file says


class TranslationPipeline:
    truncate_option = "truncation=True"  # named in a too-long sentence's error (the server's: its field)

    def __init__(
        self, model: str | Path, dtype: str = "fp32", src_lang: str | None = None, tgt_lang: str | None = None
    ) -> None:
        check_options(dtype=dtype)
        self.model, self.tokenizer = load_translator(model, dtype)
        self.languages = model_languages(model)  # (source, target), or None where the model names none
        if self.languages:
            src, tgt = src_lang or self.languages[0], tgt_lang or self.languages[1]
            # codes of different kinds (some opus-mt name eng/zho, ISO 639-3) cannot be compared
            clash = [a != b and len(a) == len(b) for a, b in zip((src, tgt), self.languages, strict=True)]
            if any(clash):
                own = "_to_".join(self.languages)
                raise LmforgeError(
                    f"{model} translates {self.languages[0]} to {self.languages[1]}, not {src} to {tgt}"
                    f' (pipeline("translation_{own}"), or "translation" for the model\'s own direction)'
                )

    # a generator or dataset: an iterator of [{"translation_text"}] lists, as transformers 4's yielded
    @streams(lambda _: BATCH_SIZE, each=lambda result: [result])
    def __call__(
        self,
        text: str | list[str],
        *,
        num_beams: int | None = None,  # None: transformers' pipeline's 4 (NUM_BEAMS)
        length_penalty: float | None = None,  # None: the model's (its generation config's, else 1)
        batch_size: int = BATCH_SIZE,
        max_new_tokens: int | None = None,  # None: the length limit alone (see seq2seq_decode)
        do_sample: bool = False,
        truncation: bool = False,  # cut a text over the model's limit (with a warning), else an error
        early_stopping: bool | str | None = None,  # None: the model's (opus-mt: False, lmforge's: True)
        repetition_penalty: float | None = None,  # transformers' (1: off); None: the model's
        no_repeat_ngram_size: int | None = None,  # transformers' (0: off); None: the model's
        **unknown: Any,
    ) -> list[dict[str, str]]:
        check_keywords(unknown, keyword_names(TranslationPipeline.__call__), "translation")
        check_options(
            num_beams=num_beams,
            batch_size=batch_size,
            do_sample=do_sample,
            truncation=truncation,
            early_stopping=early_stopping,
        )
        check_given(repetition_penalty, no_repeat_ngram_size, length_penalty)
        if max_new_tokens is not None:
            check_options(max_new_tokens=max_new_tokens)
        if do_sample:
            raise LmforgeError("do_sample=True: translation decodes by greedy or beam search, not sampling")
        outs = translate_texts(
            self.model,
            self.tokenizer,
            check_texts(text),
            beam=NUM_BEAMS if num_beams is None else num_beams,
            length_penalty=length_penalty,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            truncate=truncation,
            truncate_option=self.truncate_option,
            early_stopping=early_stopping,
            repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
        )
        return [{"translation_text": t} for t in outs]
