"""`compile="auto"`, the default of `generate`, `chat` and the text-generation pipeline: decode
eagerly, and switch to the compiled step once this machine's measurements say it pays back.

A compiled step (inference/compiled_decode.py) saves time on every token but makes the first one
wait: a compile the first time on a machine (15-70 s on 2 cores), a load of the kept step in a
later process (2.4-3.3 s, inference/compiled_store.py), nothing once this process holds it. How
long a reply will be is unknown (a chat model stops at its end token, often far short of
max_new_tokens), so the switch follows the ski-rental rule: decode eagerly, timing each step,
and switch once this process has spent as long decoding that model eagerly as the switch will
take, and the steps left to this decode can repay it. In hindsight this never costs more than
twice the better of the two choices, whatever the lengths. The time spent adds up across calls
(a chat's replies, a pipeline called in a loop), and the cache built so far moves into the
compiled step's, so the switch can come at any step.

What it relies on is measured on this machine: whenever lmforge compiles or loads a step it
remembers how long that took, and, once per model, the eager and compiled step times (16 steps
each after a warm-up, taking turns: autotune.time_steps) and the time a new process takes to
load the kept step, in the autotune cache (tuning.py). A model never compiled here stays eager
until a `--compile` run measures it (`lmforge serve` compiles and measures it at its first start);
after HINT_S of such eager decoding, `generate` and `chat` say so once (`hint`).
Only fp32 models switch, since a switch must not change what is decoded: in fp32 the compiled
step's greedy tokens were eager decoding's for SmolLM2-135M (640 of 640, 10 chat prompts x 64),
while in bf16, where the compiled step rounds the products' sums differently, 6 of the 10 replies
parted from eager bf16's (after 2-59 tokens; both parted from fp32's about as soon). Several
prompts decode eagerly, as one batch (SmolLM2: 98 tok/s for a batch of 8 against 45 compiled one
at a time), and so does anything a compiled step cannot do (no KV cache, a GPU, no C++ compiler)
and everything with LMFORGE_AUTOTUNE=0.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmforge import tuning
from lmforge.errors import LmforgeError
from lmforge.inference import compiled_decode, compiled_store
from lmforge.inference.autotune import remembered_step_ms, time_steps
from lmforge.inference.compiled_decode import CompiledStep, layer_cache, next_logits, recast
from lmforge.model.attention import KVCache
from lmforge.model.gpt import GPT

KIND = "compiled decode"
ROUNDS = 1  # timed after a warm-up round
WAITS = (("compile_s", "compiled in"), ("load_s", "loaded in"))

_eager_seconds: dict[Path, float] = {}  # per model (its kept step's file): eager decoding in auto
_never_measured: set[Path] = set()  # models auto decoded without a measured step (for hint)
_hinted: list[bool] = []  # hint said in this process
HINT_S = 5.0  # eager decoding of a never-compiled model after which generate and chat say --compile
switches: list[str] = []  # what each switch that waited said, for `generate` to print after its output


class AutoSwitch:
    """One sequence's decoding under `auto`: `due` says when to switch, `switch` does it."""

    def __init__(self, model: GPT, entry: dict[str, Any] | None) -> None:
        """entry: the machine's measurements of model's step; None where it has none (then this
        decodes eagerly throughout, its time counted for `hint`)."""
        self.model = model
        self.path = compiled_store.step_path(model)
        if entry is None:
            self.saves, self.wait, self.wait_words = 0.0, float("inf"), ""
            _never_measured.add(self.path)
            return
        self.saves = (entry["eager_ms"] - entry["compiled_ms"]) / 1e3  # seconds a compiled step saves
        self.wait, self.wait_words = expected_wait(model, entry)

    @classmethod
    def start(cls, model: GPT, batch: int, mask: torch.Tensor | None, use_cache: bool) -> AutoSwitch | None:
        """An AutoSwitch, or None where auto decodes eagerly throughout."""
        if batch != 1 or mask is not None or not use_cache or not tuning.enabled() or not _compilable(model):
            return None
        if model.wte.weight.dtype != torch.float32:  # see the module's docstring: bf16 tokens change
            return None
        entry = tuning.lookup(KIND, _shape(model))
        if entry is None:  # never compiled here: eager, counting the time for hint()
            return cls(model, None)
        times = _step_ms(entry)
        return cls(model, entry) if times is not None and times[0] > times[1] else None

    def spent(self, seconds: float) -> None:
        """Count an eager step's time."""
        _eager_seconds[self.path] = _eager_seconds.get(self.path, 0.0) + seconds

    def due(self, steps_left: int) -> bool:
        """Whether to switch before the next step: eager time spent has reached the wait, and the
        steps left (at most) save more than it."""
        return _eager_seconds.get(self.path, 0.0) >= self.wait and steps_left * self.saves > self.wait

    def switch(self, cache: KVCache) -> tuple[CompiledStep, KVCache]:
        """(the compiled step, a LayerCache holding what cache holds)."""
        spent, waits = _eager_seconds.get(self.path, 0.0), not compiled_decode.holds(self.model)
        step = compiled_step(self.model)
        moved = recast(self.model, cache, cache.max_len, per_layer=True)
        if waits:  # once per model and process: later calls switch at once, unremarked
            switches.append(
                f"switched to the compiled step after {spent:.1f} s of eager decoding (auto: it saves"
                f" {1e3 * self.saves:.2f} ms a step, after {self.wait_words})"
            )
        return step, moved


