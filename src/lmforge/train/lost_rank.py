"""A collective that failed because another rank is gone: the run's own error, not a bug's.

A rank killed (the OOM killer, a node lost) or stopped (a hung rank past engine.timeout_s) makes the
others' next collective fail with the backend's RuntimeError: gloo's `Connection reset by peer`,
`Timed out waiting 15000ms for recv`, NCCL's watchdog timeout (torch's DistError and its
subclasses). Until 2026-12-08 the survivors printed a 25-line traceback and exit status 1, without
the resume point that Ctrl-C, SIGTERM and a full disk get.
"""

from __future__ import annotations

import re

import torch.distributed as dist

from lmforge.errors import LmforgeError

# the backends' words for a peer that died or did not answer (their messages are the only sign:
# gloo raises a plain RuntimeError)
PEER_GONE = re.compile(
    r"Connection reset by peer|Connection closed by peer|Broken pipe|Timed out waiting"
    r"|Watchdog caught collective operation timeout|NCCL communicator was aborted|remote process exited"
)
SOURCE_PREFIX = re.compile(r"^\[[^\]]*\.(?:cc|cpp|h):\d+\]\s*")  # gloo's `[.../pair.cc:537] `


class RankLost(LmforgeError):
    """Another rank of the run died or stopped answering (see the module doc)."""


def rank_lost(e: BaseException, world_size: int, timeout_s: int) -> RankLost | None:
    """The one-line error for `e` where it says another rank is gone, else None (a bug: its traceback)."""
    if world_size < 2 or not isinstance(e, RuntimeError):
        return None
    text = str(e).strip()
    if not (PEER_GONE.search(text) or isinstance(e, dist.DistError)):
        return None
    first = SOURCE_PREFIX.sub("", text.splitlines()[0] if text else "")
    why = first.split(". This is typically")[0][:200]  # gloo's advice after it is not for this case
    return RankLost(f"another rank died or did not answer within engine.timeout_s={timeout_s} s ({why})")
