"""data.seq_len: language modelling on windows shorter than the model's context, as transformers'
run_clm.py block_size (a long-context model such as SmolLM2, 8,192 tokens, fine-tuned on 512)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lmforge
from lmforge.errors import LmforgeError


def test_windows_of_seq_len_from_a_longer_context_model(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = ["--train.max_steps=3", "--train.eval_interval=3"]
    lmforge.train(overrides=[*tiny_overrides, *steps], out=tmp_path / "base", quiet=True)  # context 32
    tune = [*[o for o in tiny_overrides if not o.startswith("--model.")], *steps,
            f"--train.init_from={tmp_path / 'base'}", "--data.seq_len=8"]  # fmt: skip
    capsys.readouterr()
    summary = lmforge.train(overrides=tune, out=tmp_path / "tuned", quiet=False)
    assert summary["tokens"] == 3 * 8 * 8  # steps x batch x windows of 8, not of the context's 32
    assert ", windows of 8 tokens (data.seq_len)" in capsys.readouterr().out
    model = json.loads((tmp_path / "tuned" / "model" / "config.json").read_text())
    assert model["block_size"] == 32  # the model keeps its context
    plan = lmforge.plan(overrides=tune)
    assert plan["tokens_per_sequence"] == 8 and plan["model"]["block_size"] == 32
    with pytest.raises(LmforgeError, match=r"^data.seq_len=64 is above the model's context of 32 tokens$"):
        lmforge.train(overrides=[*tune, "--data.seq_len=64"], out=tmp_path / "too-long", quiet=True)
    assert not (tmp_path / "too-long").exists()
