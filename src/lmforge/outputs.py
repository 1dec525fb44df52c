"""Output folders that never cost a user a file: how prep, export and import write their `--out`.

A verb builds its output in a temporary folder beside the target and renames it into place, so a
crash leaves whatever was there before intact. An existing target is replaced only when it is
empty, or when it holds nothing but an earlier output of the same verb (the verb's `owner` check)
and, where the verb asks for it, `overwrite` is given; the old folder is moved aside and deleted
only once the new one is in place. A target that is, contains or lies inside one of the verb's
inputs, or that is or contains the working directory, is refused before any work starts.
Outputs made here follow the user's umask, folders and files alike (mkdtemp creates folders 0700,
safetensors its files 0600).

A temporary folder, a folder moved aside and write_file's temporary file carry the writer's host
and pid in their names (`.NAME.tmp-HOST-PID-XXXXXXXX`, `.NAME.old-HOST-PID-XXXXXXXX`), so the next
write to NAME can tell what a killed run left from what a running one is still writing: it
removes the former, or, when NAME itself is missing, puts back the earlier output the killed run
had moved aside, and says so in one line on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lmforge.errors import CannotWrite, LmforgeError
from lmforge.folder_lock import FolderLock, alive, beside, make_folders

# The end of the line that refuses an output folder another process is writing (folder_lock.busy).
ADVICE = "wait for it to end or stop it, or choose another --out"

Owner = Callable[[Path], str | None]
"""For an existing, non-empty folder: None when it is an earlier output of the verb (safe to
replace), else why it is not, e.g. "holds files prep did not write (notes.txt)"."""

# Errors of the disk or the user's permissions, not of lmforge: reported as one line.
DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR}


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a folder made by mkdtemp (0700), or a file made by mkstemp or safetensors (0600), the
    mode an ordinary mkdir or open would have given it."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~current_umask())


def _follow_umask_tree(folder: Path) -> None:
    """follow_umask for `folder` and everything in it; links are left alone (chmod would follow
    them out of the folder)."""
    follow_umask(folder)
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            if not path.is_symlink():
                follow_umask(path)


# --- what a killed run leaves beside its target -------------------------------------------------
# The host too: a pid says nothing about a process of another machine (or container) writing to the
# same shared folder.
_HOST = socket.gethostname().split(".")[0]


def _scratch_prefix(name: str, kind: str) -> str:
    """The start of the name of a temporary ("tmp") or moved-aside ("old") sibling of `name`."""
    return f".{name}.{kind}-{_HOST}-{os.getpid()}-"


def _leftovers(target: Path, kinds: str, folders: bool) -> list[tuple[Path, str, int]]:
    """(path, kind, pid) for each sibling of `target` named exactly as _scratch_prefix + mkdtemp
    (folders) or mkstemp (files) name them, on this host, whose pid has no process any more."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.({kinds})-{re.escape(_HOST)}-([0-9]+)-[a-z0-9_]{{8}}")
    try:
        entries = list(os.scandir(target.parent))
    except OSError:  # no parent yet (nothing left there), or not readable: nothing to tidy
        return []
    found = []
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match or not (entry.is_dir if folders else entry.is_file)(follow_symlinks=False):
            continue
        if not alive(int(match[2])):
            found.append((Path(entry.path), match[1], int(match[2])))
    return sorted(found)


def _note(line: str) -> None:
    # not warnings.warn: the CLI prints notes as plain lines, and warnings shows one per place once
    print(f"lmforge: note: {line}", file=sys.stderr, flush=True)


def _remove_leftover(path: Path, pid: int) -> None:
    try:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    except FileNotFoundError:
        return  # another run tidied it first, and said so
    except OSError as e:
        _note(f"{path}: left by an interrupted run (pid {pid}); could not remove it: {e.strerror}")
        return
    _note(f"removed {path}, left by an interrupted run (pid {pid})")


def recover(target: Path) -> None:
    """Tidy what killed runs left beside the folder `target`. A missing target with a folder moved
    aside by install (a kill between its two renames) gets that earlier output back; then their
    temporary folders, and moved-aside folders whose target exists (a kill during install's
    cleanup), are removed. Each is one line on stderr; what a live process owns is never touched."""
    stale = _leftovers(target, "tmp|old", folders=True)
    aside = [s for s in stale if s[1] == "old"]
    if aside and not (target.exists() or target.is_symlink()):
        path, _, pid = max(aside, key=lambda s: s[0].lstat().st_ctime)  # the latest one moved aside
        try:
            os.rename(path, target)
        except OSError as e:  # keep every earlier output then: one of them is the user's last
            _note(
                f"{target}: missing; an interrupted run (pid {pid}) left the earlier output in {path},"
                f" which could not be put back ({e.strerror})"
            )
            stale = [s for s in stale if s[1] == "tmp"]
        else:
            _note(f"restored {target} from {path.name}, where an interrupted run (pid {pid}) had moved it")
            stale.remove((path, "old", pid))
    for path, _, pid in stale:
        _remove_leftover(path, pid)


def _relation(target: Path, other: Path) -> str | None:
    if target == other:
        return "is"
    if target in other.parents:
        return "contains"
    if other in target.parents:
        return "lies inside"
    return None


def check_place(
    out: str | Path,
    inputs: Iterable[str | Path],
    verb: str,
    option: str = "--out",
    folder: str = "output folder",
    source: str = "input",
) -> None:
    """Refuse, in one line naming `option`, a folder that `verb` replaces whole when it is or lies
    above the working directory, or is, contains or lies inside one of its inputs."""
    real = Path(out).resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        raise LmforgeError(
            f"{out}: is {'' if real == cwd else 'a folder above '}the working directory; {verb} replaces"
            f" its whole {folder}, so give a new folder with {option}"
        )
    for item in inputs:  # realpath: a link loop among the inputs is read (and named) later, not a traceback
        relation = _relation(real, Path(os.path.realpath(item)))
        if relation:
            raise LmforgeError(f"{out}: the {folder} {relation} the {source} {item}; give another {option}")


def link_target(out: Path) -> Path:
    """The folder an output named `out` goes into: a link's target, else `out` itself."""
    return out.resolve() if out.is_symlink() else out


def check_target(
    out: str | Path,
    inputs: Iterable[str | Path],
    owner: Owner,
    overwrite: bool | None,
    verb: str,
) -> Path:
    """The folder to write `out` into (a link's target), or a one-line error when writing there
    could lose a file. `overwrite=None`: the verb replaces its own earlier output without asking."""
    out = Path(out)
    target = link_target(out)
    real = target.resolve()
    check_place(out, inputs, verb)
    above = next((p for p in real.parents if p.exists()), None)
    if above is not None and not above.is_dir():
        raise LmforgeError(f"{out}: {above} is a file, not a folder")
    if target.exists() or target.is_symlink():
        if not target.is_dir():
            raise LmforgeError(f"{out}: exists and is not a folder")
        if any(target.iterdir()):
            why = owner(target)
            if why is not None:
                raise LmforgeError(
                    f"{out}: {why}; {verb} writes only into a new or empty folder, or over its own"
                    " earlier output"
                )
            if overwrite is False:
                raise LmforgeError(
                    f"{out}: holds an earlier {verb} output; pass --overwrite (overwrite=True) to replace"
                    " it, or give another --out"
                )
    return target


def foreign_entries(folder: Path, ours: Callable[[str], bool]) -> list[str]:
    """Names in `folder` that `ours` does not claim (sub-folders are never ours)."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() or not ours(p.name))


# In a model folder `import`, `export` or `merge-lora` wrote: which of them wrote it. Their folders
# all look alike (a config.json and weights), so only this tells a verb its own earlier output
# from another's (a LoRA's base that merge-lora would replace) or from a trained run's model.
MARKER = ".lmforge-output"


def written_by(folder: Path) -> str | None:
    """The verb whose output `folder` is, by its marker; None where there is none."""
    try:
        verb = json.loads((folder / MARKER).read_text()).get("written_by")
    except (OSError, ValueError, AttributeError):
        return None
    return verb if isinstance(verb, str) else None


def not_written_by(folder: Path, verb: str) -> str | None:
    """Why `folder`, which holds nothing but a model's files, is not `verb`'s earlier output (its
    marker names another verb, or there is none), or None where it is."""
    by = written_by(folder)
    if by == verb:
        return None
    if by:
        return f"holds the output of lmforge {by}, not of {verb}"
    return f"holds a model with no record that {verb} wrote it (no {MARKER})"


def describe_foreign(names: list[str], verb: str, folder: Path | None = None) -> str:
    """Why a folder holding `names` is not the verb's to replace; a folder the verb wrote (its
    MARKER) with files of its other kind (an HF export where a PEFT one goes) is said as such."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    if folder is not None and written_by(folder) == verb:
        return (
            f"holds an earlier {verb} output with files this one would not write ({shown}), so not replaced"
        )
    return f"holds files {verb} did not write ({shown})"


def write_file(path: str | Path, data: str | bytes) -> None:
    """Write one file whole or not at all: into a temporary file beside it, renamed over it, so a
    kill mid-write leaves the earlier file (a result, a run's config.toml) rather than an empty one.
    A link stays: the file it names is replaced. A temporary file a killed write left is removed."""
    path = link_target(Path(path))
    for stale, _, pid in _leftovers(path, "tmp", folders=False):
        _remove_leftover(stale, pid)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=_scratch_prefix(path.name, "tmp"), dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in DISK_ERRORS:  # the disk's or the user's, not a bug
            raise CannotWrite(f"{path}: cannot write: {e.strerror}") from None
        raise


def install(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` folder, its modes made the umask's, to `target`; an existing target
    is moved aside first and deleted only once the new folder is in place (put back if the rename
    fails; after a kill between the two renames, the next staged_folder for `target` puts it back)."""
    _follow_umask_tree(tmp)
    if target.is_dir() and any(target.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=_scratch_prefix(target.name, "old"), dir=target.parent))
        os.replace(target, aside)  # onto an empty folder: allowed by rename(2)
        try:
            os.replace(tmp, target)
        except OSError:
            os.replace(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, target)  # a new name, or over an empty folder


@contextlib.contextmanager
def staged_folder(
    out: str | Path,
    *,
    inputs: Iterable[str | Path],
    owner: Owner,
    overwrite: bool | None,
    verb: str,
    mark: bool = False,
    lock: bool = True,
) -> Iterator[Path]:
    """A temporary folder to write the output into; on a clean exit it becomes `out` (checked
    again first, as the folder may have changed while the verb worked), with MARKER naming the
    verb where `mark`. What killed runs left beside `out` is tidied before the checks (recover).
    With `lock`, one process at a time writes `out`: a second is refused in one line as it starts,
    before it tidies or makes anything (folder_lock.py; the lock file `.NAME.lmforge-lock` sits
    beside `out` while it is written, and a killed writer's stays there until the next one).
    A full or read-only disk is one line naming the path."""
    inputs = list(inputs)
    target = check_target(out, inputs, owner, overwrite, verb)  # a mistake is said before anything is made
    made: list[Path] = []  # the folders made for the output, deepest first: removed again if the verb fails
    held = FolderLock()
    tmp = None
    try:
        if lock:  # before recover: a process refused here changes nothing
            held.take(beside(target), Path(out), f"writing this folder (lmforge {verb})", ADVICE, made)
        else:
            made += reversed(make_folders(target.parent))
        recover(target)
        check_target(out, inputs, owner, overwrite, verb)  # again: recover may have put an output back
        tmp = Path(tempfile.mkdtemp(prefix=_scratch_prefix(target.name, "tmp"), dir=target.parent))
        yield tmp
        if mark:
            (tmp / MARKER).write_text(json.dumps({"written_by": verb}) + "\n")
        check_target(out, inputs, owner, overwrite, verb)
        install(tmp, target)
        made = []
    except OSError as e:
        if e.errno not in DISK_ERRORS:
            raise
        raise CannotWrite(f"{e.filename or out}: cannot write: {e.strerror}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        held.release()  # its file first: the folders made for it go only when empty
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
