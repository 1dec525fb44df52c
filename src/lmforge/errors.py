"""The one exception type users see: a one-line message naming the file, line or key."""


class LmforgeError(Exception):
    """Bad input or an impossible request. The CLI prints it as one line and exits 2."""