def hint() -> str | None:
    """What `generate` and `chat` say once this process has decoded a model HINT_S or more under
    auto that could switch to a compiled step but has none on this machine (None otherwise): that
    one `--compile` run makes later runs switch where it pays back. Said once per process."""
    if not _never_measured or _hinted:
        return None
    spent = max(_eager_seconds.get(path, 0.0) for path in _never_measured)
    if spent < HINT_S:
        return None
    _hinted.append(True)
    return (
        f"{spent:.1f} s of eager decoding: this model has no compiled step on this machine; one"
        " --compile run compiles and measures it (15-70 s on 2 cores), and later runs switch to it"
        " where it pays back (docs/models.md)"
    )


def compiled_fp32_ms(model: GPT) -> float | None:
    """ms per step of model's compiled step in fp32, where auto would switch an fp32 copy of model
    to it on this machine (measured, and faster than eager fp32); else None."""
    if not tuning.enabled() or not _compilable(model):
        return None
    with torch.device("meta"):  # a weightless fp32 twin: the step's key needs only its modules
        twin = type(model)(model.config).float()
    times = _step_ms(tuning.lookup(KIND, _shape(twin)))
    return times[1] if times is not None and times[1] < times[0] else None


def step_for_serving(model: GPT, compile: bool | str) -> tuple[CompiledStep | None, str]:
    """`lmforge serve`'s choice, made once at start for a long-running process: (the compiled step
    a lone request decodes through, or None for eager decoding; what to say of it). True compiles or
    loads it (a one-line error where it cannot apply) and measures it as `generate --compile` does.
    "auto", for an fp32 model: loads it where this machine measured it faster (as `auto` would
    switch to it, but before the first request rather than in the middle of one), and compiles and
    measures it where this machine never did, as vLLM compiles at start: a server's first start on
    a machine waits for it (15-70 s on 2 cores), and every later start loads it in seconds or, if
    it measured slower, decodes eagerly at once. False: eager."""
    if compile is True:
        compiled_decode.check_compilable(model, 1, None, True)
    elif compile != "auto":
        return None, "decoding eagerly"
    elif not _unmeasured(model) and AutoSwitch.start(model, 1, None, True) is None:
        return None, "decoding eagerly" + _eager_hint(model)
    held, start = compiled_decode.holds(model), time.perf_counter()
    if not held and not compiled_store.step_path(model).is_file():
        print(
            "lmforge serve: compiling the decoding step (the first time on this machine for this model:"
            " 15-70 s on 2 cores, kept for later starts; --no-compile skips it)",
            file=sys.stderr,
        )
    step = compiled_step(model)
    took = f"{'loaded' if step.loaded else 'compiled and measured'} in {time.perf_counter() - start:.1f} s"
    if compile == "auto" and AutoSwitch.start(model, 1, None, True) is None:  # measured slower now
        return None, f"decoding eagerly (its compiled step, {took}, measured slower here)"
    return step, f"a lone request decodes through the compiled step ({'held already' if held else took})"


