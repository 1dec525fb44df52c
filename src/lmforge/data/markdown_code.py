"""Markdown's code, which the `markup` stage keeps as written (a tag shown in it is text): fenced
and indented code blocks, found by markdown-it-py's CommonMark block parser, and backtick spans.

The parser reads the blocks as CommonMark does, which a line-by-line pattern could not: a block
nested in a list item or a block quote (indented by the item's own indentation), an indented line
that continues a paragraph or a list item (text, not code), a fence never closed (code to the end
of the document, until 2026-12-07 its tags were stripped) or closed only by a fence at least as
long as the opening one. Until 2026-12-07 code nested in a list item was stripped as prose.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from markdown_it import MarkdownIt

_SPAN = re.compile(r"`[^`\n]+`")
# the parser is asked only where a block can be: a fence, or a line indented by 4 columns or more
# (after a quote's or list item's marker)
_MAY_HOLD_BLOCK = re.compile(r"^[ \t>*+\-\d.)]*(?:```|~~~| {4}|\t)", re.M)
_LINE_END = re.compile(r"\r\n|\r|\n")  # as the parser's normalize rule reads line ends
_CODE = ("fence", "code_block")


@functools.cache
def _parser() -> MarkdownIt:
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark")
    parser.core.ruler.disable(["inline", "text_join"])  # blocks only: spans are matched below
    return parser


def _block_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of the code blocks of `text`, each from its first line's start to its
    last line's end (a fence's closing line included)."""
    if not _MAY_HOLD_BLOCK.search(text):  # most texts: no block can be there, no parse
        return []
    starts = [0] + [m.end() for m in _LINE_END.finditer(text)]
    ends = [m.start() for m in _LINE_END.finditer(text)] + [len(text)]
    spans = []
    for token in _parser().parse(text):
        if token.type in _CODE and token.map is not None:
            first, after = token.map  # lines [first, after)
            if after > first:
                spans.append((starts[first], ends[min(after, len(ends)) - 1]))
    return spans


def code_spans(text: str) -> list[tuple[int, int]]:
    """The character spans of `text`'s Markdown code, in order, overlapping ones merged (a whole
    HTML page has none: the markup stage does not ask)."""
    spans = sorted([m.span() for m in _SPAN.finditer(text)] + _block_spans(text))
    merged: list[tuple[int, int]] = []
    for a, b in spans:
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged
