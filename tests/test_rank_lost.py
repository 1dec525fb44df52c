"""A rank that dies mid-run: the others' next collective fails with the backend's RuntimeError.
They printed a 25-line gloo traceback and exit status 1 (the K6 pass); now one line naming the
cause and the resume point, as Ctrl-C and a full disk get, and exit status 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.distributed as dist

from lmforge.train.lost_rank import rank_lost

GLOO_RESET = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:33506: Connection"
    " reset by peer. This is typically caused by a remote worker hanging or bugs in the application."
)
GLOO_TIMEOUT = (
    "[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 15000ms"
    " for recv operation to complete"
)


def test_the_backends_words_for_a_rank_gone_are_one_line() -> None:
    lost = rank_lost(RuntimeError(GLOO_RESET), 2, 60)
    assert str(lost) == (
        "another rank died or did not answer within engine.timeout_s=60 s (Read error [127.0.0.1]:33506:"
        " Connection reset by peer)"
    )
    assert "Timed out waiting 15000ms for recv operation to complete)" in str(
        rank_lost(RuntimeError(GLOO_TIMEOUT), 2, 15)
    )
    assert rank_lost(dist.DistBackendError("NCCL error"), 4, 60) is not None
    # a bug stays a bug (its traceback), and one process has no other rank
    assert rank_lost(RuntimeError("mat1 and mat2 shapes cannot be multiplied"), 2, 60) is None
    assert rank_lost(ValueError(GLOO_RESET), 2, 60) is None
    assert rank_lost(RuntimeError(GLOO_RESET), 1, 60) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the ranks' signals")
def test_a_rank_killed_mid_run_leaves_the_other_one_line_and_the_resume_point(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """Two ranks started as torchrun starts them (no agent to SIGTERM the survivor first)."""
    out = tmp_path / "run"
    port = _free_port()
    command = [sys.executable, "-m", "lmforge", "train", *tiny_overrides, "--engine.name=ddp",
               "--engine.timeout_s=60", "--train.max_steps=100000", "--train.max_minutes=0",
               "--train.checkpoint_interval=2", "--train.eval_interval=100000", f"--out={out}"]  # fmt: skip
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}  # fmt: skip
        env.pop("LMFORGE_AGENT_PID", None)
        ranks.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True))  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not list((out / "checkpoints").glob("step_*")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert list((out / "checkpoints").glob("step_*")), "no checkpoint within 3 minutes"
        ranks[1].send_signal(signal.SIGKILL)
        _, err = ranks[0].communicate(timeout=120)
    finally:
        for proc in ranks:
            if proc.poll() is None:
                proc.kill()
    assert ranks[0].returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        "lmforge: error: another rank died or did not answer within engine.timeout_s=60 s ("
    ), last
    assert (
        "its last checkpoint is step " in last and f"lmforge train --resume {out} continues exactly" in last
    )


def test_a_rank_waiting_past_the_timeout_for_rank_0s_prep_is_one_line(tmp_path: Path) -> None:
    """Raw text as data.input: rank 0 prepares it while the others wait in a barrier bounded by
    engine.timeout_s; a corpus whose preparation took longer ended the run with gloo's traceback."""
    from types import SimpleNamespace

    from lmforge.config import load_config
    from lmforge.errors import LmforgeError
    from lmforge.train.tasks.lm import prepared_data

    def barrier(message: str) -> None:
        raise RuntimeError(message)

    cfg = load_config(None, ["--data.input=big.jsonl", "--engine.name=ddp", "--engine.timeout_s=15"])
    engine = SimpleNamespace(rank=1, world_size=2, barrier=lambda: barrier(GLOO_TIMEOUT))
    setup = SimpleNamespace(cfg=cfg, engine=engine, run_dir=tmp_path, say=print)
    with pytest.raises(
        LmforgeError, match=r"^data.input='big.jsonl': rank 1 waited engine.timeout_s=15 s for"
    ):
        prepared_data(setup, None)  # type: ignore[arg-type]
    # rank 0 failed at once (an empty corpus: its own line says why): no advice about the timeout (R6)
    engine.barrier = lambda: barrier(GLOO_RESET)
    with pytest.raises(LmforgeError, match=r"^another rank died or did not answer"):
        prepared_data(setup, None)  # type: ignore[arg-type]
