"""Command line: a table of verbs (cli_verbs.py), each the Python function of the same name called
with keyword arguments (`lmforge prep X --out D` is `lmforge.prep(inputs=["X"], out="D")`).

Defaults live in one place, the functions' signatures: an option the user does not give is not
passed, and `lmforge VERB --help` reads the defaults (and the docstring) from the function, which
is imported only then or when the verb runs, so `lmforge --help` loads no torch.

Errors: an LmforgeError, or an OSError about a path (missing, not permitted, a folder, disk full),
prints one line `lmforge: error: ...` and exits 2, as argparse's usage errors do; Ctrl-C exits 130.
Anything else is a bug and shows its traceback (exit 1). `--debug` or LMFORGE_DEBUG=1 shows the
traceback of every error.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from lmforge import __version__, malloc, processes
from lmforge.cli_parser import VerbParser, build_parser, run
from lmforge.cli_verbs import VERBS
from lmforge.config import is_override, joined_overrides
from lmforge.errors import LmforgeError
from lmforge.processes import RANK_LINES, Terminated, end_with_launcher, exit_rank, launched_world

USER_ERROR = 2  # the exit status of a bad input, the same as argparse's for a bad command line
INTERRUPTED = 130
OWN_SIGNALS = ("serve", "launch")  # verbs that stop on their own terms (a server drains its requests)
# OSErrors that are about the user's paths or disk, not bugs: one line, no traceback
PATH_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR, errno.EEXIST,
               errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.EFBIG}  # fmt: skip


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    say_last(f"lmforge: error: {message}")
    return USER_ERROR


def say_last(line: str) -> None:
    """A command's last line, to stderr. A rank under `lmforge launch` (RANK_LINES set) leaves it
    in that folder too, and only rank 0 prints it: every rank makes the same checks, so N ranks
    would print N copies; launch prints the other ranks' lines that differ from rank 0's."""
    folder, rank = os.environ.get(RANK_LINES), os.environ.get("RANK", "0")
    if folder:
        with contextlib.suppress(OSError):
            Path(folder, rank).write_text(line + "\n")
    if not folder or rank == "0":
        print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """`lmforge ...` (and `python -m lmforge ...`): the exit status."""
    malloc.command = argv is None  # `lmforge train` may restart on tcmalloc; main(argv) from Python may not
    argv = list(sys.argv[1:] if argv is None else argv)
    # the deepspeed launcher appends --local_rank=N; the same number is in $LOCAL_RANK
    argv = [a for a in argv if not a.startswith(("--local_rank=", "--local-rank="))]
    argv = joined_overrides(argv)  # --train.lr 3e-4 is --train.lr=3e-4
    parser, subs = build_parser(VERBS, __version__)
    # argparse takes a word with a space for a positional (`--data.input=my data.jsonl` was read as
    # the recipe): an override's spaces pass it as NULs, which no command line can hold
    args, extra = parser.parse_known_args([a.replace(" ", "\0") if is_override(a) else a for a in argv])
    for key, value in vars(args).items():  # launch's children's words, a verb's positionals
        if isinstance(value, (str, list)):
            setattr(args, key, _spaced(value))
    extra = _spaced(extra)
    debug = args.debug or os.environ.get("LMFORGE_DEBUG", "") not in ("", "0")
    try:
        status = _verb(args, subs, extra, debug)
    except BaseException as e:
        if not (malloc.command and processes.joined_group):
            raise
        status = _said_exit(e)
    if malloc.command and processes.joined_group:  # not main(argv) from Python, whose caller goes on
        exit_rank(status)  # a process that joined a process group skips the teardown (processes.py)
    return status


def _spaced(value: Any) -> Any:
    """A word, or list of words, with the NULs of a hidden space put back."""
    if isinstance(value, list):
        return [_spaced(v) for v in value]
    return value.replace("\0", " ") if isinstance(value, str) else value


def _said_exit(e: BaseException) -> int:
    """The exit status Python gives an uncaught `e`, having said what it says (a bug's traceback)."""
    if not isinstance(e, SystemExit):
        traceback.print_exc()
        return 1
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)
    return 1


def _verb(args: argparse.Namespace, subs: dict[str, VerbParser], extra: list[str], debug: bool) -> int:
    """Run the verb `args` names: its exit status, an error as one line."""
    try:
        if args.verb == "train" and launched_world() > 1:
            end_with_launcher()  # a rank: before its imports and checks, where a kill -9 would orphan it
        # a SIGTERM (kill, timeout, Slurm) stops a verb as Ctrl-C does: its temporary files tidied, one
        # line, exit 143 (it ended prep and eval silently); serve and launch handle signals themselves
        stops = contextlib.nullcontext() if args.verb in OWN_SIGNALS else processes.signals_stop()
        with stops:
            status = run(VERBS[args.verb], subs[args.verb], args, extra)
        sys.stdout.flush()  # here, so that a reader gone away is caught below, not at exit
        return status
    except LmforgeError as e:
        return _fail(str(e), debug)
    except BrokenPipeError:  # `lmforge ... | head`: the reader left; stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 1
    except OSError as e:
        if e.errno not in PATH_ERRNOS:
            raise  # not about a path the user gave: a bug, with its traceback
        where = ": ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return _fail(f"{where}: {e.strerror}" if where else str(e.strerror or e), debug)
    except KeyboardInterrupt as e:
        if debug:
            traceback.print_exc()
        if isinstance(e, Terminated):  # SIGTERM during training: 128 + 15, as the signal's own death
            say_last("lmforge: terminated")
            return 128 + signal.SIGTERM
        say_last("lmforge: interrupted")
        return INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
