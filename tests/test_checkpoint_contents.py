"""A run's checkpoint folders: a user's file in one is neither deleted by --overwrite nor by pruning,
and a checkpoint whose contents are malformed (its manifest re-made, or none) is refused in one line
naming the file and key, never a traceback (C6)."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import quiet_train as _train
from safetensors.torch import load_file, save_file

from lmforge.errors import LmforgeError
from lmforge.train import checkpoint as ckpt


@pytest.fixture
def run(checkpointed_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(checkpointed_run, copy)
    return copy


def _step(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- --overwrite: each folder judged against what its writer makes ---------------------------


def test_overwrite_refuses_a_users_file_in_a_checkpoint(run: Path, tiny_overrides: list[str]) -> None:
    (_step(run, 2) / "NOTES.md").write_text("mine")
    before = _files(run)
    with pytest.raises(
        LmforgeError, match=rf"{_step(run, 2)}: holds files train did not write \(NOTES\.md\); --overwrite"
    ):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert _files(run) == before and not list(run.glob(".replaced-*"))


def test_a_name_in_a_checkpoint_does_not_let_the_same_name_through_model(
    run: Path, tiny_overrides: list[str]
) -> None:
    """Before, train's files were the names found in any checkpoint: a README.md in one let
    model/README.md through, and --overwrite deleted both."""
    (_step(run, 4) / "README.md").write_text("card")
    (run / "model" / "README.md").write_text("card")
    before = _files(run)
    with pytest.raises(
        LmforgeError, match=rf"{run / 'model'}: holds files train did not write \(README\.md\)"
    ):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    (run / "model" / "README.md").unlink()
    with pytest.raises(
        LmforgeError, match=rf"{_step(run, 4)}: holds files train did not write \(README\.md\)"
    ):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert _files(run) == {k: v for k, v in before.items() if k != "model/README.md"}


# --- pruning (train.keep_checkpoints) -----------------------------------------------------------


def _weights(directory: Path) -> None:
    (directory / "model.safetensors").write_bytes(b"weights")


def test_pruning_keeps_a_users_file_in_an_old_checkpoint(tmp_path: Path) -> None:
    root, said = tmp_path / "checkpoints", []
    first = ckpt.save_checkpoint(root, 1, _weights, {}, keep=1, say=said.append)
    (first / "NOTES.md").write_text("my eval notes")
    ckpt.save_checkpoint(root, 2, _weights, {}, keep=1, say=said.append)
    assert sorted(p.name for p in first.iterdir()) == ["NOTES.md"]  # only train's files went
    assert (first / "NOTES.md").read_text() == "my eval notes"
    assert len(said) == 1 and str(first) in said[0] and "NOTES.md" in said[0]
    ckpt.save_checkpoint(root, 3, _weights, {}, keep=1, say=said.append)
    assert len(said) == 1, "said once, when its files were removed"
    assert [p.name for p in ckpt.list_checkpoints(root)] == [
        "step_00000001",
        "step_00000003",
    ]  # 2: all train's
    assert ckpt.latest_checkpoint(root).name == "step_00000003"


def test_a_resumed_run_prunes_around_a_users_file(run: Path) -> None:
    (_step(run, 2) / "NOTES.md").write_text("mine")
    _train(resume=run, overrides=["--train.max_steps=8", "--train.keep_checkpoints=2"])
    assert (_step(run, 2) / "NOTES.md").read_text() == "mine"
    assert not _step(run, 4).exists() and _step(run, 8).is_dir()


# --- malformed contents ---------------------------------------------------------------------


def _rehash(step: Path) -> None:
    """Make the manifest agree with the files again, as a hand 'repair' would."""
    manifest = json.loads((step / "manifest.json").read_text())
    for name in manifest["files"]:
        data = (step / name).read_bytes()
        manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step / "manifest.json").write_text(json.dumps(manifest))


def _edit_json(step: Path, name: str, edit: Callable[[dict], object]) -> None:
    path = step / name
    path.write_text(json.dumps(edit(json.loads(path.read_text()))))


def _cut_tensor(step: Path, name: str, suffix: str = "") -> str:
    tensors = load_file(str(step / name))
    key = next(k for k, v in tensors.items() if v.dim() == 2 and k.endswith(suffix))
    tensors[key] = tensors[key][:, :-1].contiguous()
    save_file(tensors, str(step / name))
    return key


def _loader_cursor_text(step: Path) -> str:
    _edit_json(step, "trainer.json", lambda t: {**t, "loader": {**t["loader"], "cursor": "abc"}})
    return r"trainer\.json: loader\.cursor is 'abc', not a whole number"


def _loader_cursor_past(step: Path) -> str:  # an IndexError traceback at the first step until 2026-12-08
    _edit_json(step, "trainer.json", lambda t: {**t, "loader": {**t["loader"], "cursor": 10**6}})
    return r"trainer\.json: loader\.cursor is 1000000, past its epoch's [\d,]+ windows: the checkpoint is"


def _short_rng(step: Path) -> str:
    tensors = load_file(str(step / "rng.safetensors"))
    save_file({"torch_cpu": tensors["torch_cpu"][:10].contiguous()}, str(step / "rng.safetensors"))
    return r"rng\.safetensors: torch_cpu is a torch\.uint8 tensor of shape \(10,\)"


def _model_shape(step: Path) -> str:
    key = _cut_tensor(step, "model.safetensors")
    return rf"model\.safetensors: {key} has shape \(\d+, \d+\), the model's is"


def _moment_shape(step: Path) -> str:
    key = _cut_tensor(step, "optimizer.safetensors", ".exp_avg")
    return rf"optimizer\.safetensors: {key} has shape \(\d+, \d+\), the parameter's is"


def _scheduler_object(step: Path) -> str:
    (step / "optimizer.json").write_text('{"x": 1}')
    return r"optimizer\.json: has no 'scheduler' object"


def _log_window_text(step: Path) -> str:
    _edit_json(step, "trainer.json", lambda t: {**t, "log_window": {**t["log_window"], "loss": "x"}})
    return r"trainer\.json: log_window is .*, not the log window's sums"


@pytest.mark.parametrize(
    "damage",
    [
        _loader_cursor_text,
        _loader_cursor_past,
        _short_rng,
        _model_shape,
        _moment_shape,
        _scheduler_object,
        _log_window_text,
    ],  # fmt: skip
)
def test_a_malformed_checkpoint_is_one_line_naming_file_and_key(
    run: Path, damage: Callable[[Path], str]
) -> None:
    """Each passed the manifest (re-made after the edit) and then raised a traceback, or (a moment
    of the wrong shape) loaded and aborted the run on non-finite steps."""
    step = _step(run, 4)
    expected = damage(step)
    _rehash(step)
    with pytest.raises(LmforgeError, match=rf"^{step}/{expected}"):
        _train(resume=run, overrides=["--train.max_steps=6"])


def test_a_checkpoint_without_manifest_and_a_malformed_trainer_state_is_passed_over(run: Path) -> None:
    for step in (2, 4):
        (_step(run, step) / "manifest.json").unlink()
    (_step(run, 4) / "trainer.json").write_text("[]")
    said: list[str] = []
    assert ckpt.latest_checkpoint(run / "checkpoints", say=said.append) == _step(run, 2)
    assert "trainer.json is damaged (holds a JSON list" in said[0]


@pytest.mark.parametrize("outside", ["../../secret", "ABSOLUTE"])
def test_a_manifest_entry_outside_the_checkpoint_is_refused_unopened(
    run: Path, outside: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = _step(run, 4)
    secret = run.parent / "secret"
    secret.write_bytes(b"not the checkpoint's")
    name = str(secret) if outside == "ABSOLUTE" else outside
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()
    _edit_json(
        step, "manifest.json", lambda m: {**m, "files": {**m["files"], name: {"size": 20, "sha256": digest}}}
    )
    opened: list[Path] = []
    hash_file = ckpt._hash_and_sync
    monkeypatch.setattr(
        ckpt, "_hash_and_sync", lambda p, sync=True: (opened.append(p), hash_file(p, sync))[1]
    )
    assert ckpt.manifest_problem(step) == (
        f"manifest.json: names {name!r}, which is not a file inside the checkpoint (refused unopened)"
    )
    assert opened == []


def test_a_manifest_size_that_is_text_is_refused(run: Path) -> None:
    step = _step(run, 4)
    size = (step / "config.json").stat().st_size
    _edit_json(step, "manifest.json", lambda m: {**m, "files": {**m["files"], "config.json": {
        **m["files"]["config.json"], "size": str(size)}}})  # fmt: skip
    assert (
        ckpt.manifest_problem(step) == f"manifest.json: config.json's size is '{size}', not a number of bytes"
    )
