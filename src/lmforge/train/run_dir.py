"""Where a run lives: the run directory, new, overwritten (moved aside, never deleted) or resumed
(what a resume may change: resume.py). What it starts from, the data and train.init_from: run_inputs.py."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

from lmforge import folder_lock
from lmforge.config import Config, load_config
from lmforge.config.deepspeed_json import read_user_config
from lmforge.data.pairs import PAIRS_VAL_FRACTION
from lmforge.data.shards import adopt_prepared_settings, earlier_prep_output, is_prepared
from lmforge.errors import CannotWrite, LmforgeError
from lmforge.folder_lock import FolderLock
from lmforge.outputs import describe_foreign, link_target, written_by
from lmforge.train import checkpoint as ckpt
from lmforge.train.own_files import CHECKPOINT_FILES, MODEL_DIR_FILES, foreign_names, is_own
from lmforge.train.resume import check_resume_target, resume_run
from lmforge.train.run_inputs import check_lora_targets, found, make_inputs_absolute

# What `train` writes into a run directory: --overwrite moves these aside, and a new run refuses
# a directory that holds any of them.
RUN_FILES = (
    "config.toml",
    "data",
    "checkpoints",
    "metrics.jsonl",
    "tb",
    "loss.png",
    "summary.json",
    "model",
    "best",
    ".best-tmp",
    ".model-tmp",
)


def resolve_run(
    config: str | Path | Config | None,
    overrides: list[str] | None,
    out: str | Path | None,
    resume: str | Path | None,
    overwrite: bool,
    made: list[Path] | None = None,
    lock: FolderLock | None = None,
) -> tuple[Path, Config]:
    """(run directory, config) for a new, overwritten or resumed run; refuses, before anything is
    written, what would lose a file or what a resumed run cannot honour. Only rank 0 (launchers
    set RANK) creates or moves anything; every rank makes the same checks. `made` receives what
    it changed on disk (the folders it created, the folder the old run was moved into), so that
    undo_start can put it back when the run fails before it starts. `lock` (rank 0's) is taken on
    the run directory (`.NAME.lmforge-lock` beside it, the file every verb writing that folder
    takes) before its checks, and the caller holds it until the run ends: a second process is
    refused before it reads or changes the folder (folder_lock.py)."""
    if lock is None:  # held for the checks alone
        with FolderLock() as own:
            return resolve_run(config, overrides, out, resume, overwrite, made, own)
    made = [] if made is None else made
    main = os.environ.get("RANK", "0") == "0"
    if resume is not None:
        check_resume_target(config, out, Path(resume), overwrite)  # a folder that is no run: said as such
        _lock(lock, Path(resume), main, RESUME_ADVICE, None)
        return resume_run(config, overrides, out, Path(resume), overwrite)
    if isinstance(config, Config):
        cfg = config.validate()
        name = "run"
    else:
        cfg = load_config(config, overrides)
        name = Path(config).stem if config is not None else "run"
    run_dir = Path(out) if out is not None else Path("runs") / name
    if run_dir.exists() and not run_dir.is_dir():
        raise LmforgeError(f"{run_dir}: is a file; --out needs a folder for the run")
    verb = written_by(run_dir)
    if verb is not None:  # a model folder (an import, an export): a run in it would mix with it
        raise LmforgeError(
            f"{run_dir}: holds the output of lmforge {verb}, a model folder; a run there would mix its"
            " files with the model's: choose another --out"
        )
    if is_prepared(run_dir):  # its shards would sit beside checkpoints, and prep --overwrite refuse it
        raise LmforgeError(
            f"{run_dir}: holds prepared data (lmforge prep's meta.json and shards), not a run; a run"
            " there would mix its files with the data's: choose another --out"
        )
    mine: list[Path] = []  # the folders made for the lock file: removed if a check below refuses the run
    _lock(lock, run_dir, main, NEW_ADVICE, mine)
    try:
        kind, present = _check_new(cfg, run_dir, overwrite)
    except BaseException:
        undo_start(run_dir, mine, lock)
        raise
    if main:
        made += _make_run_dir(run_dir) + mine  # the run folder first: undo_start empties it first
        if kind != "empty":  # said once the run has started (loop.train): a failed start puts it back
            made.append(move_aside(run_dir, present))
    return run_dir, cfg


# The end of the line that refuses a folder another process holds (folder_lock.busy).
NEW_ADVICE = "wait for it to end or stop it, or choose another --out"
RESUME_ADVICE = "wait for it to end or stop it, then resume"


def _lock(lock: FolderLock, run_dir: Path, main: bool, advice: str, made: list[Path] | None) -> None:
    """Rank 0 takes the run directory's lock (creating the folders above it when `made` is given);
    the other ranks, whose rank 0 holds it, refuse a folder another launch holds, with its line."""
    path = folder_lock.beside(link_target(run_dir))  # where outputs.staged_folder locks it too
    if main:
        lock.take(path, run_dir, "training in this folder", advice, made)
    else:
        folder_lock.refuse_if_held(path, run_dir, advice)


def _make_run_dir(run_dir: Path) -> list[Path]:
    """Create the run directory once its lock is held and its checks have passed: [run_dir] when
    this process created it (only then does a failed start remove it), else []."""
    try:
        os.mkdir(run_dir)
    except FileExistsError:
        if not run_dir.is_dir():
            raise LmforgeError(f"{run_dir}: is a file; --out needs a folder for the run") from None
        return []
    except OSError as e:
        raise CannotWrite(f"{run_dir}: cannot create the run directory ({e.strerror})") from None
    return [run_dir]


def _check_new(cfg: Config, run_dir: Path, overwrite: bool) -> tuple[str, list[str]]:
    """run_kind of the folder a new run (or --overwrite) starts in, once its checks have passed."""
    kind, present = run_kind(run_dir)
    if kind == "foreign":
        raise LmforgeError(
            f"{run_dir}: holds {present[0]} but is not an lmforge run directory (config.toml and"
            " checkpoints/step_*/trainer.json); train would write over it: choose another --out"
        )
    if kind == "run" and not overwrite:
        raise LmforgeError(
            f"{run_dir}: already holds a run; use --resume {run_dir}, --overwrite or another --out"
        )
    set_aside = ckpt.replaced_runs(run_dir)
    if kind == "unfinished" and not overwrite:
        aside = (  # the run an interrupted --overwrite moved there: a new --overwrite deletes it
            f"; {set_aside[-1].name} holds the run an interrupted --overwrite set aside, which"
            " --overwrite would delete at the new run's first checkpoint (move its files back to keep it)"
            if set_aside
            else ""
        )
        raise LmforgeError(
            f"{run_dir}: holds {', '.join(present)} of a run that stopped before its first checkpoint;"
            f" use --overwrite to start it again, or another --out{aside}"
        )
    if set_aside and not overwrite:  # else this run's first checkpoint would delete it unasked
        raise LmforgeError(
            f"{run_dir}: {set_aside[-1].name} holds a run that an interrupted --overwrite set aside;"
            " move its files back to resume it (docs/training.md, '--overwrite', says how), or use"
            " --overwrite to replace it"
        )
    check_inputs(cfg, [run_dir / n for n in present])
    check_own_files(run_dir, present)
    return kind, present


def undo_start(run_dir: Path, made: list[Path], lock: FolderLock | None = None) -> None:
    """Put back what resolve_run changed (`made`) for a run that failed before it started: the
    folders it created go, with what set-up wrote in them; the run that --overwrite moved aside
    comes back in place of what set-up wrote (every RUN_FILES name had been moved aside). `lock`
    is let go before the folders made above the run go: its file lies in the innermost of them."""
    parents = []
    for path in made:
        if path.name.startswith(ckpt.REPLACED):
            moved = json.loads((path / ckpt.REPLACED_MARKER).read_text())["files"]
            for name in RUN_FILES:
                new = run_dir / name
                if new.is_dir() and not new.is_symlink():
                    shutil.rmtree(new)
                elif new.exists() or new.is_symlink():
                    new.unlink()
            for name in moved:
                os.rename(path / name, run_dir / name)
            (path / ckpt.REPLACED_MARKER).unlink()
            path.rmdir()
        elif path == run_dir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            parents.append(path)
    if lock is not None:
        lock.release()
    for path in parents:
        with contextlib.suppress(OSError):
            path.rmdir()  # a parent made for the run: only if empty (another process's lock file stays)


def drop_leftovers(run_dir: Path, say: Callable[[str], None]) -> None:
    """Remove the checkpoint folders a killed run left half-written (.tmp-step_*): only the run
    writes in its directory, and a step it does not save again would keep its folder for good.
    (The run's files are written by outputs.write_file, which tidies its own leftovers.)"""
    checkpoints = run_dir / "checkpoints"
    stale = sorted(p for p in checkpoints.glob(f".tmp-{ckpt.PREFIX}*") if p.is_dir())
    for path in stale:
        shutil.rmtree(path)
    if stale:
        say(f"removed {', '.join(p.name for p in stale)}: left half-written by an interrupted run")


def run_kind(run_dir: Path) -> tuple[str, list[str]]:
    """("empty" | "run" | "unfinished" | "foreign", names). A run: a resolved config.toml (every
    section, as train writes it) and a checkpoint with trainer.json; names: the RUN_FILES it holds.
    Unfinished: only what a start that stopped before its first checkpoint leaves (that config.toml,
    data/ prepared by train, metrics.jsonl, tb/, temporary checkpoint folders). Foreign: anything
    else; names: the files that are not lmforge's."""
    present = [n for n in RUN_FILES if (run_dir / n).exists() or (run_dir / n).is_symlink()]
    if not present:
        return "empty", present
    config_ok = _resolved_config(run_dir / "config.toml")
    checkpoints = run_dir / "checkpoints"
    if config_ok and any((s / "trainer.json").is_file() for s in ckpt.list_checkpoints(checkpoints)):
        return "run", present
    data = run_dir / "data"
    leftovers = {
        "config.toml": config_ok,
        "data": (data / "source.json").is_file() or is_prepared(data),
        "checkpoints": checkpoints.is_dir()
        and all(p.is_dir() and p.name.startswith(".tmp-") for p in checkpoints.iterdir()),
        "metrics.jsonl": config_ok,
        "tb": config_ok,
    }
    strangers = [n for n in present if not leftovers.get(n, False)]
    return ("foreign", strangers) if strangers else ("unfinished", present)


def _resolved_config(path: Path) -> bool:
    """A config.toml as train writes it (every section; keys not validated, so that a run of an
    older version is still recognised), not a hand-written recipe that happens to share the name."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False
    return {"data", "model", "train", "engine"} <= {k for k, v in raw.items() if isinstance(v, dict)}


def check_inputs(cfg: Config, replaced: list[Path]) -> None:
    """What a new run checks before it creates or moves anything: the data and the starting model
    exist, the data agrees with data.tokenizer, data.vocab_size and data.val_fraction, and neither
    lies inside what --overwrite is about to move aside. Settles what the run will use in `cfg`
    (recorded in its config.toml): a prepared directory's settings, and raw translation pairs'
    own defaults (a BPE tokenizer, 2% held out) for the keys not chosen."""
    cfg.notes.clear()  # what these checks settle, said once per run (a Config may train twice)
    if not cfg.data.input:
        raise LmforgeError("data.input is not set (a text file, folder, glob or prepared directory)")
    if not found(cfg.data.input):
        relative = "" if Path(cfg.data.input).is_absolute() else f" in the working directory, {Path.cwd()}"
        built = cfg.prep.inputs and Path(cfg.prep.out or cfg.data.input) == Path(cfg.data.input)
        recipe = shlex.quote(str(cfg.recipe)) if cfg.recipe else "RECIPE.toml"
        hint = f"; the recipe's [prep] section builds it: lmforge prep {recipe}" if built else ""
        raise LmforgeError(
            f"data.input={cfg.data.input!r}: no such file, folder or glob match{relative}{hint}"
        )
    adopt_prepared_settings(cfg)  # a prepared directory fixes the tokenizer and split
    if cfg.data.task == "translation" and not is_prepared(cfg.data.input):
        # pairs default to BPE and 2% held out; the [data] defaults (char, 0.1) are for documents
        for key, value in (("tokenizer", "bpe"), ("val_fraction", PAIRS_VAL_FRACTION)):
            if not cfg.is_set(f"data.{key}"):
                setattr(cfg.data, key, value)
    if cfg.train.init_from:
        from lmforge.formats.directory import resolve_model_dir

        resolve_model_dir(cfg.train.init_from)
        check_lora_targets(cfg)  # before the data is prepared
    if cfg.engine.name == "deepspeed" and cfg.engine.deepspeed_config:  # read again at the engine's start
        read_user_config(Path(cfg.engine.deepspeed_config), cfg.engine.zero_stage)
    for key, value in (("data.input", cfg.data.input), ("train.init_from", cfg.train.init_from)):
        if value and Path(value).exists():
            inside = [p for p in replaced if Path(value).resolve().is_relative_to(p.resolve())]
            if inside:
                raise LmforgeError(
                    f"{key}={value!r} lies inside {inside[0]}, which --overwrite would replace"
                )
    make_inputs_absolute(cfg)


def check_own_files(run_dir: Path, present: list[str]) -> None:
    """Refuse --overwrite when a folder of the old run holds a file that train did not write (a
    README.md put into model/ or into a checkpoint, a step_40.bak in checkpoints/): moved aside with
    the run, it would be deleted at the new run's first checkpoint. Each folder is judged against
    the files its writer makes (own_files.py), not against what other folders hold."""
    ours: dict[str, Callable[[Path], bool]] = {
        "model": lambda p: is_own(p, MODEL_DIR_FILES),
        "best": lambda p: is_own(p, MODEL_DIR_FILES),
        "tb": lambda p: p.is_file() and p.name.startswith("events.out.tfevents."),
        "checkpoints": lambda p: (
            p.is_dir() and bool(ckpt.STEP_NAME.fullmatch(p.name) or p.name.startswith(f".tmp-{ckpt.PREFIX}"))
        ),
        "data": lambda p: p.name == "source.json",  # a prep that had not finished
    }
    for name in present:
        folder = run_dir / name
        if name not in ours or folder.is_symlink() or not folder.is_dir():
            continue  # a link is moved aside and deleted as a link: what it points to stays
        if name == "data" and is_prepared(folder):
            why = earlier_prep_output(folder)
        else:
            foreign = sorted(p.name for p in folder.iterdir() if not ours[name](p))
            why = describe_foreign(foreign, "train") if foreign else None
        if why:
            raise LmforgeError(
                f"{folder}: {why}; --overwrite would delete them with the old run: move them out,"
                " or choose another --out"
            )
    for step in ckpt.list_checkpoints(run_dir / "checkpoints") if "checkpoints" in present else []:
        if step.is_symlink():
            continue  # moved aside and deleted as a link
        foreign = foreign_names(step, CHECKPOINT_FILES)
        if foreign:
            raise LmforgeError(
                f"{step}: {describe_foreign(foreign, 'train')}; --overwrite would delete them with the"
                " old run: move them out, or choose another --out"
            )


def move_aside(run_dir: Path, present: list[str]) -> Path:
    """Rename the run's files into run_dir/.replaced-<time>/ (same file system: each rename is
    atomic, nothing is copied or deleted); checkpoint.drop_replaced deletes it later."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        aside = run_dir / f"{ckpt.REPLACED}{stamp}{f'-{n}' if n else ''}"
        try:
            aside.mkdir()
            break
        except FileExistsError:
            continue
    marker = {"replaced_by": "lmforge train --overwrite", "at": stamp, "files": present}
    (aside / ckpt.REPLACED_MARKER).write_text(json.dumps(marker) + "\n")
    for name in present:
        try:
            os.rename(run_dir / name, aside / name)
        except OSError as e:  # what was moved is in `aside`, the rest in place: nothing lost
            raise LmforgeError(f"{run_dir / name}: cannot move it aside to {aside} ({e.strerror})") from None
    return aside
