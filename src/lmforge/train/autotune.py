"""The training step's kernels, chosen by measurement on this machine.

Three choices change a CPU's training speed and none has a rule that holds on every CPU
(benchmarks/README.md): the compute dtype (fp32, or bf16 autocast where the CPU has bf16 units),
the attention route over whole sequences (two batched matmuls with an additive mask, or PyTorch's
fused `scaled_dot_product_attention`) and AdamW's implementation (one fused kernel, or foreach).
At start each candidate dtype x route runs the forward and backward of the run's own first
micro-batch (a warm-up round, then up to ROUNDS timed rounds as PROBE_S allows, the candidates
taking turns so that load from elsewhere hits them alike), and both AdamWs step copies of the
trainable tensors. A candidate replaces the fixed rule's choice only when, in the median round, it
is MARGIN faster than the rule's choice timed beside it: a shared machine's throughput swings 2x
from one second to the next, and one lucky round must not decide a choice the cache then keeps
for every later run. When the two fastest both beat it and are within RUNOFF of each other (bf16
with `bmm` or with `sdpa`, often 5-15% apart), the median of a few rounds beside a much slower
third says little about which is faster: the two are timed again on their own, in turns, and
the median of their paired rounds decides. The probe restores the random state and the data
position: the run trains as if it had not happened.

A fourth, compiling the forward with torch.compile, is measured in the same way where it can
serve the run and the run is long enough to pay for it (train/compiling.py).

Ranks sum their timings, so every rank makes the same choice. The answer is cached (tuning.py)
and saved in checkpoints: a resumed run keeps the kernels it started with, so it continues exactly.
`LMFORGE_AUTOTUNE=0`, or a GPU, keeps the fixed rules; so does `[privacy] enabled` on the CPU, with
the bmm route: DP-SGD's per-example gradients run under torch.func.vmap (train/privacy.py), which
has no batching rule for the CPU's fused sdpa kernel (it falls back to a slow loop, with a warning),
and the probe's plain forward and backward would not time the step the run takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmforge import tuning
from lmforge.config import Config
from lmforge.errors import LmforgeError
from lmforge.hardware import cpu_has_bf16, resolve_dtype
from lmforge.model.attention import SEQUENCE_ROUTES, set_sequence_route
from lmforge.train import compiling
from lmforge.train.engines.base import Engine
from lmforge.train.tasks.base import Task

MARGIN = 1.05  # a candidate must be this much faster than the rule's choice to replace it
RUNOFF = 1.10  # two candidates that both beat the rule's choice, this close, are timed again alone
ROUNDS = 5  # timed rounds at most: the median of five paired ratios outvotes two lucky rounds
PROBE_S = 10.0  # seconds of timed rounds aimed at (at least one round)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PRIVATE_WHY = (
    "privacy.enabled: DP-SGD's per-example gradients (torch.func.vmap) batch the bmm route; sdpa's"
    " CPU kernel has no vmap batching rule and would run example by example, so nothing is measured"
)
CHOICES = ("dtype", "attention", "adamw")  # what a checkpoint and the cache keep of StepKernels
# ... and `compile`, which checkpoints and cache entries from before it lack (then: not compiled)


@dataclass(frozen=True)
class StepKernels:
    dtype: str  # fp32 | bf16
    attention: str  # bmm | sdpa: the CPU route over whole sequences
    adamw: str  # fused | foreach
    why: str  # how they were chosen, for the start-up lines
    compile: bool = False  # the training forward under torch.compile (train/compiling.py)

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def apply(self) -> None:
        set_sequence_route(self.attention)

    def describe(self) -> str:
        autocast = "bf16 autocast" if self.dtype == "bf16" else "fp32"
        compiled = ", torch.compile" if self.compile else ""
        return f"{autocast}, {self.attention} attention, {self.adamw} AdamW{compiled} ({self.why})"

    def saved(self) -> dict[str, str | bool]:
        return {**{k: getattr(self, k) for k in CHOICES}, "compile": self.compile}


def choose_kernels(
    cfg: Config, model: nn.Module, task: Task, engine: Engine, saved: dict | None, compilable: bool = False
) -> StepKernels:
    """The kernels this run trains with: a resumed run's saved ones, else the cache's, else measured;
    compiled as train.compile says (`auto`: as measured or resumed). compilable: one compiled graph
    could serve the run (train/compiling.py says where)."""
    setting = cfg.train.compile
    if setting == "on" and not compilable:  # the config refuses the other reasons (engine, privacy)
        raise LmforgeError(
            f"train.compile='on': data.task={cfg.data.task!r} pads its batches to varying widths,"
            " and each width would compile anew (use train.compile=auto or off)"
        )
    kernels = _choose_kernels(cfg, model, task, engine, saved, compilable and setting == "auto")
    if setting == "auto" or kernels.compile == (setting == "on"):
        return kernels
    why = f"{kernels.why}; {'' if setting == 'on' else 'not '}compiled: train.compile={setting}"
    return dataclasses.replace(kernels, compile=setting == "on", why=why)


def _choose_kernels(
    cfg: Config, model: nn.Module, task: Task, engine: Engine, saved: dict | None, compilable: bool
) -> StepKernels:
    t = cfg.train
    rule_dtype, rule_why = resolve_dtype(t.dtype, cfg.model, task.micro_batch_tokens(), engine.device)
    rule = StepKernels("bf16" if rule_dtype == torch.bfloat16 else "fp32", "bmm", "fused", rule_why)
    private = cfg.privacy.enabled and engine.device.type == "cpu"
    if saved and (t.dtype == "auto" or saved.get("dtype") == rule.dtype):
        compiled = saved.get("compile", False) and compilable
        kernels = StepKernels(**(saved | {"compile": compiled}), why="as the checkpoint this run resumes")
        if private and kernels.attention != "bmm":  # saved before privacy runs kept to bmm
            why = f"{kernels.why}, but bmm attention: {PRIVATE_WHY}"
            return dataclasses.replace(kernels, attention="bmm", why=why)
        return kernels
    if engine.device.type != "cpu":
        return StepKernels(rule.dtype, "sdpa", "fused", rule_why)
    if private:  # no probe, no cache: the probe times the plain step, and the cache serves plain runs
        return StepKernels(rule.dtype, "bmm", "fused", f"fixed rules, {PRIVATE_WHY}; dtype: {rule_why}")
    if not tuning.enabled():
        return StepKernels(rule.dtype, "bmm", "fused", f"fixed rules, LMFORGE_AUTOTUNE=0; dtype: {rule_why}")
    dtypes = ["fp32", "bf16"] if t.dtype == "auto" and cpu_has_bf16() else [rule.dtype]
    batch, micro_batches = _first_micro_batch(task)
    shape = _shape_key(model, batch, dtypes) + (", checkpointed" if t.activation_checkpointing else "")
    cached = tuning.lookup("train", shape)
    # every rank takes the cache or every rank probes: a rank with no valid entry probes with the rest
    usable = _count(cached is not None and _valid(cached, dtypes), engine) == engine.world_size
    if cached is not None and usable:
        entry = dict(cached)
        kernels = StepKernels(**{k: cached[k] for k in CHOICES}, why=tuning.earlier(cached))
    else:
        with _untouched():
            chosen, step_s = measure(model, batch, task.loss, dtypes, rule.dtype, engine)
        entry = {**chosen.saved(), "measured": chosen.why, "micro_batch_s": step_s}
        del entry["compile"]  # not measured yet
        kernels = dataclasses.replace(chosen, why=f"measured at start: {chosen.why}")
    if compilable:
        kernels = _choose_compile(cfg, model, batch, task.loss, kernels, entry, micro_batches, engine)
    if engine.rank == 0 and entry != cached:
        tuning.update("train", shape, functools.partial(_merged, entry))
    return kernels


def _merged(entry: dict, now: dict) -> dict:
    """entry, keeping what another run remembered meanwhile (its compile verdict) where that run's
    kernels are entry's: a verdict measured on other kernels does not carry over."""
    same_kernels = all(now.get(k) == entry[k] for k in CHOICES)
    return {**now, **entry} if same_kernels else entry


