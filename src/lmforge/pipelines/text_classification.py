"""The text-classification pipeline: HF's `[{"label": ..., "score": ...}]` over a classifier directory
(written by `lmforge finetune-classify`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.data.labelled import encode_batch
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.model.classifier import Classifier


class TextClassificationPipeline:
    def __init__(self, model: str | Path, batch_size: int = 32) -> None:
        self.model, self.tokenizer = load_model(model)
        if not isinstance(self.model, Classifier):
            raise LmforgeError(
                f"{model}: not a classifier (train one with `lmforge finetune-classify {model} ...`)"
            )
        self.batch_size = batch_size

    def __call__(
        self, text: str | list[str], top_k: int | None = 1, **_: Any
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """A string gives [{"label", "score"}] (the best label; top_k=None gives every label, best
        first, as a list of dicts); a list of strings gives one result per string, as HF does."""
        texts = [text] if isinstance(text, str) else list(text)
        scores = self.probabilities(texts)
        results: list[Any] = []
        for row in scores:
            ranked = sorted(zip(self.model.labels, row.tolist(), strict=True), key=lambda x: -x[1])
            entries = [{"label": label, "score": score} for label, score in ranked]
            results.append(entries if top_k is None else entries[:top_k])
        if top_k == 1:
            results = [r[0] for r in results]
        if isinstance(text, str):
            return results if top_k == 1 else results[0]
        return results

    @torch.inference_mode()
    def probabilities(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), labels) softmax probabilities."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids, mask = encode_batch(
                self.tokenizer,
                texts[i : i + self.batch_size],
                self.model.config.block_size,
                self.model.encoder,
            )
            out.append(self.model(ids, mask).float().softmax(-1))
        return torch.cat(out)
