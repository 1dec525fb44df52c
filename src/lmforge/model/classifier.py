"""Sequence classification: a pooled linear head on a decoder (GPT) or an encoder (BERT-style).

Pooling: `mean` over real tokens (what sentence encoders such as MiniLM are trained for), `cls`
(the first token, BERT's convention) or `last` (the last real token: the only one a causal decoder
lets see the whole text, as HF's GPT2ForSequenceClassification). A classifier directory holds
config.json (`lmforge-classifier`: labels, pooling and the backbone's config), model.safetensors
(`backbone.*`, `head.*`) and tokenizer.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError
from lmforge.model.directory import MODEL_TYPE, WEIGHTS, load_tokenizer, load_weights, save_weights
from lmforge.model.encoder import ENCODER_TYPE, Encoder
from lmforge.model.gpt import GPT

CLASSIFIER_TYPE = "lmforge-classifier"
POOLINGS = ("mean", "cls", "last")


class Classifier(nn.Module):
    def __init__(
        self, backbone: GPT | Encoder, labels: list[str], pooling: str = "", dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.encoder = isinstance(backbone, Encoder)
        pooling = pooling or ("mean" if self.encoder else "last")
        if pooling not in POOLINGS:
            raise LmforgeError(f"pooling={pooling!r} must be one of {', '.join(POOLINGS)}")
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise LmforgeError(f"labels {labels} must be at least two distinct names")
        self.backbone, self.labels, self.pooling = backbone, list(labels), pooling
        self.config = backbone.config
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.config.n_embd, len(labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T), attention_mask (B, T) 1 = real token (right padding) -> class logits (B, labels)."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(idx)
        # (B, T, C); a causal decoder needs no mask: right padding never reaches the real tokens
        hidden = self.backbone(idx, mask) if self.encoder else self.backbone.hidden_states(idx)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            pooled = hidden[torch.arange(idx.size(0)), mask.sum(1).long() - 1]
        else:
            weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(self.drop(pooled))

    def save(self, directory: str | Path, tokenizer: Tokenizer) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_weights(directory / WEIGHTS, self.state_dict())
        backbone_type = ENCODER_TYPE if self.encoder else MODEL_TYPE
        meta = {
            "model_type": CLASSIFIER_TYPE,
            "labels": self.labels,
            "pooling": self.pooling,
            "backbone": {"model_type": backbone_type, **dataclasses.asdict(self.config)},
            "eos_token_id": tokenizer.eos_id,
        }
        (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        tokenizer.save(directory / "tokenizer.json")
        return directory


def encode_batch(
    tokenizer: Tokenizer, texts: list[str], context: int, encoder: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), each (B, T), right-padded. Encoders get their special tokens
    ([CLS] ... [SEP]); texts longer than the context are cut, keeping the final special token."""
    rows = []
    for text in texts:
        ids = tokenizer.hf.encode(text).ids if encoder else tokenizer.encode(text)
        ids = ids or [tokenizer.eos_id if tokenizer.eos_id is not None else 0]
        if len(ids) > context:
            ids = ids[: context - 1] + ids[-1:] if encoder else ids[:context]
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def load_classifier_dir(directory: Path) -> tuple[Classifier, Tokenizer]:
    """The LOADERS entry for `lmforge-classifier` directories."""
    raw: dict[str, Any] = json.loads((directory / "config.json").read_text())
    backbone_raw = dict(raw["backbone"])
    kind = backbone_raw.pop("model_type")
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    config = ModelConfig(**{k: v for k, v in backbone_raw.items() if k in names})
    backbone: GPT | Encoder = Encoder(config) if kind == ENCODER_TYPE else GPT(config)
    model = Classifier(backbone, raw["labels"], raw["pooling"])
    load_weights(model, directory / WEIGHTS)
    return model.eval(), load_tokenizer(directory)
