"""One lmforge process at a time in a run folder (and in an output folder being written): a second
`train` (new, --overwrite, --resume, finetune-classify, a 2-rank launch) is refused in one line
before it reads or changes anything, and the lock dies with its holder (kill -9).

The holder is a real `lmforge train`, stopped with SIGSTOP once it has a checkpoint: it holds the
lock as a running one does, and its folder stays still, so "unchanged" is exact (bytes, mtimes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TINY

from lmforge import folder_lock
from lmforge.cli import main
from lmforge.data.prep import prep
from lmforge.errors import LmforgeError
from lmforge.folder_lock import LOCK, FolderLock
from lmforge.formats.hf_export import export_hf
from lmforge.outputs import staged_folder
from lmforge.train.checkpoint import list_checkpoints
from lmforge.train.classify import finetune_classify
from lmforge.train.loop import train
from lmforge.train.run_dir import resolve_run, run_kind, undo_start

BUSY = (
    r"^{run}: another lmforge process \(pid {pid}, started \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\) is training in"
    r" this folder; {advice}$"
)
NEW = "wait for it to end or stop it, or choose another --out"
RESUME = "wait for it to end or stop it, then resume"


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """relative path -> (sha256 or 'dir', mtime in ns) of everything under root, root included."""
    out = {".": ("dir", root.stat().st_mtime_ns)}
    for path in sorted(root.rglob("*")):
        what = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(root))] = (what, path.stat().st_mtime_ns)
    return out


def busy(run: Path, pid: int, advice: str) -> str:
    return BUSY.format(run=re.escape(str(run)), pid=pid, advice=re.escape(advice))


def start_holder(run: Path, corpus: Path) -> subprocess.Popen:
    """A `lmforge train` holding `run`, stopped (SIGSTOP) after its first checkpoint."""
    command = [sys.executable, "-m", "lmforge", "train", "--out", str(run), f"--data.input={corpus}", *TINY,
               "--train.max_steps=100000", "--train.checkpoint_interval=2", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while proc.poll() is None and time.time() < deadline and not list_checkpoints(run / "checkpoints"):
        time.sleep(0.01)
    assert proc.poll() is None and list_checkpoints(run / "checkpoints"), "the holder did not start"
    proc.send_signal(signal.SIGSTOP)
    time.sleep(0.2)  # a stopped process stays stopped: what it had written is all there is
    return proc


@pytest.fixture(scope="module")
def holder(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Iterator[tuple[subprocess.Popen, Path]]:
    run = tmp_path_factory.mktemp("held") / "run"
    proc = start_holder(run, corpus)
    yield proc, run
    proc.kill()
    proc.wait()


@pytest.mark.parametrize(
    "argv, advice",
    [
        (["--out", "{run}", "--train.max_steps=2"], NEW),
        (["--out", "{run}", "--overwrite", "--train.max_steps=2"], NEW),
        (["--resume", "{run}", "--train.max_steps=50"], RESUME),
    ],
    ids=["new", "overwrite", "resume"],
)
def test_a_second_train_is_refused_in_one_line_and_changes_nothing(
    holder: tuple[subprocess.Popen, Path],
    corpus: Path,
    argv: list[str],
    advice: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Two trains into one folder both exited 0, the second having replaced the first's files;
    --overwrite moved a live run aside; two --resume pruned each other's checkpoints."""
    proc, run = holder
    before = snapshot(run)
    args = [a.format(run=run) for a in argv]
    data = [] if "--resume" in args else [f"--data.input={corpus}", *TINY]
    capsys.readouterr()
    assert main(["train", *args, *data, "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1, err
    assert re.match(busy(run, proc.pid, advice), err[0].removeprefix("lmforge: error: ")), err
    assert snapshot(run) == before


def test_finetune_classify_into_a_held_run_folder_is_refused(
    holder: tuple[subprocess.Popen, Path], tmp_path
) -> None:
    """finetune-classify trains through the one loop, and takes the same lock."""
    proc, run = holder
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": f"text {i}", "label": i % 2}) + "\n" for i in range(20)))
    before = snapshot(run)
    with pytest.raises(LmforgeError, match=busy(run, proc.pid, NEW)):
        finetune_classify(tmp_path / "no-model", rows, labels="a,b", out=run)
    assert snapshot(run) == before


def test_a_launch_of_two_ranks_into_a_held_folder_is_one_line_and_no_hang(
    holder: tuple[subprocess.Popen, Path], corpus: Path
) -> None:
    """Rank 0 is refused by the lock; rank 1 (whose rank 0 would hold it in its own run) reads the
    holder's record and says the same line, rather than another check's, or waiting for rank 0."""
    proc, run = holder
    before = snapshot(run)
    command = [sys.executable, "-m", "lmforge", "launch", "--nproc", "2", "train", "--engine.name=ddp",
               "--out", str(run), f"--data.input={corpus}", *TINY, "--engine.timeout_s=60"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, lines
    assert re.match(busy(run, proc.pid, NEW), lines[0].removeprefix("lmforge: error: ")), lines
    assert snapshot(run) == before


def test_another_launchs_rank_refuses_and_its_own_goes_on(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranks other than 0 cannot take the lock (their rank 0 holds it): they refuse a holder of
    another launch, live on this host, and go on for their own launch's rank 0."""
    run = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    with FolderLock() as lock:  # rank 0 of launch 127.0.0.1:29511, here
        lock.take(folder_lock.beside(run), run, "training in this folder", NEW, [])
        path = tmp_path / f".run{LOCK}"
        assert json.loads(path.read_text())["launch"] == "127.0.0.1:29511"
        folder_lock.refuse_if_held(path, run, NEW)  # a rank of the same launch: goes on
        monkeypatch.setenv("MASTER_PORT", "29512")  # a rank of another launch
        with pytest.raises(LmforgeError, match=r"\(pid \d+, rank 0 of a multi-process launch, started "):
            folder_lock.refuse_if_held(path, run, NEW)
    assert not path.exists()  # let go: the file goes with the lock
    path.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "launch": "x:1"}))
    folder_lock.refuse_if_held(path, run, NEW)  # a process of another host: not known to be alive here


def test_a_refused_run_keeps_the_folder_the_holder_made(tmp_path, corpus: Path) -> None:
    """Two starts racing on a new --out could both record it as theirs and remove it on failure:
    only the one that holds the lock owns what it made."""
    run = tmp_path / "new" / "run"
    made: list[Path] = []
    with FolderLock() as lock:
        lock.take(folder_lock.beside(run), run, "training in this folder", NEW, made)
        assert made == [run.parent]
        with pytest.raises(LmforgeError, match=busy(run, os.getpid(), NEW)):
            train(None, [f"--data.input={corpus}", *TINY, "--train.max_steps=2"], out=run, quiet=True)
        assert sorted(p.name for p in run.parent.iterdir()) == [f".run{LOCK}"]  # no run folder made


def test_the_lock_file_sits_beside_the_run_and_a_failed_start_removes_what_it_made(
    tmp_path, corpus: Path
) -> None:
    """The run folder is made once its lock is held and its checks have passed; a start that fails
    after that removes it, the folders made above it and the lock file."""
    run = tmp_path / "new" / "run"
    made: list[Path] = []
    with FolderLock() as lock:
        assert resolve_run(None, [f"--data.input={corpus}", *TINY], run, None, False, made, lock)[0] == run
        assert made == [run, run.parent]
        assert sorted(p.name for p in run.parent.iterdir()) == [f".run{LOCK}", "run"]
        assert not any(run.iterdir())  # nothing of the lock's inside the run folder
        undo_start(run, made, lock)
    assert not any(tmp_path.iterdir())


def test_train_is_refused_while_a_prep_writes_its_out(tmp_path, corpus: Path, capsys) -> None:
    """`train --out shards` during `prep --out shards` trained a whole run into it, and prep then
    failed at its end: both verbs now take one lock file, beside the folder."""
    out = tmp_path / "shards"
    staged = staged_folder(out, inputs=[corpus], owner=lambda _: None, overwrite=None, verb="prep")
    with staged:  # prep's own way of writing `out`, held while it works
        before = sorted(p.name for p in tmp_path.iterdir())
        capsys.readouterr()
        argv = ["train", "--out", str(out), f"--data.input={corpus}", *TINY, "--train.max_steps=2", "--quiet"]
        assert main(argv) == 2
        err = capsys.readouterr().err.splitlines()
        line = (
            rf"^{re.escape(str(out))}: another lmforge process \(pid {os.getpid()}, started .*\) is writing"
        )
        assert len(err) == 1 and re.match(
            line + rf" this folder \(lmforge prep\); {NEW}$", err[0].removeprefix("lmforge: error: ")
        ), err
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    # what the "prep" wrote (nothing) became `out`, with no file of train's in it, and no lock left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"] and not any(out.iterdir())


@pytest.mark.parametrize("verb", ["prep", "export"])
def test_prep_and_export_are_refused_while_a_train_holds_the_folder(
    tmp_path, corpus: Path, verb: str, holder: tuple[subprocess.Popen, Path]
) -> None:
    """A train that has made its (still empty) run folder holds it: an output verb into the same
    --out is refused with the train's line rather than writing its output there."""
    out = tmp_path / "run"
    with FolderLock() as lock:  # train's own start: the lock, then the run folder
        resolve_run(None, [f"--data.input={corpus}", *TINY], out, None, False, [], lock)
        before = snapshot(tmp_path)
        with pytest.raises(LmforgeError, match=busy(out, os.getpid(), NEW)):
            if verb == "prep":
                prep(corpus, out=out, quiet=True)
            else:
                export_hf(holder[1], out)
        assert snapshot(tmp_path) == before


def test_resume_of_a_folder_that_is_no_run_says_so_before_any_lock_file(tmp_path) -> None:
    """--resume made (then removed) a lock file in any folder before checking it was a run, and on
    a read-only one said it could not write the lock file rather than that it was no run."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "a.txt").write_text("mine\n")
    before = snapshot(tmp_path)
    with pytest.raises(
        LmforgeError, match=rf"^{re.escape(str(folder))}: not a run directory \(no config.toml\)"
    ):
        train(resume=folder, quiet=True)
    assert snapshot(tmp_path) == before  # not even an mtime: no lock file came and went


def test_a_second_prep_into_one_folder_is_refused_before_it_starts(tmp_path, corpus: Path) -> None:
    out = tmp_path / "shards"
    with FolderLock() as lock:  # another process writing `out` (prep, export, import: outputs.staged_folder)
        lock.take(folder_lock.beside(out), out, "writing this folder (lmforge prep)", NEW, [])
        line = (
            rf"^{re.escape(str(out))}: another lmforge process \(pid {os.getpid()}, started .*\) is writing"
        )
        with pytest.raises(LmforgeError, match=line + rf" this folder \(lmforge prep\); {NEW}$"):
            prep(corpus, out=out, quiet=True)
        assert sorted(p.name for p in tmp_path.iterdir()) == [f".shards{LOCK}"]
    prep(corpus, out=out, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]  # no lock file left beside it


def test_after_kill_9_of_the_holder_resume_overwrite_and_export_work(corpus: Path, tmp_path) -> None:
    """The lock dies with its holder: no clean-up by hand. Its stale file is no run file: run_kind
    ignores it, --overwrite leaves it in place, a finished run and its export hold none."""
    run = tmp_path / "run"
    proc = start_holder(run, corpus)
    with pytest.raises(LmforgeError, match=busy(run, proc.pid, RESUME)):
        train(resume=run, overrides=["--train.max_steps=50"], quiet=True)
    proc.kill()
    proc.wait()
    stale = tmp_path / f".run{LOCK}"
    assert stale.is_file() and not (run / LOCK).exists()  # what a kill leaves: a file nobody holds, beside
    assert run_kind(run)[0] == "run"
    step = int(max(list_checkpoints(run / "checkpoints")).name.split("_")[1])
    train(resume=run, overrides=[f"--train.max_steps={step + 2}"], quiet=True)
    assert not stale.exists()
    stale.write_text("{}\n")  # a stale one again: taken as it is, and removed at the end
    train(None, [f"--data.input={corpus}", *TINY, "--train.max_steps=2"], out=run, overwrite=True, quiet=True)
    assert not stale.exists() and not any(LOCK in p.name for p in run.rglob("*"))
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert not any(LOCK in p.name for p in (tmp_path / "hf").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "run"]
