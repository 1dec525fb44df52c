"""Seq2Seq: an encoder-decoder Transformer (Vaswani et al., 2017) with pre-LayerNorm blocks.

    source ids -> shared embedding + positions -> n_layer encoder blocks (self-attention with a
    padding mask) -> LayerNorm = memory
    target ids -> shared embedding + positions -> n_layer decoder blocks (causal self-attention,
    cross-attention to the memory, MLP) -> LayerNorm -> logits (tied to the shared embedding)

Pre-LN as in fairseq's `--encoder-normalize-before` / T5, which trains stably without the warmup
tricks post-LN needs. The encoder block is the GPT block with `causal=False`; the decoder block
adds `CrossAttention` between its self-attention and MLP. Padding: sources are right-padded and
a (B, 1, 1, S) key mask keeps every query off pad positions; targets are right-padded too, so the
causal mask alone keeps real positions off them. Decoding reuses the memory's cross-attention
keys/values (`memory_kv`) and a KVCache for the decoder's self-attention.

Options for Marian (opus-mt weights, see model/hf.py), all off by default: post-LN blocks
(`post_norm`), no final LayerNorm (`final_norm=False`), a fixed sinusoidal position table
(`pos="sinusoidal"`), a fixed logits bias (`logits_bias`), a plain SiLU MLP (`mlp="silu"`), and,
outside the config since they are token ids, the decoder's start token (`start_id`; lmforge's
models start with EOS, Marian's with the pad token) and tokens never generated (`suppress_ids`).
Also outside the config, as in HF's generation_config.json: the default beam size (`num_beams`;
opus-mt's is 4), when beam search ends (`early_stopping`: True for lmforge's own models, False,
transformers' default, for opus-mt), transformers' `repetition_penalty` and
`no_repeat_ngram_size` (off unless the file sets them) and beam search's `length_penalty` (1 unless
the file sets it), used when a translation call does not give them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.config import ModelConfig, check_buildable
from lmforge.model.attention import KVCache
from lmforge.model.checkpointing import run_block
from lmforge.model.gpt import block_options, rotary_of
from lmforge.model.layers import MLP, Block, CrossAttention, Rotary, SelfAttention, linear, make_norm

Memory = list[tuple[torch.Tensor, torch.Tensor]]  # per decoder layer: keys, values (B, nh, S, hs)


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim) fixed positions as Marian's: sin(pos / 10000^(2i/dim)) in the first half of the
    dims, cos in the second (not interleaved). float64 rounded to float32, the arithmetic of HF's
    MarianSinusoidalPositionalEmbedding, so exported tables are bit-identical to HF's."""
    freq = np.array([np.power(10000, 2 * (j // 2) / dim) for j in range(dim)])  # scalar pow, as HF
    angles = np.arange(n_pos)[:, None] / freq[None, :]  # (n_pos, dim) float64
    half = -(-dim // 2)
    out = torch.empty(n_pos, dim)
    out[:, :half] = torch.from_numpy(np.sin(angles[:, 0::2])).float()
    out[:, half:] = torch.from_numpy(np.cos(angles[:, 1::2])).float()
    return out


class DecoderBlock(nn.Module):
    """x + self_attn(ln(x)) (causal), then x + cross_attn(ln(x), memory), then x + mlp(ln(x)).
    With post_norm: x = ln(x + self_attn(x)), then ln(x + cross_attn(x, memory)), then ln(x + mlp(x))."""

    def __init__(self, c: ModelConfig, rotary: Rotary | None) -> None:
        super().__init__()
        self.post_norm = c.post_norm
        self.ln_1 = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps)
        # n_kv_head and qkv_bias shape the self-attention; cross-attention keeps every head
        self.attn = SelfAttention(
            c.n_embd, c.n_head, c.bias, c.dropout, rotary, True, c.n_kv_head, c.qkv_bias
        )
        self.ln_2 = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps)
        self.cross = CrossAttention(c.n_embd, c.n_head, c.bias, c.dropout)
        self.ln_3 = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps)
        self.mlp = MLP(c.n_embd, c.mlp, c.bias, c.mlp_hidden)
        self.drop = nn.Dropout(c.dropout)
        self.checkpoint_activations = False  # recompute in backward (model/checkpointing.py)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """memory: the encoder output (B, S, C), projected here (so a checkpointed block keeps
        only the memory, not its keys and values), or its keys/values from `cross.memory`
        (decoding computes them once per source)."""
        return run_block(self, self._forward, x, memory, src_mask, cache, layer)

    def _forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
        src_mask: torch.Tensor,
        cache: KVCache | None,
        layer: int,
    ) -> torch.Tensor:
        if isinstance(memory, torch.Tensor):
            memory = self.cross.memory(memory)
        if self.post_norm:
            x = self.ln_1(x + self.drop(self.attn(x, cache, layer)))
            x = self.ln_2(x + self.drop(self.cross(x, memory, src_mask)))
            return self.ln_3(x + self.drop(self.mlp(x)))
        x = x + self.drop(self.attn(self.ln_1(x), cache, layer))
        x = x + self.drop(self.cross(self.ln_2(x), memory, src_mask))
        return x + self.drop(self.mlp(self.ln_3(x)))


class Stack(nn.Module):
    """Positions, dropout, blocks and a final LayerNorm (or none): the encoder or the decoder."""

    def __init__(self, c: ModelConfig, decoder: bool) -> None:
        super().__init__()
        self.wpe = nn.Embedding(c.block_size, c.n_embd) if c.pos == "learned" else None
        table = sinusoidal_table(c.block_size, c.n_embd) if c.pos == "sinusoidal" else None
        self.register_buffer("sinusoid", table, persistent=False)  # (block_size, C), not a weight
        rotary = rotary_of(c)
        self.drop = nn.Dropout(c.dropout)
        options = dict(block_options(c), post_norm=c.post_norm)
        blocks = (
            DecoderBlock(c, rotary)
            if decoder
            else Block(c.n_embd, c.n_head, c.mlp, c.bias, c.dropout, rotary, causal=False, **options)
            for _ in range(c.n_layer)
        )
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = make_norm(c.norm, c.n_embd, c.bias, c.norm_eps) if c.final_norm else nn.Identity()

    def reset_buffers(self) -> None:
        """Compute the sinusoidal table again (after model/empty.py builds the model empty)."""
        if self.sinusoid is not None:
            self.sinusoid = sinusoidal_table(*self.sinusoid.shape).to(self.sinusoid.device)

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + x.size(1), device=x.device))
        elif self.sinusoid is not None:
            x = x + self.sinusoid[start : start + x.size(1)].to(x.dtype)
        return self.drop(x)


class Seq2Seq(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        pad_id: int,
        start_id: int | None = None,
        suppress_ids: tuple[int, ...] | list[int] = (),
        num_beams: int = 1,
        early_stopping: bool | str = True,
        repetition_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        length_penalty: float = 1.0,
    ) -> None:
        super().__init__()
        check_buildable(config, "seq2seq")
        self.config = c = config
        self.pad_id = pad_id
        self.start_id = start_id  # the decoder's first input; None: EOS, as lmforge trains it
        self.suppress_ids = list(suppress_ids)  # never generated (Marian: its pad / start token)
        self.num_beams = num_beams  # the default beam size of translation calls
        self.early_stopping = early_stopping  # and when their beam search ends (seq2seq_decode)
        self.repetition_penalty = repetition_penalty  # and their repeats (seq2seq_decode.Repeats)
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.length_penalty = length_penalty  # beam score = log p / length**this
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)  # shared by encoder, decoder and output
        self.encoder = Stack(c, decoder=False)
        self.decoder = Stack(c, decoder=True)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.embed_scale = math.sqrt(c.n_embd) if c.scale_embedding else 1.0
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        bias = torch.zeros(1, c.vocab_size) if c.logits_bias else None
        self.register_buffer("final_logits_bias", bias)  # (1, vocab): Marian's, kept with the weights
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Vaswani et al. / fairseq: Xavier-uniform projections (q, k and v each as its own matrix,
        gain 1/sqrt(2)), zero biases, embeddings N(0, 1/n_embd) with the pad row zeroed. With
        GPT-2's N(0, 0.02) the decoder learned to ignore its source: a 3x256 model could not learn
        to copy random 20-token sequences in 300 steps; with this it does in 150."""
        c = self.config
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not (name == "lm_head" and c.tie_embeddings):
                fused = name.endswith((".qkv", ".q", ".kv"))  # rows: one n_embd block per projection
                for w in module.weight.split(c.n_embd) if fused else (module.weight,):
                    nn.init.xavier_uniform_(w, gain=2**-0.5 if fused else 1.0)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=c.n_embd**-0.5)
        self.wte.weight[self.pad_id] = 0.0

    def decoding_extra(self) -> dict[str, Any]:
        """config.json keys a model directory keeps beyond the ModelConfig."""
        return decoding_extra(
            self.start_id, self.suppress_ids, self.num_beams, self.early_stopping,
            self.repetition_penalty, self.no_repeat_ngram_size, self.length_penalty,
        )  # fmt: skip

    def _check_length(self, t: int, side: str) -> None:
        if t > self.config.block_size:
            raise ValueError(f"{side} of {t} tokens exceeds the model's {self.config.block_size} positions")

    def source_mask(self, src: torch.Tensor) -> torch.Tensor:
        """(B, S) ids -> (B, 1, 1, S) bool, True on real (non-pad) tokens."""
        return (src != self.pad_id)[:, None, None, :]

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) right-padded ids -> memory (B, S, C)."""
        self._check_length(src.size(1), "source")
        mask = self.source_mask(src) if src_mask is None else src_mask
        x = self.encoder.embed(self.wte(src) * self.embed_scale, 0)
        for block in self.encoder.blocks:
            x = block(x, mask=mask)
        return self.encoder.ln_f(x)

    def memory_kv(self, memory: torch.Tensor) -> Memory:
        """Every decoder layer's cross-attention keys and values for this memory (computed once)."""
        return [block.cross.memory(memory) for block in self.decoder.blocks]

    def decode(
        self,
        tgt: torch.Tensor,
        memory: Memory | torch.Tensor,
        src_mask: torch.Tensor,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """tgt (B, T) decoder inputs -> logits (B, T, vocab) (or (B, 1, vocab) with last_only).
        memory: `memory_kv`'s keys/values, or the encoder output (each block projects it).
        With a cache, tgt continues the cached prefix and the cache advances by T."""
        start = cache.length if cache is not None else 0
        self._check_length(start + tgt.size(1), "target")
        x = self.decoder.embed(self.wte(tgt) * self.embed_scale, start)
        for i, block in enumerate(self.decoder.blocks):
            x = block(x, memory if isinstance(memory, torch.Tensor) else memory[i], src_mask, cache, i)
        if cache is not None:
            cache.advance(tgt.size(1))
        if last_only:
            x = x[:, -1:]
        logits = linear(self.lm_head, self.decoder.ln_f(x))  # (B, T, vocab)
        return logits if self.final_logits_bias is None else logits + self.final_logits_bias

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) decoder inputs -> logits (B, T, vocab).
        Each decoder block projects the memory inside its own forward, so engines that gather a
        block's weights around its forward (FSDP2, ZeRO-3) see every weight used there."""
        mask = self.source_mask(src)
        return self.decode(tgt, self.encode(src, mask), mask)

    def new_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        c = self.config
        w = self.wte.weight
        return KVCache(
            c.n_layer, batch, c.n_head, max_len or c.block_size, c.n_embd // c.n_head, w.dtype, w.device
        )

    def set_attention(self, impl: str) -> None:
        """Route every attention: auto | sdpa | bmm | reference (see model/attention.py)."""
        for module in self.modules():
            if isinstance(module, SelfAttention | CrossAttention):
                module.impl = impl

    def num_params(self, embeddings: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not embeddings:
            n -= sum(s.wpe.weight.numel() for s in (self.encoder, self.decoder) if s.wpe is not None)
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per (source + target) token, roughly: 6N/2 for each side's weights it
        passes through (N counts both stacks; 4N/2 for frozen ones, LoRA's base: no weight
        gradient) plus attention's 12 L d T per attention layer."""
        c = self.config
        skip = {"encoder.wpe.weight", "decoder.wpe.weight"} | (set() if c.tie_embeddings else {"wte.weight"})
        n = {True: 0, False: 0}  # requires_grad -> parameters
        for name, p in self.named_parameters():
            if name not in skip:
                n[p.requires_grad] += p.numel()
        return 3 * n[True] + 2 * n[False] + 12 * c.n_layer * c.n_embd * c.block_size * 1.5


def decoding_extra(
    start_id: int | None,
    suppress_ids: list[int],
    num_beams: int,
    early_stopping: bool | str = True,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    length_penalty: float = 1.0,
) -> dict[str, Any]:
    """The decoding settings that differ from lmforge's defaults, as config.json keys."""
    extra: dict[str, Any] = {}
    if start_id is not None or suppress_ids:
        extra.update(decoder_start_token_id=start_id, suppress_tokens=list(suppress_ids))
    if num_beams != 1:
        extra["num_beams"] = num_beams
    if early_stopping is not True:
        extra["early_stopping"] = early_stopping
    if repetition_penalty != 1.0:
        extra["repetition_penalty"] = repetition_penalty
    if no_repeat_ngram_size:
        extra["no_repeat_ngram_size"] = no_repeat_ngram_size
    if length_penalty != 1.0:
        extra["length_penalty"] = length_penalty
    return extra
