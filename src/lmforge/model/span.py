"""Extractive question answering: a span head on an encoder (BERT, Devlin et al., 2019, section 4.2).

One linear map of each token's hidden state gives two logits: where the answer starts and where it
ends. Names follow transformers' BertForQuestionAnswering (`qa_outputs`), so conversion is a rename
(formats/hf_qa.py). A question-answering directory (`lmforge-qa`) holds the encoder's config,
model.safetensors (`backbone.*`, `qa_outputs.*`) and tokenizer.json.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.model.encoder import Encoder


class SpanModel(nn.Module):
    def __init__(self, backbone: Encoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = backbone.config
        # BERT's pooler is not used (BertForQuestionAnswering has none): frozen, so DDP and the
        # optimizer's state (checkpoints, resume) see only weights that get gradients
        backbone.pooler.requires_grad_(False)
        self.unused_modules = ("backbone.pooler",)  # forward never runs it: no FLOPs (train/report.py)
        self.qa_outputs = nn.Linear(backbone.config.n_embd, 2)
        nn.init.normal_(self.qa_outputs.weight, std=0.02)
        nn.init.zeros_(self.qa_outputs.bias)

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T), attention_mask (B, T) 1 = real token, token_type_ids (B, T) 0 = question,
        1 = context -> logits (B, T, 2): [..., 0] the answer's start, [..., 1] its end."""
        hidden = self.backbone(idx, attention_mask, token_type_ids)  # (B, T, C)
        return self.qa_outputs(hidden)  # no dropout here, as BertForQuestionAnswering

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
