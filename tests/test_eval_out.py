"""An evaluation's --out (eval-translate, eval-qa, eval-instruct, audit: one check_out) never goes
into the model's folders: `eval-qa RUN --out RUN/checkpoints/step_N/optimizer.safetensors
--overwrite` replaced a checkpoint's optimizer state with predictions, `--out RUN/best/model.safetensors`
the best step's weights, whatever the file's name."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from lmforge.errors import LmforgeError
from lmforge.inference.translate import check_out

STEP = "checkpoints/step_00000200"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A run's folder as train leaves it (the files' contents do not matter to check_out)."""
    run = tmp_path / "run"
    for name in ("config.toml", "metrics.jsonl", "summary.json"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    for folder in ("model", "best", STEP):
        (run / folder).mkdir(parents=True)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            (run / folder / name).write_text("x")
    (run / STEP / "optimizer.safetensors").write_text("x")
    return run


def _refused(out: Path, model: Path, inside: Path) -> None:
    before = out.read_text() if out.exists() else None
    with pytest.raises(
        LmforgeError, match=rf"out={re.escape(str(out))} lies inside .* {re.escape(str(inside))}: "
    ):
        check_out(out, {}, overwrite=True, model=model)
    assert (out.read_text() if out.exists() else None) == before


@pytest.mark.parametrize(
    "name", [f"{STEP}/optimizer.safetensors", f"{STEP}/model.safetensors", "best/model.safetensors",
             "model/notes.txt", "best/notes.txt", f"{STEP}/new.json"],
)  # fmt: skip
def test_out_inside_a_run_is_refused_even_with_overwrite(run: Path, name: str) -> None:
    _refused(run / name, run, run / "model" if name.startswith("model/") else run)  # model/: what RUN names


def test_the_run_of_a_checkpoint_or_best_given_as_model_is_guarded_too(run: Path) -> None:
    _refused(run / "best" / "model.safetensors", run / STEP, run.resolve())
    _refused(run / STEP / "optimizer.safetensors", run / "best", run.resolve())
    _refused(run / "best" / "model.safetensors", run / "model", run.resolve())
    _refused(run / STEP / "fresh.json", run / STEP, run / STEP)


def test_a_link_or_a_dotted_path_into_the_run_is_refused(run: Path, tmp_path: Path) -> None:
    link = tmp_path / "preds.json"
    link.symlink_to(run / "best" / "model.safetensors")
    _refused(link, run, run)
    (tmp_path / "alias").symlink_to(run)
    _refused(tmp_path / "alias" / STEP / "optimizer.safetensors", run, run)
    _refused(run / "model" / ".." / "best" / "model.safetensors", run, run)


def test_a_model_directory_s_folder_is_guarded(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    _refused(model / "preds.json", model, model)


def test_outputs_outside_the_model_and_a_new_file_beside_a_run_s_files_are_written(
    run: Path, tmp_path: Path
) -> None:
    for out in (tmp_path / "preds.json", run / "eval.json"):
        assert check_out(out, {}, overwrite=True, model=run) == out
    (tmp_path / "old.json").write_text("x")
    assert check_out(tmp_path / "old.json", {}, overwrite=True, model=run / STEP) == tmp_path / "old.json"


def test_a_lora_run_s_base_model_is_guarded_too(run: Path, tmp_path: Path) -> None:
    """A LoRA run reads its base (lora.json's, sha256-checked) as much as its own files: `eval-instruct
    LORA --out BASE/config.json --overwrite` replaced the base's config, and a new
    BASE/model.safetensors.index.json broke it (until 2026-12-07)."""
    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "model.safetensors"):
        (base / name).write_text("x")
    for folder in (run / "model", run / STEP):
        relative = os.path.relpath(base, folder)
        meta = {"lora": {}, "base": {"path": "/gone", "sha256": {}, "relative_path": relative}}
        (folder / "lora.json").write_text(json.dumps(meta))
    for model in (run, run / STEP):
        with pytest.raises(LmforgeError, match=r"is the model's file .*base.config\.json: writing it"):
            check_out(base / "config.json", {}, overwrite=True, model=model)
        _refused(base / "model.safetensors.index.json", model, base.resolve())
    assert (base / "config.json").read_text() == "x"
    assert check_out(tmp_path / "preds.json", {}, overwrite=True, model=run) == tmp_path / "preds.json"
