"""Read a .parquet file (plain or compressed) as documents, one a row of a named column, for
sources.read_documents."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lmforge.data.input_files import suffixes
from lmforge.data.report import Report
from lmforge.data.sources import READ_ERRORS, Document, _error_kind, _open_binary


def read_parquet(path: Path, field: str, report: Report) -> Iterator[Document]:
    """Each row's `field` (a string column) as a document, batch by batch; a missing column, a
    non-string or empty cell, a damaged file reported with its row."""
    import pyarrow.parquet as pq  # heavy; only when there is a parquet input

    row = 0
    try:
        with seekable(path) as source, pq.ParquetFile(source) as table:
            if field not in table.schema_arrow.names:
                report.problem(str(path), "no column", f"{field!r} not in {table.schema_arrow.names[:10]}")
                return
            for batch in table.iter_batches(batch_size=1024, columns=[field]):
                for text in batch.column(0).to_pylist():
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
