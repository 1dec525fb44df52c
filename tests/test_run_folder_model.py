"""Which model a run folder names (formats/directory.py resolve_model_dir): its export, model/,
unless the run trained on past it; then its newest checkpoint, said once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.formats.directory import resolve_model_dir


def _run(root: Path, finished_at: int | None, checkpoints: tuple[int, ...]) -> Path:
    (root / "model").mkdir(parents=True)
    (root / "model" / "config.json").write_text("{}")
    if finished_at is not None:
        (root / "summary.json").write_text(json.dumps({"steps": finished_at}))
    for step in checkpoints:
        (root / "checkpoints" / f"step_{step:08d}").mkdir(parents=True)
    return root


def test_a_finished_run_resumed_past_its_export_loads_its_newest_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished run resumed to train longer and killed kept step 40's model/ and summary.json
    beside checkpoints to step 80: `--init-from RUN`, generate, serve... took step 40's, unsaid."""
    run = _run(tmp_path / "ext", 40, (40, 60, 80))
    newest = run / "checkpoints" / "step_00000080"
    assert resolve_model_dir(run) == newest
    assert resolve_model_dir(run) == newest  # several loaders of one command: one note
    note = (
        f"lmforge: note: {run / 'model'} is step 40's export, and the run trained on past it (resumed, not"
        f" finished): loading its newest checkpoint, {newest}; give {run / 'model'} for the export\n"
    )
    assert capsys.readouterr().err == note
    assert resolve_model_dir(run / "model") == run / "model"  # the export, where named
    # steps, not times: the export of the finish (its last checkpoint, or the best step's) stays
    assert resolve_model_dir(_run(tmp_path / "done", 80, (60, 80))) == tmp_path / "done" / "model"
    # no summary.json: a run stopped in its final export after writing model/, or one from before
    assert resolve_model_dir(_run(tmp_path / "cut", None, (40, 80))) == tmp_path / "cut" / "model"
    assert capsys.readouterr().err == ""
