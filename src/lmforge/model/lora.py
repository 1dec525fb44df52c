"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models"), as PEFT makes it.

`inject` freezes a model and replaces each targeted nn.Linear by a `LoRALinear`: the same weight
and bias Parameters (same names, so the base's state dict still loads) plus, for each adapted
*slice* of its output rows, a pair A (r x in), B (rows x r):

    y = x W^T + b,   y[..., slice] += scaling * dropout(x) A^T B^T,   scaling = alpha / r

A fused projection (attn.qkv: q, k, v rows) keeps one pair per targeted slice, so q, k and v each
export as PEFT's own q_proj / k_proj / v_proj adapter, exactly. Init as PEFT: A kaiming-uniform
(a=sqrt(5)), B zeros, so an injected model starts as its base. `merge` adds scaling * B A into W
(the adapters then stop adding), `unmerge` subtracts it again; `strip` turns merged LoRALinears
back into plain Linears. The model code knows nothing of this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import LORA_TARGETS, LoraConfig
from lmforge.errors import LmforgeError


@dataclass(frozen=True)
class Slice:
    name: str  # q, k, v (rows of a fused qkv) or all
    start: int
    rows: int


class LoRALinear(nn.Linear):
    """An nn.Linear with LoRA pairs on some slices of its output rows (lora_A.<slice>, lora_B.<slice>)."""

    def __init__(self, base: nn.Linear, slices: list[Slice], adapted: list[str], spec: LoraConfig) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the base's own Parameters, frozen
        self.register_parameter("bias", base.bias)
        self.slices = slices
        self.rank, self.scaling = spec.rank, spec.alpha / spec.rank
        self.merged = False
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        device, dtype = base.weight.device, base.weight.dtype
        for s in slices:
            if s.name in adapted:
                a = torch.empty(spec.rank, self.in_features, device=device, dtype=dtype)
                nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # PEFT's init of lora_A (nn.Linear's)
                self.lora_A[s.name] = nn.Parameter(a)
                self.lora_B[s.name] = nn.Parameter(torch.zeros(s.rows, spec.rank, device=device, dtype=dtype))
        self.drop = nn.Dropout(spec.dropout) if spec.dropout > 0 else nn.Identity()

    def delta(self, name: str) -> torch.Tensor:
        """scaling * B A for one slice: (rows, in)."""
        return (self.lora_B[name] @ self.lora_A[name]) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        parts = []
        for s in self.slices:
            if s.name in self.lora_A:  # (B, T, in) -> (B, T, r) -> (B, T, rows)
                h = F.linear(F.linear(self.drop(x), self.lora_A[s.name]), self.lora_B[s.name])
                parts.append(h * self.scaling)
            else:
                parts.append(y.new_zeros(*y.shape[:-1], s.rows))
        return y + (torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0])

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self._add(1.0)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self._add(-1.0)
            self.merged = False

    def _add(self, sign: float) -> None:
        for s in self.slices:
            if s.name in self.lora_A:
                rows = self.weight[s.start : s.start + s.rows]
                rows += sign * self.delta(s.name).to(rows.dtype)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lora r={self.rank} on {', '.join(self.lora_A)}"


def target_names(spec: LoraConfig) -> list[str]:
    return [n.strip() for n in spec.targets.split(",") if n.strip()]


def _slices(parent: nn.Module, module_path: str, linear: nn.Linear) -> list[Slice]:
    """The output-row slices of a targeted Linear: q, k, v for a fused qkv (grouped-query aware),
    k, v for cross-attention's fused kv."""
    if module_path.endswith("cross.kv"):
        half = linear.out_features // 2
        return [Slice("k", 0, half), Slice("v", half, half)]
    if not module_path.endswith("attn.qkv"):
        return [Slice("all", 0, linear.out_features)]
    hs = parent.head_size
    q, kv = parent.n_head * hs, parent.n_kv_head * hs
    return [Slice("q", 0, q), Slice("k", q, kv), Slice("v", q + kv, kv)]