def _choose_compile(
    cfg: Config,
    model: nn.Module,
    batch: tuple[torch.Tensor, ...],
    loss: Callable[..., torch.Tensor],
    kernels: StepKernels,
    entry: dict,
    micro_batches: int,
    engine: Engine,
) -> StepKernels:
    """kernels, compiled when that was measured MARGIN faster here, now or before (`entry`, the
    cache's, updated with what is measured now), and the run is expected to take
    compiling.MIN_RUN_S or more of eager steps (train/compiling.py). Every branch is taken by
    every rank together: each question is answered by a sum over ranks."""
    t = cfg.train
    if not isinstance(entry.get("micro_batch_s"), float):  # a cache entry from before compile was tried
        timed = functools.partial(compiling.micro_batch_s, model, batch, loss, kernels.dtype)
        with _untouched():  # the better of two: the first warms up
            own = min(timed(kernels.attention), timed(kernels.attention))
        entry["micro_batch_s"] = engine.mean({"s": own})["s"]
    run_s = compiling.expected_run_s(entry["micro_batch_s"], micro_batches, t.max_steps, t.max_minutes)
    run_s = engine.mean({"s": run_s})["s"]  # ranks with other caches agree
    if run_s < compiling.MIN_RUN_S:
        short = f"not compiled: {run_s:.0f} s of eager steps expected, under {compiling.MIN_RUN_S:.0f}"
        return dataclasses.replace(kernels, why=f"{kernels.why}; {short}")
    known = isinstance(entry.get("compile"), bool) and isinstance(entry.get("compiled"), str)
    if _count(known, engine) == engine.world_size:  # every rank remembers: compile where all say faster
        faster = _count(entry["compile"], engine) == engine.world_size
        why = f"{kernels.why}; {'' if faster else 'not '}compiled: {entry['compiled']}"
        return dataclasses.replace(kernels, compile=faster, why=why)
    failure = ""
    with _untouched():
        try:
            times = compiling.measure(model, batch, loss, kernels.dtype, kernels.attention)
        except Exception as err:  # noqa: BLE001 - inductor's errors share no base class; eager still works
            times, failure = {}, f"torch.compile failed here ({type(err).__name__})"
    if _count(bool(failure), engine):  # one rank's failure keeps every rank eager
        faster, timings = False, failure or "torch.compile failed on another rank"
    else:
        faster, timings = compiling.verdict(engine.mean(times))
    entry.update(compile=faster, compiled=timings)
    why = f"{kernels.why}; {'' if faster else 'not '}compiled, measured at start: {timings}"
    return dataclasses.replace(kernels, compile=faster, why=why)


