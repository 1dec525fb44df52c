"""Nothing lost, nothing silent: damaged checkpoints are skipped, resume refuses what it cannot
honour, --overwrite keeps the old run until the new one has a checkpoint (issue 19)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import TINY
from conftest import quiet_train as _train
from safetensors.torch import load_file

from lmforge.config import load_config
from lmforge.errors import LmforgeError
from lmforge.train import checkpoint as ckpt
from lmforge.train.metrics import MetricsLog, read_metrics
from lmforge.train.rng_state import restore_rng
from lmforge.train.run_dir import RUN_FILES, check_inputs, move_aside, resolve_run
from lmforge.train.run_inputs import ensure_data


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def assert_kept(root: Path, before: dict[str, str]) -> None:
    after = snapshot(root)
    assert {k: after.get(k) for k in before} == before, "a file that existed before changed or vanished"


@pytest.fixture
def run(checkpointed_run: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run, free to damage."""
    copy = tmp_path / "run"
    shutil.copytree(checkpointed_run, copy)
    return copy


def _step(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}"


# --- checkpoints: verified, and skipped when damaged ---------------------------------------


def test_every_checkpoint_has_a_manifest_of_its_files(run: Path) -> None:
    step = _step(run, 4)
    manifest = json.loads((step / "manifest.json").read_text())["files"]
    on_disk = {p.name for p in step.iterdir()} - {"manifest.json"}
    assert set(manifest) == on_disk and {"model.safetensors", "rng.safetensors", "trainer.json"} <= on_disk
    for name, entry in manifest.items():
        data = (step / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert ckpt.latest_checkpoint(run / "checkpoints") == step


def _truncate_model(step: Path) -> None:
    path = step / "model.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty_optimizer(step: Path) -> None:
    (step / "optimizer.safetensors").write_bytes(b"")


def _corrupt_scheduler(step: Path) -> None:  # same length, other bytes
    path = step / "optimizer.json"
    text = path.read_text()
    path.write_text(text.replace("{", "[", 1))


def _drop_rng(step: Path) -> None:
    (step / "rng.safetensors").unlink()


def _break_manifest(step: Path) -> None:
    (step / "manifest.json").write_text('{"files": {"model.safetensors": ')


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (_truncate_model, "model.safetensors has"),
        (_empty_optimizer, "optimizer.safetensors has 0 bytes"),
        (_corrupt_scheduler, "optimizer.json does not match its sha256"),
        (_drop_rng, "rng.safetensors is missing"),
        (_break_manifest, "manifest.json is unreadable"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_previous_one(
    run: Path, damage: Callable[[Path], None], why: str
) -> None:
    damage(_step(run, 4))
    said: list[str] = []
    assert ckpt.latest_checkpoint(run / "checkpoints", say=said.append) == _step(run, 2)
    assert len(said) == 1 and "step_00000004" in said[0] and why in said[0]


def test_resume_from_behind_a_damaged_checkpoint_is_exact(run: Path) -> None:
    _truncate_model(_step(run, 4))
    expected = {r["step"]: r["loss"] for r in read_metrics(run)}
    summary = _train(resume=run)
    assert summary["steps"] == 4
    assert {r["step"]: r["loss"] for r in read_metrics(run)} == expected  # steps 3, 4 again, equal
    assert ckpt.latest_checkpoint(run / "checkpoints") == _step(run, 4)  # rewritten whole


def test_folders_not_named_step_digits_are_ignored(run: Path) -> None:
    shutil.copytree(_step(run, 4), run / "checkpoints" / "step_00000009.bak")
    shutil.copytree(_step(run, 4), run / "checkpoints" / "step_latest")
    (run / "checkpoints" / "step_00000011").write_text("a file, not a folder")
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000002", "step_00000004"]
    assert ckpt.latest_checkpoint(run / "checkpoints") == _step(run, 4)


def test_no_usable_checkpoint_is_one_line_naming_each(run: Path) -> None:
    _truncate_model(_step(run, 4))
    _drop_rng(_step(run, 2))
    before = snapshot(run)
    with pytest.raises(LmforgeError) as e:
        _train(resume=run)
    message = str(e.value)
    assert "\n" not in message and "no usable checkpoint" in message
    assert (
        "step_00000004: model.safetensors has" in message
        and "step_00000002: rng.safetensors is missing" in message
    )
    assert_kept(run, before)  # config.toml included: refused before anything was written


def test_checkpoints_without_manifest_are_used_only_when_none_verifies(run: Path) -> None:
    (_step(run, 4) / "manifest.json").unlink()  # as an older lmforge wrote them
    said: list[str] = []
    assert ckpt.latest_checkpoint(run / "checkpoints", say=said.append) == _step(run, 2)
    assert "no manifest.json (unverified), and step_00000002 verifies" in said[0]

    (_step(run, 2) / "manifest.json").unlink()
    said.clear()
    assert ckpt.latest_checkpoint(run / "checkpoints", say=said.append) == _step(run, 4)
    assert said == [f"{_step(run, 4)}: no manifest.json (an older lmforge): using it unverified"]

    _truncate_model(_step(run, 4))  # without a manifest, a whole-file check still catches this
    said.clear()
    assert ckpt.latest_checkpoint(run / "checkpoints", say=said.append) == _step(run, 2)
    assert "model.safetensors is damaged" in said[0]


def test_an_unverified_checkpoint_resumes(run: Path) -> None:
    for step in (2, 4):
        (_step(run, step) / "manifest.json").unlink()
    assert _train(resume=run, overrides=["--train.max_steps=5"])["steps"] == 5
    assert (_step(run, 5) / "manifest.json").is_file()


def test_verdicts_are_remembered_until_a_file_changes(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = run / "checkpoints"
    ckpt.latest_checkpoint(root)
    calls: list[Path] = []
    monkeypatch.setattr(ckpt, "manifest_problem", lambda p: calls.append(p) or "")
    said: list[str] = []
    assert ckpt.latest_checkpoint(root, say=said.append) == _step(run, 4) and not calls
    _empty_optimizer(_step(run, 4))
    ckpt.latest_checkpoint(root)
    assert calls  # checked again


# --- RNG ---------------------------------------------------------------------------------------


def _write_model(directory: Path) -> None:
    (directory / "model.safetensors").write_bytes(b"weights")


def test_cpu_checkpoints_hold_no_cuda_state(tmp_path: Path) -> None:
    final = ckpt.save_checkpoint(tmp_path / "checkpoints", 1, _write_model, {}, keep=1)
    assert set(load_file(str(final / "rng.safetensors"))) == {"torch_cpu"}


def test_cuda_rng_is_saved_and_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cuda_state = torch.arange(16, dtype=torch.uint8)
    restored: list[torch.Tensor] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": cuda_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state))
    loader = {"loader": {"seed": 0, "epoch": 0, "cursor": 0}}  # what restoring reads besides the RNG
    final = ckpt.save_checkpoint(tmp_path / "checkpoints", 1, _write_model, loader, keep=1)
    assert torch.equal(load_file(str(final / "rng.safetensors"))["torch_cuda"], cuda_state)
    restore_rng(final, ckpt.read_trainer_state(final))
    assert len(restored) == 1 and torch.equal(restored[0], cuda_state)

    older = tmp_path / "older"  # a checkpoint from before CUDA states were saved
    shutil.copytree(final, older)
    from safetensors.torch import save_file

    save_file({"torch_cpu": torch.get_rng_state()}, str(older / "rng.safetensors"))
    restore_rng(older, ckpt.read_trainer_state(older))
    assert len(restored) == 1


# --- resume refuses what it cannot honour ---------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("--model.n_layer=3", "model.n_layer=3 (the run has model.n_layer=2)"),
        ("--model.pos=rope", "model.pos='rope' (the run has model.pos='learned')"),
        ("--data.tokenizer=bpe", "data.tokenizer='bpe' (the run has data.tokenizer='char')"),
        ("--train.lr=0.01", "train.lr=0.01 (the run has train.lr=0.001)"),
        ("--train.seed=1", "train.seed=1 (the run has train.seed=1337)"),
    ],
)
def test_resume_refuses_a_changed_key(run: Path, override: str, expected: str) -> None:
    before = snapshot(run)
    with pytest.raises(LmforgeError, match="--resume cannot change") as e:
        _train(resume=run, overrides=[override])
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert_kept(run, before)


def test_a_refused_change_is_named_before_a_rule_across_keys(run: Path) -> None:
    """--privacy.enabled=false on a DP run was refused as 'privacy.target_epsilon=4.0 is set but
    privacy.enabled is false ... leave the key out': a key the user never set, from the run."""
    before = snapshot(run)
    with pytest.raises(LmforgeError, match="--resume cannot change") as e:
        _train(resume=run, overrides=["--model.n_layer", "3", "--model.n_embd=31"])  # 31 % 2 heads: a rule
    assert "model.n_layer=3 (the run has model.n_layer=2)" in str(e.value)
    assert "model.n_embd=31 (the run has" in str(e.value)
    # the saved value written otherwise is no change: the rule's own error comes through
    with pytest.raises(LmforgeError, match=r"^train.min_lr=0.5 is above train.lr=0.001"):
        _train(resume=run, overrides=["--train.lr=1e-3", "--train.min_lr=0.5"])
    assert_kept(run, before)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # the weights would not load into the edited model; with n_head they would, silently
        (("n_layer = 2", "n_layer = 3"), "model.n_layer=3 (the run has model.n_layer=2"),
        (("n_head = 2", "n_head = 1"), "model.n_head=1 (the run has model.n_head=2"),
        (("lr = 0.001", "lr = 0.01"), "train.lr=0.01 (the run has train.lr=0.001"),
    ],
)
def test_resume_refuses_an_edited_config_toml(run: Path, edit: tuple[str, str], expected: str) -> None:
    """config.toml edited by hand meets the rules an override meets: the checkpoint keeps the
    config it was trained with (trainer.json), and resume compares the file with it."""
    toml = run / "config.toml"
    text = toml.read_text()
    assert edit[0] in text
    toml.write_text(text.replace(edit[0], edit[1], 1))
    before = snapshot(run)
    with pytest.raises(LmforgeError, match="--resume cannot change") as e:
        _train(resume=run)
    last = ckpt.latest_checkpoint(run / "checkpoints").name
    assert expected in str(e.value) and f"config.toml was edited since {last})" in str(e.value)
    assert "\n" not in str(e.value)
    assert_kept(run, before)


