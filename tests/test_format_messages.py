"""The one-line errors of the model formats for input that is the wrong kind of thing: a text file
given to import, an ONNX export given where a model directory goes, an export's --out holding the
other format's earlier export. Each names the file and says what it is, in plain words."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import make_text

from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import resolve_model_dir, write_model_dir
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.formats.onnx_export import _earlier_export, held_onnx_export
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("formats") / "gpt"
    tok = Tokenizer.train_char([make_text(lines=50)])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(out, config, GPT(config).state_dict(), tok)
    return out


def fake_onnx_export(folder: Path, kind: str = "decoder", source: str = "/models/gpt") -> Path:
    """The files `lmforge export --format onnx` writes (the graph a placeholder: nothing here runs it)."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"\x08\x07")
    (folder / "tokenizer.json").write_text("{}")
    manifest = {"format": "lmforge-onnx", "kind": kind, "source": source, "graphs": {}}
    (folder / "onnx.json").write_text(json.dumps(manifest))
    return folder


def test_import_of_a_text_file_is_neither_a_model_directory_nor_gguf(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("gguf")
    notes = ROOT / "docs" / "pipelines.md"
    with pytest.raises(LmforgeError) as error:
        import_hf(notes, tmp_path / "o")
    assert str(error.value) == f"{notes}: neither a model directory nor a GGUF file (no GGUF magic)"
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    plain = r"empty\.txt: neither a model directory nor a GGUF file \(an empty file\)$"
    with pytest.raises(LmforgeError, match=plain):
        import_hf(empty, tmp_path / "o")
    capsys.readouterr()
    assert main(["import", str(notes), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == f"lmforge: error: {notes}: neither a model directory nor a GGUF file (no GGUF magic)\n"
    assert not (tmp_path / "o").exists()


def test_an_onnx_export_given_as_a_model_says_how_to_run_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    export = fake_onnx_export(tmp_path / "onnx", source="/models/gpt")
    hint = (
        f"{export}: not a model directory, run directory or checkpoint (an ONNX export, which `lmforge"
        f" generate {export} --runtime onnx` or lmforge.generate_onnx runs; the other verbs and pipeline()"
        " take the model it was exported from, /models/gpt)"
    )
    with pytest.raises(LmforgeError) as error:
        resolve_model_dir(export)
    assert str(error.value) == hint
    capsys.readouterr()
    assert main(["generate", str(export), "--prompt", "hi"]) == 2
    assert capsys.readouterr().err == f"lmforge: error: {hint}\n"
    from lmforge.pipelines import pipeline

    with pytest.raises(LmforgeError) as error:
        pipeline("text-generation", model=export)
    assert str(error.value) == hint
    # another kind than a decoder: generate cannot run it, so the hint names what can
    s2s = fake_onnx_export(tmp_path / "s2s", kind="seq2seq", source="/models/s2s")
    with pytest.raises(
        LmforgeError,
        match=r"\(an ONNX export of a seq2seq model, which `lmforge translate .*s2s --runtime onnx` runs",
    ):
        resolve_model_dir(s2s)
    # a damaged manifest still gets the hint, without what it cannot read
    (s2s / "onnx.json").write_text("{")
    with pytest.raises(LmforgeError, match=r"or lmforge\.generate_onnx runs\)$"):
        resolve_model_dir(s2s)


def test_onnx_export_over_an_earlier_hf_export_names_it(gpt_dir: Path, tmp_path: Path) -> None:
    export_hf(gpt_dir, tmp_path / "hf")
    assert _earlier_export(tmp_path / "hf") == (
        "holds an earlier HF export (config.json), which export --format onnx does not replace: give"
        " another --out, or remove that folder first"
    )
    (tmp_path / "hf" / "notes.txt").write_text("mine")  # with a file of the user's: still an HF export
    assert _earlier_export(tmp_path / "hf").startswith("holds an earlier HF export (config.json)")
    # a model lmforge writes (not an HF type) is no earlier export: its files are named as before
    (tmp_path / "lm").mkdir()
    for f in gpt_dir.iterdir():
        (tmp_path / "lm" / f.name).write_bytes(f.read_bytes())
    assert _earlier_export(tmp_path / "lm").startswith("holds files export did not write (config.json")


def test_held_onnx_export_is_what_export_hf_refuses_by_name(tmp_path: Path) -> None:
    export = fake_onnx_export(tmp_path / "onnx")
    assert held_onnx_export(export) == (
        "holds an earlier ONNX export (onnx.json), which export --format hf does not replace: give"
        " another --out, or remove that folder first"
    )
    assert _earlier_export(export) is None  # --format onnx replaces it, as before
    (export / "mine.txt").write_text("keep")
    assert held_onnx_export(export) is None  # not only an export's files: hf_files names the stranger


def test_export_hf_over_an_earlier_onnx_export_is_refused_by_name(
    gpt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    export = fake_onnx_export(tmp_path / "onnx")
    before = sorted(p.name for p in export.iterdir())
    capsys.readouterr()
    assert main(["export", str(gpt_dir), "--out", str(export)]) == 2
    err = capsys.readouterr().err
    assert "holds an earlier ONNX export (onnx.json), which export --format hf does not replace" in err
    assert sorted(p.name for p in export.iterdir()) == before  # nothing lost


def test_a_run_stopped_before_its_first_checkpoint_is_named(tmp_path: Path) -> None:
    run = tmp_path / "run"  # what train has written when it is stopped within its first steps
    run.mkdir()
    (run / "config.toml").write_text("[data]\n")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(LmforgeError) as error:
        resolve_model_dir(run)
    assert str(error.value) == (
        f"{run}: not a model directory, run directory or checkpoint (a run that stopped before its"
        " first checkpoint: it holds no model yet)"
    )
