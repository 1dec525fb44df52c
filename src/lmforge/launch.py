"""`lmforge launch --nproc N VERB ...`: run an lmforge verb in N processes through torchrun, so
`--engine.name=ddp|fsdp|deepspeed` trains data-parallel without writing the torchrun line."""

from __future__ import annotations

import subprocess
import sys

from lmforge.errors import LmforgeError
from lmforge.train.engines.distributed import free_port


def launch(
    nproc: int,
    args: list[str],
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 0,
) -> int:
    """Run `lmforge ARGS...` in nproc processes per node; returns the exit status."""
    if nproc < 1 or nnodes < 1:
        raise LmforgeError("launch: --nproc and --nnodes must be >= 1")
    if not args:
        raise LmforgeError("launch: give the verb to run, e.g. `lmforge launch --nproc 2 train X.toml`")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port or free_port()}",
        "-m",
        "lmforge",
        *args,
    ]
    return subprocess.run(command, check=False).returncode
