"""Choices measured on this machine, remembered: a small JSON file keyed by what decides them.

Which dtype or kernel is fastest depends on the CPU's vector units, the torch build, the thread
count and the shapes (benchmarks/README.md has one table per CPU kind, and no rule fits them all).
So training and decoding time their candidates once (train/autotune.py, inference/autotune.py, and
the inference kernel routes of model/kernels.py and model/decode_attention.py) and keep the
answer here, under a key naming all of these (and the highest matmul peak seen, MFU's
denominator: `matmul_peak`): a second run on the same machine and shapes starts without probing
and computes as the first did, and a run resumed from a checkpoint reuses what it started with.

The file is `$LMFORGE_CACHE/autotune.json` (default `~/.cache/lmforge/autotune.json`); deleting it
forgets every choice. `LMFORGE_AUTOTUNE=0` turns measurement off: the fixed rules apply
(`hardware.resolve_dtype`, the bmm attention route, fused AdamW, MKL for inference products of
64 rows or more; the other inference kernel routes, which have switches of their own, are probed
in each process and not kept). `LMFORGE_AUTOTUNE=refresh`
measures again and replaces what was remembered: a probe taken while the machine was busy would
otherwise stand until the file is deleted. Each entry keeps the date it was measured.

Processes of one machine share the file (the ranks of a run, a server beside a `generate`), so
writes and probes take turns under a lock beside it (`autotune.lock`): a write never drops another
process's entry, and a probe that finds another process measuring the same choice waits and takes
its answer. Two probes at once would slow each other and could choose differently, and then two
ranks, or two commands started together, would compute differently.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from lmforge.env_switch import switch
from lmforge.hardware import KERNEL_CAPS, cpu_features, cpu_has_bf16, cpu_model, matmul_peak_flops, peak_dtype

FILE_NAME = "autotune.json"
LOCK_NAME = "autotune.lock"


OFF, ON = ("0", "off", "false", "no"), ("", "1", "on", "true", "yes", "refresh")


def _setting() -> str:
    """LMFORGE_AUTOTUNE, lower-cased; a value that is none of these is an error, not "on"."""
    expected = (
        "expected 1 (measure once and remember, the default), 0 (the fixed rules) or refresh (measure again)"
    )
    return switch("LMFORGE_AUTOTUNE", OFF + ON, expected)


def enabled() -> bool:
    """False when LMFORGE_AUTOTUNE is 0/off/false/no: the fixed rules, nothing measured or
    remembered (the inference kernel routes of model/kernels.py have their own switches)."""
    return _setting() not in OFF


def cache_path() -> Path:
    root = os.environ.get("LMFORGE_CACHE") or Path.home() / ".cache" / "lmforge"
    return Path(root) / FILE_NAME


def machine_key() -> str:
    """What a measurement depends on besides shapes: CPU model and vector units, torch, threads, and
    the variables that cap the kernels below the CPU's units (an AVX-512 CPU run as an AVX2 one
    must not take the routes or compiled steps measured uncapped)."""
    units = "+".join(name for name, present in cpu_features().items() if present) or "no AVX2"
    caps = "".join(f" {k}={os.environ[k]}" for k in KERNEL_CAPS if os.environ.get(k))
    return f"{cpu_model()} [{units}] torch {torch.__version__} threads {torch.get_num_threads()}{caps}"


def _read(path: Path) -> dict[str, Any] | None:
    """The cache's entries; {} when there is no file; None when it is unreadable (then left alone)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        _warn_once(f"lmforge: {path} is not a readable autotune cache; measuring without it")
        return None
    return data if isinstance(data, dict) else None


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr)


def lookup(kind: str, shape: str) -> dict[str, Any] | None:
    """The choice remembered for (this machine, kind, shape), or None (also when LMFORGE_AUTOTUNE
    is refresh: measure again)."""
    if not enabled() or _setting() == "refresh":
        return None
    entries = _read(cache_path()) or {}
    found = entries.get(f"{machine_key()} | {kind} | {shape}")
    return found if isinstance(found, dict) else None


def remember(kind: str, shape: str, choice: dict[str, Any]) -> None:
    """Add a choice to the cache (atomically: a crash never leaves half a file; under the lock, so
    a second writer's entries are kept). A cache that cannot be written only costs the next run a
    probe."""
    path = cache_path()
    with taking_turns():
        entries = _read(path)
        if entries is None:
            return
        entries[f"{machine_key()} | {kind} | {shape}"] = {**choice, "when": datetime.date.today().isoformat()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".autotune-", delete=False) as f:
                json.dump(entries, f, indent=1, sort_keys=True)
            os.replace(f.name, path)
        except OSError as err:
            _warn_once(f"lmforge: could not write the autotune cache {path}: {err}")


