"""Running lmforge as a user does, in a subprocess, and stopping it the hard way."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from lmforge.train.checkpoint import latest_checkpoint


def kill_mid_run(cmd: list[str], run_dir: Path, lines: int = 45, cwd: Path | None = None) -> int:
    """Start `cmd` (a training run writing into run_dir), SIGKILL it once its metrics.jsonl has
    `lines` records, and return the step of the checkpoint a resume will start from."""
    proc = subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=cwd)
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= lines:
            break
        time.sleep(0.002)
    assert proc.poll() is None, "training ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return int(latest_checkpoint(run_dir / "checkpoints").name.split("_")[1])
