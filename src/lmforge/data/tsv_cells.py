"""TSV records as spreadsheets and Python's `csv.writer(f, delimiter="\\t")` write them: a cell
holding a tab, a line break or a quote is put in quotes, its own quotes doubled (`"a ""b"" c"`,
`"a<TAB>b"`, a quoted cell running over two lines). Read as the csv module reads them; a line
that is not written so (`"Hi," she said`, a stray quote) is read as plain tab-separated text, so
that a sentence's own quotes stay text. A quoted cell running over lines that holds a tab is not
csv's either: a raw TSV's quote opened on one line and closed on a later one (dialogue over Bible
verses), whose lines are records of their own; a cell holding both is rare in a spreadsheet.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator

# A cell in quotes holding quotes, doubled (`"He said ""hi"""`): the reading of a line that is not
# csv-quoted throughout, as before lines in quotes with tabs were read.
QUOTED_CELL = re.compile(r'"((?:[^"]|"")*""(?:[^"]|"")*)"')
MAX_LINES = 64  # lines one quoted cell may run over: a stray quote does not swallow the file
NEEDS_QUOTES = ('"', "\t", "\n", "\r")  # what makes csv.writer quote a cell (QUOTE_MINIMAL)

Line = tuple[int, str]  # (line number, the line with its line break)


def tsv_records(lines: Iterable[str]) -> Iterator[tuple[int, list[str], bool]]:
    """(the record's first line number, its cells, whether a cell was read out of quotes) of the
    non-blank records of `lines` (a file's lines with their line breaks: only an LF ends one, as
    sources.lf_lines reads them, so a lone CR is a cell's text). Line numbers stay the file's."""
    source, pending = enumerate(lines, start=1), deque[Line]()

    def pull() -> Line | None:
        return pending.popleft() if pending else next(source, None)

    while (item := pull()) is not None:
        number, line = item
        if not line.strip():
            continue
        taken: list[Line] = []
        parsed = _quoted_record(line, pull, taken)
        if parsed is None:  # not csv's quoting: plain text, and the lines read ahead are read again
            pending.extendleft(reversed(taken))
            parsed = _plain_record(line)
        yield number, *parsed


def _plain_record(line: str) -> tuple[list[str], bool]:
    cols = line.rstrip("\r\n").split("\t")
    quoted = [QUOTED_CELL.fullmatch(c) for c in cols]
    cols = [m.group(1).replace('""', '"') if m else c for m, c in zip(quoted, cols, strict=True)]
    return cols, any(quoted)


def _quoted_record(
    line: str, more: Callable[[], Line | None], taken: list[Line]
) -> tuple[list[str], bool] | None:
    """The cells of a record whose quoted cells are all csv's (a quote opens the cell, `""` is a
    quote, the closing one is followed by a tab or the line's end), reading on past a line break
    inside quotes; None where a cell is not (the lines read ahead are in `taken`)."""
    text = line.rstrip("\r\n")
    cells: list[str] = []
    unquoted, i = False, 0
    while True:
        if text.startswith('"', i):
            value, i, spans = [], i + 1, False
            while True:
                j = text.find('"', i)
                if j < 0:  # the line ends inside the quotes: the cell goes on at the next line
                    value.append(text[i:] + line[len(text) :])
                    spans = True
                    if len(taken) >= MAX_LINES or (item := more()) is None:
                        return None
                    taken.append(item)
                    line = item[1]
                    text, i = line.rstrip("\r\n"), 0
                    continue
                value.append(text[i:j])
                if not text.startswith('"', j + 1):
                    break
                value.append('"')  # a doubled quote
                i = j + 2
            i = j + 1
            if i < len(text) and text[i] != "\t":
                return None  # text after the closing quote: a sentence's own quotes, not csv's
            cell = "".join(value)
            if spans and "\t" in cell:  # a raw TSV's quote opened on one line, closed on another
                return None  # (dialogue over verses): its lines are pairs of their own, not one cell
            needed = any(c in cell for c in NEEDS_QUOTES)  # else the quotes may be the sentence's
            cells.append(cell if needed else f'"{cell}"')
            unquoted |= needed
        else:
            j = text.find("\t", i)
            j = len(text) if j < 0 else j
            cells.append(text[i:j])
            i = j
        if i >= len(text):
            return cells, unquoted
        i += 1  # past the tab
