"""Memory per rank for `lmforge plan`: what each engine and ZeRO stage really holds, read from the
engines (train/engines/), with the keys of summary.json's `memory_per_rank` for the model states.

The dtype rules the engines follow (P parameters, T trainable, N ranks, w = 2 bytes under bf16
autocast, else 4):

| engine | params | grads | optimizer (AdamW) |
|---|---|---|---|
| local, ddp | 4 P (fp32; autocast casts on the fly) | 4 T | 8 S (two fp32 moments) |
| fsdp (FSDP2) | 4 P / N (fp32 shards) | 4 T / N | 8 S / N |
| ZeRO-1 | w P (DeepSpeed keeps the module in bf16) | w T | 12 T / N (fp32 masters + moments) |
| ZeRO-2 | w P | w T / N | 12 T / N |
| ZeRO-3 | w (P / N + K) | w T / N | 12 T / N |

K is the parameters in tensors of at most 100,000 elements, which ZeRO-3 keeps whole on every
rank beside their partition (DeepSpeed's stage3_param_persistence_threshold: norms, biases, a
small model's every weight).
S is the trainable parameters a step gives a gradient: torch's AdamW makes moments for those
only (a trainable weight the step never runs would have a gradient slot and no state; lmforge's
task models freeze theirs, so S = T); DeepSpeed's flat partitions hold every trainable
parameter. DeepSpeed keeps an fp32 master copy even when training in fp32. Offload (DeepSpeed
only) moves the optimizer state, the gradient partitions and the fp32 gradients to the host
(`optimizer`), and at ZeRO-3 the parameter partitions too (`all`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lmforge.config import EngineConfig
from lmforge.config.deepspeed_json import read_user_config
from lmforge.errors import LmforgeError
from lmforge.tools.plan_model import PERSISTENT, Counts, Module

# DeepSpeed's defaults (deepspeed/runtime/zero/config.py), which lmforge's generated config keeps
REDUCE_BUCKET = 500_000_000  # elements: the gradient bucket reduced at once (ZeRO 1-3)
PREFETCH_BUCKET = 50_000_000  # elements: ZeRO-3 gathers this many parameters ahead


@dataclass(frozen=True)
class Buckets:
    """DeepSpeed's sizes in elements: its defaults, or those of the user's JSON."""

    reduce: int = REDUCE_BUCKET
    prefetch: int = PREFETCH_BUCKET
    persistence: int = PERSISTENT  # stage3_param_persistence_threshold


BUCKET_KEYS = {"reduce": "reduce_bucket_size", "prefetch": "stage3_prefetch_bucket_size",
               "persistence": "stage3_param_persistence_threshold"}  # fmt: skip


def buckets(engine: EngineConfig) -> Buckets:
    """The sizes a DeepSpeed run of `engine` uses: engine.deepspeed_config's, where it sets them."""
    if engine.name != "deepspeed" or not engine.deepspeed_config:
        return Buckets()
    file = Path(engine.deepspeed_config)
    zero = read_user_config(file).get("zero_optimization")
    sizes = {}
    for name, key in BUCKET_KEYS.items():
        value = zero.get(key) if isinstance(zero, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**63:
            raise LmforgeError(f"{file}: zero_optimization.{key}={value!r} must be a number of elements >= 0")
        sizes[name] = int(value)
    return Buckets(**sizes)


ENGINES = ("local", "ddp", "fsdp", "zero1", "zero2", "zero3")


@dataclass(frozen=True)
class Setup:
    """One way to run: engine (one of ENGINES), offload (none | optimizer | all), ranks, bytes per
    element of the compute dtype."""

    engine: str
    offload: str
    world_size: int
    width: int
    buckets: Buckets = field(default_factory=Buckets)  # DeepSpeed's (zero1-3)

    @property
    def stage(self) -> int:
        return int(self.engine[-1]) if self.engine.startswith("zero") else 0

    @property
    def label(self) -> str:
        name = f"ZeRO-{self.stage}" if self.stage else self.engine
        return name + ("" if self.offload == "none" else f" + offload {self.offload}")


def setups(world_size: int, width: int, sizes: Buckets = Buckets()) -> list[Setup]:  # frozen: shared
    """Every engine and stage, with and without offload (DeepSpeed's alone offloads)."""
    out = [Setup(e, "none", world_size, width, sizes) for e in ENGINES]
    out += [Setup(f"zero{s}", "optimizer", world_size, width, sizes) for s in (1, 2, 3)]
    return out + [Setup("zero3", "all", world_size, width, sizes)]


def model_states(counts: Counts, s: Setup) -> dict[str, int]:
    """Bytes one rank holds for params, grads and optimizer state: what the engine's memory()
    reports after the first step (summary.json's memory_per_rank)."""
    p, t, n, w = counts.params, counts.trainable, s.world_size, s.width
    if s.engine in ("local", "ddp"):
        return {"params": 4 * p, "grads": 4 * t, "optimizer": 8 * counts.stepped}
    if s.engine == "fsdp":
        return {"params": 4 * -(-p // n), "grads": 4 * -(-t // n), "optimizer": 8 * -(-counts.stepped // n)}
    return {
        "params": w * (p if s.stage < 3 else -(-p // n) + counts.persistent),
        "grads": w * t // (1 if s.stage == 1 else n),
        "optimizer": 12 * -(-t // n),
    }


def on_host(s: Setup) -> set[str]:
    """The model states an offloading DeepSpeed keeps in host RAM rather than on the device."""
    if s.offload == "none":
        return set()
    return {"grads", "optimizer"} | ({"params"} if s.offload == "all" else set())


def fsdp_units(modules: list[Module]) -> list[int]:
    """Parameters per FSDP2 unit: a block (engines/fsdp.py shards every ModuleList entry; the
    blocks are identical, listed once as `blocks.*`) and the root (embeddings, final norm, output
    layer)."""
    units: dict[str, int] = {}
    for m in modules:
        if m.shared:
            continue
        parts = m.name.split(".")
        key = ".".join(parts[: parts.index("blocks") + 2]) if "blocks" in parts else "root"
        units[key] = units.get(key, 0) + m.params
    return list(units.values())


def buffers(counts: Counts, modules: list[Module], s: Setup, gpu: bool) -> dict[str, tuple[int, bool]]:
    """Temporary buffers one rank allocates during a step: name -> (bytes, on the host)."""
    p, t, n, w = counts.params, counts.trainable, s.world_size, s.width
    out: dict[str, tuple[int, bool]] = {}
    if s.engine == "ddp":  # the reducer's buckets: a second copy of the fp32 gradients
        out["ddp_buckets"] = (4 * t, False)
    if s.engine == "fsdp":  # a unit gathered (and the next prefetched) in the compute dtype,
        unit = max(fsdp_units(modules))  # and its unsharded gradient in fp32 before reduce-scatter
        out["gathered_units"] = (2 * unit * w + unit * 4, False)
    if s.stage:
        # the fp32 gradient partition the optimizer steps on; on a GPU DeepSpeed allocates the whole
        # reduce bucket up front, on a CPU only its touched pages count
        out["fp32_grads"] = (4 * -(-t // n), s.offload != "none")
        bucket = s.buckets.reduce
        out["reduce_bucket"] = ((bucket if gpu else min(bucket, t)) * w, False)
    if s.stage == 3:
        # the largest module gathered with its gradient (DeepSpeed's "4 x largest layer" in bf16),
        # and the parameters prefetched ahead of it
        out["gathered_layer"] = (2 * counts.largest_module * w, False)
        out["prefetch"] = (min(s.buckets.prefetch, p) * w, False)
    return out


def after_the_loss(s: Setup) -> set[str]:
    """Buffers that never meet the loss's backward gradients: DeepSpeed allocates ZeRO-1/2's reduce
    bucket at the first parameter's gradient and frees it after backward (`setup_buckets`,
    `_release_ipg_buffers` in runtime/zero/stage_1_and_2.py; ZeRO-3 allocates its own at start), and
    every stage's fp32 gradient partition in the step. On an H200, adding them to the loss's
    gradients planned a ZeRO-2 GPT-2 16% over its measured peak (docs/plan.md)."""
    if not s.stage:
        return set()
    return {"fp32_grads"} | ({"reduce_bucket"} if s.stage in (1, 2) else set())


def checkpoint_bytes(counts: Counts) -> int:
    """Rank 0 gathers the full fp32 weights and AdamW moments on the host to write a checkpoint
    (engines/state.py)."""
    return 4 * counts.params + 8 * counts.trainable


# A private step's activations over a plain one's: measured on the CPU (2-core EPYC, fp32, five
# GPTs of 2-4 layers, 128-512 wide, context 16-256, micro-batch 8-32; docs/plan.md), torch.func's
# vmap(grad) kept 1.3-1.9 times the activations autograd keeps in a plain backward; 2 plans the
# peak 2% to 10% over the measured RSS (with the per-example gradients and the clipped sums).
DP_ACTIVATIONS = 2


def private_step(one: dict[str, int], counts: Counts) -> dict[str, int]:
    """Per example under DP-SGD (train/privacy.py, the local engine only): the activations of
    vmap(grad) (DP_ACTIVATIONS times a plain step's), and the example's own gradient of every
    trained parameter, all held at once when the backward ends, in fp32 (the parameters' dtype,
    under bf16 autocast too)."""
    return {**{k: DP_ACTIVATIONS * v for k, v in one.items()}, "per_example_grads": 4 * counts.trainable}
