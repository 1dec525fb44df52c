"""The text-generation pipeline: HF's `[{"generated_text": ...}]` over lmforge's decoding.

Keywords are transformers' where they mean the same (max_new_tokens, do_sample, temperature, top_k,
top_p, return_full_text, num_beams=1) plus lmforge's seed and truncate_prompt; any other keyword
is an error naming it (transformers' `max_length` counts the prompt: use max_new_tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.hardware import resolve_dtype
from lmforge.inference.generate import encode_prompts, generate_ids
from lmforge.inference.options import check_keywords, check_options, check_texts, keyword_names
from lmforge.model.gpt import GPT


class TextGenerationPipeline:
    def __init__(self, model: str | Path, dtype: str = "auto") -> None:
        check_options(dtype=dtype)
        self.model, self.tokenizer = load_model(model)
        if not isinstance(self.model, GPT):
            raise LmforgeError(f"{model}: a {type(self.model).__name__}, not a decoder for text-generation")
        self.model.to(resolve_dtype(dtype, self.model.config)[0])

    def __call__(
        self,
        text: str | list[str],
        *,
        max_new_tokens: int = 50,
        do_sample: bool = True,
        temperature: float = 1.0,
        top_k: int = 50,
        top_p: float = 1.0,
        return_full_text: bool = True,
        seed: int | None = None,
        truncate_prompt: bool = False,
        num_beams: int | None = 1,
        **unknown: Any,
    ) -> list[dict[str, str]] | list[list[dict[str, str]]]:
        """One prompt gives a list of one dict; a list of prompts gives one such list per prompt.
        do_sample=False decodes greedily (temperature 0); a prompt longer than the model's context
        is an error unless truncate_prompt keeps its last tokens."""
        check_keywords(unknown, keyword_names(TextGenerationPipeline.__call__), "text-generation")
        check_options(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            return_full_text=return_full_text,
            seed=seed,
            truncate_prompt=truncate_prompt,
            num_beams=num_beams,
        )
        if num_beams not in (None, 1):
            raise LmforgeError(
                f"num_beams={num_beams!r}: text-generation decodes greedily or by sampling (num_beams=1);"
                " beam search is for translation"
            )
        prompts = check_texts(text)
        ids = encode_prompts(self.tokenizer, prompts)
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
                truncate_prompt,
                None,
            )
        results = [
            [{"generated_text": (p if return_full_text else "") + self.tokenizer.decode(o)}]
            for p, o in zip(prompts, outs, strict=True)
        ]
        return results[0] if isinstance(text, str) else results
