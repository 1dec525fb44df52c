"""Run a model once and keep what it computed inside: attention probabilities and the residual stream.

Attention comes from `model.attention.capture_attention()` (the reference formula, on for this one
forward only); the residual stream from forward hooks on the blocks: the input of the first block
(the embeddings) and the output of every block. Nothing of the model is changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.model.attention import capture_attention
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.layers import CrossAttention, SelfAttention, linear
from lmforge.model.seq2seq import Seq2Seq


@dataclass
class Captured:
    """attention: map name -> (L, nh, Tq, Tk) fp32 ("self" for a GPT or an encoder; "encoder",
    "decoder" and "cross" for an encoder-decoder); residual: (L + 1, T, C), the embeddings then
    each block's output, of the decoder (None for an encoder); logits (T, vocab) or None."""

    attention: dict[str, torch.Tensor]
    residual: torch.Tensor | None
    logits: torch.Tensor | None


def map_name(module_name: str) -> str:
    """Which attention map a module's probabilities belong to ("decoder.blocks.3.cross" -> "cross")."""
    if module_name.endswith("cross"):
        return "cross"
    stack = module_name.split(".")[0]
    return stack if stack in ("encoder", "decoder") else "self"


@contextmanager
def _recorded(model: nn.Module, blocks: nn.ModuleList | None) -> Iterator[tuple[dict, list]]:
    """Hooks for one forward: yields (attention probs by map name, the residual states (1, T, C))."""
    maps: dict[str, list[torch.Tensor]] = {}
    residual: list[torch.Tensor] = []
    handles = []
    with capture_attention() as probs:
        for name, module in model.named_modules():
            if isinstance(module, SelfAttention | CrossAttention):
                # each attention module calls attention() once: the newest entry is its own
                def keep(_m: nn.Module, _a: tuple, _o: torch.Tensor, name: str = name) -> None:
                    maps.setdefault(map_name(name), []).append(probs[-1][0])  # (nh, Tq, Tk)

                handles.append(module.register_forward_hook(keep))
        if blocks is not None:
            handles.append(blocks[0].register_forward_pre_hook(lambda _m, a: residual.append(a[0].detach())))
            for block in blocks:
                handles.append(block.register_forward_hook(lambda _m, _a, o: residual.append(o.detach())))
        try:
            yield maps, residual
        finally:
            for handle in handles:
                handle.remove()


def _stack(maps: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.stack(layers) for name, layers in maps.items()}  # (L, nh, Tq, Tk)


@torch.no_grad()
def capture(model: nn.Module, ids: list[int], source: list[int] | None = None) -> Captured:
    """One forward of `ids` (a GPT's text, an encoder's text, or an encoder-decoder's decoder
    inputs for `source`), batch of one, with attention and the residual stream recorded."""
    x = torch.tensor([ids], dtype=torch.long, device=_device(model))  # (1, T)
    if isinstance(model, Seq2Seq):
        src = torch.tensor([source or []], dtype=torch.long, device=x.device)  # (1, S)
        with _recorded(model, model.decoder.blocks) as (maps, residual):
            logits = model(src, x)[0]
        return Captured(_stack(maps), torch.cat(residual).float(), logits.float())
    if isinstance(model, GPT):
        with _recorded(model, model.blocks) as (maps, residual):
            logits = model(x)[0]
        return Captured(_stack(maps), torch.cat(residual).float(), logits.float())
    if isinstance(model, Encoder):
        with _recorded(model, None) as (maps, _):
            model(x)
        return Captured(_stack(maps), None, None)
    raise TypeError(f"cannot inspect a {type(model).__name__}")


def unembedding(model: GPT | Seq2Seq) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's last step as a function of the residual stream: final norm, then the output
    projection (and Marian's fixed logits bias), (..., C) -> (..., vocab), computed as the model does."""
    weight = next(model.parameters())
    if isinstance(model, Seq2Seq):
        norm, bias = model.decoder.ln_f, model.final_logits_bias

        def seq2seq_head(h: torch.Tensor) -> torch.Tensor:
            logits = model.lm_head(norm(h.to(weight.dtype)))
            return (logits if bias is None else logits + bias).float()

        return seq2seq_head
    return lambda h: model.cap_logits(linear(model.lm_head, model.ln_f(h.to(weight.dtype)))).float()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
