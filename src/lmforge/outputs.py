"""Output folders that never cost a user a file: how prep, export and import write their `--out`.

A verb builds its output in a temporary folder beside the target and renames it into place, so a
crash leaves whatever was there before intact. An existing target is replaced only when it is
empty, or when it holds nothing but an earlier output of the same verb (the verb's `owner` check)
and, where the verb asks for it, `overwrite` is given; the old folder is moved aside and deleted
only once the new one is in place. A target that is, contains or lies inside one of the verb's
inputs, or that is or contains the working directory, is refused before any work starts.
Folders made here follow the user's umask (mkdtemp creates them 0700).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lmforge.errors import LmforgeError

Owner = Callable[[Path], str | None]
"""For an existing, non-empty folder: None when it is an earlier output of the verb (safe to
replace), else why it is not, e.g. "holds files prep did not write (notes.txt)"."""

# Errors of the disk or the user's permissions, not of lmforge: reported as one line.
_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOTDIR}


def current_umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def follow_umask(path: Path) -> None:
    """Give a folder made by mkdtemp (0700) the mode an ordinary mkdir would have given it."""
    path.chmod(0o777 & ~current_umask())


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
    for item in inputs:
        relation = _relation(real, Path(item).resolve())
        if relation:
            raise LmforgeError(f"{out}: the {folder} {relation} the {source} {item}; give another {option}")


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
    target = out.resolve() if out.is_symlink() else out
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


def describe_foreign(names: list[str], verb: str) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"holds files {verb} did not write ({shown})"


def install(tmp: Path, target: Path) -> None:
    """Rename the finished `tmp` folder to `target`; an existing target is moved aside first and
    deleted only once the new folder is in place (put back if the rename fails)."""
    follow_umask(tmp)
    if target.is_dir() and any(target.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
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
) -> Iterator[Path]:
    """A temporary folder to write the output into; on a clean exit it becomes `out` (checked
    again first, as the folder may have changed while the verb worked). A full or read-only disk
    is one line naming the path."""
    inputs = list(inputs)
    target = check_target(out, inputs, owner, overwrite, verb)
    # the folders made for the output, deepest first: removed again if the verb fails
    made = list(itertools.takewhile(lambda p: not p.exists(), [target.parent, *target.parent.parents]))
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        yield tmp
        check_target(out, inputs, owner, overwrite, verb)
        install(tmp, target)
        made = []
    except OSError as e:
        if e.errno not in _DISK_ERRORS:
            raise
        raise LmforgeError(f"{e.filename or out}: cannot write: {e.strerror}") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
