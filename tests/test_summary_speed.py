"""summary.json's steady speed: tokens/s and MFU over the steps after each process's first, which
pays for start-up (on an H200, a 40-step GPT-2 run read 149k tok/s in all against 327k steady)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

import lmforge
from lmforge.train import loop


def test_the_steady_speed_leaves_out_each_processs_first_step(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = loop.forward_backward
    calls = []

    def slow_first(*args: Any, **kwargs: Any) -> float:
        calls.append(1)
        if len(calls) == 1:
            time.sleep(1.0)  # a start-up the steady figure must not see
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "forward_backward", slow_first)
    steps = ["--train.max_steps=4", "--train.eval_interval=4", "--train.checkpoint_interval=2"]
    s = lmforge.train(None, [*tiny_overrides, *steps], out=tmp_path / "run", quiet=True)
    per_step = s["tokens"] / 4
    assert s["train_s"] > 1.0 and s["tokens_per_s"] < s["tokens_per_s_steady"]
    # the steady figure is the three steps after the first: their seconds are train_s less the first's
    first_s = s["train_s"] - 3 * per_step / s["tokens_per_s_steady"]
    assert 1.0 < first_s < s["train_s"]
    assert s["mfu_steady"] / s["mfu"] == pytest.approx(s["tokens_per_s_steady"] / s["tokens_per_s"])

    # a resumed process's first step is its own warm-up too: resuming from step 2 adds one
    calls.clear()
    (tmp_path / "run" / "summary.json").unlink()
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_00000004")
    resumed = lmforge.train(resume=tmp_path / "run", quiet=True)
    assert len(calls) == 2  # steps 3 and 4, the first of them slow
    first_s = resumed["train_s"] - 2 * per_step / resumed["tokens_per_s_steady"]
    assert first_s > 2.0  # the first run's first step and the resumed one's
