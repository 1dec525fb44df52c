"""The translation pipeline: HF's `[{"translation_text": ...}]` over lmforge's seq2seq decoding.

As in HF, one string gives a list of one dict and a list of strings gives one dict per string
(a flat list). `translation_en_to_fr` and plain `translation` are the same pipeline: the model
translates the one direction it was trained for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.inference.translate import load_translator, translate_texts


class TranslationPipeline:
    def __init__(self, model: str | Path, dtype: str = "fp32") -> None:
        self.model, self.tokenizer = load_translator(model, dtype)

    def __call__(
        self,
        text: str | list[str],
        num_beams: int | None = None,  # None: the model's default (opus-mt's generation config: 4)
        length_penalty: float = 1.0,
        batch_size: int = 32,
        **_: Any,
    ) -> list[dict[str, str]]:
        texts = [text] if isinstance(text, str) else list(text)
        outs = translate_texts(
            self.model,
            self.tokenizer,
            texts,
            beam=num_beams,
            length_penalty=length_penalty,
            batch_size=batch_size,
        )
        return [{"translation_text": t} for t in outs]
