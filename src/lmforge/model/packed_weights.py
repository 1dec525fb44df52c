"""Weights packed once into oneDNN's blocked layout, kept beside their layers (model/kernels.py's
bf16 route and fp32 `packed` route run oneDNN's kernel on them; given a weight in PyTorch's layout
the kernel reorders it at every call).

A packed copy is a second copy of the weight in memory while the model runs. Only layers of models
an inference entry point marked (kernels.for_inference) keep one: a model being trained never does,
since an engine may rewrite a weight through .data (DeepSpeed's bf16 compute copies after each
step), which moves no version counter, so a packed copy would go stale. A copy is made again when
the weight is replaced or changed in place (its address or version counter moves); a marked
model's weights changed through `.data` (unseen) need `forget(model)`. Weights that are inference
tensors (made under torch.inference_mode) have no version counter, so they are never packed.

On the fp32 route, a layer is packed at its PACK_AFTER-th product of two rows or more: packing
SmolLM2's 1536 x 576 weight took 1.4 ms and its head 79 ms, about what 13-14 eight-row products
then save (0.33 against 0.22 ms, 13.3 against 7.8; a 2-core AVX2-only EPYC), so a one-shot
generate's prefill (one product a layer) does not double the model's memory. Until then the layer
runs oneDNN's kernel on its weight as it is: from two rows the same sums, bit for bit. One row (where
the two differ) is packed at once.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

PACK_AFTER = 16  # fp32 products of two rows or more a layer makes on its weight as it is first

# layer -> ((weight's address, version), the weight, its packed copy): beside the layer, not on it,
# so that deepcopy, state_dict and .to() never see an opaque oneDNN tensor; it goes with the layer.
# The weight is held so that its memory is not freed while the entry stands: a new weight put at
# the old one's address, with the same version, would have matched the old copy.
_PACKED: weakref.WeakKeyDictionary[nn.Linear, tuple[tuple[int, int], torch.Tensor, torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)
_USES: weakref.WeakKeyDictionary[nn.Linear, int] = weakref.WeakKeyDictionary()  # fp32, before packing
# The layers allowed a packed copy: those of models an inference entry point (generate, chat, serve,
# ask, the pipelines, translate, eval) put in their dtype with kernels.for_inference.
_FOR_INFERENCE: weakref.WeakSet[nn.Linear] = weakref.WeakSet()


def mark(layers: object) -> None:
    """Allow these nn.Linear layers a packed copy."""
    _FOR_INFERENCE.update(layers)  # type: ignore[arg-type]


def packable(layer: nn.Linear) -> bool:
    """Whether `layer` may keep a packed copy: marked, and its weight not an inference tensor."""
    # read from the layer's own table: at every product of a decoding step (layers.linear)
    return layer in _FOR_INFERENCE and not layer._parameters["weight"].is_inference()


def forget(net: nn.Module) -> None:
    """Drop the packed copies of `net`'s layers (after changing its weights through `.data`)."""
    for m in net.modules():
        _PACKED.pop(m, None)  # type: ignore[call-overload]
        _USES.pop(m, None)  # type: ignore[call-overload]


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) by oneDNN's kernel; `weight` as it is or packed."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def packed_weight(layer: nn.Linear) -> torch.Tensor:
    """`layer`'s weight (bf16 or fp32) in oneDNN's blocked layout, packed at the first call and again
    whenever the weight is replaced or changed in place (its version counter moves)."""
    w = layer.weight
    # an inference tensor (a probe's layer made under inference_mode) has no version counter; no
    # model's layer with one takes this route (packable)
    key = (w.data_ptr(), -1 if w.is_inference() else w._version)
    cached = _PACKED.get(layer)
    if cached is None or cached[0] != key:
        held = w.detach()
        cached = (key, held, torch.ops.mkldnn._reorder_linear_weight(held, None))
        _PACKED[layer] = cached
    return cached[2]


def packed_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """F.linear(x, layer.weight, layer.bias) by oneDNN's kernel on the packed weight."""
    return onednn_linear(x, packed_weight(layer), layer.bias)


def packed_when_used(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """The fp32 `packed` route: packed_linear, once the layer has made PACK_AFTER products of two
    rows or more (before, oneDNN's kernel on the weight as it is), and at once for one row."""
    if layer not in _PACKED and x.numel() != x.size(-1):
        uses = _USES.get(layer, 0) + 1
        _USES[layer] = uses
        if uses < PACK_AFTER:
            return onednn_linear(x, layer.weight, layer.bias)
    return packed_linear(x, layer)
