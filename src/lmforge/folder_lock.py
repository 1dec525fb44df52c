"""One lmforge process at a time in a folder: an OS lock on a lock file, held for the process's life.

Every verb that writes a folder locks the one file `.NAME.lmforge-lock` beside it: `train` its run
folder (a new run, --overwrite, --resume), prep, export, import, ... the output folder they write
(outputs.py). One file per folder, whatever the verb, so a train and a prep into one --out meet.
A second process is refused before it changes anything, in one line naming the holder (its pid,
and when it took the lock). The lock is `fcntl.flock` on the open file: the kernel drops it when
the holder ends, however it ends (kill -9 included), so it never outlives its process and there
is nothing to clean up by hand. The holder records who it is in the file (JSON) for the message,
and removes the file when it lets go; a killed holder leaves the file, which the next process
simply locks again.

Ranks of one multi-process run (`RANK` set): rank 0 takes the lock, as it alone changes the
folder; the other ranks cannot take it (their own rank 0 holds it), so they read the holder's
record and refuse the folder, with rank 0's line, when it names a live process on this host that
is not of their own launch (MASTER_ADDR:MASTER_PORT, which no two live launches share).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from lmforge.errors import CannotWrite, LmforgeError

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are not locked there
    fcntl = None  # type: ignore[assignment]

LOCK = ".lmforge-lock"
_HOST = socket.gethostname().split(".")[0]
_ATTEMPTS = 20  # a holder that removes the file while we open it: open the new one (see take)


def beside(target: Path) -> Path:
    """The lock file of folder `target`, beside it: every verb writing `target` takes this one."""
    if target.name in ("", ".", ".."):  # `--out .`: the folder's own name, in its parent
        target = target.resolve()
    return target.parent / f".{target.name}{LOCK}"


class FolderLock:
    """An exclusive lock taken with take() and held until release() (or the end of a `with`)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._path: Path | None = None
        self._pid = os.getpid()  # a forked child (a data worker) must not let go of its parent's lock

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def take(self, path: Path, shown: Path, doing: str, advice: str, made: list[Path] | None = None) -> None:
        """Lock `path`, or raise the one line (about `shown`, ending in `advice`) that another
        process holds it; `doing` is what this one does there, for such a line ("training in this
        folder"). With `made`, the folders leading to it are created as needed and, once the lock
        is held, added to `made` (deepest first): a refused process never records a folder that
        another one uses. Without, the folder must exist."""
        if self._fd is not None:
            raise RuntimeError(f"{path}: this FolderLock already holds {self._path}")
        if fcntl is None:
            if made is not None:
                made += reversed(make_folders(path.parent))
            return
        created: list[Path] = []
        for _ in range(_ATTEMPTS):
            created += make_folders(path.parent) if made is not None else []
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            except FileNotFoundError:
                if made is None:
                    raise LmforgeError(f"{shown}: no such directory") from None
                continue  # its last holder removed the folder it had made: make it again
            except OSError as e:
                raise CannotWrite(f"{path}: cannot write: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise busy(path, shown, advice, _read(path, tries=20)) from None
            if not _same_file(fd, path):  # removed by its holder as it let go, after we opened it
                os.close(fd)
                continue
            self._fd, self._path = fd, path
            record = {"pid": os.getpid(), "host": _HOST, "ticks": _start_ticks(os.getpid()), "doing": doing,
                      "started": time.strftime("%Y-%m-%d %H:%M:%S"), "launch": _launch()}  # fmt: skip
            with contextlib.suppress(OSError):  # a full disk: the lock holds, unnamed in the message
                os.ftruncate(fd, 0)
                os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            if made is not None:
                made += reversed(created)
            return
        raise LmforgeError(f"{path}: could not be locked (replaced {_ATTEMPTS} times as it was opened)")

    def release(self) -> None:
        """Let go, removing the lock file while still holding it (a process that opened it meanwhile
        finds it gone and opens a new one). Safe to call when nothing is held."""
        fd, path = self._fd, self._path
        if fd is None or path is None or os.getpid() != self._pid:
            return
        self._fd = self._path = None
        with contextlib.suppress(OSError):  # gone with a folder a failed start removed
            if _same_file(fd, path):
                os.unlink(path)
        os.close(fd)


def refuse_if_held(path: Path, shown: Path, advice: str) -> None:
    """What a rank other than 0 checks in place of taking the lock: refuse the folder when the
    record names a live process on this host that is not of this rank's launch."""
    record = _read(path, tries=1)
    if record is not None and _running_here(record) and record.get("launch") != _launch():
        raise busy(path, shown, advice, record)


def busy(path: Path, shown: Path, advice: str, record: dict | None) -> LmforgeError:
    """The line for a folder another process holds (its record, where it could be read)."""
    if record is None:
        return LmforgeError(f"{shown}: another lmforge process holds its lock ({path}); {advice}")
    who = [f"pid {record.get('pid')}"]
    if record.get("host") != _HOST:
        who[0] += f" on {record.get('host')}"
    if record.get("launch"):
        who.append("rank 0 of a multi-process launch")
    who.append(f"started {record.get('started')}")
    return LmforgeError(
        f"{shown}: another lmforge process ({', '.join(who)}) is {record.get('doing')}; {advice}"
    )


def make_folders(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones this call created, outermost first (one
    that another process creates at the same moment is that process's)."""
    missing = list(reversed(list(_missing(folder))))
    created = []
    for path in missing:
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        except OSError as e:
            raise CannotWrite(f"{folder}: cannot create the folder ({e.strerror})") from None
        created.append(path)
    if not folder.is_dir():
        raise LmforgeError(f"{folder}: is a file, not a folder")
    return created


def _missing(folder: Path) -> list[Path]:
    out = []
    for path in [folder, *folder.parents]:
        if path.exists() or path.is_symlink():
            break
        out.append(path)
    return out


def _same_file(fd: int, path: Path) -> bool:
    try:
        named = os.stat(path)
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _read(path: Path, tries: int) -> dict | None:
    """The holder's record; a holder that has just taken the lock writes it a moment later."""
    for attempt in range(tries):
        with contextlib.suppress(OSError, ValueError):
            record = json.loads(path.read_text())
            if isinstance(record, dict) and "pid" in record:
                return record
        if attempt + 1 < tries:
            time.sleep(0.025)
    return None


def _launch() -> str | None:
    """This process's launch (torchrun, the deepspeed launcher): its rendezvous address."""
    env = os.environ
    if env.get("WORLD_SIZE", "1") in ("", "1") or "MASTER_PORT" not in env:
        return None
    return f"{env.get('MASTER_ADDR', '')}:{env['MASTER_PORT']}"


def _start_ticks(pid: int) -> str | None:
    """When process `pid` started, in clock ticks since boot (Linux's /proc/PID/stat, field 22):
    with the pid, it names one process, where a pid alone may have been reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def alive(pid: int) -> bool:
    """Whether process `pid` may still be running (another user's process counts as running)."""
    if os.name != "posix":  # on Windows os.kill(pid, 0) would end the process: never guess there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _running_here(record: dict) -> bool:
    """Whether the record's process runs on this host (another user's counts as running)."""
    pid = record.get("pid")
    if record.get("host") != _HOST or not isinstance(pid, int) or pid <= 0 or not alive(pid):
        return False
    ticks = record.get("ticks")
    return ticks is None or _start_ticks(pid) in (None, ticks)
