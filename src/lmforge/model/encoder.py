"""Encoder: a bidirectional Transformer (BERT, Devlin et al., 2019) built from the decoder's blocks.

Token + learned position (+ token type) embeddings -> LayerNorm -> n_layer post-norm blocks
without the causal mask. `forward` returns hidden states (B, T, C); `pooled` is BERT's pooler
(tanh of a linear map of the first token), kept so exported models carry every BERT weight.
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.config import ModelConfig, check_buildable
from lmforge.model.gpt import GPT, block_options
from lmforge.model.layers import Block, make_norm


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_buildable(config, "encoder")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        self.wtt = nn.Embedding(c.type_vocab_size, c.n_embd) if c.type_vocab_size else None
        self.ln_e = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps)
        self.drop = nn.Dropout(c.dropout)
        options = dict(block_options(c), post_norm=True, causal=False)
        self.blocks = nn.ModuleList(
            Block(c.n_embd, c.n_head, c.mlp, c.bias, c.dropout, **options) for _ in range(c.n_layer)
        )
        self.pooler = nn.Linear(c.n_embd, c.n_embd)
        self.apply(GPT._init_weights)

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids, attention_mask (B, T) 1 = real token, 0 = padding -> hidden (B, T, C)."""
        t = idx.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence of {t} tokens exceeds the context of {self.config.block_size}")
        x = self.wte(idx) + self.wpe(torch.arange(t, device=idx.device))
        if self.wtt is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(idx)
            x = x + self.wtt(types)
        x = self.drop(self.ln_e(x))
        mask = attention_mask.bool()[:, None, None, :] if attention_mask is not None else None  # (B,1,1,T)
        for block in self.blocks:
            x = block(x, mask=mask)
        return x

    def hidden_states(self, idx: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self(idx, attention_mask)

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: (B, T, C) -> (B, C)."""
        return torch.tanh(self.pooler(hidden[:, 0]))

    def set_attention(self, impl: str) -> None:
        for block in self.blocks:
            block.attn.impl = impl

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
