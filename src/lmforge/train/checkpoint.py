"""Checkpoints: atomic writes, exact resume, and the model directory they double as.

A checkpoint is `run/checkpoints/step_NNNNNNNN/` holding what the engine saves (model.safetensors,
optimizer.safetensors, optimizer.json: the same files from every engine, see engines/state.py)
plus trainer.json (step, data position, counters, Python RNG), rng.safetensors (torch RNG) and
config.json + tokenizer.json, so any checkpoint is also a loadable model dir.
It is written into a hidden temporary directory and renamed into place: a crash mid-write
leaves the previous checkpoint as the latest.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lmforge.errors import LmforgeError

PREFIX = "step_"


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        with open(path, "rb") as f:
            os.fsync(f.fileno())


def save_checkpoint(
    root: Path,
    step: int,
    write: Callable[[Path], None],
    trainer_state: dict[str, Any],
    keep: int,
    main: bool = True,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write a checkpoint for `step` under root atomically; keep the newest `keep` of them.

    Every rank calls it: `write` may be collective (sharded engines gather for it); only the main
    rank touches the file system beyond what `write` does."""
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if main:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    write(tmp)
    barrier()
    if main:
        save_file({"torch_cpu": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = dict(trainer_state, step=step, python_rng=_python_rng_state())
        (tmp / "trainer.json").write_text(json.dumps(state, indent=1))
        _fsync_tree(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary directories are never listed)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """The newest checkpoint under root to resume from; `say` reports any that were passed over."""
    found = list_checkpoints(root)
    if not found:
        raise LmforgeError(f"{root}: no checkpoint to resume from")
    return found[-1]


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    file = checkpoint / "trainer.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LmforgeError(f"{file}: unreadable trainer state: {e}") from None


def restore_rng(checkpoint: Path, state: dict[str, Any]) -> None:
    torch.set_rng_state(load_file(str(checkpoint / "rng.safetensors"))["torch_cpu"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))


def _python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
