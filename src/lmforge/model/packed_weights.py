"""Weights packed once into oneDNN's blocked layout, kept beside their layers (model/kernels.py's
bf16 route and fp32 `packed` route run oneDNN's kernel on them; given a weight in PyTorch's layout
the kernel reorders it at every call).

A packed copy is a second copy of the weight in memory while the model runs. Only layers of models
an inference entry point marked (kernels.for_inference) keep one: a model being trained never does,
since an engine may rewrite a weight through .data (DeepSpeed's bf16 compute copies after each
step), which moves no version counter, so a packed copy would go stale.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

# layer -> ((weight's address, version), its packed copy): beside the layer, not on it, so that
# deepcopy, state_dict and .to() never see an opaque oneDNN tensor; it goes with the layer.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
# The layers allowed a packed copy: those of models an inference entry point (generate, chat, serve,
# ask, the pipelines, translate, eval) put in their dtype with kernels.for_inference.
_FOR_INFERENCE: weakref.WeakSet[nn.Linear] = weakref.WeakSet()


def mark(layers: object) -> None:
    """Allow these nn.Linear layers a packed copy."""
    _FOR_INFERENCE.update(layers)  # type: ignore[arg-type]


def packable(layer: nn.Linear) -> bool:
    return layer in _FOR_INFERENCE


def packed_weight(layer: nn.Linear) -> torch.Tensor:
    """`layer`'s weight (bf16 or fp32) in oneDNN's blocked layout, packed at the first call and again
    whenever the weight is replaced or changed in place (its version counter moves)."""
    w = layer.weight
    key = (w.data_ptr(), -1 if w.is_inference() else w._version)  # inference tensors have no version
    cached = _PACKED.get(layer)
    if cached is None or cached[0] != key:
        cached = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), None))
        _PACKED[layer] = cached
    return cached[1]


def packed_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """F.linear(x, layer.weight, layer.bias) by oneDNN's kernel on the packed weight."""
    return torch.ops.mkldnn._linear_pointwise(x, packed_weight(layer), layer.bias, "none", [], "")
