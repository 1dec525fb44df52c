"""Checkpoints: atomic writes, verified on resume, exact resume, and the model directory they double as.

A checkpoint is `run/checkpoints/step_NNNNNNNN/` holding what the engine saves (model.safetensors,
optimizer.safetensors, optimizer.json: the same files from every engine, see engines/state.py)
plus trainer.json (step, data position, counters, Python RNG), rng.safetensors (torch CPU RNG, and
the current CUDA device's when CUDA is in use), config.json + tokenizer.json, so any checkpoint is
also a loadable model dir, and manifest.json (every other file's size and sha256), written last.
It is written into a hidden temporary directory and renamed into place: a crash mid-write
leaves the previous checkpoint as the latest. Resume takes the newest checkpoint whose manifest
verifies and says which ones it passed over and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.errors import CannotWrite, LmforgeError
from lmforge.formats.directory import write_safetensors
from lmforge.outputs import DISK_ERRORS
from lmforge.processes import own_status
from lmforge.tokenization.marian import load_translation_tokenizer
from lmforge.train.checkpoint_checks import check_trainer_state, manifest_entry_problem
from lmforge.train.own_files import prune_checkpoint
from lmforge.train.rng_state import RankSum, python_rng_state, rank_rng_tensors, rng_tensors

PREFIX = "step_"
MANIFEST = "manifest.json"
STEP_NAME = re.compile(r"step_(\d+)")  # the whole name: step_00000040.bak is not a checkpoint
REPLACED = ".replaced-"  # RUN/.replaced-<time>/: a run moved aside by `train --overwrite`
REPLACED_MARKER = "replaced.json"
_CHUNK = 1 << 22  # hash in 4 MiB reads: constant memory whatever the checkpoint's size


def save_checkpoint(
    root: Path,
    step: int,
    write: Callable[[Path], None],
    trainer_state: dict[str, Any],
    keep: int,
    main: bool = True,
    barrier: Callable[[], None] = lambda: None,
    say: Callable[[str], None] = lambda _: None,
    ranks: RankSum = (0, 1, lambda t: t),
) -> Path:
    """Write a checkpoint for `step` under root atomically; keep the newest `keep` of them.

    Every rank calls it: `write` may be collective (sharded engines gather for it); only the main
    rank touches the file system beyond what `write` does. Once the checkpoint is in place, a
    previous run that `train --overwrite` moved aside in root's parent is deleted. A write that
    fails (a full disk) removes the partial folder, freeing its space; the one before stays whole,
    and a disk's refusal is a CannotWrite naming the file. An old checkpoint holding a file train did
    not write keeps its folder with that file (own_files.prune_checkpoint), said through `say`.
    `ranks` is (this rank, the world size, the engine's all_reduce): every rank's RNG states go
    into rng.safetensors (rng_state.py)."""
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    try:
        if main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier()
        write(tmp)
        rng = rng_tensors() | rank_rng_tensors(*ranks)  # a collective: on every rank
        barrier()
        if main:
            write_safetensors(rng, tmp / "rng.safetensors")
            state = dict(trainer_state, step=step, python_rng=python_rng_state())
            (tmp / "trainer.json").write_text(json.dumps(state, indent=1))
            follow_umask(tmp)
            write_manifest(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
    except Exception as e:  # a kill's leftovers (BaseException) are removed at the next start
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        refused = isinstance(e, OSError) and e.errno in DISK_ERRORS  # trainer.json's write names no file
        if not (refused or isinstance(e, CannotWrite)):
            raise
        why = f"{e.filename or tmp}: cannot write: {e.strerror}" if isinstance(e, OSError) else str(e)
        raise CannotWrite(f"{why} (step {step}'s checkpoint: its partial folder was removed)") from None
    if main:
        _fsync_dir(root)
        for old in list_checkpoints(root)[:-keep]:
            prune_checkpoint(old, say)
        drop_replaced(root.parent)
    barrier()
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders (step_<digits>), oldest first; temporary and other folders are ignored."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path, say: Callable[[str], None] = lambda _: None) -> Path:
    """The newest checkpoint under root whose manifest verifies; `say` reports any passed over.

    A checkpoint without manifest.json (written before lmforge wrote manifests) is used only when
    none verifies: the newest such one whose files are whole (JSON parses, safetensors sizes
    match their headers), reported as unverified. No usable checkpoint: a one-line LmforgeError.
    Verifying reads every file once; the verdict is remembered while the files are unchanged, so
    a second call (the run-directory check, then the loop) costs only a stat per file."""
    found = list_checkpoints(root)
    if not found:
        run = root.parent
        again = f"; to start it again: lmforge train {run}/config.toml --out {run} --overwrite"
        raise LmforgeError(f"{root}: no checkpoint to resume from{replaced_hint(run) or again}")
    key = root.resolve()
    fingerprint = _fingerprint(found)
    cached = _VERDICTS.get(key)
    if cached is None or cached[0] != fingerprint:
        cached = (fingerprint, *_choose(found))
        _VERDICTS[key] = cached
    _, chosen, skipped = cached
    for path, why in skipped:
        say(
            f"{path}: skipped, {why}"
            if why
            else f"{path}: no {MANIFEST} (an older lmforge): using it unverified"
        )
    if chosen is None:
        reasons = "; ".join(f"{path.name}: {why}" for path, why in skipped)
        raise LmforgeError(f"{root}: no usable checkpoint to resume from ({reasons})")
    return chosen


# root -> (fingerprint of its files, chosen checkpoint, [(checkpoint, why passed over or "")])
_VERDICTS: dict[Path, tuple[tuple[Any, ...], Path | None, list[tuple[Path, str]]]] = {}


def _choose(found: list[Path]) -> tuple[Path | None, list[tuple[Path, str]]]:
    skipped: list[tuple[Path, str]] = []
    unverified: list[Path] = []
    for path in reversed(found):
        if not (path / MANIFEST).exists():
            unverified.append(path)
            continue
        problem = manifest_problem(path)
        if not problem:
            return path, skipped + [
                (u, f"no {MANIFEST} (unverified), and {path.name} verifies") for u in unverified
            ]
        skipped.append((path, problem))
    for path in unverified:  # newest first
        problem = structure_problem(path)
        if not problem:
            return path, [*skipped, (path, "")]
        skipped.append((path, f"no {MANIFEST} and {problem}"))
    return None, skipped


def write_manifest(directory: Path) -> None:
    """manifest.json: size and sha256 of every file in directory (recursively), fsynced, written
    last so that its presence means the rest was complete."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        size, digest = _hash_and_sync(path)
        files[path.relative_to(directory).as_posix()] = {"size": size, "sha256": digest}
    manifest = directory / MANIFEST
    manifest.write_text(json.dumps({"version": 1, "files": files}, indent=1) + "\n")
    _hash_and_sync(manifest)
    for sub in sorted({p.parent for p in directory.rglob("*")}, reverse=True):
        _fsync_dir(sub)


def manifest_problem(checkpoint: Path) -> str:
    """Why checkpoint's manifest.json does not verify ("" when it does): its entries' form first
    (a name outside the checkpoint is refused before anything is opened), sizes (cheap), then
    checksums."""
    try:
        files = json.loads((checkpoint / MANIFEST).read_text())["files"]
        entries = [(name, e["size"], e["sha256"]) for name, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return f"{MANIFEST} is unreadable ({type(e).__name__})"
    for name, size, digest in entries:
        if problem := manifest_entry_problem(name, size, digest):
            return f"{MANIFEST}: {problem}"
    paths = [(checkpoint / name, size, digest) for name, size, digest in entries]
    for path, size, _ in paths:
        if path.is_symlink() or not path.is_file():
            return f"{path.name} is missing" if not path.is_symlink() else f"{path.name} is a link"
        if path.stat().st_size != size:
            return f"{path.name} has {path.stat().st_size} bytes, the manifest says {size}"
    for path, _, digest in paths:
        if _hash_and_sync(path, sync=False)[1] != digest:
            return f"{path.name} does not match its sha256 in the manifest"
    return ""


def structure_problem(checkpoint: Path) -> str:
    """Why a checkpoint without manifest cannot be whole ("" when it looks whole): trainer.json and
    rng.safetensors present, every .json parses, every .safetensors is as long as its header says."""
    for name in ("trainer.json", "rng.safetensors"):
        if not (checkpoint / name).is_file():
            return f"{name} is missing"
    try:
        read_trainer_state(checkpoint)
    except LmforgeError as e:
        file = checkpoint / "trainer.json"
        return f"trainer.json is damaged ({str(e).removeprefix(f'{file}: ')})"
    for path in sorted(checkpoint.iterdir()):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                _check_safetensors_length(path)
        except (OSError, ValueError) as e:
            return f"{path.name} is damaged ({e})"
    return ""


def _check_safetensors_length(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{size} bytes, no header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"header of {n} bytes in a {size}-byte file")
        header = json.loads(f.read(n))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        raise ValueError(f"{size} bytes, its header needs {8 + n + end}")


def check_tokenizer(checkpoint: Path, tokenizer: Any) -> None:
    """Refuse to resume with a tokenizer other than the one the checkpoint was trained with:
    compares sha256 of the checkpoint's tokenizer files with `tokenizer.sha256()`."""
    saved = load_translation_tokenizer(checkpoint).sha256()
    if saved != tokenizer.sha256():
        raise LmforgeError(
            f"{checkpoint}: the data's tokenizer (sha256 {tokenizer.sha256()[:12]}) is not the run's"
            f" (sha256 {saved[:12]}): resuming would change what the token ids mean"
        )


def check_data(checkpoint: Path, saved: dict[str, Any], digest: str, source: str) -> None:
    """Refuse to resume on other training data than the checkpoint's (its trainer state's "data",
    the loader's data_digest; checkpoints from before 2026-12-06 have none): the saved position
    would continue on other examples, unsaid."""
    recorded = saved.get("data")
    if recorded is not None and recorded != digest:
        raise LmforgeError(
            f"{checkpoint}: the training data is not what this run trained on (digest {digest}, the"
            f" checkpoint's {recorded}): {source or 'its input'} changed since, or the run's data/ was"
            " prepared again from a changed file. Restore that data to resume, or start a new run"
            f" from this one on the new data: --init-from {checkpoint}"
        )


def weight_names(checkpoint: Path) -> list[str]:
    """The tensor names in a checkpoint's model.safetensors (read from its header, not loaded);
    [] when it has none (an engine's other layout)."""
    from safetensors import safe_open

    path = checkpoint / "model.safetensors"
    if not path.is_file():
        return []
    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def read_trainer_state(checkpoint: Path) -> dict[str, Any]:
    file = checkpoint / "trainer.json"
    try:
        return check_trainer_state(file, json.loads(file.read_text()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmforgeError(f"{file}: unreadable trainer state: {e}") from None


def drop_replaced(run_dir: Path) -> None:
    """Delete the previous run(s) that `train --overwrite` moved aside into run_dir/.replaced-*/
    (only folders holding its marker). Cheap when there are none; safe to call repeatedly."""
    if not run_dir.is_dir():
        return
    for aside in run_dir.glob(f"{REPLACED}*"):
        if aside.is_dir() and (aside / REPLACED_MARKER).is_file():
            shutil.rmtree(aside, ignore_errors=True)


def replaced_runs(run_dir: Path) -> list[Path]:
    """The runs `train --overwrite` moved aside in run_dir and has not yet deleted, oldest first:
    the new run was stopped before its first checkpoint."""
    return sorted(p for p in run_dir.glob(f"{REPLACED}*") if (p / REPLACED_MARKER).is_file())


def replaced_hint(run_dir: Path) -> str:
    aside = replaced_runs(run_dir)
    if not aside:
        return ""
    return (
        f" ({aside[-1]} holds the run that --overwrite replaced: move its files back to resume it;"
        " docs/training.md, '--overwrite', says how)"
    )


def _fingerprint(found: list[Path]) -> tuple[Any, ...]:
    stats = []
    for checkpoint in found:
        for path in sorted(checkpoint.rglob("*")):
            st = path.stat()
            stats.append((str(path), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(stats)


def _hash_and_sync(path: Path, sync: bool = True) -> tuple[int, str]:
    """(size, sha256) of a file read in chunks; with sync, also fsync it (one pass over the file)."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, h.hexdigest()


def umask() -> int:
    """The process's umask (read without changing it where /proc allows)."""
    if (mask := own_status("Umask")) is not None:
        return int(mask, 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(directory: Path) -> None:
    """Give directory and everything in it the modes the user's umask asks for: some writers
    (safetensors' save_file) create their files 0600 whatever the umask."""
    mask = umask()
    for path in [directory, *directory.rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
