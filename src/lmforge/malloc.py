"""The training process's memory allocator: tcmalloc where the system has it, measured faster.

PyTorch's CPU tensors come from malloc. glibc's malloc hands large freed blocks back to the
system and faults them in again at the next step (and keeps blocks of ever-new sizes in its
heap), so every training step pays page faults; tcmalloc keeps freed memory in per-size caches.
Side by side on a 2-core Xeon (docs/speed.md): the demo's steps ran 1.34x faster with tcmalloc
and its peak RSS was 16% lower; QA fine-tuning 1.19x faster and 9% lower; the same losses to the
last digit (an allocator changes where tensors live, not what is computed). jemalloc held RSS
lowest but ran QA at 0.7x.

A process's allocator is fixed before it starts (LD_PRELOAD), so the `lmforge train` command
restarts itself once, before it imports torch or touches a file, with tcmalloc preloaded when the
system has it (Debian and Ubuntu: libtcmalloc-minimal4) and nothing else is preloaded, except for
DeepSpeed: its ZeRO-1/2 runs on one CPU peaked at 2.6x glibc's RSS under tcmalloc, which keeps
the engine's large freed buffers. `LMFORGE_MALLOC=system` keeps the system's malloc.
`lmforge.train()` called from Python runs in the caller's process, as it is.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from lmforge.env_switch import switch

ENV = "LMFORGE_MALLOC"  # "system": keep the system's malloc
LIBRARY = "tcmalloc_minimal"  # gperftools' tcmalloc without the profiler: libtcmalloc_minimal.so.4
OTHERS = ("tcmalloc", "jemalloc", "mimalloc")  # a preload naming one of these is the user's choice
command = False  # set by the `lmforge` command (cli.main), never by a call from Python


def keeps_system(environ: Mapping[str, str]) -> bool:
    """True for LMFORGE_MALLOC=system; unset (or empty) is the default. Anything else is a typo
    to name in one line, not a silent tcmalloc."""
    expected = "expected system (keep the system's malloc), or leave it unset (tcmalloc where installed)"
    return switch(ENV, ("system",), expected, environ) == "system"


def restart_env(environ: Mapping[str, str], platform: str, library: str | None) -> dict[str, str] | None:
    """The environment to restart this process in with `library` (tcmalloc) preloaded, or None to
    carry on as is: not Linux, LMFORGE_MALLOC=system, an allocator already preloaded (also after
    the restart: no loop), or no tcmalloc on the system."""
    preload = environ.get("LD_PRELOAD", "")
    if keeps_system(environ) or platform != "linux" or library is None:
        return None
    if any(name in preload for name in OTHERS):
        return None
    return {**environ, "LD_PRELOAD": f"{library} {preload}".strip()}


def restart_with_tcmalloc() -> None:
    """Replace this process with the same command under tcmalloc, where it is the `lmforge` command
    and restart_env says so (the process keeps its pid, so launchers that watch it see nothing).
    Returns only when it does not."""
    if not command:
        return
    env = restart_env(os.environ, sys.platform, ctypes.util.find_library(LIBRARY))
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def in_use() -> str:
    """The allocator this process runs on, from the libraries mapped into it: tcmalloc, jemalloc,
    mimalloc, or the system's (glibc on Linux)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    system = "glibc" if sys.platform == "linux" else "system"
    return next((name for name in OTHERS if f"lib{name}" in maps), system)


def describe(engine: str = "local") -> str:
    """One start-up line: the allocator, and how to change it, for a run on `engine`."""
    system = keeps_system(os.environ)
    name = in_use()
    if name == "tcmalloc" and engine == "deepspeed":  # the command never preloads it for DeepSpeed
        return "tcmalloc (preloaded; DeepSpeed runs otherwise keep glibc's: docs/speed.md)"
    if name == "tcmalloc":
        return f"tcmalloc ({ENV}=system keeps the system's)"
    if name != "glibc":
        return f"{name} (preloaded)"
    if system:
        return f"glibc's ({ENV}=system)"
    if engine == "deepspeed":
        return "glibc's (kept for DeepSpeed, whose ranks peaked up to 2.6x higher on tcmalloc: docs/speed.md)"
    if ctypes.util.find_library(LIBRARY):
        return "glibc's (tcmalloc is installed: the `lmforge train` command runs on it, docs/speed.md)"
    return "glibc's (with libtcmalloc-minimal4 installed, `lmforge train` runs on tcmalloc: docs/speed.md)"
