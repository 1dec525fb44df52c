"""Process groups: join the one a launcher (torchrun, deepspeed, `lmforge launch`) describes in
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT, or make a one-process group when
started without a launcher, so `--engine.name=ddp` also runs as plain `lmforge train`."""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist

from lmforge.errors import LmforgeError

LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launch_env() -> None:
    """Fill in a one-process world when no launcher set one (DeepSpeed insists on all five)."""
    if "WORLD_SIZE" in os.environ:
        missing = [k for k in LAUNCH_VARS if k not in os.environ]
        if missing:
            raise LmforgeError(f"launcher environment is incomplete: {', '.join(missing)} not set")
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
