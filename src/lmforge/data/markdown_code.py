"""Markdown's code, which the `markup` stage keeps as written (a tag shown in it is text): fenced
blocks, backtick spans and CommonMark's indented code blocks (lines indented 4 spaces or a tab,
after a blank line: such a block cannot interrupt a paragraph). An indented line after a blank
line in a list item is the item's own text (its continuation), not code; code nested in a list
item is not told apart from it, and is stripped as prose is.
"""

from __future__ import annotations

import re

_FENCED_OR_SPAN = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$|`[^`\n]+`", re.M | re.S)
_INDENTED = re.compile(r"(?: {4}|\t| {1,3}\t)")  # CommonMark's 4 columns of indentation
_MAY_HOLD_ONE = re.compile(r"(?:\A|\n[ \t\r]*\n)(?: {4}|\t| {1,3}\t)")
_LIST_ITEM = re.compile(r" {0,3}(?:[-*+]|\d{1,9}[.)])(?:[ \t]|$)")


def _indented_blocks(text: str) -> list[tuple[int, int]]:
    """The character spans of the indented code blocks of `text`, each from its first line's
    start to its last non-blank line's end (blank lines inside it are its own)."""
    spans: list[tuple[int, int]] = []
    if not _MAY_HOLD_ONE.search(text):  # most texts: no indented line after a blank one
        return spans
    start = end = -1  # the open block's span, -1 when none is open
    after_blank, in_list, at = True, False, 0
    for line in text.split("\n"):
        body = line.rstrip("\r")
        if not body.strip():
            after_blank = True
        elif _INDENTED.match(body) and (start >= 0 or (after_blank and not in_list)):
            start = at if start < 0 else start
            end = at + len(body)
        else:
            if start >= 0:
                spans.append((start, end))
                start = -1
            if _LIST_ITEM.match(body):
                in_list = True
            elif after_blank and not body[0].isspace():  # a new paragraph outside the list
                in_list = False
            after_blank = False
        at += len(line) + 1
    if start >= 0:
        spans.append((start, end))
    return spans


def code_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of `text`'s Markdown code, in order, overlapping ones merged (a whole
    HTML page has none: the markup stage does not ask)."""
    spans = sorted([m.span() for m in _FENCED_OR_SPAN.finditer(text)] + _indented_blocks(text))
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
