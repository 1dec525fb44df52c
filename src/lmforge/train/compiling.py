"""Whether the training forward runs under `torch.compile`, chosen by measurement on this machine.

Inductor fuses a step's elementwise work into fewer passes over memory, but whether that pays
depends on the CPU, the shape and the dtype: on a 2-core AMX Xeon (docs/speed.md, 2026-12-01)
compiled micro-batches ran at 0.82x the eager speed (6x384 with dropout 0.2, bf16) to 1.20x
(4x128, fp32), and the first compile of a shape took 30-50 s (inductor's on-disk cache
makes later ones a few seconds). So it is chosen like the other kernels (train/autotune.py): a run
whose eager steps are expected to take MIN_RUN_S or more compiles its forward at start, times it
against eager on its first micro-batch (taking turns), and keeps it when MARGIN faster. The answer
joins the kernels' cache entry and every checkpoint, so a resumed run compiles as it started.

Compiled code runs with torch's deterministic algorithms (warnings only where an op has none):
inductor's CPU kernels otherwise sum the embedding's gradient with atomic adds, in an order that
varies run to run, and a resumed run would not continue exactly. `kept_settings` restores the
process's own setting when the run ends.

Only where one compiled graph serves the whole run: the local engine, DDP or FSDP2 (DeepSpeed's
engine, with its own hooks and ZeRO-3 partitioning, stays eager), a task whose
micro-batches all have one shape (language modelling; padded batches would recompile per width),
and no DP-SGD (its per-sample gradients hook the module). The ranks of a run time their own
micro-batches on the model before the engine wraps it and decide on the sum, so they compile
together or not at all. The compiled module shares the model's parameters and is used for the
training loss only: evaluation, checkpoints and the exported weights use the model itself, whose
parameter names are unchanged. `train.compile=on` or `off` replaces the measurement (`on` is the
only way to compile on a GPU, where nothing is measured).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
import torch.utils.deterministic
from torch import nn

from lmforge.model.attention import sequence_route, set_sequence_route

# Eager training time below which compiling is not tried. At the 1.15-1.2x that compiled steps
# gained here, 10 minutes save 80-100 s: twice a first compile, so even a run that pays one gains.
MIN_RUN_S = 600.0
ENGINES = ("local", "ddp", "fsdp")  # the engines whose module is compiled whole (module docstring)
MARGIN = 1.05  # compiled must be this much faster per micro-batch to be chosen
ROUNDS = 3  # timed turns each, after the compile and a warm-up
Batch = tuple[torch.Tensor, ...]
Loss = Callable[..., torch.Tensor]  # loss(module, *batch) -> the summed loss


def expected_run_s(micro_batch_s: float, micro_batches: int, max_steps: int, max_minutes: float) -> float:
    """Seconds the run's steps would take eagerly: max_steps x micro-batches x their time, or the
    time budget (train.max_minutes) when that ends the run sooner."""
    run_s = micro_batch_s * micro_batches * max_steps
    return min(run_s, 60.0 * max_minutes) if max_minutes else run_s


@contextlib.contextmanager
def kept_settings() -> Iterator[None]:
    """Whatever deterministic-algorithm settings compiling turns on inside, as they were after."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    try:
        yield
    except BaseException:
        # Ctrl-C or SIGTERM in the middle of torch's lazy imports (torch._dynamo's, from AdamW at
        # start-up) leaves them half done, and restoring imports torch._inductor over them: its
        # ImportError replaced the signal's exception (a traceback and exit 1, not 143 or 130)
        with contextlib.suppress(Exception):
            _restore(before)
        raise
    _restore(before)


def _restore(before: tuple[bool, bool, bool]) -> None:
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.utils.deterministic.fill_uninitialized_memory = before[2]


def use_deterministic() -> None:
    """Compile (and run) with deterministic kernels: see the module docstring."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False  # no NaN-filling of empty tensors


def measure(model: nn.Module, batch: Batch, loss_fn: Loss, dtype: str, attention: str) -> dict[str, float]:
    """Seconds: the best eager and compiled micro-batch ("eager", "compiled") and the compile
    ("compile"), the model's forward compiled, then eager and compiled micro-batches timed in
    turns. Raises what inductor raises where it cannot compile."""
    with kept_settings():
        use_deterministic()
        return _measure(model, batch, loss_fn, dtype, attention)


def _measure(model: nn.Module, batch: Batch, loss_fn: Loss, dtype: str, attention: str) -> dict[str, float]:
    compiled = torch.compile(model)
    eager_s = micro_batch_s(model, batch, loss_fn, dtype, attention)  # warm-up
    compile_s = micro_batch_s(compiled, batch, loss_fn, dtype, attention)  # compiles
    times = {"eager": float("inf"), "compiled": float("inf"), "compile": max(compile_s - eager_s, 0.0)}
    for _ in range(ROUNDS):
        for name, module in (("eager", model), ("compiled", compiled)):
            times[name] = min(times[name], micro_batch_s(module, batch, loss_fn, dtype, attention))
    return times


def verdict(times: dict[str, float]) -> tuple[bool, str]:
    """(compiled is MARGIN faster, the timings in words) from `measure`'s times (or the ranks' mean)."""
    why = (
        f"{1e3 * times['compiled']:.0f} ms per micro-batch against {1e3 * times['eager']:.0f} ms eager,"
        f" compiled in {times['compile']:.0f} s"
    )
    return times["compiled"] * MARGIN < times["eager"], why


def compiled_step(model: nn.Module, batch: Batch, loss_fn: Loss, dtype: str, attention: str) -> nn.Module:
    """torch.compile(model), compiled now on `batch` (the caller restores the random state): the
    budget's calibration steps must not time a compile. Free after `measure` in this process,
    whose compiled graph it reuses; a few seconds from inductor's on-disk cache otherwise. A DDP
    or FSDP2 module compiles anew (dynamo splits its graph where DDP's gradient buckets end, or
    at FSDP2's per-block hooks), and this first step syncs its gradients on every rank.
    Deterministic algorithms stay on: call it inside `kept_settings`."""
    use_deterministic()
    compiled = torch.compile(model)
    micro_batch_s(compiled, batch, loss_fn, dtype, attention)
    return compiled


def micro_batch_s(module: nn.Module, batch: Batch, loss_fn: Loss, dtype: str, attention: str) -> float:
    """Seconds of one forward and backward (gradients dropped), in training mode, as the loop runs it
    (on a GPU, to the end of its queued kernels)."""
    was_training = module.training
    module.train()
    route = sequence_route()
    set_sequence_route(attention)
    device = batch[0].device
    bf16 = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else contextlib.nullcontext()
    start = time.perf_counter()
    with bf16:
        loss = loss_fn(module, *batch)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    for p in module.parameters():
        p.grad = None
    set_sequence_route(route)
    module.train(was_training)
    return elapsed
