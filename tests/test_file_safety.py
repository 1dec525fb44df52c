"""Nothing lost, nothing silent (data preparation and model files): an output folder never
replaces what the verb did not write, untrusted files stay inside their folder, and broken input
is one line naming the culprit. Each refusal also checks that every file is still there, unchanged."""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import lmforge
from lmforge import hardware, outputs
from lmforge.config import ModelConfig
from lmforge.data.pairs import prepare_pairs, read_lines
from lmforge.data.shards import open_split
from lmforge.errors import LmforgeError
from lmforge.folder_lock import LOCK
from lmforge.formats.directory import write_model_dir
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.launch import engine_of, launch
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
FAST = {"stages": "none", "workers": 1, "quiet": True}  # prep without the cleaning stages


def snapshot(root: Path) -> dict[str, str]:
    """Every path under `root` -> sha256 of its bytes ('dir' for folders)."""
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def _one_line(message: str) -> None:
    assert "\n" not in message and "Traceback" not in message


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    """A small project: raw text, sentence pairs and a notes file; nothing under it may change
    unless a test says so."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(6):
        (raw / f"doc{i}.txt").write_text(f"document {i}: the king and the queen speak of love.\n" * 3)
    pairs = [{"en": f"hello number {i}", "fr": f"bonjour numero {i}", "doc": f"d{i % 7}"} for i in range(60)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    (tmp_path / "notes.txt").write_text("my notes\n")
    yield tmp_path


def _refused(call, root: Path, *culprits: str) -> str:
    before = snapshot(root)
    with pytest.raises(LmforgeError) as info:
        call()
    message = str(info.value)
    _one_line(message)
    for culprit in culprits:
        assert culprit in message, message
    assert snapshot(root) == before  # nothing deleted, nothing changed, no temp folder left
    return message


# --- prep --out ---------------------------------------------------------------------------------
def test_prep_refuses_an_out_that_is_holds_or_lies_in_an_input(tree: Path) -> None:
    raw = tree / "raw"
    _refused(lambda: lmforge.prep(raw, raw, **FAST), tree, str(raw), "is the input")
    _refused(lambda: lmforge.prep(raw, raw / "shards", **FAST), tree, "lies inside the input")
    _refused(lambda: lmforge.prep(raw / "doc1.txt", tree, **FAST), tree, "contains the input")
    _refused(lambda: lmforge.prep(raw / "doc1.txt", raw / "doc1.txt", **FAST), tree, "is the input")
    pairs = tree / "pairs.jsonl"
    _refused(lambda: prepare_pairs(pairs, tree, vocab_size=300), tree, "contains the input")


def test_prep_refuses_the_working_directory(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tree / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    raw = tree / "raw"
    _refused(lambda: lmforge.prep(raw, ".", **FAST), tree, "working directory")
    _refused(lambda: lmforge.prep(raw, "..", **FAST), tree, "above the working directory")
    _refused(lambda: prepare_pairs(tree / "pairs.jsonl", ".", vocab_size=300), tree, "working directory")


def test_prep_refuses_a_folder_with_other_files(tree: Path) -> None:
    project = tree / "project"
    project.mkdir()
    (project / "plan.md").write_text("keep me\n")
    _refused(lambda: lmforge.prep(tree / "raw", project, **FAST), tree, "plan.md", "prep did not write")
    _refused(lambda: prepare_pairs(tree / "pairs.jsonl", project, vocab_size=300), tree, "plan.md")
    (tree / "file").write_text("x")
    _refused(lambda: lmforge.prep(tree / "raw", tree / "file", **FAST), tree, "not a folder")
    _refused(lambda: lmforge.prep(tree / "raw", tree / "file" / "out", **FAST), tree, "is a file")


def test_prep_replaces_its_own_output_only_with_overwrite(tree: Path) -> None:
    out = tree / "data" / "shards"
    first = lmforge.prep(tree / "raw", out, **FAST)
    assert "meta.json" in first["files"] and "tokenizer.json" in first["files"]
    assert (out / "meta.json").is_file()
    _refused(lambda: lmforge.prep(tree / "raw", out, **FAST), tree, "--overwrite")
    (tree / "raw" / "doc9.txt").write_text("a new document about the crown.\n")
    meta = lmforge.prep(tree / "raw", out, overwrite=True, **FAST)
    assert meta["documents"] == first["documents"] + 1
    assert json.loads((out / "meta.json").read_text())["documents"] == meta["documents"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["shards"]  # no temp or old folder left
    (out / "mine.txt").write_text("added by hand\n")  # now it is no longer only prep's
    _refused(lambda: lmforge.prep(tree / "raw", out, overwrite=True, **FAST), tree, "mine.txt")


def test_prepare_pairs_replaces_its_own_output_only_with_overwrite(tree: Path) -> None:
    out = tree / "pairs_out"
    prepare_pairs(tree / "pairs.jsonl", out, vocab_size=300)
    _refused(lambda: prepare_pairs(tree / "pairs.jsonl", out, vocab_size=300), tree, "--overwrite")
    meta = prepare_pairs(tree / "pairs.jsonl", out, vocab_size=300, max_tokens=3, overwrite=True)
    assert (
        json.loads((out / "meta.json").read_text())["filters"]["max_tokens"]
        == 3
        == meta["filters"]["max_tokens"]
    )


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_created_folders_follow_the_umask(tree: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        lmforge.prep(tree / "raw", tree / "shards", **FAST)
        prepare_pairs(tree / "pairs.jsonl", tree / "pairs_out", vocab_size=300)
        export_hf(_model_dir(tree / "m"), tree / "hf")
    finally:
        os.umask(old)
    for name in ("shards", "pairs_out", "hf"):
        assert (tree / name).stat().st_mode & 0o777 == 0o777 & ~mask, name
        assert (
            tree / name / "meta.json" if name != "hf" else tree / name / "config.json"
        ).stat().st_mode & 0o777 == (0o666 & ~mask)


# --- broken input to prep ---------------------------------------------------------------------
def test_non_utf8_input_is_named_with_line_and_byte(tree: Path) -> None:
    bad = tree / "bad.jsonl"
    bad.write_bytes(b'{"en": "fine", "fr": "bien"}\n{"en": "caf\xe9", "fr": "x"}\n')
    offset = bad.read_bytes().index(b"\xe9")
    where = f"{bad}:2: not valid UTF-8 (byte {offset} of the file)"
    _refused(lambda: prepare_pairs(bad, tree / "out", vocab_size=300), tree, where)
    lines = tree / "lines.txt"
    lines.write_bytes(b"one\ntwo \xff\n")
    _refused(lambda: read_lines(lines), tree, f"{lines}:2: not valid UTF-8 (byte 8 of the file)")
    # prep repairs (U+FFFD) and names the file, line and first bad byte in its report
    src = tree / "latin"
    src.mkdir()
    (src / "l.txt").write_bytes(b"good line\ncaf\xe9 cr\xe8me\n")
    lmforge.prep(src, tree / "out", **FAST)
    problems = json.loads((tree / "out" / "report.json").read_text())["problem_list"]
    assert problems == [
        f"{src / 'l.txt'}:2: invalid UTF-8 (first at byte 13; 1 line(s) repaired with U+FFFD; if it is"
        f" Latin-1 or Windows-1252: iconv -f WINDOWS-1252 -t UTF-8 {src / 'l.txt'})"
    ]


def test_empty_corpus_is_one_line(tree: Path) -> None:
    empty = tree / "empty"
    empty.mkdir()
    (empty / "a.txt").write_text("")
    _refused(lambda: lmforge.prep(empty, tree / "out", **FAST), tree, str(empty), "empty")


def test_corrupt_shard_is_named(tree: Path) -> None:
    out = tree / "shards"
    lmforge.prep(tree / "raw", out, val_fraction=0.3, **FAST)
    train = out / "train_00000.bin"
    train.write_bytes(train.read_bytes()[:-2])  # one whole token short: the size is still even
    _refused(lambda: open_split(out, "train"), tree, str(train), "meta.json says")
    meta = json.loads((out / "meta.json").read_text())
    meta["shards"]["val"] = ["../notes.txt"]
    (out / "meta.json").write_text(json.dumps(meta))
    _refused(lambda: open_split(out, "val"), tree, "'../notes.txt'", "not a file name")


# --- unknown characters -----------------------------------------------------------------------
def test_unknown_characters_are_counted_and_warned_once(tree: Path, capsys: pytest.CaptureFixture) -> None:
    tok = Tokenizer.train_char(["abc "])
    assert tok.decode(tok.encode("ab é€ é")) == "ab  "
    err = capsys.readouterr().err
    assert "3 character(s) not in the character vocabulary became <|unk|>" in err
    assert "'é', '€'" in err
    tok.encode("€")
    Tokenizer.train_char(["abc"]).encode("a<|unk|>")  # the special token's text is no unknown character
    assert capsys.readouterr().err == ""  # and the first tokenizer warns once only
    lmforge.prep(tree / "raw", tree / "out", tokenizer=Tokenizer.train_char(["the king "]), **FAST)
    report = json.loads((tree / "out" / "report.json").read_text())
    assert report["unknown_characters"] > 0
    assert f"{tree / 'out'}: {report['unknown_characters']:,} character(s)" in capsys.readouterr().err


# --- export / import --out --------------------------------------------------------------------
def _model_dir(path: Path, seed: int = 0) -> Path:
    tok = Tokenizer.train_char(["hello world, the king"])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size)
    torch.manual_seed(seed)
    write_model_dir(path, config, GPT(config).state_dict(), tok)
    return path


def _shard_in_place(hf_dir: Path) -> None:
    """Turn an exported model.safetensors into two shards + index, as save_pretrained writes."""
    state = load_file(str(hf_dir / "model.safetensors"))
    names = sorted(state)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    weight_map = {}
    for shard, keys in halves.items():
        save_file({k: state[k] for k in keys}, str(hf_dir / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(keys, shard))
    (hf_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    (hf_dir / "model.safetensors").unlink()


def test_export_over_a_sharded_model_leaves_no_stale_index(tmp_path: Path) -> None:
    a, b, hf = _model_dir(tmp_path / "a", seed=1), _model_dir(tmp_path / "b", seed=2), tmp_path / "hf"
    export_hf(b, hf)
    _shard_in_place(hf)  # hf now holds model b, sharded
    export_hf(a, hf)
    assert sorted(p.name for p in hf.iterdir()) == [
        ".lmforge-output",  # export's marker: a later export may replace it, nothing else may
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    loaded, _ = lmforge.load(hf)
    expected, _ = lmforge.load(a)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "hf"]  # no old or temp folder left


def test_export_and_import_refuse_folders_they_did_not_write(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model")
    export_hf(model, tmp_path / "hf")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("my project\n")
    (repo / "config.json").write_text('{"app": 1}\n')
    _refused(lambda: export_hf(model, repo), tmp_path, "README.md", "export did not write")
    _refused(lambda: import_hf(tmp_path / "hf", repo), tmp_path, "README.md", "import did not write")
    _refused(lambda: export_hf(model, model), tmp_path, "is the input")
    _refused(lambda: export_hf(model, tmp_path), tmp_path, "contains the input")
    other = _model_dir(tmp_path / "trained")  # an lmforge model: not an earlier export
    _refused(lambda: export_hf(model, other), tmp_path, "model_type 'lmforge-gpt'", "export did not write")
    _refused(lambda: import_hf(tmp_path / "hf", tmp_path / "hf"), tmp_path, "is the input")
    import_hf(tmp_path / "hf", tmp_path / "ours")
    import_hf(tmp_path / "hf", tmp_path / "ours")  # its own earlier output: replaced
    export_hf(model, tmp_path / "hf")  # likewise
    assert lmforge.load(tmp_path / "ours")[0].config == lmforge.load(model)[0].config
    # a model folder alike in its files, but another's: a trained model, a copy of another verb's
    _refused(lambda: import_hf(tmp_path / "hf", model), tmp_path, "no record that import wrote it")
    copied = tmp_path / "copied"
    shutil.copytree(tmp_path / "ours", copied)
    (copied / ".lmforge-output").write_text('{"written_by": "merge-lora"}\n')
    _refused(
        lambda: import_hf(tmp_path / "hf", copied),
        tmp_path,
        "holds the output of lmforge merge-lora, not of import",
    )


# --- untrusted and damaged model files --------------------------------------------------------
@pytest.mark.parametrize("index", ["model.safetensors.index.json", "pytorch_model.bin.index.json"])
@pytest.mark.parametrize("name", ["../../etc/hostname", "/etc/hostname", "sub/../../secret.bin"])
def test_a_shard_index_cannot_name_files_outside_the_model(tmp_path: Path, index: str, name: str) -> None:
    hf = tmp_path / "hf"
    export_hf(_model_dir(tmp_path / "m"), hf)
    (hf / "model.safetensors").unlink()
    (hf / index).write_text(json.dumps({"weight_map": {"transformer.wte.weight": name}}))
    _refused(lambda: lmforge.load(hf), tmp_path, str(hf / index), repr(name), "outside the model folder")


def test_an_unpicklable_bin_is_one_line_naming_it(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    export_hf(_model_dir(tmp_path / "m"), hf)
    state = load_file(str(hf / "model.safetensors"))
    (hf / "model.safetensors").unlink()
    torch.save({**state, "when": datetime.datetime(2020, 1, 1)}, hf / "pytorch_model.bin")
    message = _refused(
        lambda: lmforge.load(hf), tmp_path, str(hf / "pytorch_model.bin"), "not a plain state dict"
    )
    assert "weights_only=False" not in message
    shard = "pytorch_model-00001-of-00001.bin"
    (hf / "pytorch_model.bin").rename(hf / shard)
    (hf / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": dict.fromkeys(state, shard)}))
    _refused(lambda: lmforge.load(hf), tmp_path, str(hf / shard), "not a plain state dict")


def test_truncated_weights_and_invalid_configs_are_named(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    hf = tmp_path / "hf"
    export_hf(model, hf)
    for directory in (model, hf):
        weights = directory / "model.safetensors"
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
        _refused(lambda d=directory: lmforge.load(d), tmp_path, str(weights), "unreadable safetensors")
        weights.write_bytes(data)
        config = directory / "config.json"
        good = config.read_bytes()
        for bad in (b"{not json", b"[1, 2]", b'{"model_type": "\xff"}'):
            config.write_bytes(bad)
            _refused(lambda d=directory: lmforge.load(d), tmp_path, str(config))
        config.write_bytes(good)
    for directory, key, value, says in (
        (model, "n_layer", "x", "must be an integer"),
        (model, "vocab_size", 3, "size mismatch for wte.weight"),
        (hf, "n_layer", "two", "must be an integer"),
        (hf, "n_embd", 7, "not divisible"),
    ):
        config = directory / "config.json"
        good = config.read_text()
        config.write_text(json.dumps({**json.loads(good), key: value}))
        _refused(lambda d=directory: lmforge.load(d), tmp_path, str(directory), says)
        config.write_text(good)
    (hf / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    _refused(lambda: lmforge.load(hf), tmp_path, str(hf / "config.json"), "missing config key")
    _refused(lambda: export_hf(hf, tmp_path / "out"), tmp_path, str(hf / "config.json"))


# --- what a killed run leaves beside its output -----------------------------------------------
# A child runs one statement and dies (os._exit, as a kill -9 would) at the rename of a finished
# temporary: before a new output's only rename, between install's two, at write_file's.
_DIES_AT_RENAME = """
import os, sys
import lmforge
from lmforge.outputs import write_file