def update(kind: str, shape: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Remember change(the entry remembered now, or {}) and return it: read, changed and written
    under the lock, so fields another process added between a lookup and a remember are not lost
    (one process records a compile's wait while another records a load's)."""
    with taking_turns():
        entry = change(dict(lookup(kind, shape) or {}))
        remember(kind, shape, entry)
        return entry


_turn = threading.RLock()  # this process's threads; the file lock below is for other processes
_depth = [0]  # how deep this process is in taking_turns: the file is locked once, at the outermost


@contextlib.contextmanager
def taking_turns() -> Iterator[None]:
    """Hold the cache's lock: one process of this machine at a time reads-and-writes the cache or
    probes a choice. Re-entrant within a process (a dtype probe decodes, and decoding probes kernel
    routes). Where the lock file cannot be made (a read-only cache), processes do not wait."""
    with _turn:
        held = None
        if _depth[0] == 0:
            held = _lock_file(cache_path().with_name(LOCK_NAME))
        _depth[0] += 1
        try:
            yield
        finally:
            _depth[0] -= 1
            if held is not None:
                held.close()  # closing releases the lock


def _lock_file(path: Path) -> Any:
    """The open lock file, locked (blocking), or None where it cannot be made or locked."""
    try:
        import fcntl  # POSIX; elsewhere processes do not wait for each other
    except ImportError:
        return None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held until taking_turns closes it
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError:
        handle.close()
        return None
    return handle


def measured_once(
    kind: str, shape: str, usable: Callable[[dict[str, Any]], bool], measure: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """(entry, measured now): the entry remembered for (this machine, kind, shape) where
    usable(entry), else measure()'s, remembered (with LMFORGE_AUTOTUNE=0, measured and not kept).
    Probes take turns with other processes: one that waited for another probing the same choice
    takes its answer instead of measuring again."""
    if not enabled():
        return measure(), True
    entry = lookup(kind, shape)
    if entry is not None and usable(entry):
        return entry, False
    with taking_turns():
        entry = lookup(kind, shape)  # another process may have measured it while this one waited
        if entry is not None and usable(entry):
            return entry, False
        chosen = measure()
        remember(kind, shape, chosen)
        return chosen, True


def remembered_route(
    kind: str, shape: str, routes: tuple[str, ...], measure: Callable[[], tuple[str, str]], fixed: str = ""
) -> tuple[str, str, str]:
    """The model package's route memory (model/route_memory.py; lmforge.formats installs it): for a
    kernel choice that timing makes, (route, its timings, how they were taken: '' for now) from the
    route remembered for (this machine, kind, shape), else from measure() -> (route, timings), then
    remembered, with the routes it was chosen among (`routes`: those measure() times). Kept so
    that one command gives one result on one machine: bf16 attention routes
    round differently, and a per-process probe whose candidates ran close flipped SmolLM2's greedy
    reply in 1 of 4 runs. With LMFORGE_AUTOTUNE=0 each process measures for itself, keeping
    nothing, except for a choice with a fixed rule (`fixed`: evaluation's products), which takes
    it, so that a run and its resumption compute alike (route_memory.per_process)."""
    if fixed and not enabled():
        return fixed, "", "fixed rule"  # route_memory.FIXED (this module may not import the model's)

    def usable(entry: dict[str, Any]) -> bool:  # a choice among other routes (fewer, before an
        # upgrade added one) is measured again: the new route may be the fastest here
        chosen_among = entry.get("among") == list(routes)
        return entry.get("route") in routes and isinstance(entry.get("measured"), str) and chosen_among

    def measured() -> dict[str, Any]:
        route, timings = measure()
        return {"route": route, "measured": timings, "among": list(routes)}

    entry, now = measured_once(kind, shape, usable, measured)
    return entry["route"], entry["measured"], "" if now else _when(entry)


def earlier(entry: dict[str, Any]) -> str:
    """How a start-up line names a remembered choice: when, and how to measure it again."""
    return f"{_when(entry)}: {entry['measured']}"


def _when(entry: dict[str, Any]) -> str:
    when = f" on {entry['when']}" if isinstance(entry.get("when"), str) else " earlier"
    return f"measured{when} on this machine, LMFORGE_AUTOTUNE=refresh measures again"


def matmul_peak(dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> float:
    """MFU's denominator: hardware.matmul_peak_flops, and on the CPU the best this machine has shown
    in any run. A shared CPU's bf16 peak swung 355-1,109 GFLOP/s within one process, and a run that
    met a slow moment at start printed MFU above 100%. LMFORGE_AUTOTUNE=0 keeps this process's
    reading; =refresh replaces the remembered one with it."""
    measured = matmul_peak_flops(dtype, device)
    if (device is not None and device.type != "cpu") or not enabled():
        return measured
    shape = str(peak_dtype(dtype, torch.device("cpu"), cpu_has_bf16())).removeprefix("torch.")
    found = lookup("matmul peak", shape)
    remembered = found.get("flops") if found else None
    if isinstance(remembered, float) and remembered >= measured:
        return remembered
    remember("matmul peak", shape, {"flops": measured, "measured": f"{measured / 1e9:.0f} GFLOP/s"})
    return measured