def test_an_edit_of_config_toml_that_may_change_on_resume_is_taken(run: Path) -> None:
    toml = run / "config.toml"
    steps = load_config(toml).train.max_steps
    toml.write_text(toml.read_text().replace(f"max_steps = {steps}", f"max_steps = {steps + 2}", 1))
    assert _train(resume=run)["steps"] == steps + 2


def test_resume_refuses_another_data_set(run: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.txt"
    other.write_text("quite another text, with other letters: xyzXYZ 0123\n" * 200)
    before = snapshot(run)
    with pytest.raises(LmforgeError) as e:
        _train(resume=run, overrides=[f"--data.input={other}"])
    old = load_config(run / "config.toml").data.input
    assert f"data.input={str(other)!r} (the run has data.input={old!r})" in str(e.value)
    assert_kept(run, before)


def test_resume_refuses_a_recipe_another_out_and_overwrite(run: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[train]\nmax_steps = 9\n")
    before = snapshot(run)
    with pytest.raises(
        LmforgeError, match=r"continues with the run's own config.toml; the recipe .*recipe.toml"
    ):
        _train(recipe, resume=run)
    with pytest.raises(LmforgeError, match=r"--out .*elsewhere differs from --resume"):
        _train(resume=run, out=tmp_path / "elsewhere")
    with pytest.raises(LmforgeError, match="exclude each other"):
        _train(resume=run, overwrite=True)
    assert not (tmp_path / "elsewhere").exists()
    assert_kept(run, before)
    # --out naming the run itself is fine
    assert _train(None, ["--train.max_steps=5"], resume=run, out=run)["steps"] == 5


def test_resume_refuses_a_changed_tokenizer(tmp_path: Path, corpus: Path) -> None:
    from lmforge.data.prep import prep

    data, other = tmp_path / "data", tmp_path / "other"
    prep(corpus, data, quiet=True)
    (tmp_path / "other.txt").write_text("quite another text, with other letters: xyzXYZ 0123\n" * 200)
    prep(tmp_path / "other.txt", other, quiet=True)
    run = tmp_path / "run"
    _train(None, [f"--data.input={data}", *TINY, "--train.max_steps=2"], run)
    shutil.copy(other / "tokenizer.json", data / "tokenizer.json")  # the data re-prepared in place
    before = snapshot(run)
    with pytest.raises(LmforgeError, match=r"the data's tokenizer \(sha256 \w+\) is not the run's"):
        _train(resume=run, overrides=["--train.max_steps=3"])
    assert_kept(run, before)


def test_resume_may_extend_training_and_lower_the_schedule_end(run: Path) -> None:
    _train(resume=run, overrides=["--train.max_steps=6", "--train.min_lr=5e-5", "--train.log_interval=1",
                                  "--train.checkpoint_interval=3", "--model.dropout=0.0"])  # fmt: skip
    records = {r["step"]: r for r in read_metrics(run)}
    assert sorted(records) == [1, 2, 3, 4, 5, 6]
    assert records[6]["lr"] == pytest.approx(5e-5)  # the cosine now ends at the new min_lr
    saved = load_config(run / "config.toml")
    assert (saved.train.max_steps, saved.train.min_lr) == (6, 5e-5)


def test_a_time_budget_plan_keeps_the_run_length(run: Path) -> None:
    # the recipe's max_steps, above the plan, in config.toml and in the config the checkpoints keep
    config = run / "config.toml"
    assert "max_steps = 4\n" in config.read_text()
    config.write_text(config.read_text().replace("max_steps = 4\n", "max_steps = 1200\n"))
    for step in (2, 4):  # as a run with train.max_minutes leaves them
        state = ckpt.read_trainer_state(_step(run, step))
        state = {**state, "planned": [4, 5], "config": config.read_text()}
        (_step(run, step) / "trainer.json").write_text(json.dumps(state))
        ckpt.write_manifest(_step(run, step))
    before = snapshot(run)
    new_run = rf"start a new run from its weights instead \(--init-from {re.escape(str(run))}\)$"
    further = "; to train it further, " + new_run
    planned = r"cannot change train.max_steps=1300: the run's time budget .* planned max_steps=4, and a"
    planned += " resumed run keeps that plan"
    with pytest.raises(LmforgeError, match=planned + further):
        _train(resume=run, overrides=["--train.max_steps=1300"])
    finished = r"the run finished at step 4 \(its summary.json\): nothing to resume"
    with pytest.raises(LmforgeError, match=finished + further):
        _train(resume=run, overrides=["--train.eval_interval=7"])
    assert_kept(run, before)
    (run / "summary.json").unlink()  # as a kill in the final export leaves it: resume finishes it
    assert _train(resume=run, overrides=["--train.eval_interval=7"])["steps"] == 4


# --- --overwrite moves the old run aside, deletes it after the new run's first checkpoint --------


def test_overwrite_checks_the_data_before_touching_the_run(run: Path, tiny_overrides: list[str]) -> None:
    before = snapshot(run)
    with pytest.raises(LmforgeError, match=r"data.input='/no/such/corpus.txt': no such file"):
        _train(None, [*tiny_overrides, "--data.input=/no/such/corpus.txt"], run, overwrite=True)
    assert_kept(run, before)
    assert sorted(p.name for p in run.iterdir()) == sorted(n for n in RUN_FILES if (run / n).exists())


def test_overwrite_refuses_data_inside_the_run_it_replaces(run: Path, tiny_overrides: list[str]) -> None:
    before = snapshot(run)
    with pytest.raises(
        LmforgeError, match=r"data.input=.*run/data' lies inside .*run/data, which --overwrite"
    ):
        _train(None, [*tiny_overrides, f"--data.input={run / 'data'}"], run, overwrite=True)
    with pytest.raises(LmforgeError, match=r"train.init_from=.* lies inside .*run/model"):
        _train(None, [*tiny_overrides, f"--train.init_from={run / 'model'}"], run, overwrite=True)
    assert_kept(run, before)


def test_overwrite_keeps_the_old_run_until_the_first_checkpoint(run: Path, tiny_overrides: list[str]) -> None:
    before = snapshot(run)
    # fails after the old run was moved aside (the vocabulary is only known once the data is
    # read): the old run is put back, and nothing the failed start wrote is left
    with pytest.raises(LmforgeError, match="model.vocab_size=5"):
        _train(None, [*tiny_overrides, "--model.vocab_size=5"], run, overwrite=True)
    assert snapshot(run) == before and not list(run.glob(".replaced-*"))

    # a start killed before its first checkpoint leaves the old run aside, and resume says where
    resolve_run(None, [*tiny_overrides, "--train.max_steps=2"], run, None, True)
    (aside,) = run.glob(".replaced-*")
    assert snapshot(aside) == {**before, "replaced.json": snapshot(aside)["replaced.json"]}
    with pytest.raises(LmforgeError, match=r"holds the run that --overwrite replaced"):
        _train(resume=run)
    # and so does the line of a Ctrl-C there (it said "nothing to resume, a new run starts over")
    from lmforge.train.run_outputs import resume_point

    assert resume_point(run, 34) == (
        f"stopped at step 34, before its first checkpoint: nothing of it to resume ({aside} holds the run"
        " that --overwrite replaced: move its files back to resume it; docs/training.md, '--overwrite',"
        " says how)"
    )
    # a new start without --overwrite would delete it at its first checkpoint: refused
    with pytest.raises(LmforgeError, match=r"holds a run that an interrupted --overwrite set aside"):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run)
    # the killed start had written its config.toml: the refusal names what --overwrite would delete
    shutil.copy(aside / "config.toml", run / "config.toml")
    with pytest.raises(
        LmforgeError, match=rf"before its first checkpoint; .*; {aside.name} holds the run an"
    ):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run)
    (run / "config.toml").unlink()
    assert snapshot(aside) == {**before, "replaced.json": snapshot(aside)["replaced.json"]}
    _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert not list(run.glob(".replaced-*"))  # deleted once the new run had a checkpoint
    assert load_config(run / "config.toml").train.max_steps == 2