def plan(model: nn.Module, spec: LoraConfig, cross: bool = True) -> dict[str, list[str]]:
    """Module path -> the slices to adapt, for every block of the model; an unknown or unmatched
    target is a one-line error naming it. A Hugging Face name matches self-attention everywhere
    and, in an encoder-decoder, cross-attention too, unless `cross` is False: adapters saved
    before lmforge put any on cross-attention (see `saved_with_cross`) are loaded as they were."""
    wanted: dict[str, set[str]] = {}
    for name in target_names(spec):
        if name not in LORA_TARGETS:
            raise LmforgeError(f"lora.targets: unknown module {name!r} (known: {', '.join(LORA_TARGETS)})")
        found = False
        for local, slices in LORA_TARGETS[name]:
            if not cross and local.startswith("cross."):
                continue
            for path, module in model.named_modules():
                if isinstance(module, nn.Linear) and (path == local or path.endswith("." + local)):
                    wanted.setdefault(path, set()).update(slices)
                    found = True
        if not found:
            where = " or ".join(local for local, _ in LORA_TARGETS[name])
            raise LmforgeError(
                f"lora.targets: {name!r} matches no module of this {type(model).__name__} (no {where})"
            )
    order = ("q", "k", "v", "all")
    return {path: sorted(s, key=order.index) for path, s in wanted.items()}


def saved_with_cross(names: Iterable[str]) -> bool:
    """Whether adapters saved under these tensor names may have cross-attention ones: False for a
    translation run's adapters from before 2026-12-03, when q_proj/v_proj stopped at
    self-attention (their lora.json names the same targets, so the weights tell)."""
    names = list(names)
    return not any(".lora_" in n for n in names) or any(".cross." in n for n in names if ".lora_" in n)


def inject(model: nn.Module, spec: LoraConfig, cross: bool = True) -> nn.Module:
    """Freeze `model` and put LoRA pairs on spec.targets in every block (in place; returns it).
    Modules named in spec.also_train (e.g. `head`) stay trainable whole. A is drawn from torch's
    global RNG: seed before calling for a reproducible start. `cross`: see `plan`."""
    targets = plan(model, spec, cross)
    placed = []  # (parent, leaf, linear, slices, adapted), all checked before the model changes
    for path, adapted in targets.items():
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        linear = getattr(parent, leaf)
        if isinstance(linear, LoRALinear):
            raise LmforgeError(f"{path}: already has LoRA adapters")
        slices = _slices(parent, path, linear)
        full = min([linear.in_features] + [s.rows for s in slices if s.name in adapted])
        if spec.rank > full:  # B A cannot exceed that rank: a larger r only adds parameters
            raise LmforgeError(
                f"lora.rank={spec.rank} is above the full rank of {path} ({full}: min of its inputs and"
                f" adapted outputs), so the extra rank adds parameters and nothing else; use at most {full}"
            )
        placed.append((parent, leaf, linear, slices, adapted))
    model.requires_grad_(False)
    for parent, leaf, linear, slices, adapted in placed:
        setattr(parent, leaf, LoRALinear(linear, slices, adapted, spec))
    for name in (n.strip() for n in spec.also_train.split(",") if n.strip()):
        try:
            model.get_submodule(name).requires_grad_(True)
        except AttributeError:
            top = ", ".join(n for n, _ in model.named_children())  # what a user can name at the top
            raise LmforgeError(
                f"lora.also_train: no module {name!r} in this {type(model).__name__} (its modules: {top};"
                " deeper ones by dotted path)"
            ) from None
    return model


def require_trained(spec: LoraConfig, module: str, what: str) -> None:
    """Refuse adapters-only training where `module` is a task's new head: frozen, it would stay as
    drawn, and the run would train adapters against a random projection (PEFT's task types put
    such heads in modules_to_save for the same reason)."""
    if spec.enabled and module not in (n.strip() for n in spec.also_train.split(",")):
        raise LmforgeError(
            f"lora.enabled: {what} is new and would stay random and frozen;"
            f" add it to lora.also_train (--lora.also_train={module})"
        )


def lora_modules(model: nn.Module) -> dict[str, LoRALinear]:
    return {path: m for path, m in model.named_modules() if isinstance(m, LoRALinear)}


def merge(model: nn.Module) -> None:
    """Fold every adapter into its base weight (forward then skips the adapters)."""
    for module in lora_modules(model).values():
        module.merge()


def unmerge(model: nn.Module) -> None:
    """Take every merged adapter back out of its base weight."""
    for module in lora_modules(model).values():
        module.unmerge()


def strip(model: nn.Module) -> nn.Module:
    """Merge, then replace every LoRALinear by a plain nn.Linear holding the merged weight: the
    model as its own family writes and loads it (in place; returns it)."""
    merge(model)
    for path, module in lora_modules(model).items():
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        plain = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        plain.weight, plain.bias = module.weight, module.bias
        setattr(parent, leaf, plain)
    return model


def trainable_names(model: nn.Module) -> list[str]:
    """The parameters that train: the adapters and lora.also_train's modules."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def count(model: nn.Module) -> tuple[int, int]:
    """(trainable parameters, all parameters)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)
