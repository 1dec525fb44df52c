"""Checkpoints: SIGKILL + --resume continues exactly; a crash mid-write loses nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY
from run_helpers import kill_mid_run

from lmforge import outputs
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.train.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint
from lmforge.train.metrics import read_metrics


def _train_cmd(overrides: list[str], out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lmforge", "train", "--out", str(out), *extra, *overrides]


def _losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r}  # eval-only records too


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, tiny_overrides: list[str]) -> None:
    overrides = [
        *tiny_overrides,
        "--train.max_steps=100",  # killed after 10 records (about step 50)
        "--train.checkpoint_interval=20",
        "--train.eval_interval=15",  # the resumed process's first evaluation comes after the
        # uninterrupted run's: whatever runs once per process there (kernel probes) must not draw
        # from the generator (32232f9: a probe's nn.Linear init did, and this passed without evals)
        "--model.dropout=0.1",
        "--train.log_interval=7",  # not a divisor of 20: a log line's window spans the checkpoint
    ]  # dropout: the RNG state must be restored too
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    subprocess.run(_train_cmd(overrides, whole, "--quiet"), check=True, env=env)

    resumed_from = kill_mid_run(_train_cmd(overrides, killed, "--quiet"), killed, lines=10)  # ~step 50
    assert 20 <= resumed_from < 100

    subprocess.run(_train_cmd([], killed, "--quiet", "--resume", str(killed)), check=True, env=env)
    expected, got = _losses(whole), _losses(killed)
    assert sorted(got) == sorted(expected)  # the resumed log reads as one run
    assert all(got[s] == expected[s] for s in expected), "losses differ after resume"
    evals = {r["step"]: r["val_loss"] for r in read_metrics(whole) if "val_loss" in r}
    assert {r["step"]: r["val_loss"] for r in read_metrics(killed) if "val_loss" in r} == evals
    assert len(evals) >= 6
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["val_loss"] == json.loads((whole / "summary.json").read_text())["val_loss"]


def _write(step: int, fail: bool = False):
    def write(directory: Path) -> None:
        (directory / "model.safetensors").write_bytes(b"x" * step)
        if fail:
            raise OSError("disk full")

    return write


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 10, _write(10), {"loader": {}}, keep=3)
    with pytest.raises(OSError):
        save_checkpoint(root, 20, _write(20, fail=True), {"loader": {}}, keep=3)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000010"]
    assert latest_checkpoint(root).name == "step_00000010"
    assert json.loads((latest_checkpoint(root) / "trainer.json").read_text())["step"] == 10


def test_old_checkpoints_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "checkpoints"
    for step in (1, 2, 3, 4):
        save_checkpoint(root, step, _write(step), {}, keep=2)
    assert [p.name for p in list_checkpoints(root)] == ["step_00000003", "step_00000004"]


def test_interrupted_run_checkpoint_is_loadable_as_a_model(tmp_path: Path, tiny_overrides: list[str]) -> None:
    from lmforge.train.loop import train

    train(
        None,
        [*tiny_overrides, "--train.max_steps=4", "--train.checkpoint_interval=2"],
        tmp_path / "r",
        quiet=True,
    )
    model, tokenizer = load_model(latest_checkpoint(tmp_path / "r" / "checkpoints"))
    assert model.config.n_embd == 32 and tokenizer.vocab_size == model.config.vocab_size


def test_resume_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    from lmforge.train.loop import train

    with pytest.raises(LmforgeError, match="not a run directory"):
        train(resume=tmp_path)


def test_a_start_stopped_before_its_first_checkpoint_says_how_to_start_again(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    from lmforge.train.loop import train

    run = tmp_path / "run"
    train(overrides=[*tiny_overrides, "--train.max_steps=2"], out=run, quiet=True)
    for step in list_checkpoints(run / "checkpoints"):
        shutil.rmtree(step)  # as a kill before the first checkpoint leaves it
    again = f"; to start it again: lmforge train {run}/config.toml --out {run} --overwrite"
    with pytest.raises(
        LmforgeError, match=re.escape(f"{run}/checkpoints: no checkpoint to resume from{again}")
    ):
        train(resume=run)


def test_resume_removes_what_a_kill_left_half_written(
    tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture
) -> None:
    """A kill mid-write leaves write_file's temporary files and a checkpoint's .tmp-step folder;
    the next start removes them and says so, and the run's own files are whole."""
    from lmforge.train.loop import train

    run = tmp_path / "run"
    overrides = [*tiny_overrides, "--train.max_steps=4", "--train.checkpoint_interval=2"]
    train(overrides=overrides, out=run, quiet=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # the writer that was killed: its pid has no process any more
    scratch = f"tmp-{outputs._HOST}-{gone.pid}-abcd1234"  # as outputs.write_file names its temporary
    left = [run / f".config.toml.{scratch}", run / f".summary.json.{scratch}", run / ".model-tmp" / "w"]
    for path in left:
        path.parent.mkdir(exist_ok=True)
        path.write_text("")
    (run / "checkpoints" / ".tmp-step_00000003").mkdir()
    capsys.readouterr()
    train(resume=run, overrides=["--train.max_steps=6"])
    said = "".join(capsys.readouterr())
    assert "left half-written by an interrupted run" in said and ".tmp-step_00000003" in said
    assert f"removed {left[0]}, left by an interrupted run (pid {gone.pid})" in said
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name or p.name == ".model-tmp"]
    assert (run / "config.toml").read_text().startswith("[data]")
    assert {p.name for p in (run / "model").iterdir()} >= {"model.safetensors", "config.json"}