def _count(flag: bool, engine: Engine) -> int:
    """How many ranks say `flag` (one process: 1 or 0)."""
    return round(engine.summed({"ranks": float(flag)})["ranks"])


def compiled_module(module: nn.Module, task: Task, kernels: StepKernels) -> nn.Module:
    """The module the training loss calls: torch.compile(module) compiled now on the first
    micro-batch, the random state and data position untouched, when kernels.compile (only ever on
    compiling.ENGINES: the model itself, its DDP wrapper, or the FSDP2-sharded model); else module."""
    if not kernels.compile:
        return module
    device = next(module.parameters()).device
    batch = tuple(tensor.to(device) for tensor in _first_micro_batch(task)[0])
    with _untouched(device):
        return compiling.compiled_step(module, batch, task.loss, kernels.dtype, kernels.attention)


def measure(
    model: nn.Module,
    batch: tuple[torch.Tensor, ...],
    loss: Callable[..., torch.Tensor],
    dtypes: list[str],
    prior_dtype: str,
    engine: Engine,
) -> tuple[StepKernels, float]:
    """Time every dtype x route on `batch` (loss(model, *batch) -> a scalar) and both AdamWs;
    a route and dtype replace (prior_dtype, bmm) when MARGIN faster in the median round, each
    round timed beside it, the ranks' timings summed; foreach replaces fused AdamW when MARGIN
    faster. Two candidates that both replace it, within RUNOFF of each other, are timed again
    alone and the faster in their median round is taken. Returns the kernels (`why` lists each
    candidate's best round, the ranks' mean) and the seconds of one micro-batch with them."""
    candidates = [(d, a) for d in dtypes for a in SEQUENCE_ROUTES]
    rounds = _time_steps(model, batch, loss, candidates, engine)
    adam_s = _time_adamw(model, engine)
    prior = (prior_dtype if prior_dtype in dtypes else dtypes[0], "bmm")
    gain = {c: _median_gain(rounds[prior], rounds[c]) for c in candidates}
    best, second = sorted(candidates, key=gain.__getitem__, reverse=True)[:2]  # two routes: two or more
    runoff = ""
    if min(gain[best], gain[second]) >= MARGIN and second != prior and gain[best] < RUNOFF * gain[second]:
        pair = _time_steps(model, batch, loss, [best, second], engine)
        if _median_gain(pair[best], pair[second]) > 1.0:
            best, second = second, best
        runoff = f"; then {_rounds_line(pair, engine.world_size)} alone, {_fmt(best)} faster"
    dtype, attention = best if gain[best] >= MARGIN else prior
    adamw = "foreach" if adam_s["foreach"] * MARGIN < adam_s["fused"] else "fused"
    n = engine.world_size  # the sums decide; the line shows the ranks' mean
    adams = ", ".join(f"{name} {1e3 * s / n:.1f} ms" for name, s in adam_s.items())
    why = f"{_rounds_line(rounds, n)}{runoff}; AdamW {adams}"
    return StepKernels(dtype, attention, adamw, why), min(rounds[(dtype, attention)]) / n


