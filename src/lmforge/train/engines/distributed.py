"""Process groups: join the one a launcher (torchrun, deepspeed, `lmforge launch`) describes in
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or make a one-process group when
started without a launcher, so `--engine.name=ddp` also runs as plain `lmforge train`.

Each rank of a multi-process start shares its node's cores with the others (rank_threads), the
same under every launcher: torchrun gives each rank 1 thread, the deepspeed launcher all the cores.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from lmforge import processes
from lmforge.errors import LmforgeError
from lmforge.hardware import physical_cores
from lmforge.processes import end_with_launcher, launched_world

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_threads(
    environ: Mapping[str, str], cores: int, launcher_environ: Mapping[str, str] | None
) -> int | None:
    """The threads a rank of a multi-process start runs: `cores` (the node's physical cores) over
    the ranks on its node, at least 1; None (keep them) in one process or where the user set
    OMP_NUM_THREADS. torchrun sets OMP_NUM_THREADS=1 itself when it starts several ranks on a node
    and none was given, so under torchrun a 1 is the user's only when it was in torchrun's own
    environment (`launcher_environ`: the parent process's; None when unreadable)."""
    world = int(environ.get("WORLD_SIZE", "1"))
    # ranks on this node: torchrun's LOCAL_WORLD_SIZE, the deepspeed launcher's LOCAL_SIZE
    local = int(environ.get("LOCAL_WORLD_SIZE") or environ.get("LOCAL_SIZE") or world)
    given = environ.get("OMP_NUM_THREADS")
    torchruns = (
        given == "1" and "TORCHELASTIC_RUN_ID" in environ and local > 1
        and "OMP_NUM_THREADS" not in (launcher_environ or {})
    )  # fmt: skip
    if world <= 1 or (given and not torchruns):
        return None
    return max(1, cores // max(1, local))


def launcher_environ() -> dict[str, str] | None:
    """The environment the parent process (the launcher) was started with; None where unreadable."""
    try:
        raw = Path(f"/proc/{os.getppid()}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return dict(pairs)


def ensure_launch_env() -> None:
    """Fill in a one-process world when no launcher set one (DeepSpeed insists on all five); give
    a rank of a launcher's multi-process start its share of the cores (rank_threads)."""
    if "WORLD_SIZE" in os.environ:
        missing = [k for k in LAUNCH_VARS if k not in os.environ]
        if missing:
            raise LmforgeError(f"launcher environment is incomplete: {', '.join(missing)} not set")
        threads = rank_threads(os.environ, physical_cores(), launcher_environ())
        if threads is not None:
            torch.set_num_threads(threads)
        if launched_world() > 1:  # a rank ends with its launcher, even after a kill -9
            end_with_launcher()  # (cli.py asks at once; this covers lmforge.train() under torchrun)
        return
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())


def device_for_rank() -> torch.device:
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_process_group(backend: str, timeout_s: int) -> torch.device:
    """Join (or create) the default process group; returns this rank's device."""
    ensure_launch_env()
    device = device_for_rank()
    if not dist.is_initialized():
        processes.joined_group = True
        chosen = backend if backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
        dist.init_process_group(
            chosen, device_id=device if device.type == "cuda" else None, timeout=timedelta(seconds=timeout_s)
        )
    return device


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(value: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum a CPU tensor over ranks through `device` (NCCL reduces only GPU tensors)."""
    reduced = value.to(device)
    dist.all_reduce(reduced)
    return reduced.to(value.device)
