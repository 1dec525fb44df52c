"""A full disk while a run writes: one line naming the file, the checkpoint before it whole, the
partial checkpoint folder removed (its space freed), and, as a Ctrl-C's stop line does, the
checkpoint a resume continues from and the command, or that there is none yet. (Until 2026-12-07
the line named the file alone, and the partial .tmp-step_N stayed until the next start.)"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
import torch
from conftest import TINY
from conftest import quiet_train as _train

from lmforge.errors import CannotWrite, LmforgeError
from lmforge.train import checkpoint as ckpt
from lmforge.train.metrics import MetricsLog


def _overrides(corpus: Path) -> list[str]:
    return [f"--data.input={corpus}", *TINY, "--train.max_steps=4", "--train.checkpoint_interval=2"]


def _resume_line(run: Path, step: int, last: int) -> str:
    return re.escape(
        f"; stopped at step {step}; its last checkpoint is step {last}:"
        f" lmforge train --resume {run} continues exactly from there"
    )


def full_at(step: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is full when step `step`'s checkpoint writes its manifest (a plain write, whose
    OSError names no file)."""
    real = ckpt.write_manifest

    def write_manifest(directory: Path) -> None:
        if directory.name == f".tmp-{ckpt.PREFIX}{step:08d}":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(directory)

    monkeypatch.setattr(ckpt, "write_manifest", write_manifest)


def test_a_full_disk_at_a_checkpoint_names_the_one_a_resume_continues_from(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    full_at(4, monkeypatch)
    partial = run / "checkpoints" / ".tmp-step_00000004"
    line = (
        re.escape(f"{partial}: cannot write: No space left on device (step 4's checkpoint: its partial")
        + " folder was removed\\)"
        + _resume_line(run, 4, 2)
    )
    with pytest.raises(CannotWrite, match=f"^{line}$"):
        _train(None, _overrides(corpus), run)
    assert not partial.exists()  # removed, its space freed
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000002"]
    assert ckpt.latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "step_00000002"  # verifies
    monkeypatch.undo()  # space again: the resume the line names finishes the run
    summary = _train(resume=run)
    assert summary["steps"] == 4 and (run / "checkpoints" / "step_00000004" / ckpt.MANIFEST).is_file()


def test_a_full_disk_at_the_first_checkpoint_says_there_is_none_to_resume(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    full_at(2, monkeypatch)
    with pytest.raises(
        CannotWrite,
        match=re.escape("; stopped at step 2, before its first checkpoint: nothing of it to resume") + "$",
    ):
        _train(None, _overrides(corpus), run)
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())


def test_a_full_disk_between_checkpoints_names_the_last_one(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """metrics.jsonl's write at step 3: an open file's write, whose OSError names no file (it was a
    bare `lmforge: error: No space left on device`)."""
    real = MetricsLog.log

    def log(self: MetricsLog, step: int, **values: float) -> None:
        if step == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(self, step, **values)

    monkeypatch.setattr(MetricsLog, "log", log)
    run = tmp_path / "run"
    line = "No space left on device" + _resume_line(run, 3, 2)
    with pytest.raises(CannotWrite, match=f"^{line}$"):
        _train(None, [*_overrides(corpus), "--train.log_interval=1"], run)


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_one_before(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """safetensors raises its own error, not an OSError, for the I/O error under a write: it was a
    traceback. The third weights file written (step 4's optimizer moments) finds the disk full."""
    from safetensors import SafetensorError

    import lmforge.formats.directory as directory

    real, writes = directory.save_file, []

    def save_file(tensors: dict, file: str, metadata: dict | None = None) -> None:
        writes.append(file)
        if len(writes) == 5:
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        real(tensors, file, metadata=metadata)

    monkeypatch.setattr(directory, "save_file", save_file)
    run = tmp_path / "run"
    line = (
        r"\S+/\.tmp-step_00000004/optimizer\.safetensors: cannot write: No space left on device"
        r" \(os error 28\) \(step 4's checkpoint: its partial folder was removed\)" + _resume_line(run, 4, 2)
    )
    with pytest.raises(LmforgeError, match=f"^{line}$"):
        _train(None, _overrides(corpus), run)
    assert ckpt.latest_checkpoint(run / "checkpoints") == run / "checkpoints" / "step_00000002"  # whole
    assert not (run / "checkpoints" / ".tmp-step_00000004").exists()

    def broken(*_: object, **__: object) -> None:
        raise SafetensorError("Error while serializing: a bug, not the disk")

    monkeypatch.setattr(directory, "save_file", broken)
    with pytest.raises(SafetensorError, match="not the disk"):  # another error of safetensors: raised
        directory.write_safetensors({"x": torch.ones(2)}, tmp_path / "x.safetensors")


def test_a_full_disk_in_the_final_export_says_what_finishes_the_run(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """loss.png's write failing left summary.json written (the run "finished": nothing to resume)
    and no loss.png; now summary.json comes last and the line names the resume that finishes it."""
    from lmforge.train import metrics

    run = tmp_path / "run"
    real = metrics.write_file

    def write_file(path: Path, data: str | bytes) -> None:
        if Path(path).name == "loss.png":
            raise CannotWrite(f"{path}: cannot write: No space left on device")
        real(path, data)

    monkeypatch.setattr(metrics, "write_file", write_file)
    finishes = re.escape(f"; stopped in the final export: lmforge train --resume {run} finishes it")
    with pytest.raises(CannotWrite, match=f"loss.png: cannot write: .*{finishes}$"):
        _train(None, _overrides(corpus), run)
    assert not (run / "summary.json").exists() and not (run / "loss.png").exists()
    monkeypatch.setattr(metrics, "write_file", real)
    summary = _train(None, None, resume=run)
    assert summary["val_loss"] > 0 and (run / "summary.json").is_file() and (run / "loss.png").is_file()
