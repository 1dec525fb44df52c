"""GPT: a decoder-only Transformer language model (Radford et al., 2019), nanoGPT-shaped.

Token (+ learned position) embeddings -> n_layer pre-LN blocks -> LayerNorm -> logits, with the
output projection tied to the token embedding by default. Rotary positions and SwiGLU are
options (`pos="rope"`, `mlp="swiglu"`) for Llama-style models, with RMSNorm, grouped-query
attention and the other options the Hugging Face families need (formats/hf.py): Gemma 3's
sliding-window layers with their own rotary base, sandwich norms, scaled embeddings among them,
Gemma 2's soft caps on the attention scores and the logits, and SmolLM3's layers without
positions (NoPE).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lmforge.config import ModelConfig, check_buildable
from lmforge.errors import LmforgeError
from lmforge.model.attention import KVCache
from lmforge.model.layers import Block, Rotary, linear, make_norm
from lmforge.model.rope_scaling import RopeScaling


def block_options(c: ModelConfig) -> dict[str, Any]:
    """Block keyword options from a ModelConfig (shared by the decoder and the encoder)."""
    return {
        "n_kv_head": c.n_kv_head,
        "qkv_bias": c.qkv_bias,
        "norm": c.norm,
        "norm_eps": c.norm_eps,
        "mlp_hidden": c.mlp_hidden,
        "head_dim": c.head_dim,
        "qk_norm": c.qk_norm,
        "norm_unit_offset": c.norm_unit_offset,
        "sandwich_norm": c.sandwich_norm,
        "attn_scale_dim": c.attn_scale_dim,
        "attn_softcap": c.attn_softcap,
    }


def rotary_of(c: ModelConfig) -> Rotary | None:
    """The rotary positions every block shares (pos='rope'), None for other positions."""
    if c.pos != "rope":
        return None
    return Rotary(c.rotary_dims(), c.block_size, c.rope_theta, RopeScaling.of(c))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        check_buildable(config, "gpt")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if c.pos == "learned" else None
        rotary = rotary_of(c)
        # the sliding-window layers' own rotary base (Gemma 3's local layers), unscaled
        local = rotary
        if rotary is not None and c.rope_local_theta:
            local = Rotary(c.head_size(), c.block_size, c.rope_local_theta)
        self.drop = nn.Dropout(c.dropout)
        options = block_options(c)
        # NoPE layers (nope_interval, SmolLM3's) get no rotary: their queries and keys keep no positions
        self.blocks = nn.ModuleList(
            Block(
                c.n_embd,
                c.n_head,
                c.mlp,
                c.bias,
                c.dropout,
                None if nope else local if w else rotary,
                window=w,
                **options,
            )  # fmt: skip
            for w, nope in ((c.layer_window(i), c.layer_nope(i)) for i in range(c.n_layer))
        )
        # each block's rotary as an index into the distinct ones, whose angles a forward computes once
        rotaries = [b.attn.rotary for b in self.blocks]
        self._rotaries = list({id(r): r for r in rotaries if r is not None}.values())
        self._rotary_of = [next((j for j, o in enumerate(self._rotaries) if o is r), -1) for r in rotaries]
        self.ln_f = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps, c.norm_unit_offset)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer) so the stream's variance holds.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab), or (B, 1, vocab) with last_only (decoding
        needs no more). With a cache, idx continues the cached sequence; the cache advances by T.
        mask (B, cached + T) bool, True on real tokens, for a left-padded batch (see hidden_states)."""
        return self.cap_logits(linear(self.lm_head, self.hidden_states(idx, cache, last_only, mask)))

    def cap_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The head's logits (..., vocab) soft-capped, cap * tanh(logit / cap), as the model's
        forward returns them (model.logit_softcap, Gemma 2's; unchanged without one). Whatever
        applies lm_head to hidden states itself passes its logits through here."""
        cap = self.config.logit_softcap
        return torch.tanh(logits / cap) * cap if cap else logits

    def hidden_states(
        self,
        idx: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T) -> the final normed hidden states (B, T, C): what a classification head pools.

        mask (B, cached + T), True on real tokens, False on left padding: each row's positions
        count from its first real token and no token attends to padding, so a padded row computes
        what it would alone. Without a mask (equal lengths) rows start at position 0."""
        b, t = idx.shape
        start = cache.length if cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(
                f"sequence of {start + t} tokens exceeds the context of {self.config.block_size}"
            )
        if cache is not None and start and self.stale_cache(start, t, mask):
            raise LmforgeError(
                f"longrope: a KV cache rotated with the short factors cannot take positions past"
                f" model.rope_original_context={self.config.rope_original_context}; recompute it over the"
                " whole sequence (as transformers' generate does)"
            )
        positions = attn_mask = None
        if mask is not None:
            positions, attn_mask = padding_positions(mask, t)
        x = self.wte(idx)  # (B, T, C)
        if self.config.scale_embedding:  # Gemma: sqrt(C) rounded to the weights' dtype first
            x = x * torch.tensor(self.config.n_embd**0.5).to(x.dtype)
        if self.wpe is not None:
            x = x + self.wpe(
                torch.arange(start, start + t, device=idx.device) if positions is None else positions
            )
        x = self.drop(x)
        # one rotary shared by every block (two with Gemma's local layers, none in NoPE layers):
        # angles computed once each
        angles = [r.angles(start, t, positions, x.dtype) for r in self._rotaries]
        for i, block in enumerate(self.blocks):
            j = self._rotary_of[i]
            x = block(x, cache, i, attn_mask, positions, angles[j] if j >= 0 else None)
        if cache is not None:
            cache.advance(t)
        if last_only:
            x = x[:, -1:]
        return self.ln_f(x)

    def stale_cache(self, cached: int, t: int = 1, mask: torch.Tensor | None = None) -> bool:
        """Whether t more tokens after a cache of `cached` positions (mask (B, cached + t): each
        row's own length) take some row past the original context of a LongRoPE model, whose cache
        then holds keys rotated with the short factors where the long ones now apply: transformers'
        generate recomputes the whole sequence then, and so must the caller."""
        c = self.config
        if c.rope_type != "longrope" or c.pos != "rope" or self._long_throughout:
            return False
        if mask is None:
            return cached <= c.rope_original_context < cached + t
        before, after = mask[:, : mask.size(1) - t].sum(1), mask.sum(1)  # (B,) each row's lengths
        return bool(((before <= c.rope_original_context) & (after > c.rope_original_context)).any())

    def whole_prefill(self, t: int) -> bool:
        """Whether a prompt of t tokens must go through in one forward, not in chunks: past the
        original context, LongRoPE rotates it all with the long factors, and dynamic NTK with the
        base of its whole length (transformers' prefill; chunks would each take their own)."""
        c = self.config
        grows = c.pos == "rope" and c.rope_type == "dynamic" and t > c.rope_original_context
        return grows or self.stale_cache(0, t)

    @property
    def _long_throughout(self) -> bool:
        return any(getattr(block.attn.rotary, "long_only", False) for block in self.blocks)

    def rotate_long_throughout(self) -> bool:
        """LongRoPE: rotate every sequence with the long factors, however short, as vLLM does where its
        context passes the original one; a cache then never goes stale. Whether the model has LongRoPE."""
        rotaries = [block.attn.rotary for block in self.blocks if block.attn.rotary is not None]
        for rotary in rotaries:
            rotary.long_only = bool(rotary.switch)
        return any(rotary.switch for rotary in rotaries)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        c = self.config
        dtype = self.wte.weight.dtype
        return KVCache(
            c.n_layer,
            batch,
            c.n_kv_head or c.n_head,
            max_len or c.block_size,
            c.head_size(),
            dtype,
            self.wte.weight.device,
        )

    def set_attention(self, impl: str) -> None:
        """Route every layer's attention: auto | sdpa | bmm | reference (see model/attention.py)."""
        for block in self.blocks:
            block.attn.impl = impl

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings and self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token: 6N for the weights plus attention's 12 L d T (PaLM, app. B)."""
        c = self.config
        n = self.num_params(embeddings=False)
        if not c.tie_embeddings:
            n -= self.wte.weight.numel()  # the lookup is free; only the head's matmul costs
        return 6 * n + 12 * c.n_layer * c.n_head * c.head_size() * c.block_size


def padding_positions(mask: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mask (B, T_keys) bool, True on real tokens, the last t being the new ones -> (positions
    (B, t): each real token's index among its row's real tokens, the attention mask (B, 1, t, T_keys)).
    A padding query attends to itself alone, so its softmax has a finite entry (no NaN to spread)."""
    t_k = mask.size(1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, t_k - t :]
    attn = mask[:, None, None, :].expand(-1, 1, t, -1).clone()
    own = torch.arange(t_k - t, t_k, device=mask.device)
    attn[:, 0, torch.arange(t, device=mask.device), own] = True
    return positions, attn