rename = os.replace


def replace(src, dst):
    if ".tmp-" in os.path.basename(src):
        os._exit(9)
    rename(src, dst)


os.replace = replace
exec(sys.argv[1])
"""


def _killed(statement: str) -> int:
    """The pid (no process any more) of a child killed while `statement` wrote its output."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen([sys.executable, "-c", _DIES_AT_RENAME, statement], env=env)
    assert child.wait(timeout=120) == 9
    return child.pid


def _prep_call(raw: Path, out: Path, overwrite: bool = False) -> str:
    return f"lmforge.prep({str(raw)!r}, {str(out)!r}, overwrite={overwrite}, **{FAST!r})"


def _scratch(folder: Path, name: str) -> list[Path]:
    """What a verb writing `name` leaves beside it, but for its lock file (test_run_lock.py)."""
    return sorted(
        p for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name != f".{name}{LOCK}"
    )


def test_the_next_prep_removes_and_names_what_a_killed_one_left(
    tree: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tree / "shards"
    pid = _killed(_prep_call(tree / "raw", out))
    [left] = _scratch(tree, "shards")
    assert left.name.startswith(".shards.tmp-") and f"-{pid}-" in left.name and not out.exists()
    live = tree / left.name.replace(f"-{pid}-", f"-{os.getpid()}-")  # a run still writing
    live.mkdir()
    mine = tree / f"{left.name}-mine"  # not a name lmforge makes
    mine.mkdir()
    lmforge.prep(tree / "raw", out, **FAST)
    err = capsys.readouterr().err
    assert f"lmforge: note: removed {left}, left by an interrupted run (pid {pid})\n" in err
    assert _scratch(tree, "shards") == sorted([live, mine]) and (out / "meta.json").is_file()
    assert str(live) not in err and str(mine) not in err
    assert not (tree / f".shards{LOCK}").exists()  # the killed one's lock file: taken, and removed


def test_an_install_cut_between_its_renames_is_put_back_and_replaced_only_with_overwrite(
    tree: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tree / "shards"
    first = lmforge.prep(tree / "raw", out, **FAST)
    before = snapshot(out)
    (tree / "raw" / "doc9.txt").write_text("a new document about the crown.\n")
    pid = _killed(_prep_call(tree / "raw", out, overwrite=True))
    aside, new = _scratch(tree, "shards")  # the earlier output moved aside, the new one not yet in
    assert aside.name.startswith(".shards.old-") and new.name.startswith(".shards.tmp-") and not out.exists()
    with pytest.raises(LmforgeError, match="--overwrite"):  # back, and not replaced unasked
        lmforge.prep(tree / "raw", out, **FAST)
    err = capsys.readouterr().err
    restored = f"restored {out} from {aside.name}, where an interrupted run (pid {pid}) had moved it"
    assert restored in err and f"removed {new}, left by an interrupted run (pid {pid})" in err
    assert snapshot(out) == before and _scratch(tree, "shards") == []
    shutil.copytree(out, aside)  # as a kill during install's cleanup leaves the earlier output
    meta = lmforge.prep(tree / "raw", out, overwrite=True, **FAST)
    assert meta["documents"] == first["documents"] + 1
    assert f"removed {aside}, left by an interrupted run (pid {pid})" in capsys.readouterr().err
    assert _scratch(tree, "shards") == []


class _DiskFull(io.FileIO):
    def write(self, data: bytes) -> int:  # half of it, then a full disk
        super().write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")


def test_write_file_is_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    result = tmp_path / "p.json"
    result.write_text("earlier\n")
    with monkeypatch.context() as m:
        m.setattr(outputs.os, "fdopen", lambda fd, mode: _DiskFull(fd, "w"))
        with pytest.raises(LmforgeError, match=rf"^{re.escape(str(result))}: cannot write: No space left"):
            outputs.write_file(result, "x" * 1000)  # names the file, not its temporary
    assert result.read_text() == "earlier\n" and sorted(tmp_path.iterdir()) == [result]
    pid = _killed(f"write_file({str(result)!r}, 'killed\\n')")
    [left] = _scratch(tmp_path, "p.json")
    assert result.read_text() == "earlier\n" and left.read_text() == "killed\n"
    link = tmp_path / "link.json"
    link.symlink_to(result.name)
    old = os.umask(0o027)
    try:
        outputs.write_file(link, "new\n")  # the file the link names is replaced; the link stays
    finally:
        os.umask(old)
    assert link.is_symlink() and result.read_text() == "new\n" and result.stat().st_mode & 0o777 == 0o640
    assert f"removed {left}, left by an interrupted run (pid {pid})" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == [link, result]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_model_files_follow_the_umask(tmp_path: Path, mask: int) -> None:
    """safetensors writes 0600 whatever the umask: a model directory, an export and an import
    must not keep that."""
    old = os.umask(mask)
    try:
        export_hf(_model_dir(tmp_path / "m"), tmp_path / "hf")
        import_hf(tmp_path / "hf", tmp_path / "back")
    finally:
        os.umask(old)
    for folder in ("m", "hf", "back"):
        assert (tmp_path / folder / "model.safetensors").stat().st_mode & 0o777 == 0o666 & ~mask, folder


# --- hardware: MFU's peak ---------------------------------------------------------------------
def test_bf16_flags_are_read_from_the_flags_line() -> None:
    assert hardware.bf16_in_cpuinfo("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    assert hardware.bf16_in_cpuinfo("flags : fpu amx_bf16\n")
    assert not hardware.bf16_in_cpuinfo("flags\t\t: fpu sse avx2 avx512f\nmodel name : avx512_bf16-ish\n")


@pytest.mark.parametrize(("has_bf16", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_mfu_peak_is_fp32_on_a_cpu_without_bf16_units(
    monkeypatch: pytest.MonkeyPatch, has_bf16: bool, expected: torch.dtype
) -> None:
    measured = []
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(hardware, "_measure_peak", lambda dtype, device, size: measured.append(dtype) or 1.0)
    hardware.matmul_peak_flops(torch.bfloat16, torch.device("cpu"))
    hardware.matmul_peak_flops(torch.float32, torch.device("cpu"))
    assert measured == [expected, torch.float32]
    reason = hardware.resolve_dtype("bf16", ModelConfig())[1]
    assert ("emulated" in reason) == (not has_bf16)


# --- launch -----------------------------------------------------------------------------------
def test_launch_refuses_copies_of_a_one_process_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    monkeypatch.setattr("lmforge.launch.subprocess.Popen", lambda cmd: started.append(cmd) or _Done())
    recipe = tmp_path / "r.toml"
    recipe.write_text('[engine]\nname = "fsdp"\n')
    local = tmp_path / "local.toml"
    local.write_text("[train]\nmax_steps = 2\n")
    with pytest.raises(LmforgeError, match=r"engine.name='local' trains in one process, so 2 processes"):
        launch(2, ["train", str(local)])
    with pytest.raises(LmforgeError, match="only `train` runs in several processes"):
        launch(2, ["prep", "raw", "--out", "x"])
    assert engine_of(["train", str(recipe)]) == "fsdp"
    assert engine_of(["train", str(local), "--engine.name=ddp"]) == "ddp"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text('[engine]\nname = "deepspeed"\n')
    assert engine_of(["train", "--resume", str(run)]) == "deepspeed"
    assert not started
    assert launch(2, ["train", str(recipe)]) == 0 and launch(1, ["train", str(local)]) == 0
    assert len(started) == 2


def test_launch_reads_a_recipe_that_needs_its_command_line() -> None:
    """A QA recipe is valid only with the train.init_from the command line gives it: launch must
    read its engine with every override, not the engine's alone (it refused qa-demo.toml)."""
    qa = ["train", str(ROOT / "configs" / "qa-demo.toml"), "--out", "runs/x.toml", "--engine.name=ddp"]
    with pytest.raises(LmforgeError, match=r"data.task='qa' needs train.init_from"):
        engine_of(qa)
    assert engine_of([*qa, "--train.init_from=minilm"]) == "ddp"
    assert engine_of([*qa, "--init-from", "minilm"]) == engine_of([*qa, "--init-from=minilm"]) == "ddp"


class _Done:
    """An agent that ended at once, all well."""

    def wait(self, timeout: float | None = None) -> int:
        return 0


# --- the command line: exit code 2, one line, nothing touched ----------------------------------
def test_cli_prep_over_its_input_exits_2_with_one_line(tree: Path) -> None:
    before = snapshot(tree)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "lmforge", "prep", "raw", "--out", "raw", "--quiet"],
        cwd=tree,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "lmforge: error: raw: the output folder is the input raw; give another --out"
    ]
    assert snapshot(tree) == before


def test_an_evaluation_replaces_an_existing_out_file_only_with_overwrite(tmp_path: Path) -> None:
    """eval-qa (as eval-translate, eval-instruct and audit: one check_out) writes --out; a file
    already there is the user's until --overwrite says otherwise."""
    from lmforge.cli import main

    qa = {"id": "1", "question": "Who sells wine?", "answers": [{"text": "Ada", "answer_start": 0}]}
    squad = {"version": "v2.0", "data": [{"paragraphs": [{"context": "Ada sells wine.", "qas": [qa]}]}]}
    data, out = tmp_path / "q.json", tmp_path / "p.json"
    data.write_text(json.dumps(squad))
    out.write_text("mine\n")
    argv = ["eval-qa", "--baseline", "sliding-window", "--data", str(data), "--out", str(out)]
    assert main(argv) == 2 and out.read_text() == "mine\n"
    assert main([*argv, "--overwrite"]) == 0 and json.loads(out.read_text()) == {"1": "Ada"}


def test_an_evaluation_never_replaces_a_file_inside_an_input_folder_or_pattern(tmp_path: Path) -> None:
    """audit --data DIR --out DIR/canaries.json --overwrite replaced the prepared directory's
    canaries (the only record of the planted secrets), and --data 'corp/*.txt' --out corp/b.txt
    --overwrite a training text: --overwrite replaces the command's own output, never an input."""
    from lmforge.inference.translate import check_out

    corp = tmp_path / "corp"
    corp.mkdir()
    for name in ("a.txt", "b.txt", "canaries.json"):
        (corp / name).write_text("mine\n")
    for data, out in ((corp, corp / "canaries.json"), (f"{corp}/*.txt", corp / "b.txt")):
        with pytest.raises(LmforgeError, match=r"is a file of data .*: writing it would overwrite an input"):
            check_out(out, {f"data {data}": data}, overwrite=True)
        assert out.read_text() == "mine\n"
    assert check_out(corp / "new.json", {f"data {corp}": corp}, overwrite=True) == corp / "new.json"
    assert check_out(tmp_path / "x.json", {"data": f"{corp}/*.txt"}, overwrite=True) == tmp_path / "x.json"
