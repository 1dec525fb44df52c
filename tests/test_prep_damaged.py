"""Damaged compressed inputs and the report's list of problems. A file whose compressed stream
fails its check keeps only the text a passed check vouches for (checked against the records
written); a file's problem is named however many bad lines came before it."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from lmforge.data.report import MAX_LISTED, Report
from lmforge.data.sources import read_documents

RECORDS = [f"doc {i} alpha beta gamma delta {i * 7}" for i in range(20_000)]
COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    ".gz": gzip.compress,
    ".bz2": lambda data: bz2.compress(data, 1),  # blocks of 100 kB: a cut keeps those before it
    ".xz": lzma.compress,
    ".zst": zstandard.ZstdCompressor(write_checksum=True).compress,  # the zstd tool writes one
}


def _jsonl(records: list[str]) -> bytes:
    return "".join(json.dumps({"text": r}) + "\n" for r in records).encode()


def _flipped(data: bytes) -> bytes:
    """`data` with 100 bytes inverted at its middle: damaged, not cut short."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 100]) + data[mid + 100 :]


def _read(path: Path) -> tuple[list[str], Report]:
    report = Report()
    return [d.text for d in read_documents(path, "text", report)], report


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_a_stream_damaged_in_its_middle_keeps_none_of_it(tmp_path: Path, suffix: str) -> None:
    """gzip's CRC is at the file's end: zlib had given out 10,048 of the 20,000 records, 57 of them
    garbled text, before it failed; one stream (or frame) has one check that vouches for it all."""
    path = tmp_path / f"a.jsonl{suffix}"
    path.write_bytes(_flipped(COMPRESS[suffix](_jsonl(RECORDS))))
    texts, report = _read(path)
    assert texts == []
    read = report.stages["read"]
    lost = read.dropped["damaged compressed file"]  # those an uncut read gives out, garbled or not
    assert read.docs_in == lost and read.docs_out == 0 and (lost > 1000 or suffix != ".gz")
    [problem] = report.problems
    assert re.fullmatch(rf"{re.escape(str(path))}: truncated or corrupt \(.*, so none is kept\)", problem)


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_the_parts_before_a_damaged_one_are_kept_whole(tmp_path: Path, suffix: str) -> None:
    """Two gzip members (bz2 or xz streams, zstd frames), as `cat a.gz b.gz` or bgzip write:
    the first passed its check, so its records are kept, every one, and nothing of the second."""
    first, second = RECORDS[:5000], RECORDS[5000:]
    path = tmp_path / f"a.jsonl{suffix}"
    path.write_bytes(COMPRESS[suffix](_jsonl(first)) + _flipped(COMPRESS[suffix](_jsonl(second))))
    texts, report = _read(path)
    assert texts == first
    read = report.stages["read"]
    lost = read.dropped["damaged compressed file"]  # those an uncut read gives out, garbled or not
    assert read.docs_in == len(first) + lost and (lost > 1000 or suffix != ".gz")
    [problem] = report.problems
    kept = f"only the {len(_jsonl(first)):,} bytes of text before it, whose checks passed, are kept)"
    assert problem.startswith(f"{path}:5001: truncated or corrupt (") and problem.endswith(kept)


@pytest.mark.parametrize("suffix", list(COMPRESS))
def test_a_file_cut_short_keeps_what_came_before_the_cut(tmp_path: Path, suffix: str) -> None:
    """A cut, unlike a damage, leaves the text before it as written: kept (but for the last
    64 KiB read), and not counted as a damaged file."""
    path = tmp_path / f"a.jsonl{suffix}"
    data = COMPRESS[suffix](_jsonl(RECORDS))
    path.write_bytes(data[: len(data) * 3 // 4])
    texts, report = _read(path)
    assert texts == RECORDS[: len(texts)] and texts
    assert "damaged compressed file" not in report.stages["read"].dropped
    assert report.problem_counts == {"truncated or corrupt": 1}


def test_a_file_problem_after_many_bad_lines_is_named(tmp_path: Path) -> None:
    """Only the first 200 problems were kept: a truncated .gz after 300 bad lines was named
    nowhere, while the table said "... 281 more in report.json"."""
    lines = ["not json\n"] * 300 + ['{"other": 1}\n'] * 250 + [json.dumps({"text": "kept"}) + "\n"]
    (tmp_path / "a.jsonl").write_text("".join(lines))
    data = gzip.compress(_jsonl(RECORDS))
    (tmp_path / "b.jsonl.gz").write_bytes(data[: len(data) // 2])
    texts, report = _read(tmp_path)
    assert texts[0] == "kept" and len(texts) > 1000
    cut = [p for p in report.problems if p.startswith(f"{tmp_path}/b.jsonl.gz:")]
    assert len(cut) == 1 and "truncated or corrupt" in cut[0]
    assert report.problem_counts == {"not valid JSON": 300, "no string field": 250, "truncated or corrupt": 1}
    assert len(report.problems) == 2 * MAX_LISTED + 1  # the first 200 of each kind of bad line
    table = report.format().splitlines()
    assert f"  {cut[0]}" in table  # a file's problem first
    assert f"  ... {2 * MAX_LISTED + 1 - 20:,} more named in report.json" in table
    assert (
        f"  ... and {550 - 2 * MAX_LISTED:,} only counted (after the first {MAX_LISTED} of a kind)" in table
    )
    assert cut[0] in report.to_dict()["problem_list"]
    assert report.skipped(5)[0] == f"skipped {cut[0]}"
