"""Where the model package's kernel probes (kernels.py, decode_attention.py, prefill_attention.py)
keep a route they chose by timing, and how they time (best_times).

The model package reads and writes no files, so by default each process measures for itself. The
layer above installs a memory: importing `lmforge.formats`, which every path that loads, trains or
writes a model goes through, installs `tuning.remembered_route`, which keeps the first measurement
for the machine in the autotune cache. A route chosen afresh in each process can change results
from run to run: the bf16 decoding attention routes round differently, and SmolLM2's ran close
enough that the same greedy `generate` told another story in 1 of 4 runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Measure = Callable[[], tuple[str, str]]  # -> (route, its timings)
# (kind, shape, the routes, measure, the fixed rule's route or '') -> (route, its timings, how
# they were taken: '' for now, FIXED where the fixed rule's route was taken)
Memory = Callable[[str, str, tuple[str, ...], Measure, str], tuple[str, str, str]]
FIXED = "fixed rule"


def per_process(
    kind: str, shape: str, routes: tuple[str, ...], measure: Measure, fixed: str = ""
) -> tuple[str, str, str]:
    """No memory: measure now, except a choice with a fixed rule, which takes it. Such a choice
    (evaluation's products) must compute alike in a run and in its resumption, another process,
    which a probe of its own might answer otherwise."""
    if fixed:
        return fixed, "", FIXED
    route, timings = measure()
    return route, timings, ""


_memory: list[Memory] = [per_process]


def install(memory: Memory) -> None:
    _memory[0] = memory


def choose(
    kind: str, shape: str, routes: tuple[str, ...], measure: Measure, fixed: str = ""
) -> tuple[str, str, str]:
    """(route, its timings, how they were taken) for (kind, shape), from the installed memory;
    `fixed`: the route to take where nothing is measured for the machine (see per_process)."""
    return _memory[0](kind, shape, routes, measure, fixed)


def said(chosen: list[tuple[str, str, str]]) -> str:
    """How a start-up line names choices from `choose`: their timings, and, where all were
    remembered, when they were taken and how to take them again."""
    timings = "; ".join(t for _, t, _ in chosen)
    fresh = any(not how for _, _, how in chosen)
    return f"measured: {timings}" if fresh else f"{chosen[0][2]}: {timings}"


def best_times(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The best of `rounds` seconds each route's run takes, after a warm-up turn (thread pool,
    oneDNN's caches, packing), the routes taking turns so that load from elsewhere hits them alike:
    what every probe here times."""
    best = dict.fromkeys(runs, float("inf"))
    for turn in range(rounds + 1):
        for route, run in runs.items():
            start = time.perf_counter()
            run()
            if turn:
                best[route] = min(best[route], time.perf_counter() - start)
    return best
