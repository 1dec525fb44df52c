"""A run from train.init_from keeps one copy of the weights: the task builds the model to train
from the loaded one and lets go of it (a chat LoRA run on SmolLM2 held both all run: 538 MB more
peak RSS, 3.92 against 3.39 GiB measured)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from hf_helpers import make_hf_model

from lmforge.formats.hf_files import import_hf
from lmforge.train import run_inputs
from lmforge.train.loop import train
from lmforge.train.losses import lm_loss as real_lm_loss
from lmforge.train.tasks import lm as lm_task


def test_the_loaded_model_is_let_go_once_the_model_to_train_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_hf_model("llama", tmp_path / "hf")
    base = import_hf(tmp_path / "hf", tmp_path / "base")
    (tmp_path / "text.txt").write_text(make_text(lines=200))
    loaded: list[weakref.ref] = []

    def init_model(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        out = run_inputs.init_model(*args, **kwargs)
        loaded.append(weakref.ref(out[0]))
        return out

    alive: list[bool] = []

    def lm_loss(model: torch.nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        gc.collect()
        alive.append(any(ref() is not None for ref in loaded))
        return real_lm_loss(model, *batch)

    monkeypatch.setattr(lm_task, "init_model", init_model)
    monkeypatch.setattr(lm_task, "lm_loss", lm_loss)
    overrides = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={base}", "--train.max_steps=2",
                 "--train.batch_size=2", "--train.eval_interval=1000", "--train.eval_batches=1"]  # fmt: skip
    train(overrides=overrides, out=tmp_path / "run", quiet=True)
    assert loaded and alive and not any(alive)