def _fmt(candidate: tuple[str, str]) -> str:
    return "/".join(candidate)


def _rounds_line(rounds: dict[tuple[str, str], list[float]], world_size: int) -> str:
    """'fp32/bmm 929 ms, bf16/bmm 483 ms per micro-batch (best of 2 rounds)': the ranks' mean."""
    steps = ", ".join(f"{_fmt(c)} {1e3 * min(times) / world_size:.0f} ms" for c, times in rounds.items())
    taken = len(next(iter(rounds.values())))
    return f"{steps} per micro-batch (best of {taken} round{'s' * (taken > 1)})"


def _median_gain(prior: list[float], candidate: list[float]) -> float:
    """How many times faster `candidate` ran than `prior` in the median round (rounds timed in turn)."""
    return statistics.median(p / c for p, c in zip(prior, candidate, strict=True))


def _valid(cached: dict, dtypes: list[str]) -> bool:
    return (
        cached.get("dtype") in dtypes
        and cached.get("attention") in SEQUENCE_ROUTES
        and cached.get("adamw") in ("fused", "foreach")
        and isinstance(cached.get("measured"), str)
    )


def _first_micro_batch(task: Task) -> tuple[tuple[torch.Tensor, ...], int]:
    """The run's first micro-batch and how many make a step, the loader left where it was
    (loaders draw from (seed, epoch))."""
    position = task.loader.state_dict()
    step = task.loader.next_step()
    task.loader.load_state_dict(position)
    return step[0], len(step)


def _shape_key(model: nn.Module, batch: tuple[torch.Tensor, ...], dtypes: list[str]) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    shapes = " ".join("x".join(map(str, x.shape)) for x in batch)
    return f"{type(model).__name__} {total}/{trainable} params, batch {shapes}, dtypes {'/'.join(dtypes)}"


@contextlib.contextmanager
def _untouched(device: torch.device | None = None):  # noqa: ANN202 - a context manager
    """Random state (torch's, Python's and a GPU `device`'s) as it was: dropout in the probe draws
    nothing from the run's."""
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[device] if device is not None and device.type == "cuda" else []):
        try:
            yield
        finally:
            random.setstate(python_state)


def _time_steps(
    model: nn.Module,
    batch: tuple[torch.Tensor, ...],
    loss_fn: Callable[..., torch.Tensor],
    candidates: list[tuple[str, str]],
    engine: Engine,
) -> dict[tuple[str, str], list[float]]:
    """Seconds of one micro-batch's forward and backward under each (dtype, route), round by
    round (the candidates taking turns within each), summed over ranks. As many rounds as fit in
    PROBE_S by the first, ROUNDS at most: every rank counts them from the same sums."""

    def run_round() -> dict[tuple[str, str], float]:
        return engine.summed({c: compiling.micro_batch_s(model, batch, loss_fn, *c) for c in candidates})

    run_round()  # warm-up: thread pool, oneDNN primitives, autocast's first casts
    rounds = [run_round()]
    round_s = sum(rounds[0].values()) / engine.world_size
    rounds += [run_round() for _ in range(min(ROUNDS, round(PROBE_S / round_s)) - 1)]
    return {c: [r[c] for r in rounds] for c in candidates}


def _time_adamw(model: nn.Module, engine: Engine, rounds: int = 3) -> dict[str, float]:
    """Seconds of one AdamW step, fused and foreach, over copies of the trainable tensors."""
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    steppers: dict[str, Callable[[], None]] = {
        name: torch.optim.AdamW(params, lr=1e-4, fused=name == "fused", foreach=name == "foreach").step
        for name in ("fused", "foreach")
    }
    best = dict.fromkeys(steppers, float("inf"))
    for turn in range(rounds + 1):  # turn 0 warms up (and allocates the moments)
        for name, step in steppers.items():
            start = time.perf_counter()
            step()
            if turn:
                best[name] = min(best[name], time.perf_counter() - start)
    return engine.summed(best)


def kernels_from_state(saved: dict | None) -> dict | None:
    """The kernels a checkpoint's trainer state names, or None for checkpoints from before them."""
    kernels = (saved or {}).get("kernels")
    if isinstance(kernels, dict) and set(CHOICES) <= kernels.keys():
        return {k: kernels[k] for k in CHOICES} | {"compile": kernels.get("compile") is True}
    return None