def rows_through_step(model: GPT) -> int:
    """How many rows decode faster one at a time through model's compiled step than as one eager
    batch, by this machine's record: as many as the step runs in one eager step's time (an eager
    step of several rows costs at least one of one row), and at least 1."""
    times = _step_ms(tuning.lookup(KIND, _shape(model)))
    if times is None or times[1] <= 0:
        return 1
    return max(1, int(times[0] // times[1]))


def faster_in_fp32(model: GPT) -> tuple[float, float] | None:
    """(ms a compiled fp32 step, ms an eager bf16 step) where model is bf16, which auto decodes
    eagerly, and this machine measured its compiled fp32 step faster; else None. `serve` and
    `chat` say so at start: the dtype probe compares eager steps only."""
    if model.wte.weight.dtype != torch.bfloat16:
        return None
    compiled_ms, eager_ms = compiled_fp32_ms(model), remembered_step_ms(model, "bf16")
    if compiled_ms is None or eager_ms is None or compiled_ms >= eager_ms:
        return None
    return compiled_ms, eager_ms


def _eager_hint(model: GPT) -> str:
    """What to add to "decoding eagerly" under auto: that one request at a time decodes faster in
    fp32 through the compiled step, where this machine measured that."""
    faster = faster_in_fp32(model)
    if faster is None:
        return ""
    return (
        f" (one request at a time decodes faster with --dtype fp32, through the compiled step:"
        f" {faster[0]:.1f} ms a token against {faster[1]:.1f} here; batches are faster in bf16)"
    )


def expected_wait(model: GPT, entry: dict[str, Any]) -> tuple[float, str]:
    """(seconds before the first compiled step, in words) from what was remembered."""
    if compiled_decode.holds(model):
        return 0.0, "no wait: this process holds it"
    compile_s, load_s = entry.get("compile_s"), entry.get("load_s")
    if compiled_store.step_path(model).is_file() and isinstance(load_s, float):
        return load_s, f"a {load_s:.1f} s load"
    if isinstance(compile_s, float):
        return compile_s, f"a {compile_s:.1f} s compile"
    return float("inf"), "a wait never measured"


def compiled_step(model: GPT) -> CompiledStep:
    """compiled_decode.compiled_step, remembering the wait and, once per model, the step times."""
    held = compiled_decode.holds(model)
    start = time.perf_counter()
    step = compiled_decode.compiled_step(model)
    if not held and tuning.enabled():
        _remember(model, step, time.perf_counter() - start)
    return step


def _remember(model: GPT, step: CompiledStep, wait: float) -> None:
    def change(entry: dict[str, Any]) -> dict[str, Any]:
        entry["load_s" if step.loaded else "compile_s"] = round(wait, 2)
        if not step.loaded:  # what the next process will wait: timed in one, as it will run
            load_s = _time_a_load(compiled_store.step_path(model))
            if load_s is not None:
                entry["load_s"] = round(load_s, 2)
        if not isinstance(entry.get("eager_ms"), float):
            in_layers = functools.partial(layer_cache, model)  # both on the compiled step's cache
            eager, compiled = time_steps([(model, next_logits, in_layers), (model, step, in_layers)], ROUNDS)
            entry.update(eager_ms=round(1e3 * eager, 3), compiled_ms=round(1e3 * compiled, 3))
        waits = ", ".join(f"{how} {entry[k]} s" for k, how in WAITS if k in entry)
        steps = f"eager {entry['eager_ms']} ms, compiled {entry['compiled_ms']} ms a step"
        entry["measured"] = f"{steps}; {waits}"
        return entry

    # read, changed and written in one turn: timings are probes, and another process's fields stay
    tuning.update(KIND, _shape(model), change)


LOAD = """import sys, time
from pathlib import Path
from lmforge.inference import compiled_store
start = time.perf_counter()
loaded = compiled_store.load(Path(sys.argv[1]))
print(time.perf_counter() - start if loaded is not None else "did not load")
"""


def _time_a_load(path: Path) -> float | None:
    """Seconds a new process takes to load the kept step at path (inductor's imports and its probe
    of the compiler included), or None when it could not."""
    if not path.is_file():
        return None
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    argv = [sys.executable, "-c", LOAD, str(path)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    try:
        return float(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):  # it failed, or did not load: the first real load will tell
        return None


def _shape(model: GPT) -> str:
    """The cache entry's name: the kept step's file, whose digest names machine, model and code."""
    n_params = sum(p.numel() for p in model.parameters())
    return f"GPT {n_params} params, {model.wte.weight.dtype}, step {compiled_store.step_path(model).stem}"


def _step_ms(entry: dict[str, Any] | None) -> tuple[float, float] | None:
    """(eager, compiled) ms a step from a model's cache entry, or None where it holds no times."""
    eager_ms, compiled_ms = (entry or {}).get("eager_ms"), (entry or {}).get("compiled_ms")
    if isinstance(eager_ms, float) and isinstance(compiled_ms, float):
        return eager_ms, compiled_ms
    return None


def _unmeasured(model: GPT) -> bool:
    """Whether auto could use model's compiled step but this machine never measured it."""
    fp32 = model.wte.weight.dtype == torch.float32
    return tuning.enabled() and fp32 and _compilable(model) and tuning.lookup(KIND, _shape(model)) is None


def _compilable(model: GPT) -> bool:
    try:
        compiled_decode.check_compilable(model, 1, None, True)
    except LmforgeError:  # what --compile refuses, auto decodes eagerly
        return False
    return True
