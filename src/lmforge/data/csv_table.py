"""Read a .csv or .tsv file (plain or compressed) as documents, one a row of a named column (the
header row names them), for sources.read_documents.

A row is read as the csv module reads it (a .tsv without quoting, as IANA's TSV and corpora write
it); bad rows are skipped and named with their line, the rest of the file kept: a row that lacks
the column ("no string field"), whose text is blank ("empty text"), that the reader cannot parse
(a field over the size limit), or that has more fields than the header ("too many fields": an
unquoted `,` in a CSV's text, a tab in a TSV's, which cut the text at it, unsaid, as DictReader
puts the extra fields aside) or, in a TSV, fewer ("too few fields": a line break in the text,
which DictReader filled out with None, unsaid; a CSV row may leave its last fields out). Where
a TSV row's cell opens a quote it does not close (`"first cell` of a csv-quoted cell running over
two lines), the hint says the file looks csv-quoted: a .tsv is read without quoting. Invalid
UTF-8 is repaired (U+FFFD) and named.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

from lmforge.data.report import Report
from lmforge.data.sources import READ_ERRORS, Document, _error_kind, _not_text, _open_binary

# what a row with too many fields most likely holds, by delimiter
_WHY_MORE = {",": "a ',' in a field that is not in quotes", "\t": "a tab inside a field"}
# a TSV cell that opens a csv quote and does not close it (`"first cell`, `"He said ""hi""`)
_CLOSED_QUOTE = re.compile(r'"(?:[^"]|"")*"')
_LOOKS_QUOTED = (
    "the file looks csv-quoted (a cell opens a quote it does not close); a .tsv is read without quoting"
)


def read_csv(
    path: Path, field: str, report: Report, max_line: int, delimiter: str = ","
) -> Iterator[Document]:
    csv.field_size_limit(max_line)
    reader = None
    try:
        with _open_binary(path) as raw, io.TextIOWrapper(raw, "utf-8-sig", errors="replace", newline="") as f:
            if _not_text(raw, path, report):
                return
            # strict: a quote left open would otherwise swallow every later row into one field
            # at the end of the file, unreported; and text after a closing quote is an error too
            # a .tsv is IANA's text/tab-separated-values, as corpora write it (Tatoeba, OPUS): no
            # quoting, a `"` is text (CSV's quoting merged `"Wait,` with the rows after it)
            quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
            reader = csv.DictReader(f, delimiter=delimiter, quoting=quoting, strict=True)
            if reader.fieldnames is None:
                report.problem(str(path), "empty file")
                return
            if field not in reader.fieldnames:
                report.problem(str(path), "no column", f"{field!r} not in {reader.fieldnames[:10]}")
                return
            for row in _csv_rows(reader, path, report):
                where = f"{path}:{reader.line_num}"
                # DictReader's None: the key of the fields past the header's, the value of those a row
                # lacks: a TSV's line break in a cell (a CSV's last fields may be left out, as read)
                if None in row or (delimiter == "\t" and None in row.values()):
                    _name_bad_width(row, len(reader.fieldnames), delimiter, where, report)
                    continue
                text = row.get(field)
                if not isinstance(text, str):
                    report.problem(where, "no string field", repr(field))
                    continue
                if not text.strip():
                    report.problem(where, "empty text", repr(field))
                    continue
                if "\ufffd" in text:
                    report.problem(where, "invalid UTF-8", "repaired with U+FFFD", record=True)
                yield Document(text, where)
    except READ_ERRORS as e:
        where = f"{path}:{reader.line_num}" if reader is not None else str(path)
        report.problem(where, _error_kind(e), str(e))


def _name_bad_width(row: dict, header: int, delimiter: str, where: str, report: Report) -> None:
    """Names a row with more fields than the header (DictReader's restkey None holds the extra
    ones) or fewer (its restval None fills those it lacks)."""
    extra = row.get(None, [])
    values = [v for k, v in row.items() if k is not None and v is not None] + extra
    seen = len(values)
    expected = f"{seen} field{'s' * (seen != 1)}, the header has {header}"
    why = _WHY_MORE[delimiter] if extra else "a line break inside a field"  # fewer: a TSV's only
    opened = any(v.startswith('"') and not _CLOSED_QUOTE.fullmatch(v) for v in values)
    hint = _LOOKS_QUOTED if delimiter == "\t" and opened else f"{why}?"
    report.problem(where, "too many fields" if extra else "too few fields", f"{expected}: {hint}")


def _csv_rows(reader: csv.DictReader, path: Path, report: Report) -> Iterator[dict]:
    """The reader's rows, a row it cannot parse (a field over the size limit) reported and
    skipped: the reader goes on at the next record, so the rest of the file is kept."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # line_num is the last line read before the failing record
            report.problem(f"{path}:{reader.line_num + 1}", "unreadable", str(e), record=True)
