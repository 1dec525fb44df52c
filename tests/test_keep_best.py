"""train.keep_best: a language model's export is its evaluation with the lowest val_loss, as
nanoGPT's recipe keeps its best checkpoint of a run that overfits; without it, the last step's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import lmforge
from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.train.tasks.lm import LanguageModelling

STEPS = ["--train.max_steps=6", "--train.eval_interval=2", "--train.checkpoint_interval=2",
         "--train.keep_checkpoints=3"]  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("keep_best", [True, False])
def test_the_export_is_the_lowest_val_loss_step(
    keep_best: bool, tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([3.0, 1.0, 2.0])  # the evaluations at steps 2, 4 and 6: step 4 is the best
    real = LanguageModelling.evaluate

    def evaluate(self: LanguageModelling, *args: object) -> dict[str, float]:
        return {**real(self, *args), "val_loss": next(scripted)}

    monkeypatch.setattr(LanguageModelling, "evaluate", evaluate)
    run = tmp_path / "run"
    summary = lmforge.train(
        None, [*tiny_overrides, *STEPS, f"--train.keep_best={keep_best}"], out=run, quiet=True
    )
    exported, checkpoints = _weights(run / "model"), run / "checkpoints"
    if keep_best:
        assert (summary["best_loss"], summary["best_step"]) == (1.0, 4)
        assert _same(exported, _weights(run / "best"))
        assert _same(exported, _weights(checkpoints / "step_00000004"))
        assert not _same(exported, _weights(checkpoints / "step_00000006"))
    else:
        assert "best_loss" not in summary and not (run / "best").exists()
        assert _same(exported, _weights(checkpoints / "step_00000006"))


def test_a_tie_in_the_task_s_metric_goes_to_the_lower_val_loss(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A translation run whose val_bleu stayed 0 kept its first evaluation as the model, the
    least trained; a tie now goes to the lower val_loss, then the earlier step."""
    scripted = iter([3.0, 1.0, 1.0])
    real = LanguageModelling.evaluate

    def evaluate(self: LanguageModelling, *args: object) -> dict[str, float]:
        return {**real(self, *args), "val_loss": next(scripted), "val_score": 0.0}

    monkeypatch.setattr(LanguageModelling, "evaluate", evaluate)
    monkeypatch.setattr(LanguageModelling, "best_metric", "val_score")
    run = tmp_path / "run"
    summary = lmforge.train(None, [*tiny_overrides, *STEPS], out=run, quiet=True)
    assert (summary["best_score"], summary["best_step"]) == (0.0, 4)
    assert _same(_weights(run / "model"), _weights(run / "checkpoints" / "step_00000004"))


@pytest.mark.parametrize("task", ["translation", "qa", "classification"])
def test_keep_best_is_refused_where_it_would_change_nothing_or_flatter(task: str) -> None:
    with pytest.raises(LmforgeError, match=rf"train\.keep_best=true: {task} "):
        load_config(None, [f"--data.task={task}", "--train.keep_best=true"])


@pytest.mark.parametrize("left", ["a later best", "no best weights"])
def test_a_best_the_checkpoint_did_not_see_is_not_exported_as_its_best(
    left: str,
    tiny_overrides: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    """A kill after best/ took step 6's weights but before step 6's checkpoint: the resume from
    step 4 (whose best was step 4) exported best/'s weights as step 4's. And a resume that cleared
    them, killed before its own evaluation, left the next one exporting the last step's weights
    as step 4's. Now either is named, best/ cleared, and the best chosen again."""
    scripted = iter([3.0, 2.0, 1.0, 5.0])  # the first run's evaluations at 2, 4 and 6, then the resumed one's
    real = LanguageModelling.evaluate

    def evaluate(self: LanguageModelling, *args: object) -> dict[str, float]:
        return {**real(self, *args), "val_loss": next(scripted)}

    monkeypatch.setattr(LanguageModelling, "evaluate", evaluate)
    run = tmp_path / "run"
    lmforge.train(None, [*tiny_overrides, *STEPS, "--train.keep_best=true"], out=run, quiet=True)
    stale = _weights(run / "best")
    for gone in (run / "checkpoints" / "step_00000006", run / "model"):  # as a kill there leaves it
        for file in gone.iterdir():
            file.unlink()
        gone.rmdir()
    (run / "summary.json").unlink()
    if left == "no best weights":
        (run / "best" / "model.safetensors").unlink()
    capsys.readouterr()
    summary = lmforge.train(resume=run, overrides=["--model.dropout=0.5"], quiet=True)  # steps 5-6 differ
    said = "holds step 6's weights, not step 4's" if left == "a later best" else "holds no weights"
    assert f"best {said} (the checkpoint's best, step 4, was not kept)" in capsys.readouterr().err
    exported = _weights(run / "model")
    assert (summary["best_loss"], summary["best_step"]) == (5.0, 6)
    assert _same(exported, _weights(run / "checkpoints" / "step_00000006"))
    assert _same(exported, _weights(run / "best")) and not _same(exported, stale)


def test_an_unreadable_best_is_passed_over_on_resume_with_a_line(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """best/model.safetensors overwritten by text (an --out pointed there) stopped the resume with
    safetensors' traceback (header too large); now it is named, left, and the best chosen again
    from the resumed steps, whose best replaces it and becomes the export."""
    run = tmp_path / "run"
    lmforge.train(None, [*tiny_overrides, *STEPS, "--train.keep_best=true"], out=run, quiet=True)
    damaged = run / "best" / "model.safetensors"
    damaged.write_text('{"1": "Ada"}\n')  # predictions, as eval-qa --out wrote them
    with pytest.raises(Exception, match="header"):  # the oracle: safetensors itself cannot read it
        load_file(str(damaged))
    capsys.readouterr()
    summary = lmforge.train(resume=run, overrides=["--train.max_steps=8"], quiet=True)
    err = capsys.readouterr().err
    assert f"{damaged}: skipped, unreadable (" in err and "best, step " in err
    assert summary["best_step"] == 8  # the only evaluation after the resume
    assert _same(_weights(run / "model"), _weights(run / "best"))
    assert _same(_weights(run / "model"), _weights(run / "checkpoints" / "step_00000008"))
