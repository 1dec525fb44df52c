"""The one exception type users see: a one-line message naming the file, line or key."""


class LmforgeError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits 2."""


class CannotWrite(LmforgeError):
    """A write the disk or its permissions refused (full, read-only, over quota), naming the file:
    the user's to fix, not a bug. A training run it stops also says which checkpoint a resume
    continues from (train/loop.py), as a Ctrl-C does."""


def counted(n: int, noun: str) -> str:
    """'1 document', '2,481 documents': a count in a message, with the noun agreeing."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
