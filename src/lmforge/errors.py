"""The one exception type users see: a one-line message naming the file, line or key."""


class LmforgeError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits 2."""


def counted(n: int, noun: str) -> str:
    """'1 document', '2,481 documents': a count in a message, with the noun agreeing."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
