"""The commands `lmforge chat` reads at its prompt (/reset, /exit, /help) and what a line asks."""

from __future__ import annotations

import re

COMMANDS = dict.fromkeys(["/exit", "/quit", "/bye"], "exit") | dict.fromkeys(["/reset", "/clear"], "reset")
COMMANDS |= dict.fromkeys(["/help", "/?"], "help")
KNOWN_COMMANDS = "/reset (or /clear) clears the history, /exit (or /quit, /bye) quits, /help (or /?) lists"


def chat_command(line: str) -> str | None:
    """What a line asks of the session: "exit", "reset", "help", "unknown command /x" for a single
    word of letters after a slash (a typo of a command, which the model would answer), or None for
    a message (`/usr/bin/python fails` and `/etc/hosts` are messages)."""
    word = line.strip()
    if word.lower() in COMMANDS:
        return COMMANDS[word.lower()]
    return f"unknown command {word}" if re.fullmatch(r"/[A-Za-z]+", word) else None
