"""A child process that ends with its parent: prep's pool workers, the ranks of a launcher.

After a kill -9 of the parent (prep, torchrun, `lmforge launch`, the deepspeed launcher) the
children would otherwise go on alone: prep's workers cleaning into a folder the next prep removes,
training ranks writing checkpoints into a run nobody watches. Linux's PR_SET_PDEATHSIG; elsewhere a
parent's own shutdown is all there is. Also what Linux's /proc/self/status says of this process.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from lmforge.errors import LmforgeError

PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
AGENT_PID = "LMFORGE_AGENT_PID"  # set by `lmforge launch`'s torchrun agent for its ranks
RANK_LINES = "LMFORGE_RANK_LINES"  # `lmforge launch`: a folder where ranks leave their last line
# set where a rank joins its process group: from then on it ends through exit_rank
joined_group = False


def own_status(field: str) -> str | None:
    """A field of /proc/self/status ("VmHWM", "Umask"): its value's first word, or None where there
    is no such file (not Linux) or field."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    return next((line.split()[1] for line in lines if line.startswith(f"{field}:")), None)


def launched_world() -> int:
    """The number of processes a launcher started (its WORLD_SIZE; 1 without a launcher)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise LmforgeError(f"WORLD_SIZE={value!r} (set by the launcher): not an integer") from None


def die_with_parent(parent: int, sig: int) -> None:
    """Ask the kernel to send `sig` to this process when its parent (pid `parent`) dies; exit at
    once if the parent died before the request took effect."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:
        os._exit(1)


def end_with_launcher(sig: int = signal.SIGTERM) -> None:
    """A launched rank (WORLD_SIZE > 1) ends with its launcher (torchrun's agent, the deepspeed
    launcher), its parent. Under `lmforge launch` the agent's pid is known (AGENT_PID): a rank whose
    parent is already another process (the agent died while it started) ends now, saying so. A
    parent of pid 1 is no proof of that elsewhere: torchrun can be a container's first process."""
    parent, agent = os.getppid(), os.environ.get(AGENT_PID, "")
    if agent.isdigit() and parent != int(agent):
        print(f"lmforge: error: the launcher (pid {agent}) is gone; this rank stops", file=sys.stderr)
        os._exit(1)
    die_with_parent(parent, sig)


class Terminated(KeyboardInterrupt):
    """A SIGTERM (kill, `timeout`, Slurm's end of a job, a launcher stopping its ranks) during
    training: it stops the run as Ctrl-C does, saying where a resume continues; exit 143."""


@contextlib.contextmanager
def signals_stop() -> Iterator[None]:
    """While inside, SIGTERM raises Terminated and SIGINT KeyboardInterrupt (in the main thread;
    elsewhere signals cannot be handled, and nothing changes). SIGTERM ended the process silently;
    SIGINT did nothing to a run started in the background by a script (`cmd &` inherits SIGINT
    ignored, and Python then installs no handler), as `lmforge serve` also found."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise Terminated

    before = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, stop),
        signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler),
    }
    hook, sys.unraisablehook = sys.unraisablehook, functools.partial(_keep_lost, sys.unraisablehook)
    try:
        yield
        raise_lost_stop()  # at the latest where the block ends
    finally:
        sys.unraisablehook = hook
        _lost.clear()
        for sig, handler in before.items():
            signal.signal(sig, handler)


_lost: list[KeyboardInterrupt] = []  # stops that landed where Python could not raise them


def _keep_lost(hook: Callable[[Any], object], unraisable: Any) -> None:
    """A Ctrl-C or SIGTERM whose exception landed where Python cannot raise one (a weakref callback,
    as an import's module lock has, or a __del__) was printed as "Exception ignored in ..." with a
    traceback and lost (seen once in a 2-rank launch's Ctrl-C): kept, for raise_lost_stop."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        _lost.append(unraisable.exc_value)
        return
    hook(unraisable)


def raise_lost_stop() -> None:
    """Raise a stop signals_stop kept (the training loop asks between steps)."""
    if _lost:
        raise _lost.pop()


def exit_rank(status: int) -> NoReturn:
    """End a training rank that joined its process group with `status`, without the interpreter's
    teardown. The process groups' native threads outlive destroy_process_group where a library
    still holds a group (FSDP2's fully_shard, DeepSpeed's module-level caches), and a native thread
    that takes the GIL while the interpreter finalizes is ended by Python (bpo-36427) through C++
    frames that forbid it: `terminate called without an active exception`, SIGABRT, a finished run
    reported failed (2-rank ZeRO-3 and FSDP launches, rarely). Everything a normal exit does for
    the user still happens first: other threads joined, atexit handlers (logging's flush) run,
    stdout and stderr flushed. (A rank that stopped before joining exits as any process does: its
    teardown is what gives its siblings under torchrun time to say their own error line.)"""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what Python's exit runs before its teardown (no public name)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a reader gone away, a closed stream
            stream.flush()
    os._exit(status)