def test_a_finished_run_is_not_resumed_and_a_killed_export_is_finished(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """A finished run (its summary.json at the last checkpoint's step) has nothing to resume:
    refused, rather than evaluated again and its results rewritten. Killed in the final export
    (no summary.json yet), resume finishes it with the same loss."""
    from lmforge.train.loop import train

    run = tmp_path / "r"
    first = train(None, [*tiny_overrides, "--train.max_steps=3"], run, quiet=True)
    summary = (run / "summary.json").read_text()
    with pytest.raises(LmforgeError, match=r"finished at step 3 \(its summary.json\): nothing to resume"):
        train(resume=run, quiet=True)
    assert (run / "summary.json").read_text() == summary
    (run / "summary.json").unlink()
    again = train(resume=run, quiet=True)
    assert again["steps"] == 3 and again["val_loss"] == first["val_loss"]
    saved = json.loads((latest_checkpoint(run / "checkpoints") / "trainer.json").read_text())
    assert again["wall_s"] > saved["wall_s"] > 0  # wall time carries over from the checkpoint


def test_a_change_a_resume_made_is_not_blamed_on_the_user(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """A resume may change model.dropout, and writes it to config.toml; one that took no new
    checkpoint (it finished an export) left config.toml apart from the last checkpoint's config,
    and every later refusal said `(config.toml was edited since step_N)`."""
    from lmforge.train.loop import train

    run = tmp_path / "r"
    train(None, [*tiny_overrides, "--train.max_steps=2", "--model.dropout=0.0"], run, quiet=True)
    (run / "summary.json").unlink()  # killed in its final export: the resume finishes it
    train(resume=run, overrides=["--model.dropout=0.5"], quiet=True)
    assert "dropout = 0.5" in (run / "config.toml").read_text()
    with pytest.raises(LmforgeError, match="--resume cannot change train.lr=0.01") as e:
        train(resume=run, overrides=["--train.lr=1e-2", "--train.max_steps=4"], quiet=True)
    assert str(e.value).endswith(
        "(the run has train.lr=0.001); see 'What may change on resume' in docs/training.md"
    )


def test_a_finished_epoch_run_resumes_with_more_epochs(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """train.epochs sets max_steps at start (config.toml records the steps): a finished run resumed
    as it is is refused, naming --train.epochs; with more epochs it trains on (it was refused, with
    a hint to raise max_steps, which epochs overrides)."""
    from lmforge.train.loop import train

    run = tmp_path / "r"
    first = train(None, [*tiny_overrides, "--train.epochs=1", "--train.eval_interval=1000"], run, quiet=True)
    with pytest.raises(
        LmforgeError, match=r"to train it further, resume with a larger --train.epochs \(above 1\)$"
    ):
        train(resume=run, quiet=True)
    with pytest.raises(LmforgeError, match=r"the run finished at step \d+ \(its summary.json\)"):
        train(None, ["--train.epochs=0"], resume=run, quiet=True)  # epochs off: max_steps, reached
    again = train(None, ["--train.epochs=2"], resume=run, quiet=True)
    assert again["steps"] == 2 * first["steps"]
    with pytest.raises(LmforgeError, match=r"a larger --train.epochs \(above 2\)$"):  # fewer than done
        train(None, ["--train.epochs=1"], resume=run, quiet=True)


def test_a_resume_whose_epochs_end_at_its_checkpoint_is_refused(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """finetune-classify records its epochs as max_steps (epochs 0): --train.epochs=1 on resume
    ends where the run already is, so it trained nothing and printed a normal done line."""
    from lmforge.train.loop import train

    steps = train(None, [*tiny_overrides, "--train.epochs=1"], tmp_path / "a", quiet=True)["steps"]
    run = tmp_path / "r"
    train(None, [*tiny_overrides, f"--train.max_steps={steps}"], run, quiet=True)
    config = (run / "config.toml").read_text()
    said = rf"--train.epochs=1 would train nothing: it ends at step {steps} \({steps} steps an epoch\)"
    with pytest.raises(LmforgeError, match=said):
        train(None, ["--train.epochs=1"], resume=run, quiet=True)
    assert (run / "config.toml").read_text() == config
    assert train(None, ["--train.epochs=2"], resume=run, quiet=True)["steps"] == 2 * steps


def test_resume_to_fewer_steps_than_done_is_refused(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """max_steps below the checkpoint's step trains nothing: one line, config.toml untouched."""
    from lmforge.train.loop import train

    run = tmp_path / "r"
    train(None, [*tiny_overrides, "--train.max_steps=4", "--train.checkpoint_interval=2"], run, quiet=True)
    config = (run / "config.toml").read_text()
    with pytest.raises(LmforgeError, match=r"max_steps=3 would train nothing: .* at step 4"):
        train(None, ["--train.max_steps=3"], resume=run, quiet=True)
    assert (run / "config.toml").read_text() == config
    assert train(None, ["--train.max_steps=5"], resume=run, quiet=True)["steps"] == 5


def test_a_run_on_relative_paths_resumes_from_another_directory(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """config.toml records the inputs absolute: a resume from elsewhere reads the same prepared
    data. A run recorded with a relative path (before) is told to resume from where it started."""
    import lmforge
    from lmforge.config import load_config
    from lmforge.train.loop import train

    start, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(start)
    lmforge.prep(corpus, "prepared", "char", val_fraction=0.2, quiet=True)
    train(None, ["--data.input=prepared", *TINY, "--train.max_steps=2"], "run", quiet=True)
    assert load_config(start / "run" / "config.toml").data.input == str(start / "prepared")
    monkeypatch.chdir(elsewhere)
    assert train(None, ["--train.max_steps=3"], resume=start / "run", quiet=True)["steps"] == 3
    monkeypatch.chdir(start)  # a run recorded with a relative path, as before
    monkeypatch.setattr(sys.modules["lmforge.train.run_dir"], "make_inputs_absolute", lambda cfg: None)
    train(None, ["--data.input=prepared", *TINY, "--train.max_steps=2"], "old", quiet=True)
    monkeypatch.chdir(elsewhere)
    with pytest.raises(
        LmforgeError,
        match=r"data\.input='prepared': no such .* in the working directory, .*"
        r"elsewhere; the run's config.toml names it relative to the directory the run started in",
    ):
        train(None, ["--train.max_steps=3"], resume=start / "old", quiet=True)
    monkeypatch.chdir(start)
    assert train(None, ["--train.max_steps=3"], resume=start / "old", quiet=True)["steps"] == 3
