"""The text-generation pipeline: HF's `[{"generated_text": ...}]` over lmforge's decoding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.hardware import resolve_dtype
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT


class TextGenerationPipeline:
    def __init__(self, model: str | Path, dtype: str = "auto") -> None:
        self.model, self.tokenizer = load_model(model)
        if not isinstance(self.model, GPT):
            raise LmforgeError(f"{model}: a {type(self.model).__name__}, not a decoder for text-generation")
        self.model.to(resolve_dtype(dtype, self.model.config)[0])

    def __call__(
        self,
        text: str | list[str],
        max_new_tokens: int = 50,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        return_full_text: bool = True,
        seed: int | None = None,
        **_: Any,
    ) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        """One prompt gives a list of one dict; a list of prompts gives one such list per prompt.
        do_sample=False decodes greedily (temperature 0)."""
        prompts = [text] if isinstance(text, str) else list(text)
        ids = [self.tokenizer.encode(p) if p else [self.tokenizer.eos_id] for p in prompts]
        with torch.inference_mode():
            outs = generate_ids(
                self.model,
                ids,
                max_new_tokens,
                temperature if do_sample else 0.0,
                top_k,
                top_p,
                self.tokenizer.eos_id,
                True,
                seed,
                False,
                None,
            )
        results = [
            [{"generated_text": (p if return_full_text else "") + self.tokenizer.decode(o)}]
            for p, o in zip(prompts, outs, strict=True)
        ]
        return results[0] if isinstance(text, str) else results
