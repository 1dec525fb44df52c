"""The robustness suite (issue 19, item 5): a catalogue of wrong commands covering every verb, each
typed as a user would. For each: the exit status; one line `lmforge: error: ...` that names the
culprit (file, key or value); no traceback; and every file that existed before, in the case's
folder (also the working directory), the shared models and runs, and the temp folder, still
there and unchanged, with nothing new beside it: a failing command leaves no trace.

Cases run in-process through lmforge.cli.main (a subprocess costs ~2 s); the few marked `process`
run `python -m lmforge` for what only a real process shows (torchrun, streamed stdout, progress
bars on a real stderr). Two things on stderr are not messages and are allowed: argparse's usage
block above its one error line (argparse's convention, kept for usage errors), and tqdm progress
bars, which prep and train draw while they work, before they know the input is bad.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, make_text
from robustness_cases import CASES, Case

from lmforge import launch
from lmforge.cli import main

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK = "Traceback (most recent call last)"
PROGRESS = re.compile(r"\[\d+:\d\d(<[\d:?]+)?, [^\]]*\]$")  # tqdm's status: [00:01<00:02, 2.4kB/s]
QUIET_ON_ERROR = {"generate", "import", "export", "translate", "eval-translate", "launch"}


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256 of the bytes, 'dir' or the link target; mode) of everything under root."""
    out = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            what = "-> " + os.readlink(path)
        else:
            what = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = (what, stat.S_IMODE(info.st_mode))
    return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models and a run the cases read (never change): a char GPT, an encoder-decoder and a
    classifier sharing one tokenizer, the GPT in HF's layout, a 4-step run with checkpoints at
    steps 2 and 4, a prep output, sentence pairs and labelled lines."""
    from lmforge import prep
    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.formats.hf_export import export_hf
    from lmforge.formats.lmforge_dirs import save_classifier
    from lmforge.model.classifier import Classifier
    from lmforge.model.gpt import GPT
    from lmforge.model.seq2seq import Seq2Seq
    from lmforge.tokenization.tokenizer import Tokenizer
    from lmforge.train.loop import train

    s = tmp_path_factory.mktemp("shared")
    text = make_text(lines=300)
    (s / "corpus.txt").write_text(text)
    tok = Tokenizer.train_char([text])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    gpt = GPT(config)
    write_model_dir(s / "gpt", config, gpt.state_dict(), tok)
    s2s = Seq2Seq(ModelConfig(**{**config.__dict__, "arch": "seq2seq"}), tok.pad_id or 0)
    write_model_dir(s / "s2s", s2s.config, s2s.state_dict(), tok)
    clf = Classifier(GPT(config), ["neg", "pos"], head_bias=True)  # which export refuses
    save_classifier(clf, s / "clf", tok)
    export_hf(s / "gpt", s / "hf")
    overrides = [
        f"--data.input={s / 'corpus.txt'}",
        *TINY,
        "--train.max_steps=4",
        "--train.checkpoint_interval=2",
    ]
    train(None, [*overrides, "--train.keep_checkpoints=3"], s / "run", quiet=True)
    prep(s / "corpus.txt", s / "shards", stages="none", workers=1, quiet=True)
    rows = [
        {"text": f"the king is {w} on day {i}", "label": "pos" if i % 3 else "neg"}
        for i, w in enumerate(["good", "bad"] * 20)
    ]
    (s / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return s


@pytest.fixture(scope="module")
def shared_before(shared: Path) -> dict[str, tuple[str, int]]:
    return snapshot(shared)


def _run(argv: list[str], work: Path, temp: Path) -> tuple[int, str, str, bool]:
    """(exit status, stdout, stderr, whether argparse stopped it) of `python -m lmforge ARGV`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(temp)}
    env.pop("LMFORGE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-m", "lmforge", *argv], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr, "--help lists the options)" in proc.stderr


def _no_process(command: list[str], **_: object) -> None:
    raise AssertionError(f"an in-process case started {command[:4]}")  # it should fail before


def _lines(err: str) -> list[str]:
    """stderr's non-empty lines, progress bars left out (tqdm redraws them after a carriage return)."""
    parts = (part.strip() for part in re.split(r"[\r\n]", err))
    return [part for part in parts if part and not PROGRESS.search(part)]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_wrong_command_is_one_line_and_leaves_no_trace(
    case: Case,
    shared: Path,
    shared_before: dict[str, tuple[str, int]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    work, temp = tmp_path / "work", tmp_path / "tmp"
    work.mkdir()
    temp.mkdir()
    for step in case.setup:
        step(work, shared)
    argv = [word.replace("{t}", str(work)).replace("{s}", str(shared)) for word in shlex.split(case.argv)]
    culprit = case.culprit.replace("{t}", re.escape(str(work))).replace("{s}", re.escape(str(shared)))
    before = snapshot(tmp_path)
    if case.process:
        code, out, err, usage = _run(argv, work, temp)
    else:
        monkeypatch.chdir(work)
        monkeypatch.setattr(tempfile, "tempdir", str(temp))  # mkdtemp's folders land where we look
        monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
        monkeypatch.setattr(launch, "subprocess", SimpleNamespace(run=_no_process))
        capsys.readouterr()
        try:
            code, usage = main(argv), False
        except SystemExit as e:  # argparse's usage errors
            code, usage = e.code, True
        out, err = capsys.readouterr()

    assert TRACEBACK not in err + out, err + out
    assert (code, usage) == (case.code, case.usage), err
    lines = _lines(err)
    assert len(lines) == 1, lines  # argparse's errors too: no usage block before them
    line = lines[0]
    assert line.startswith("lmforge: error: "), line
    if case.usage:  # argparse stopped it: the line says where the options are listed
        assert re.search(r" \(lmforge( [\w-]+)? --help lists the options\)$", line), line
    assert re.search(culprit, line), line
    if case.verb in QUIET_ON_ERROR:
        assert out == "", out  # nothing printed before the error (a streamed prompt, say)
    assert snapshot(tmp_path) == before  # no file lost or changed, none left behind
    assert snapshot(shared) == shared_before


def test_the_catalogue_covers_every_verb() -> None:
    from lmforge.cli import VERBS

    assert len({c.id for c in CASES}) == len(CASES) >= 60
    counts = Counter(c.verb for c in CASES)
    for verb in [*VERBS, "prep --pairs"]:
        assert counts[verb] >= 5, (verb, counts)
    assert sum(c.process for c in CASES) <= 3
