"""Transformer building blocks: rotary positions, self- and cross-attention, MLP,
pre-LayerNorm block.

The keyword options (grouped-query attention, RMSNorm, per-projection biases, post-norm, MLP width,
Gemma's sliding windows, sandwich norms and attention scale) are what the Hugging Face families
need (see formats/hf.py); their defaults are lmforge's GPT. The norms are in model/norms.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config.model_section import GATED_MLPS as GATED
from lmforge.model.attention import KVCache, attention, window_mask
from lmforge.model.checkpointing import run_block
from lmforge.model.kernels import FP32_KERNELS, bf16_route, linear_route, traced_one_row
from lmforge.model.norms import make_norm, rms_norm
from lmforge.model.packed_weights import packable, packed_linear, packed_when_used
from lmforge.model.rope_scaling import RopeScaling, dynamic_angles, inverse_frequencies


def linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """layer(x), through the fastest of MKL, oneDNN, a thread-split batched matmul, the product
    with its operands swapped and oneDNN on a weight packed once for fp32 on the CPU without
    autograd (decoding, evaluation), measured on this machine for one row, a few and a few dozen
    (model/kernels.py): a decoding step's product is 1.1-2.7x faster on one or another depending on
    the CPU. Only a layer of a model an inference entry point marked (kernels.for_inference) keeps
    a packed copy of its weight; a bf16 one runs on it where that measures faster (the same bits).
    Training (autograd on) and subclasses (LoRALinear) keep nn.Linear's own forward, and so does a
    layer with forward hooks: DeepSpeed ZeRO-3 gathers a layer's partitioned weight in its hook, so
    going around it would read an empty shard and desynchronise the ranks' collectives.
    """
    # Run at every product of a decoding step, so kept lean: the parameters are read from the
    # layer's own table (Module.__getattr__ costs about a microsecond a read, and a 6x384 step
    # makes 25 products); a plain nn.Linear always has both entries, bias None when it has none.
    if (
        type(layer) is not nn.Linear
        or torch.is_grad_enabled()
        or layer._forward_pre_hooks
        or layer._forward_hooks
        or not x.is_cpu  # not x.device.type: that builds a device object, 4 us a call in a decoding step
    ):
        return layer(x)
    weight, bias = layer._parameters["weight"], layer._parameters["bias"]
    if torch.compiler.is_compiling():  # traced: no route lookup (its probe times kernels)
        one_row = x.numel() == x.size(-1)  # a compiled decoding step (inference/compiled_decode.py)
        return traced_one_row(x, weight, bias) if one_row else F.linear(x, weight, bias)
    dtype = x.dtype
    if dtype == torch.float32 and weight.dtype == dtype:
        if torch.is_autocast_enabled("cpu"):  # F.linear, which autocast casts (oneDNN's kernel would not)
            return F.linear(x, weight, bias)
        route = linear_route(x.numel() // x.size(-1), weight.size(0))
        if route == "packed" and packable(layer):
            return packed_when_used(x, layer)  # the weight packed for oneDNN (model/packed_weights.py)
        return FP32_KERNELS[route](x, weight, bias)
    if (
        dtype == torch.bfloat16
        and weight.dtype == dtype
        and packable(layer)
        and bf16_route(x.numel() // x.size(-1)) == "packed"
    ):
        return packed_linear(x, layer)  # the weight packed once for oneDNN (model/kernels.py)
    return layer(x)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al., 2021), rotate-half form as in Llama/HF. head_size: the
    dimensions that rotate, the first of each head (rope_partial_factor: the rest pass through).
    LongRoPE keeps a second table, for sequences longer than the original context; dynamic NTK
    computes the angles past it at each forward, from the sequence's length."""

    def __init__(
        self, head_size: int, max_len: int, base: float = 10000.0, scaling: RopeScaling | None = None
    ) -> None:
        super().__init__()
        self.head_size, self.max_len, self.base, self.scaling = head_size, max_len, base, scaling
        self.register_buffer("cos", torch.empty(max_len, head_size), persistent=False)  # (T, hs)
        self.register_buffer("sin", torch.empty(max_len, head_size), persistent=False)
        # longrope: the sequence length past which the long table applies (0: one table)
        self.switch = scaling.original_context if scaling is not None and scaling.kind == "longrope" else 0
        self.long_only = False  # longrope: the long table at every length (GPT.rotate_long_throughout)
        # dynamic: the sequence length past which the base grows (0: a fixed base)
        self.grows = scaling.original_context if scaling is not None and scaling.kind == "dynamic" else 0
        if self.switch:
            self.register_buffer("cos_long", torch.empty(max_len, head_size), persistent=False)
            self.register_buffer("sin_long", torch.empty(max_len, head_size), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """Compute the angles' cos and sin (also after model/empty.py builds the model empty)."""
        self.cos, self.sin = self._table(long=False)
        if self.switch:
            self.cos_long, self.sin_long = self._table(long=True)

    def _table(self, long: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # The same float32 arithmetic as HF's LlamaRotaryEmbedding, so imported models match it.
        device = self.cos.device
        inv_freq = inverse_frequencies(self.head_size, self.base, self.scaling, device, long)  # (hs/2,)
        angles = torch.outer(torch.arange(self.max_len, device=device).float(), inv_freq)  # (T, hs/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, hs)
        cos, sin = angles.cos(), angles.sin()
        # YaRN's and LongRoPE's attention factor, in the tables themselves: every path that rotates
        # (the forward, cached and compiled decoding, ONNX) reads them, and q.k scales by its square
        if (attention := self.scaling.attention() if self.scaling else 1.0) != 1.0:
            cos, sin = cos * attention, sin * attention
        return cos, sin

    def extra_repr(self) -> str:  # in repr(model), which keys the compiled steps kept on disk
        return f"base={self.base:g}" + (f", scaling={self.scaling}" if self.scaling else "")

    def forward(self, x: torch.Tensor, start: int, positions: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, nh, T, hs) at positions start..start+T-1, or at per-row positions (B, T) (a
        left-padded batch: each row counts from its first real token)."""
        return self.rotate(x, self.angles(start, x.size(-2), positions, x.dtype))

    def angles(
        self, start: int, t: int, positions: torch.Tensor | None, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin) for `rotate`: (T, hs), or (B, 1, T, hs) for per-row positions. A model
        computes them once per forward; every layer's queries and keys share them. LongRoPE: the
        long table for a sequence longer than the original context, each row by its own length;
        dynamic NTK: past it, angles from the base of that length."""
        if self.grows and (start + t if positions is None else int(positions[:, -1].max()) + 1) > self.grows:
            cos, sin = dynamic_angles(
                self.head_size, self.base, self.scaling, start, t, positions, self.cos, self.sin
            )
            return cos.to(dtype), sin.to(dtype)
        if positions is None:
            long = self.switch and (self.long_only or start + t > self.switch)
            cos, sin = (self.cos_long, self.sin_long) if long else (self.cos, self.sin)
            return cos[start : start + t].to(dtype), sin[start : start + t].to(dtype)
        cos, sin = self.cos[positions], self.sin[positions]  # (B, T, hs)
        if self.switch:  # a row's length: its last position + 1 (its padding, if any, on the left)
            long = (positions[:, -1:] + 1 > self.switch)[..., None] | self.long_only  # (B, 1, 1)
            cos = torch.where(long, self.cos_long[positions], cos)
            sin = torch.where(long, self.sin_long[positions], sin)
        return cos[:, None].to(dtype), sin[:, None].to(dtype)

    @staticmethod
    def rotate(x: torch.Tensor, angles: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        cos, sin = angles
        rot = cos.size(-1)
        if rot != x.size(-1):  # partial rotary: the first `rot` dimensions turn, the rest pass through
            turned, kept = x.split([rot, x.size(-1) - rot], dim=-1)
            return torch.cat([Rotary.rotate(turned, angles), kept], dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused q,k,v projection; n_kv_head < n_head is grouped-query
    attention (Ainslie et al., 2023): each key/value head serves n_head / n_kv_head query heads.
    head_dim (0: n_embd / n_head) may differ from that (Qwen3); qk_norm: an RMSNorm over each
    query and key head, after the projection and before the rotary positions (Qwen3; Gemma's scale
    by 1 + weight with norm_unit_offset). window: each query attends itself and the window - 1
    keys before it (0: all before it); scale_dim: the scores are divided by sqrt(scale_dim), not
    sqrt(the head size) (Gemma's query_pre_attn_scalar; 0: the head size); softcap: the scores
    capped to softcap * tanh(score / softcap) before the mask (Gemma 2's; 0: uncapped)."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool,
        dropout: float,
        rotary: Rotary | None = None,
        causal: bool = True,
        n_kv_head: int = 0,
        qkv_bias: bool = False,
        head_dim: int = 0,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        *,
        norm_unit_offset: bool = False,
        window: int = 0,
        scale_dim: int = 0,
        softcap: float = 0.0,
    ) -> None:
        super().__init__()
        self.n_head, self.dropout, self.causal, self.window = n_head, dropout, causal, window
        self.softcap = softcap
        self.n_kv_head = n_kv_head or n_head
        self.head_size = hs = head_dim or n_embd // n_head
        # rows: n_head query heads, then n_kv_head key heads, then n_kv_head value heads
        self.qkv = nn.Linear(n_embd, (n_head + 2 * self.n_kv_head) * hs, bias=bias or qkv_bias)
        self.proj = nn.Linear(n_head * hs, n_embd, bias=bias)
        self.q_norm = rms_norm(hs, norm_eps, norm_unit_offset) if qk_norm else None
        self.k_norm = rms_norm(hs, norm_eps, norm_unit_offset) if qk_norm else None
        # every route divides q.k by sqrt(hs): another scale is folded into the queries
        self.q_scale = (hs / scale_dim) ** 0.5 if scale_dim else 1.0
        self.rotary = rotary
        self.impl = "auto"  # attention route: auto | sdpa | bmm | reference (see attention())

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        angles: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """mask: bool, True = attend, broadcastable to (B, nh, T, T_keys); positions (B, T) for
        rotary when rows do not all start at position 0 (left padding); angles: the rotary
        (cos, sin) for these positions, computed once for every layer (`Rotary.angles`)."""
        b, t, _ = x.shape
        hs, nh, n_kv = self.head_size, self.n_head, self.n_kv_head
        # rows of the projection: nh query heads, n_kv key heads, n_kv value heads. Split, not
        # sliced, along the heads before the transpose: split's backward writes the three gradients
        # into one (B, T, heads, hs) buffer, where slices' backward zero-fills a buffer per slice
        # and copies into it (3% of a 6x384 training step).
        heads = linear(self.qkv, x).view(b, t, nh + 2 * n_kv, hs)  # (B, T, heads, hs)
        if self.q_norm is not None:  # normed apart: the two norms' weights differ
            q, k, v = heads.split([nh, n_kv, n_kv], dim=2)
            heads = torch.cat([self.q_norm(q), self.k_norm(k), v], dim=2)
        if self.rotary is not None:  # queries and keys rotated in one go
            qk, v = heads.split([nh + n_kv, n_kv], dim=2)
            if angles is None:
                start = cache.length if cache is not None else 0
                angles = self.rotary.angles(start, t, positions, heads.dtype)
            elif angles[0].dtype != heads.dtype:  # autocast: the projection's dtype, as per layer before
                angles = (angles[0].to(heads.dtype), angles[1].to(heads.dtype))
            q, k = Rotary.rotate(qk.transpose(1, 2), angles).split([nh, n_kv], dim=1)
        else:
            q, k, v = heads.split([nh, n_kv, n_kv], dim=2)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = v.transpose(1, 2)  # q: (B, nh, T, hs); k, v: (B, n_kv, T, hs)
        if self.q_scale != 1.0:
            q = q * self.q_scale
        if cache is not None:
            k, v = cache.update(layer, k, v)  # the cache keeps n_kv heads; attention() groups them
        if self.window and (self.impl == "reference" or t == 1 or k.size(-2) > self.window):
            k, v, mask = self._slide(t, k, v, mask)
        dropout = self.dropout if self.training else 0.0
        y = attention(q, k, v, self.causal, mask, dropout, self.impl, self.softcap)
        return linear(self.proj, y.transpose(1, 2).reshape(b, t, nh * hs))

    def _slide(
        self, t: int, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The keys a sliding-window layer's last t queries may see: a decoding step's last `window`
        keys (no mask to build); for several queries, a band mask on top of the causal one. Windows
        count cache columns, as transformers' do: a row's real tokens are contiguous and end at the
        last column (its padding, masked, on the left), so a column's distance is a position's.
        The reference route (the ONNX graphs') always takes the band mask: one traced graph then
        serves the prompt and each step, inside the window and past it, with no branch on lengths."""
        if self.impl != "reference" and t == 1:  # a step: the last min(length, window) keys
            # (sym_min: a compiled step takes any length)
            start = k.size(-2) - torch.sym_min(k.size(-2), self.window)
            return k[:, :, start:], v[:, :, start:], None if mask is None else mask[..., start:]
        band = window_mask(t, k.size(-2), self.window, k.device)  # (T, T_keys), causal too
        return k, v, band if mask is None else mask & band


class MLP(nn.Module):
    """GELU MLP (4x wide; `gelu_tanh` is GPT-2's approximation), SwiGLU (Llama, ~8/3x wide), GeGLU
    with GELU's tanh approximation on the gate (`geglu_tanh`: Gemma's, as wide as SwiGLU) or a
    plain SiLU MLP (`silu`, 4x wide: Marian's "swish")."""

    def __init__(self, n_embd: int, kind: str, bias: bool, hidden: int = 0) -> None:
        super().__init__()
        self.kind = kind
        if kind in GATED:
            hidden = hidden or 64 * -(-(8 * n_embd // 3) // 64)  # 8/3 C rounded up to a multiple of 64
            self.gate = nn.Linear(n_embd, hidden, bias=bias)
        else:
            hidden = hidden or 4 * n_embd
        self.up = nn.Linear(n_embd, hidden, bias=bias)
        self.down = nn.Linear(hidden, n_embd, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            return linear(self.down, F.silu(linear(self.gate, x)) * linear(self.up, x))
        if self.kind == "geglu_tanh":
            return linear(self.down, F.gelu(linear(self.gate, x), approximate="tanh") * linear(self.up, x))
        if self.kind == "silu":
            return linear(self.down, F.silu(linear(self.up, x)))
        gelu = "tanh" if self.kind == "gelu_tanh" else "none"
        return linear(self.down, F.gelu(linear(self.up, x), approximate=gelu))


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x)). With post_norm (BERT,
    the original Transformer) the norm follows the residual: ln(x + attn(x)), then ln(x + mlp(x)).
    With sandwich_norm (Gemma 2 and 3) each sublayer's output is normed too before the residual add:
    x + ln_attn_out(attn(ln_1(x))), then x + ln_mlp_out(mlp(ln_2(x))). window: the attention's
    sliding window (0: none); attn_softcap: its scores' soft cap (0: none)."""

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        mlp: str,
        bias: bool,
        dropout: float,
        rotary: Rotary | None = None,
        *,
        n_kv_head: int = 0,
        qkv_bias: bool = False,
        norm: str = "layernorm",
        norm_eps: float = 1e-5,
        mlp_hidden: int = 0,
        post_norm: bool = False,
        causal: bool = True,
        head_dim: int = 0,
        qk_norm: bool = False,
        norm_unit_offset: bool = False,
        sandwich_norm: bool = False,
        attn_scale_dim: int = 0,
        attn_softcap: float = 0.0,
        window: int = 0,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.ln_1 = make_norm(norm, n_embd, bias, norm_eps, norm_unit_offset)
        self.attn = SelfAttention(
            n_embd, n_head, bias, dropout, rotary, causal, n_kv_head, qkv_bias, head_dim, qk_norm, norm_eps,
            norm_unit_offset=norm_unit_offset, window=window, scale_dim=attn_scale_dim, softcap=attn_softcap,
        )  # fmt: skip
        self.ln_2 = make_norm(norm, n_embd, bias, norm_eps, norm_unit_offset)
        if sandwich_norm:  # absent otherwise: a model's state dict names what it holds
            self.ln_attn_out = make_norm(norm, n_embd, bias, norm_eps, norm_unit_offset)
            self.ln_mlp_out = make_norm(norm, n_embd, bias, norm_eps, norm_unit_offset)
        self.sandwich = sandwich_norm
        self.mlp = MLP(n_embd, mlp, bias, mlp_hidden)
        self.drop = nn.Dropout(dropout)
        self.checkpoint_activations = False  # recompute in backward (model/checkpointing.py)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        layer: int = 0,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        angles: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """mask: bool, True = attend, broadcastable to (B, nh, T, T_keys) (padding in an encoder
        batch, or a left-padded decoder batch with its per-row positions); angles: see
        SelfAttention. Dropout runs only in training (in eval it is the identity anyway)."""
        return run_block(self, self._forward, x, cache, layer, mask, positions, angles)

    def _forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        mask: torch.Tensor | None,
        positions: torch.Tensor | None,
        angles: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        drop = self.drop if self.training else _identity
        if self.post_norm:
            x = self.ln_1(x + drop(self.attn(x, cache, layer, mask, positions, angles)))
            return self.ln_2(x + drop(self.mlp(x)))
        if self.sandwich:
            x = x + drop(self.ln_attn_out(self.attn(self.ln_1(x), cache, layer, mask, positions, angles)))
            return x + drop(self.ln_mlp_out(self.mlp(self.ln_2(x))))
        x = x + drop(self.attn(self.ln_1(x), cache, layer, mask, positions, angles))
        return x + drop(self.mlp(self.ln_2(x)))


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class CrossAttention(nn.Module):
    """Multi-head attention from a decoder's positions to an encoder's output (the "memory"),
    with a fused key/value projection. The memory's keys and values are computed once per
    source (`memory`) and reused at every decoding step."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.impl = "auto"

    def memory(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """enc (B, S, C) -> keys, values (B, nh, S, hs)."""
        b, s, c = enc.shape
        k, v = linear(self.kv, enc).view(b, s, 2, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        return k.contiguous(), v.contiguous()  # reused every decoding step: copy once, not per step

    def forward(
        self, x: torch.Tensor, memory: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None
    ) -> torch.Tensor:
        """x (B, T, C); memory from `memory()`; mask (B, 1, 1, S) bool, True on real source tokens."""
        b, t, c = x.shape
        q = linear(self.q, x).view(b, t, self.n_head, c // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k, v = memory
        # `auto` picks bmm on the CPU only when T == S; it is also faster here for T != S
        # (measured 3-5% per training step, 3x256 seq2seq, bf16), so cross-attention always uses it.
        impl = "bmm" if self.impl == "auto" and q.is_cpu else self.impl
        y = attention(q, k, v, False, mask, self.dropout if self.training else 0.0, impl)
        return linear(self.proj, y.transpose(1, 2).reshape(b, t, c))
