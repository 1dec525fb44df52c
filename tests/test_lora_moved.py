"""A LoRA run survives its project folder being moved: lora.json records its base as an absolute
path and relative to the adapter directory, and every reader tries the second, then the first,
checking the base's sha256 at either. The oracle is the same project before the move: chat,
generate, pipeline, merge-lora and the PEFT export give what they gave there, and a resume the
losses of a run never moved. (Until 2026-12-07 every one of them stopped with "its base model
... is gone".)"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from safetensors.torch import load_file, save_file
from test_chat import make_chat_llama
from test_lora import recipe

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.formats.hf_export import export_hf
from lmforge.formats.peft import merge_lora
from lmforge.inference.chat import chat
from lmforge.inference.generate import generate
from lmforge.pipelines import pipeline
from lmforge.train.loop import train
from lmforge.train.metrics import read_metrics

IDS = torch.tensor([[1, 5, 9, 40, 77, 120, 3, 8]])


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Llama with a chat template, as transformers saves it (the project's start)."""
    directory = tmp_path_factory.mktemp("chat-llama")
    make_chat_llama(directory)
    return directory


def lora_args(proj: Path, steps: int) -> list[str]:
    """test_lora's recipe on proj's text and base, checkpointed every 2 steps."""
    return recipe({"text": proj / "text.txt", "base": proj / "base"}, steps, "--train.checkpoint_interval=2")


def make_project(proj: Path, hf: Path) -> Path:
    """proj/base: a run fine-tuned from `hf`; proj/lora: a LoRA run of 2 steps on proj/base (as
    train.init_from=proj/base, its model/), checkpointed at step 2."""
    proj.mkdir(parents=True)
    (proj / "text.txt").write_text(make_text(lines=300))
    common = [f"--data.input={proj / 'text.txt'}", "--train.batch_size=4", "--train.dtype=fp32"]
    train(
        overrides=[*common, f"--train.init_from={hf}", "--train.max_steps=2"], out=proj / "base", quiet=True
    )
    train(overrides=lora_args(proj, 2), out=proj / "lora", quiet=True)
    return proj


def logits(model_dir: Path) -> torch.Tensor:
    with torch.no_grad():
        return load_model(model_dir)[0](IDS)[0].float()


