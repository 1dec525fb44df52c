"""`lmforge launch --nproc N VERB ...`: run an lmforge verb in N processes through torchrun, so
`--engine.name=ddp|fsdp|deepspeed` trains data-parallel without writing the torchrun line.

More than one process is refused unless the verb is `train` with a distributed engine (from
`--engine.name=...`, the recipe's [engine] name, or a resumed run's config.toml): the local engine
in N processes would run N identical jobs into the same run directory (engines.check_world, which
each rank asks again under any launcher). Each rank's threads are set where its engine starts
(engines/distributed.py rank_threads), as under torchrun or the deepspeed launcher.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.processes import RANK_LINES
from lmforge.train.engines import check_world
from lmforge.train.engines.distributed import free_port


def engine_of(args: list[str]) -> str:
    """The engine name a `train` command line asks for (the last --engine.name=, else its recipe's or
    resumed run's, else the default)."""
    rest = args[1:]
    recipe = None
    for i, arg in enumerate(rest):
        if arg == "--resume" and i + 1 < len(rest):
            recipe = Path(rest[i + 1]) / "config.toml"
        elif arg.startswith("--resume="):
            recipe = Path(arg.split("=", 1)[1]) / "config.toml"
    positional = [
        a for i, a in enumerate(rest) if not a.startswith("-") and (i == 0 or rest[i - 1] not in VALUED)
    ]
    if recipe is not None and not recipe.is_file():  # as train --resume says it, not a recipe's error
        what = "no such directory" if not recipe.parent.exists() else "not a run directory (no config.toml)"
        raise LmforgeError(f"--resume {recipe.parent}: {what}")
    recipe = recipe or next((Path(a) for a in positional if a.endswith(".toml")), None)
    # every override, not only --engine.name: the recipe is validated whole, and one that needs a key
    # from the command line (a QA or classification recipe's train.init_from) is valid only with it
    return load_config(recipe, _overrides(rest)).engine.name


# train's options that take a value (not a recipe), and the one that is an override's alias
VALUED = ("--resume", "--out", "--init-from")


def _overrides(rest: list[str]) -> list[str]:
    """The `--section.key=value` overrides of a `train` command line, --init-from as its key."""
    found = []
    for i, arg in enumerate(rest):
        if arg.startswith("--init-from="):
            found.append("--train.init_from=" + arg.split("=", 1)[1])
        elif arg == "--init-from" and i + 1 < len(rest):
            found.append(f"--train.init_from={rest[i + 1]}")
        elif arg.startswith("--") and "." in arg.partition("=")[0] and "=" in arg:
            found.append(arg)
    return found


def launch(
    nproc: int | None = None,
    args: list[str] | None = None,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str | None = None,
    master_port: int = 0,
) -> int:
    """Run `lmforge ARGS...` in nproc processes per node; returns the exit status. Several nodes
    need the same master_addr (node 0's address) and master_port on each."""
    args = list(args or [])
    if nproc is None:  # launch's own options go before the verb (after it they are the verb's)
        after = any(a.split("=")[0] in ("--nproc", "--nproc_per_node", "--nproc-per-node") for a in args)
        where = " goes before the verb, not after it" if after else " is required"
        raise LmforgeError(f"launch: --nproc N{where} (lmforge launch --nproc 2 train ...)")
    if nproc < 1 or nnodes < 1:
        raise LmforgeError("launch: --nproc and --nnodes must be >= 1")
    if not 0 <= node_rank < nnodes:
        raise LmforgeError(f"launch: --node-rank {node_rank} must be in [0, --nnodes {nnodes})")
    if not 0 <= master_port <= 65535:
        raise LmforgeError(f"launch: --master-port {master_port} must be in [0, 65535] (0: a free port)")
    if nnodes > 1 and (master_port == 0 or master_addr is None):
        raise LmforgeError(
            f"launch: --nnodes {nnodes} needs --master-addr (node 0's address) and --master-port (a free"
            " port there), the same on every node: each node would pick its own and never meet"
        )
    if not args:
        raise LmforgeError("launch: give the verb to run, e.g. `lmforge launch --nproc 2 train X.toml`")
    world = nproc * nnodes
    if world > 1:
        if args[0] != "train":
            raise LmforgeError(
                f"launch: only `train` runs in several processes; {world} processes of `{args[0]}` would"
                f" do the same work {world} times"
            )
        try:  # the ranks ask the same when they build the engine, under any launcher
            check_world(engine_of(args), world)
        except LmforgeError as e:
            raise LmforgeError(f"launch: {e}") from None
    command = [
        sys.executable,
        "-c",
        RUNNER,
        str(os.getpid()),
        f"--nproc_per_node={nproc}",
        f"--nnodes={nnodes}",
        f"--node_rank={node_rank}",
        f"--master_addr={master_addr or '127.0.0.1'}",
        f"--master_port={master_port or free_port()}",
        "-m",
        "lmforge",
        *args,
    ]
    # a job a script starts in the background inherits SIGINT ignored, and Python then installs no
    # handler: taken, as train takes it (processes.signals_stop), so `kill -INT` is passed on (until
    # 2026-12-08 it did nothing: the run trained to its end)
    interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
    agent = subprocess.Popen(command)
    # a SIGTERM (kill, timeout, Slurm) is passed on: the agent stops its ranks and exits 143
    before = signal.signal(signal.SIGTERM, lambda signum, _: agent.send_signal(signum))
    try:
        return _wait(agent)
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, interrupt)


