"""State-dict conversion between Hugging Face's names and layouts and lmforge's, driven by a
`Family` (model/hf.py): `hf_to_lmforge` on import, `lmforge_to_hf` on export.

A family maps modules, so `.weight` and `.bias` follow together; a tuple of HF modules is fused
along the output rows (separate q, k, v projections -> lmforge's one `qkv`; k, v -> a cross-
attention's `kv`) and split again on export; `row_parts` goes the other way (Phi-3's one
gate_up_proj -> lmforge's gate and up). The module "" stands for top-level tensors that keep
their name (Marian's `final_logits_bias`).
"""

from __future__ import annotations

import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import Family


def _plan(family: Family, config: ModelConfig) -> dict[str, str | tuple[str, ...]]:
    """lmforge module path -> HF module path(s), for every layer."""
    plan = dict(family.top)
    for ours_prefix, modules, theirs_prefix in (
        (family.layer_ours, family.layer, family.layer_prefix),
        *family.stacks,
    ):
        for i in range(config.n_layer):
            prefix = theirs_prefix.format(i=i)
            for ours, theirs in modules.items():
                full = tuple(prefix + t for t in theirs) if isinstance(theirs, tuple) else prefix + theirs
                plan[ours_prefix.format(i=i) + ours] = full
    return plan


def _name(module: str, param: str) -> str:
    return f"{module}.{param}" if module else param


def _local(module: str) -> str:
    """`blocks.3.attn.qkv` -> `attn.qkv` (the module's path inside its layer)."""
    return module.split(".", 2)[2] if module.startswith("blocks.") else module


def _split_sizes(config: ModelConfig, parts: int, rows: int) -> list[int]:
    """Rows of each HF module in a fused tensor: q, k, v (grouped-query aware) or equal parts (k, v)."""
    if parts != 3:
        return [rows // parts] * parts
    hs = config.head_size()
    kv = (config.n_kv_head or config.n_head) * hs
    return [config.n_head * hs, kv, kv]


def hf_to_lmforge(
    family: Family,
    config: ModelConfig,
    hf: dict[str, torch.Tensor],
    wanted: dict[str, torch.Tensor],
    file: str,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Build the lmforge state dict `wanted` (name -> tensor of the right shape) from HF tensors.
    Returns (state, HF names left unused). A missing tensor raises, naming it."""
    ours_prefix, alt = family.alt_prefix

    def fetch(name: str) -> torch.Tensor | None:
        if name in hf:
            return hf[name]
        if name.startswith(ours_prefix) and alt + name[len(ours_prefix) :] in hf:  # the other convention
            return hf[alt + name[len(ours_prefix) :]]
        return next((hf[n] for n in family.tied.get(name, ()) if n in hf), None)  # a tied copy

    used: set[int] = set()
    state: dict[str, torch.Tensor] = {}
    plan = _plan(family, config)
    for name, target in wanted.items():
        module, _, param = name.rpartition(".")
        if module == "lm_head" and config.tie_embeddings:
            continue  # tied to wte; HF checkpoints store it once
        if module not in plan:
            if module.split(".")[0] in family.optional:  # a module the family lacks (DistilBERT's pooler)
                continue
            raise LmforgeError(f"{file}: no HF tensor maps to lmforge's {name!r}")
        theirs = plan[module]
        names = [_name(t, param) for t in (theirs if isinstance(theirs, tuple) else (theirs,))]
        parts = [fetch(n) for n in names]
        gone = [n for n, p in zip(names, parts, strict=True) if p is None]
        if gone:
            if module.split(".")[0] in family.optional:
                continue
            why = (  # a ...ForSequenceClassification's decoder has no head of its own unless tied
                " (the language-model head: a decoder's ...ForSequenceClassification has one only"
                " when it is tied to the embeddings)"
                if module == "lm_head"
                else ""
            )
            raise LmforgeError(f"{file}: missing tensor {gone[0]!r}{why}")
        used.update(id(p) for p in parts)
        tensor = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
        if _local(module) in family.row_parts:  # one block of a fused HF module's rows
            i, n = family.row_parts[_local(module)]
            if tensor.size(0) % n:
                raise LmforgeError(
                    f"{file}: tensor {names[0]!r} has {tensor.size(0)} rows, not {n} equal parts"
                )
            tensor = tensor.chunk(n, dim=0)[i]
        if module == "wpe" and family.padded_positions and tensor.size(0) > target.size(0):
            tensor = tensor[tensor.size(0) - target.size(0) :]  # RoBERTa's rows before its first position
        if _local(module) in family.transposed and param == "weight":
            tensor = tensor.t()
        if tensor.shape != target.shape and len(parts) > 1:  # q, k and v fused: name each
            shapes = ", ".join(f"{n} {tuple(t.shape)}" for n, t in zip(names, parts, strict=True))
            raise LmforgeError(
                f"{file}: tensors {shapes} make {tuple(tensor.shape)} together, where the config's head"
                f" counts (attention heads, key-value heads, head size) give {tuple(target.shape)}"
            )
        if tensor.shape != target.shape:
            raise LmforgeError(
                f"{file}: tensor {names[0]!r} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
            )
        state[name] = tensor.contiguous()
    copies = {n for names in family.tied.values() for n in names}  # tied embeddings saved again
    unused = [
        n for n, t in hf.items() if id(t) not in used and n not in copies and not n.endswith(family.ignored)
    ]
    return state, unused


def lmforge_to_hf(
    family: Family, config: ModelConfig, state: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """HF names and layouts for an lmforge state dict (a tied lm_head is left out, as HF saves it)."""
    plan = _plan(family, config)
    out: dict[str, torch.Tensor] = {}
    blocks: dict[str, tuple[int, dict[int, torch.Tensor]]] = {}  # row_parts: (n, an HF tensor's blocks)
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        if module == "lm_head" and config.tie_embeddings:
            continue
        if module not in plan:
            if module.split(".")[0] in family.optional:  # not written (DistilBERT has no pooler)
                continue
            raise LmforgeError(f"lmforge tensor {name!r} has no place in the HF {family.architecture} layout")
        if _local(module) in family.transposed and param == "weight":
            tensor = tensor.t()
        theirs = plan[module]
        if _local(module) in family.row_parts:
            i, n = family.row_parts[_local(module)]
            blocks.setdefault(_name(str(theirs), param), (n, {}))[1][i] = tensor
            continue
        if isinstance(theirs, tuple):
            sizes = _split_sizes(config, len(theirs), tensor.size(0))
            for t, part in zip(theirs, tensor.split(sizes, dim=0), strict=True):
                out[_name(t, param)] = part.contiguous()
        else:
            out[_name(theirs, param)] = tensor.contiguous()
    for hf_name, (n, parts) in blocks.items():
        if len(parts) != n:  # PEFT: an adapter on the gate alone has no place in the fused module
            raise LmforgeError(
                f"{hf_name} fuses {n} lmforge modules in the HF {family.architecture} layout; only"
                f" {len(parts)} given, so it has no exact equivalent there"
            )
        out[hf_name] = torch.cat([parts[i] for i in range(n)], dim=0).contiguous()
    return out