def outputs(
    lora: Path, out: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> dict:
    """What each verb gives of the LoRA run `lora` (merge-lora and export written under `out`)."""
    result: dict[str, Any] = {"logits": logits(lora)}
    result["generate"] = generate(
        lora, "ROMEO:", max_new_tokens=8, temperature=0, dtype="fp32", compile=False
    )
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the king?\n/exit\n"))
    chat(lora, system="Be brief.", do_sample=False, max_new_tokens=8, dtype="fp32", compile=False)
    result["chat"] = capsys.readouterr().out
    pipe = pipeline("text-generation", model=lora)
    result["pipeline"] = pipe("ROMEO:", do_sample=False, max_new_tokens=8)[0]["generated_text"]
    result["merged"] = logits(merge_lora(lora, out / "merged"))
    export_hf(lora, out / "peft")
    result["peft"] = load_file(str(out / "peft" / "adapter_model.safetensors"))
    result["peft_config"] = json.loads((out / "peft" / "adapter_config.json").read_text())
    return result


def strip_relative(run: Path) -> None:
    """Every lora.json of `run` as written before 2026-12-07: no relative_path."""
    for file in run.rglob("lora.json"):
        meta = json.loads(file.read_text())
        del meta["base"]["relative_path"]
        file.write_text(json.dumps(meta))


def test_a_moved_project_chats_generates_merges_exports_and_resumes_as_before(
    hf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    proj = make_project(tmp_path / "proj", hf)
    meta = json.loads((proj / "lora" / "model" / "lora.json").read_text())
    assert meta["base"]["path"] == str((proj / "base" / "model").resolve())  # for old readers
    assert meta["base"]["relative_path"] == "../../base/model"
    unmoved = tmp_path / "unmoved"  # the same run, resumed to step 4 where it was trained
    train(overrides=lora_args(proj, 2), out=unmoved, quiet=True)
    train(resume=unmoved, overrides=["--train.max_steps=4"], quiet=True)
    before = outputs(proj / "lora", tmp_path / "before", monkeypatch, capsys)
    assert (before["logits"] - logits(proj / "base")).abs().max() > 1e-3  # the adapters matter

    moved = tmp_path / "moved"
    shutil.move(proj, moved)
    after = outputs(moved / "lora", tmp_path / "after", monkeypatch, capsys)
    for key in ("logits", "merged"):
        assert torch.equal(after[key], before[key]), key
    for key in ("generate", "chat", "pipeline"):
        assert after[key] == before[key], key
    assert before["chat"].strip()
    assert after["peft"].keys() == before["peft"].keys()
    assert all(torch.equal(after["peft"][k], v) for k, v in before["peft"].items())
    # the export names the base where it is now
    assert after["peft_config"].pop("base_model_name_or_path") == str((moved / "base" / "model").resolve())
    before["peft_config"].pop("base_model_name_or_path")
    assert after["peft_config"] == before["peft_config"]

    # gone from both places: one line naming both, and how to point it at the base
    shutil.move(moved / "base", tmp_path / "elsewhere")
    places = (
        rf"its base model is missing \(not at {re.escape(str(moved / 'base' / 'model'))} .* nor at"
        rf" {re.escape(str(proj / 'base' / 'model'))} .*ln -s WHERE_IT_IS"
        rf" {re.escape(str(moved / 'base' / 'model'))}\)"
    )
    for verb in (
        lambda: load_model(moved / "lora"),
        lambda: merge_lora(moved / "lora", tmp_path / "m"),
        lambda: train(resume=moved / "lora", overrides=["--train.max_steps=4"], quiet=True),
    ):
        with pytest.raises(LmforgeError, match=places):
            verb()
    shutil.move(tmp_path / "elsewhere", moved / "base")

    # resume from the moved place: the losses of the run resumed where it was trained
    train(resume=moved / "lora", overrides=["--train.max_steps=4"], quiet=True)
    expected = {r["step"]: r["loss"] for r in read_metrics(unmoved) if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_metrics(moved / "lora") if "loss" in r}
    assert got == expected and max(got) == 4
    meta = json.loads((moved / "lora" / "model" / "lora.json").read_text())
    assert meta["base"]["path"] == str((moved / "base" / "model").resolve())
    assert meta["base"]["relative_path"] == "../../base/model"


def test_an_old_lora_json_and_a_lora_run_moved_alone_load_from_the_absolute_path(
    hf: Path, tmp_path: Path
) -> None:
    proj = make_project(tmp_path / "proj", hf)
    expected = logits(proj / "lora")
    alone = tmp_path / "away" / "lora"  # the LoRA run moved away from its base: the absolute path
    shutil.move(proj / "lora", alone)
    assert torch.equal(logits(alone), expected)
    train(resume=alone, overrides=["--train.max_steps=4"], quiet=True)
    assert json.loads((alone / "model" / "lora.json").read_text())["base"]["relative_path"] == (
        "../../../proj/base/model"
    )
    old = tmp_path / "old"  # lora.json without relative_path (before 2026-12-07): loads as it did
    shutil.copytree(alone, old)
    strip_relative(old)
    assert torch.equal(logits(old), logits(alone))
    shutil.move(proj, tmp_path / "proj2")
    gone = re.escape(f"its base model is missing ({proj / 'base' / 'model'} is gone)")
    with pytest.raises(LmforgeError, match=gone):
        load_model(old)


def test_another_model_at_the_relative_place_is_refused(hf: Path, tmp_path: Path) -> None:
    proj = make_project(tmp_path / "proj", hf)
    expected = logits(proj / "lora")
    moved = tmp_path / "moved"
    shutil.move(proj, moved)
    weights_file = moved / "base" / "model" / "model.safetensors"
    right = weights_file.read_bytes()
    weights = load_file(str(weights_file))
    weights["wte.weight"] = weights["wte.weight"] + 1e-3
    save_file(weights, str(weights_file), {"format": "pt"})
    refused = re.escape(f"but {moved / 'base' / 'model'} differs (model.safetensors sha256 is not the one")
    for verb in (
        lambda: load_model(moved / "lora"),
        lambda: merge_lora(moved / "lora", tmp_path / "merged"),
        lambda: export_hf(moved / "lora", tmp_path / "peft"),
        lambda: train(resume=moved / "lora", overrides=["--train.max_steps=4"], quiet=True),
    ):
        with pytest.raises(LmforgeError, match=refused):
            verb()
    # the other way round: another model at the absolute place is passed over for the right one
    shutil.copytree(moved / "base", proj / "base")
    weights_file.write_bytes(right)
    assert torch.equal(logits(moved / "lora"), expected)


def test_a_copied_project_resumes_on_its_own_base(hf: Path, tmp_path: Path) -> None:
    """cp -a proj copy, then resume copy/lora while proj is still there: it trained on proj/base
    (its config.toml's absolute init_from) and recorded that place, so deleting proj broke the
    copy. It now trains on the copy's own base and records it."""
    proj = make_project(tmp_path / "proj", hf)
    copy = tmp_path / "copy"
    shutil.copytree(proj, copy, symlinks=True)
    train(resume=copy / "lora", overrides=["--train.max_steps=4"], quiet=True)
    meta = json.loads((copy / "lora" / "model" / "lora.json").read_text())
    assert meta["base"]["path"] == str((copy / "base" / "model").resolve())
    assert meta["base"]["relative_path"] == "../../base/model"
    expected = logits(copy / "lora")
    shutil.rmtree(proj)
    assert torch.equal(logits(copy / "lora"), expected)


def test_a_base_reached_through_a_link_follows_the_link_where_it_points_now(hf: Path, tmp_path: Path) -> None:
    """work/models -> ../store, the base trained at work/models/base: lora.json recorded the base
    with the link resolved (store/base/model), so after `mv store store2; ln -sfn ../store2 models`
    every verb stopped with "its base model is missing". The path as given is followed now."""
    proj, work = tmp_path / "proj", tmp_path / "proj" / "work"
    (proj / "store").mkdir(parents=True)
    work.mkdir()
    (work / "models").symlink_to("../store")
    (work / "text.txt").write_text(make_text(lines=300))
    common = [f"--data.input={work / 'text.txt'}", "--train.batch_size=4", "--train.dtype=fp32"]
    base = work / "models" / "base"
    train(overrides=[*common, f"--train.init_from={hf}", "--train.max_steps=2"], out=base, quiet=True)
    lora_run = work / "lora"
    args = recipe({"text": work / "text.txt", "base": base}, 2, "--train.checkpoint_interval=2")
    train(overrides=args, out=lora_run, quiet=True)
    expected = logits(lora_run)
    meta = json.loads((lora_run / "model" / "lora.json").read_text())
    assert meta["base"]["path"] == str(base / "model")  # the link kept
    assert meta["base"]["relative_path"] == "../../models/base/model"

    (proj / "store").rename(proj / "store2")  # mv store store2; ln -sfn ../store2 models
    (work / "models").unlink()
    (work / "models").symlink_to("../store2")
    assert torch.equal(logits(lora_run), expected)
    train(resume=lora_run, overrides=["--train.max_steps=4"], quiet=True)
    resumed = json.loads((lora_run / "model" / "lora.json").read_text())["base"]  # still the link
    assert (resumed["path"], resumed["relative_path"]) == (str(base / "model"), "../../models/base/model")

    # lora.json as written before 2026-12-07 (links resolved, relative_path from the folder's real
    # path) is still read so where the run is reached through a link of its own
    old = tmp_path / "elsewhere" / "lora"
    shutil.copytree(lora_run, old)
    for file in old.rglob("lora.json"):
        meta = json.loads(file.read_text())
        real_base = os.path.realpath(base / "model")
        meta["base"].update(path="/gone/base/model", relative_path=os.path.relpath(real_base, file.parent))
        file.write_text(json.dumps(meta))
    (work / "linked").symlink_to(old.parent)
    assert torch.equal(logits(work / "linked" / "lora"), logits(lora_run))


@pytest.mark.parametrize("bad", [["../../base"], 5, True, ""])
def test_a_relative_path_that_is_no_path_is_one_line(tmp_path: Path, bad: Any) -> None:
    """A hand-edited relative_path was read as text: ['../../base'] became the path "base']"."""
    from lmforge.formats.peft import read_lora_file

    folder = tmp_path / "adapter"
    folder.mkdir()
    meta = {"lora": {}, "base": {"path": "/x", "relative_path": bad, "sha256": {}}}
    (folder / "lora.json").write_text(json.dumps(meta))
    with pytest.raises(LmforgeError, match=r"lora\.json: base\.relative_path must be a path \(text\), not "):
        read_lora_file(folder)
