"""Compiled decoding steps kept on disk: a model shape compiles once per machine, not per process.

torch.compile's own caches, in the temp directory, keep built kernels but not the traced graph, so
every new process traced the model again before its first compiled token (5 s for a 6-layer model,
17-20 s for SmolLM2's 30 layers on a 2-core EPYC). torch's precompile (`aot_compile`, torch >= 2.10)
keeps the whole compiled function, guards, graph and built C++, in one file; loading it costs a few
seconds, most of them inductor importing itself and probing the compiler's vector instructions.

A step is stored as `$LMFORGE_CACHE/compiled/<key>.step` (default `~/.cache/lmforge/compiled/`),
the key a digest of what the compiled code depends on: this machine (CPU, vector units, torch,
threads: tuning.machine_key), the model's modules and dtype, and the source of the code a step
traces (lmforge/model and compiled_decode.py), so an edited lmforge compiles again. The file is a
pickle, as torch's own caches are: lmforge reads only the files it wrote there, never a path a user
passes. Deleting the directory forgets every step. A file that does not load, or whose guards do
not fit the model, is compiled again and replaced; one that cannot be written costs the next
process a compile. Each file is 1-4 MB, and every new key (a torch upgrade, an edit of lmforge's
model code, another thread count) leaves the old file behind, so saving a step keeps the KEEP
most recently used (a load marks its file used) and deletes the older steps; nothing else there
is touched.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from lmforge import tuning
from lmforge.model.gpt import GPT

SUFFIX = ".step"
KEEP = 32  # steps kept in the store, the most recently used
STEP_NAME = re.compile(r"[0-9a-f]{32}" + re.escape(SUFFIX))  # the files step_path names, and no other


def store_dir() -> Path:
    return tuning.cache_path().parent / "compiled"


def step_path(model: GPT) -> Path:
    """Where model's compiled step is kept on this machine."""
    parts = [tuning.machine_key(), repr(model), str(model.wte.weight.dtype), _source_digest()]
    return store_dir() / (hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32] + SUFFIX)


@functools.cache
def _source_digest() -> str:
    """The code a compiled step traces: every module of lmforge/model, and compiled_decode.py."""
    here = Path(__file__).parent
    files = sorted((here.parent / "model").glob("*.py")) + [here / "compiled_decode.py"]
    return hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()


def load(path: Path) -> Any | None:
    """The compiled function kept at path (an AOTCompiledFunction), or None when there is none or
    it does not load (a torch upgrade, a truncated file): then the caller compiles again."""
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f, torch.inference_mode():  # its guards expect inference tensors
            loaded = torch.compiler.load_compiled_function(f)
    except Exception as err:  # noqa: BLE001 - any failure to load a cache entry means: compile again
        _warn_once(f"lmforge: compiling again: {path} did not load ({type(err).__name__}: {err})")
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # used now: the last to be pruned
    return loaded


def save(path: Path, compiled: Any) -> None:
    """Keep a compiled function at path (atomically, by torch); a store that cannot be written
    costs only the next process a compile."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        compiled.save_compiled_function(str(path))
    except (OSError, RuntimeError) as err:
        _warn_once(f"lmforge: could not keep the compiled step in {path}: {err}")
        return
    _prune(path.parent)


def _prune(store: Path) -> None:
    """Delete the steps in store past the KEEP most recently used (lmforge's files only)."""
    steps = []
    for step in store.iterdir():
        try:
            if STEP_NAME.fullmatch(step.name) and step.is_file():
                steps.append((step.stat().st_mtime, step))
        except OSError:  # gone meanwhile (another process pruned it)
            continue
    for _, old in sorted(steps, reverse=True)[KEEP:]:
        with contextlib.suppress(OSError):  # gone, or not ours to delete: the next save tries again
            old.unlink()


@functools.cache
def _warn_once(message: str) -> None:
    print(message, file=sys.stderr)
