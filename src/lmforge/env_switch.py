"""lmforge's environment switches (LMFORGE_LINEAR, LMFORGE_AUTOTUNE, LMFORGE_MALLOC, ...), read one way.

Each switch overrides a measured or default choice, so a typo must not fall back silently to the
default: a value outside the switch's choices is one line naming the variable and what it takes.
Values are compared stripped and lower-cased, and unset or empty means "not forced".
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from lmforge.errors import LmforgeError


def switch(
    name: str, choices: Sequence[str], expected: str = "", environ: Mapping[str, str] | None = None
) -> str:
    """The value of environment variable `name` ('' when unset or empty), stripped and lower-cased;
    one of `choices`, or an LmforgeError whose line is `expected` (default: the choices listed)."""
    raw = (os.environ if environ is None else environ).get(name, "")
    value = raw.strip().lower()
    if value and value not in choices:
        raise LmforgeError(f"{name}={raw!r}: {expected or 'expected one of ' + ', '.join(choices)}")
    return value
