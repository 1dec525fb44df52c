"""Sequence classification: a pooled linear head on a decoder (GPT) or an encoder (BERT-style).

Pooling: `mean` over real tokens (what sentence encoders such as MiniLM are trained for), `cls`
(the first token, BERT's convention) or `last` (the last real token: the only one a causal decoder
lets see the whole text, as HF's GPT2ForSequenceClassification). `dense` puts one more linear map
and its activation between the pooling and the head, which is how transformers' fine-tuned
classifiers are shaped: BERT's pooler (`tanh`), DistilBERT's pre_classifier (`relu`), RoBERTa's
classification head (`tanh`). A classifier directory holds config.json (`lmforge-classifier`:
labels, pooling, dense and the backbone's config), model.safetensors (`backbone.*`, `dense.*`,
`head.*`) and tokenizer.json.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT

POOLINGS = ("mean", "cls", "last")
DENSE = {"": None, "tanh": torch.tanh, "relu": torch.relu}  # activation after the optional dense layer


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, C) averaged over the real tokens of mask (B, T), 1 = real -> (B, C): the
    `mean` pooling here and sentence-transformers' (inference/embeddings.py)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: GPT | Encoder,
        labels: list[str],
        pooling: str = "",
        dropout: float = 0.1,
        dense: str = "",
    ) -> None:
        super().__init__()
        self.encoder = isinstance(backbone, Encoder)
        pooling = pooling or ("mean" if self.encoder else "last")
        if pooling not in POOLINGS:
            raise LmforgeError(f"pooling={pooling!r} must be one of {', '.join(POOLINGS)}")
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise LmforgeError(f"labels {labels} must be at least two distinct names")
        if not isinstance(dense, str) or dense not in DENSE:
            raise LmforgeError(f"dense={dense!r} must be one of {', '.join(repr(d) for d in DENSE)}")
        self.backbone, self.labels, self.pooling, self.dense_act = backbone, list(labels), pooling, dense
        self.config = backbone.config
        # what forward never runs (the pooling reads hidden states): no FLOPs (train/report.py), and
        # frozen, so DDP (which fails on a trainable weight that gets no gradient) and the optimizer
        # see only weights that train; a tied lm_head is the token embedding, which does train
        self.unused_modules = ("backbone.pooler",) if self.encoder else ("backbone.lm_head",)
        unused = backbone.pooler if isinstance(backbone, Encoder) else backbone.lm_head
        if not (isinstance(backbone, GPT) and backbone.lm_head.weight is backbone.wte.weight):
            unused.requires_grad_(False)
        n = backbone.config.n_embd
        # None when absent, so classifiers without it keep their state dicts
        self.dense = nn.Linear(n, n) if dense else None
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
            pooled = mean_pool(hidden, mask)
        if self.dense is not None:
            pooled = DENSE[self.dense_act](self.dense(pooled))
        return self.head(self.drop(pooled))
