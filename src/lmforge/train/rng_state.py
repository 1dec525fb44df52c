"""A checkpoint's random number generators: torch's CPU (and CUDA) state and Python's, of every
rank, in rng.safetensors (and rank 0's Python state in trainer.json), restored at resume so that
dropout draws the masks the uninterrupted run drew (train/checkpoint.py writes them)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from lmforge.errors import LmforgeError
from lmforge.train.checkpoint_checks import check_rng

# (this rank, the world size, the engine's all_reduce: a sum over ranks)
RankSum = tuple[int, int, Callable[[torch.Tensor], torch.Tensor]]


def restore_rng(checkpoint: Path, state: dict[str, Any], rank: int = 0) -> None:
    """Torch CPU, CUDA (when saved and available) and Python RNG states, this rank's own where the
    checkpoint has them (a run of as many ranks or more, since 2026-12-08), else rank 0's;
    checkpoints from before CUDA states were saved have none, and a CPU-only resume ignores a
    saved one."""
    file = checkpoint / "rng.safetensors"
    tensors = load_file(str(file))
    check_rng(file, tensors)
    own = "torch_cpu_ranks" in tensors and 0 < rank < len(tensors["torch_cpu_ranks"])
    # a copy: set_rng_state reads a row's storage from its start, ignoring the view's offset (torch 2.13)
    torch.set_rng_state(tensors["torch_cpu_ranks"][rank].clone() if own else tensors["torch_cpu"])
    cuda = "torch_cuda_ranks" if own and "torch_cuda_ranks" in tensors else "torch_cuda"
    if cuda in tensors and torch.cuda.is_available():  # the current device (this rank's)
        torch.cuda.set_rng_state(tensors[cuda][rank].clone() if cuda.endswith("ranks") else tensors[cuda])
    version, internal, gauss = state["python_rng"]
    if own:
        row = tensors["python_ranks"][rank].tolist()
        version, internal, gauss = (
            int(row[0]),
            [int(x) for x in row[1:-1]],
            None if math.isnan(row[-1]) else row[-1],
        )
    try:
        random.setstate((version, tuple(internal), gauss))
    except (TypeError, ValueError, OverflowError) as e:
        raise LmforgeError(
            f"{checkpoint / 'trainer.json'}: python_rng is not a Python random state ({e})"
        ) from None


def rng_tensors() -> dict[str, torch.Tensor]:
    # Only the current device: each rank trains on its own device, and every rank restores this
    # file (as it does the CPU state), so rank 0's other devices' states would be the wrong ones.
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    return tensors


def rank_rng_tensors(
    rank: int, world_size: int, all_reduce: Callable[[torch.Tensor], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every rank's torch (and CUDA) and Python RNG states as rows (world_size, ...), summed from
    rows each rank fills its own of (one process: none). Ranks whose micro-batches differ in shape
    (padded chat, classification, translation batches) draw different amounts for dropout; until
    2026-12-08 rank 0's state was restored on every rank, so the others' masks after a resume
    were not the uninterrupted run's."""
    if world_size < 2:
        return {}
    version, internal, gauss = random.getstate()
    own = {
        "torch_cpu_ranks": torch.get_rng_state().long(),
        "python_ranks": torch.tensor(
            [version, *internal, math.nan if gauss is None else gauss], dtype=torch.float64
        ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        own["torch_cuda_ranks"] = torch.cuda.get_rng_state().long()
    out = {}
    for key, row in own.items():
        rows = torch.zeros(world_size, row.numel(), dtype=row.dtype)
        rows[rank] = row
        summed = all_reduce(rows).cpu()
        out[key] = summed if key == "python_ranks" else summed.to(torch.uint8)
    return out


def python_rng_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]