def test_overwrite_says_it_moved_the_run_aside_only_once_the_run_starts(
    run: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A start that fails puts the old run back: saying it was moved aside would send the user
    looking for it in .replaced-*."""
    from lmforge.train.loop import train

    with pytest.raises(LmforgeError, match="model.vocab_size=5"):
        train(None, [*tiny_overrides, "--model.vocab_size=5"], run, overwrite=True)
    assert "aside" not in capsys.readouterr().out
    train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert "moved the previous run aside to" in capsys.readouterr().out


def test_overwrite_refuses_a_file_train_did_not_write_inside_the_old_run(
    run: Path, tiny_overrides: list[str]
) -> None:
    """--overwrite moves the old run's folders aside and deletes them at the first checkpoint: a
    user's file put into one of them would go too, so it is refused and the run kept."""
    strangers = {
        "model/README.md": "train did not write",
        "best/notes.txt": "train did not write",
        "tb/scores.csv": "train did not write",
        "data/notes.txt": "prep did not write",
    }
    for relative, who in strangers.items():
        path = run / relative
        made_folder = not path.parent.exists()
        path.parent.mkdir(exist_ok=True)
        path.write_text("mine")
        before = snapshot(run)
        with pytest.raises(
            LmforgeError, match=rf"{path.parent}: holds files {who} \({path.name}\); --overwrite would delete"
        ):
            _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
        assert_kept(run, before)
        assert not list(run.glob(".replaced-*"))
        path.unlink()
        if made_folder:
            path.parent.rmdir()
    backup = run / "checkpoints" / "step_00000002.bak"  # a copy the user kept: not a checkpoint
    shutil.copytree(ckpt.list_checkpoints(run / "checkpoints")[-1], backup)
    with pytest.raises(LmforgeError, match=r"holds files train did not write \(step_00000002.bak\)"):
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    shutil.rmtree(backup)
    # what train wrote, and only that: replaced
    _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert load_config(run / "config.toml").train.max_steps == 2


def _refused_with_or_without_overwrite(folder: Path, overrides: list[str], match: str) -> None:
    """train --out FOLDER is refused in one line, --overwrite or not, and FOLDER is left as it was."""
    before = snapshot(folder)
    for overwrite in (False, True):
        with pytest.raises(LmforgeError, match=match):
            _train(None, overrides, folder, overwrite=overwrite)
    assert_kept(folder, before)


def test_overwrite_never_touches_a_folder_it_did_not_create(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    folder = tmp_path / "project"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "model" / "weights.bin").write_bytes(b"precious")
    (folder / "notes.txt").write_text("mine")
    _refused_with_or_without_overwrite(
        folder, tiny_overrides, "holds model but is not an lmforge run directory"
    )
    assert sorted(p.name for p in folder.iterdir()) == ["checkpoints", "model", "notes.txt"]


def test_a_model_folder_that_import_wrote_is_no_run_folder(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """train --out IMPORTED (the run's own base, in a LoRA recipe) wrote a run into the model's
    folder, which was then both; merge-lora already refused it."""
    folder = tmp_path / "smol"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / ".lmforge-output").write_text('{"written_by": "import"}\n')
    _refused_with_or_without_overwrite(
        folder, tiny_overrides, "holds the output of lmforge import, a model folder; a run"
    )


def test_a_recipe_named_config_toml_is_not_a_run(tmp_path: Path, tiny_overrides: list[str]) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "config.toml").write_text("# my recipe\n[train]\nmax_steps = 3\n")
    _refused_with_or_without_overwrite(
        folder, tiny_overrides, "holds config.toml but is not an lmforge run directory"
    )


