"""`lmforge launch --nproc N VERB ...`: run an lmforge verb in N processes through torchrun, so
`--engine.name=ddp|fsdp|deepspeed` trains data-parallel without writing the torchrun line.

More than one process is refused unless the verb is `train` with a distributed engine (from
`--engine.name=...`, the recipe's [engine] name, or a resumed run's config.toml): the local engine
in N processes would run N identical jobs into the same run directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.train.engines.distributed import free_port

DISTRIBUTED = ("ddp", "fsdp", "deepspeed")


def engine_of(args: list[str]) -> str:
    """The engine name a `train` command line asks for (the last --engine.name=, else its recipe's or
    resumed run's, else the default)."""
    rest = args[1:]
    names = [a.split("=", 1)[1] for a in rest if a.startswith("--engine.name=")]
    recipe = None
    for i, arg in enumerate(rest):
        if arg == "--resume" and i + 1 < len(rest):
            recipe = Path(rest[i + 1]) / "config.toml"
        elif arg.startswith("--resume="):
            recipe = Path(arg.split("=", 1)[1]) / "config.toml"
    positional = [
        a for i, a in enumerate(rest) if not a.startswith("-") and (i == 0 or rest[i - 1] != "--resume")
    ]
    recipe = recipe or next((Path(a) for a in positional if a.endswith(".toml")), None)
    overrides = [f"--engine.name={names[-1]}"] if names else []
    return load_config(recipe, overrides).engine.name


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
    world = nproc * nnodes
    if world > 1:
        if args[0] != "train":
            raise LmforgeError(
                f"launch: only `train` runs in several processes; {world} processes of `{args[0]}` would"
                f" do the same work {world} times"
            )
        engine = engine_of(args)
        if engine not in DISTRIBUTED:
            raise LmforgeError(
                f"launch: engine.name={engine!r} trains in one process, so {world} processes would run"
                f" {world} identical jobs into the same run directory; pass --engine.name=ddp, fsdp or"
                " deepspeed (or set [engine] name in the recipe)"
            )
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