def _wait(agent: subprocess.Popen) -> int:
    """The agent's exit status, once it has ended its ranks. A SIGINT is passed on at once: a
    Ctrl-C at a terminal reaches the agent twice so (one process group), and the agent acts on the
    first only (_first_signal_ends); a SIGINT sent to launch alone reaches it once. Until 2026-12-07
    launch waited 5 s for the agent to end before passing it on."""
    while True:
        try:
            code = agent.wait()
        except KeyboardInterrupt:
            agent.send_signal(signal.SIGINT)
            continue
        # an agent ended by a signal (a second Ctrl-C after its handlers were gone: -2) exits as a
        # shell says it, 128 + the signal (a plain -2 became exit status 254)
        return 128 - code if code < 0 else code


def _first_signal_ends(handler: Callable[[int, Any], None]) -> Callable[[int, Any], None]:
    """torchrun's agent's handler of SIGINT/SIGTERM, acting on the first signal only: the agent
    then ends its ranks (SIGINT, else SIGTERM after 30 s, SIGKILL), and a second signal raised
    inside that shutdown cut it short and began another with SIGTERM."""
    seen: list[int] = []

    def once(signum: int, frame: Any) -> None:
        if not seen:
            seen.append(signum)
            handler(signum, frame)

    return once


# torchrun (torch.distributed.run) in the child process, through `torchrun` below
# torchrun's agent, in a process of its own that ends with launch (a kill -9 of launch would leave
# the agent and its ranks training on): argv[1] is launch's pid
RUNNER = (
    "import os, signal, sys; from lmforge.processes import AGENT_PID, die_with_parent;"
    " die_with_parent(int(sys.argv[1]), signal.SIGTERM); os.environ[AGENT_PID] = str(os.getpid());"
    " from lmforge.launch import torchrun; sys.exit(torchrun(sys.argv[2:]))"
)


class _Quiet(logging.Filter):
    """torchrun's lines that lmforge says otherwise: a rank's failure (the rank's own line, and
    launch's), a stop by signal (the ranks' `interrupted`), and the OMP_NUM_THREADS=1 banner (each
    rank sets its own share of the cores: engines/distributed.py rank_threads)."""

    NOISE = ("failed (exitcode", "Received ", "Sending process ", "\n****")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.NOISE)


def torchrun(argv: list[str]) -> int:
    """torch.distributed.run's main, returning the first failed rank's exit status rather than
    raising ChildFailedError: its traceback and report would follow the one line that a rank
    prints for a user's mistake (exit status 2), which is kept as the only message. Every rank
    checks the same and would say the same line, so only rank 0 prints its own (cli.say_last):
    the others leave theirs in a folder, and the lines that differ from rank 0's are printed here
    when the ranks have ended. A SIGINT or SIGTERM ends the ranks and exits 128 + its number."""
    from torch.distributed.elastic.multiprocessing import api
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for name in ("torch.distributed.elastic.multiprocessing.api", "torch.distributed.run",
                 "torch.distributed.elastic.agent.server.api"):  # fmt: skip
        logging.getLogger(name).addFilter(_Quiet())
    # registered by torchrun as it starts the ranks, by this name: a repeated signal is dropped
    api._terminate_process_handler = _first_signal_ends(api._terminate_process_handler)
    # torchrun's log folders (empty unless asked for) would otherwise stay in the temp folder
    with tempfile.TemporaryDirectory(prefix="lmforge-launch-") as logs:
        os.environ[RANK_LINES] = os.path.join(logs, "lines")
        os.mkdir(os.environ[RANK_LINES])
        failed = ""  # launch's line for a rank that failed without saying why (killed, a crash)
        try:
            run(parse_args(["--log-dir", logs, *argv]))
            status = 0
        except SignalException as e:
            status = 128 + int(e.sigval)
        except ChildFailedError as e:
            rank, failure = e.get_first_failure()
            status = failure.exitcode if failure.exitcode > 0 else 1
            if status != 2:
                code = failure.exitcode
                why = f"signal {failure.signal_name()}" if code < 0 else f"exit status {code}"
                failed = f"lmforge: error: launch: rank {rank} failed ({why})"
        _say_rank_lines(Path(os.environ[RANK_LINES]))
        if failed:
            print(failed, file=sys.stderr)
        return status


def _say_rank_lines(folder: Path) -> None:
    """The last lines the ranks left (cli.say_last) that rank 0 did not print, once each."""
    lines = {int(p.name): p.read_text().strip() for p in folder.iterdir() if p.name.isdigit()}
    said = {lines.get(0)}
    for rank in sorted(lines):
        if lines[rank] not in said:
            said.add(lines[rank])
            print(lines[rank].replace("lmforge: ", f"lmforge: rank {rank}: ", 1), file=sys.stderr)
