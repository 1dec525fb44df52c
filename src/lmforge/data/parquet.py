"""Read a .parquet file (plain or compressed) as documents, one a row of a named column, for
sources.read_documents."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from lmforge.data.input_files import suffixes
from lmforge.data.report import Report
from lmforge.data.sources import READ_ERRORS, Document, _error_kind, _open_binary


def read_parquet(path: Path, field: str, report: Report) -> Iterator[Document]:
    """Each row's `field` (a string column) as a document, batch by batch; a missing column, a
    non-string or empty cell, a damaged file reported with its row, a cell of invalid UTF-8
    repaired and named (_cells)."""
    import pyarrow.parquet as pq  # heavy; only when there is a parquet input

    row = 0
    try:
        with seekable(path) as source, pq.ParquetFile(source) as table:
            if field not in table.schema_arrow.names:
                report.problem(str(path), "no column", f"{field!r} not in {table.schema_arrow.names[:10]}")
                return
            for batch in table.iter_batches(batch_size=1024, columns=[field]):
                for text in _cells(batch.column(0), path, row, report):
                    row += 1
                    if not isinstance(text, str):
                        report.problem(f"{path}: row {row}", "no string field", repr(field))
                        continue
                    if not text.strip():
                        report.problem(f"{path}: row {row}", "empty text", repr(field))
                        continue
                    yield Document(text, f"{path}:{row}")
    except (*READ_ERRORS, Exception) as e:  # pyarrow raises ArrowInvalid and friends
        report.problem(f"{path}: row {row + 1}", _error_kind(e), str(e).split("\n")[0])


def _cells(column: Any, path: Path, row: int, report: Report) -> list[Any]:
    """A batch's cells as Python values (rows `row` + 1 on). A string cell that is not UTF-8, which
    a writer that does not check can leave (parquet's format does not), has its bad bytes replaced
    by U+FFFD and is named by its row, as a .jsonl line's are: to_pylist raised on the first, and
    the rest of the file was lost under the row its batch began at."""
    import pyarrow as pa

    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column.to_pylist()
    try:
        column.validate(full=True)  # checks the UTF-8 of every cell, in C
        return column.to_pylist()
    except pa.ArrowInvalid:
        pass
    binary = pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary()
    cells: list[Any] = []
    for number, raw in enumerate(column.cast(binary).to_pylist(), row + 1):
        try:
            cells.append(raw if raw is None else raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            detail = f"byte {e.start} of the cell; repaired with U+FFFD"
            report.problem(f"{path}: row {number}", "invalid UTF-8", detail, record=True)
            cells.append(raw.decode("utf-8", errors="replace"))
    return cells


@contextlib.contextmanager
def seekable(path: Path) -> Iterator[Path | IO[bytes]]:
    """`path` itself, or a compressed one decompressed into a temporary file: parquet's footer is
    at the end of the file, which a compressed stream cannot seek to (`.parquet.gz` was skipped)."""
    if not suffixes(path)[1]:
        yield path
        return
    with tempfile.TemporaryFile() as copy, _open_binary(path) as f:
        shutil.copyfileobj(f, copy, 1 << 20)
        copy.seek(0)
        yield copy