def test_an_unfinished_run_is_replaced_only_with_overwrite(run: Path, tiny_overrides: list[str]) -> None:
    shutil.rmtree(run / "checkpoints")  # what a start that died in its first steps leaves
    shutil.rmtree(run / "model")
    for name in ("summary.json", "loss.png"):
        (run / name).unlink()
    before = snapshot(run)
    with pytest.raises(
        LmforgeError, match="of a run that stopped before its first checkpoint; use --overwrite"
    ):
        _train(None, tiny_overrides, run)
    assert_kept(run, before)
    _train(None, [*tiny_overrides, "--train.max_steps=2"], run, overwrite=True)
    assert ckpt.latest_checkpoint(run / "checkpoints").name == "step_00000002"
    assert not list(run.glob(".replaced-*"))


def test_out_that_is_a_file_is_refused(tmp_path: Path, tiny_overrides: list[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(LmforgeError, match=r"notes.txt: is a file; --out needs a folder"):
        _train(None, tiny_overrides, tmp_path / "notes.txt")
    with pytest.raises(LmforgeError, match=r"notes.txt: not a run directory"):
        _train(resume=tmp_path / "notes.txt")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_only_rank_0_moves_the_old_run(
    run: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(run)
    monkeypatch.setenv("RANK", "1")
    assert resolve_run(None, tiny_overrides, run, None, True)[0] == run
    assert_kept(run, before)
    assert not list(run.glob(".replaced-*"))


def test_drop_replaced_deletes_only_what_overwrite_moved(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / ".replaced-mine").mkdir()  # no marker: not lmforge's
    aside = move_aside(run, ["model"])
    assert json.loads((aside / "replaced.json").read_text())["files"] == ["model"]
    ckpt.drop_replaced(run)
    ckpt.drop_replaced(run)
    assert sorted(p.name for p in run.iterdir()) == [".replaced-mine"]


def test_run_data_not_prepared_by_train_is_refused(tmp_path: Path, corpus: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.txt").write_text("mine")
    cfg = load_config(None, [f"--data.input={corpus}"])
    with pytest.raises(LmforgeError, match=r"data: exists and was not prepared by lmforge train"):
        ensure_data(cfg, tmp_path, lambda _: None)
    assert (tmp_path / "data" / "raw.txt").read_text() == "mine"


def test_raw_translation_pairs_take_an_explicit_tokenizer_and_val_fraction(tmp_path: Path) -> None:
    """train prepares raw pairs into RUN/data with data.val_fraction and data.tokenizer when they
    are chosen (both were ignored: pairs always held out 2% and trained BPE), and with the pairs'
    own defaults (BPE, 2%) when they are left unset; the run's config records what it used."""
    pairs = tmp_path / "p.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"en": f"hello number {i}", "fr": f"bonjour numero {i}"}) + "\n" for i in range(400)
        )
    )
    translation = [
        f"--data.input={pairs}",
        "--data.task=translation",
        "--model.arch=seq2seq",
        "--data.vocab_size=300",
    ]
    cases = (
        ([], 0.02, "bpe"),
        (["--data.val_fraction=0.25"], 0.25, "bpe"),
        (["--data.tokenizer=char", "--data.val_fraction=0.1"], 0.1, "char"),  # the [data] defaults, named
    )
    for n, (given, fraction, kind) in enumerate(cases):
        run = tmp_path / f"run{n}"
        cfg = load_config(None, [*translation, *given])
        check_inputs(cfg, [])  # a new run settles the keys left unset
        assert (cfg.data.val_fraction, cfg.data.tokenizer) == (fraction, kind)
        ensure_data(cfg, run, lambda _: None)
        meta = json.loads((run / "data" / "meta.json").read_text())
        assert meta["split"]["val_fraction"] == fraction and meta["tokenizer"] == kind
        assert abs(meta["pairs"]["val"] / sum(meta["pairs"].values()) - fraction) < 0.05
        assert (meta["vocab_size"] < 40) == (kind == "char")


def test_a_new_best_keeps_a_file_train_did_not_write_in_best(tmp_path: Path) -> None:
    """Each new best score replaced best/ as a whole, deleting a file a user had put there during
    the run; now train's own files are replaced one by one and the rest stays."""
    from types import SimpleNamespace

    from lmforge.train.run_outputs import install_model_dir

    def model_files(directory: Path) -> None:
        (directory / "config.json").write_text("{}")

    run = SimpleNamespace(
        run_dir=tmp_path, lora_base=None, task=SimpleNamespace(write_model_files=model_files)
    )
    best = tmp_path / "best"
    install_model_dir(run, best, {"w": torch.zeros(2)})  # type: ignore[arg-type]
    (tmp_path / "best" / "NOTES.md").write_text("mine")
    install_model_dir(run, best, {"w": torch.ones(2)})  # type: ignore[arg-type]
    assert load_file(str(tmp_path / "best" / "model.safetensors"))["w"].tolist() == [1.0, 1.0]
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "NOTES.md",
        "config.json",
        "model.safetensors",
    ]
    assert (tmp_path / "best" / "NOTES.md").read_text() == "mine"
    assert not (tmp_path / ".best-tmp").exists()


# --- metrics.jsonl ------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "lo')
    said: list[str] = []
    MetricsLog(tmp_path, resume_step=3, tensorboard=False, say=said.append).close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    assert len(said) == 1 and "metrics.jsonl:4: dropped a torn last line" in said[0]


def test_a_damaged_metrics_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    before = snapshot(tmp_path)
    with pytest.raises(LmforgeError, match=r"metrics.jsonl:2: not a JSON object"):
        MetricsLog(tmp_path, resume_step=3, tensorboard=False)
    assert_kept(tmp_path, before)


# --- permissions follow the umask ---------------------------------------------------------------


def test_created_files_follow_the_umask(tmp_path: Path, tiny_overrides: list[str]) -> None:
    old = os.umask(0o027)
    try:
        run = tmp_path / "run"
        _train(None, [*tiny_overrides, "--train.max_steps=2"], run)
        (run / "model").mkdir(exist_ok=True)
        aside = move_aside(run, ["model"])
    finally:
        os.umask(old)
    mine = [run, aside, aside / "replaced.json", run / "checkpoints", run / "metrics.jsonl"]
    mine += list((run / "checkpoints").rglob("*"))
    modes = {str(p): oct(p.stat().st_mode & 0o777) for p in mine}
    wanted = {str(p): oct(0o750 if p.is_dir() else 0o640) for p in mine}
    assert modes == wanted


def test_loading_a_run_still_training_takes_its_newest_real_checkpoint(tmp_path: Path) -> None:
    from lmforge.formats.directory import resolve_model_dir

    for name in ("step_00000010", "step_00000020", "step_00000030.bak", "step_latest"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    (tmp_path / "checkpoints" / "step_00000040").write_text("a file, not a folder")
    assert resolve_model_dir(tmp_path) == tmp_path / "checkpoints" / "step_00000020"


def test_a_sigterm_in_the_final_export_says_what_finishes_it(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """SIGTERM was handled around the steps only: one in the export ended the process silently."""
    import signal

    from lmforge.train import run_outputs

    real = run_outputs.install_model_dir

    def install(run: object, target: Path, *args: object) -> None:
        if target.name == "model":
            os.kill(os.getpid(), signal.SIGTERM)
        real(run, target, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(run_outputs, "install_model_dir", install)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        _train(None, [f"--data.input={corpus}", *TINY, "--train.max_steps=2"], run)
    assert (
        f"lmforge: stopped in the final export: lmforge train --resume {run} finishes it"
        in capsys.readouterr().err
    )
    monkeypatch.setattr(run_outputs, "install_model_dir", real)
    _train(resume=run)
    assert (run / "model" / "model.safetensors").is_file() and (run / "summary.json").is_file()
