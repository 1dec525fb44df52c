"""Reading sentence pairs (`lmforge prep --pairs`'s inputs, plain or .gz/.xz/.bz2): JSON Lines with
one object per pair (`{"en": ..., "fr": ..., "doc": ...}`; the language codes are the field names,
`doc` is optional), TSV (`source<TAB>target` and an optional third `doc` column), or two aligned
text files `NAME.en` + `NAME.fr` (give either; consecutive blocks of 50 lines count as one
document). Only an LF ends a line of a TSV or an aligned file, as `wc -l` counts them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lmforge.data.input_files import output_folder, suffixes
from lmforge.data.sources import STREAM_ERRORS, lf_lines, open_text, utf8_error
from lmforge.data.tsv_cells import tsv_records
from lmforge.errors import LmforgeError

LINES_PER_DOC = 50  # aligned text files: consecutive lines grouped into one document
_SPACES = re.compile(r"\s+")


@dataclass
class Pair:
    src: str
    tgt: str
    doc: str


def pair_files(
    inputs: str | Path | list[str | Path], src_lang: str, tgt_lang: str, passed_over: list[Path] | None = None
) -> list[Path]:
    """The pair files the inputs name. lmforge's own output in a folder (an earlier prep's
    train/val/test.en/.fr, a run's metrics.jsonl) is not read but put in `passed_over`, as `lmforge
    prep` does (it was read as pairs, another corpus's val/test into training, until 2026-12-08);
    named as an input, such a folder is refused."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            if what := output_folder(path):
                raise LmforgeError(f"{item}: {what}, not a pair corpus: give .jsonl, .tsv or"
                                   f" .{src_lang}/.{tgt_lang} files or folders of them")  # fmt: skip
            entries = list(path.rglob("*"))
            outputs = sorted(p for p in entries if p.is_dir() and not p.is_symlink() and output_folder(p))
            found = sorted(p for p in entries if p.is_file() and not any(map(p.is_relative_to, outputs)))
            if passed_over is not None:
                passed_over += outputs
            files += [p for p in found if suffixes(p)[0] in (".jsonl", ".tsv", f".{src_lang}")]
        elif path.is_file():
            files.append(path)
        else:
            raise LmforgeError(f"{item}: no such file or folder")
    if not files:
        raise LmforgeError(
            f"{', '.join(map(str, items))}: no .jsonl, .tsv or .{src_lang}/.{tgt_lang} files found"
        )
    # NAME.fr given alone stands for the aligned pair NAME.en + NAME.fr
    out: list[Path] = []
    for f in files:
        kind = suffixes(f)[0]
        if kind == f".{tgt_lang}":
            f = sibling(f, tgt_lang, src_lang)
        if f not in out:
            out.append(f)
    return out


def sibling(path: Path, lang: str, other: str) -> Path:
    comp = suffixes(path)[1]
    stem = path.name[: len(path.name) - len(comp)]
    return path.with_name(stem[: -len(lang)] + other + comp)


def read_pairs(
    inputs: str | Path | list[str | Path], src_lang: str = "en", tgt_lang: str = "fr"
) -> Iterator[Pair]:
    """Every pair of the inputs, whitespace-normalised, in a stable order."""
    for path in pair_files(inputs, src_lang, tgt_lang):
        kind = suffixes(path)[0]
        try:
            if kind == ".jsonl":
                yield from _read_jsonl(path, src_lang, tgt_lang)
            elif kind == ".tsv":
                yield from _read_tsv(path, src_lang, tgt_lang)
            elif kind == f".{src_lang}":
                yield from _read_aligned(path, sibling(path, src_lang, tgt_lang))
            else:
                raise LmforgeError(f"{path}: not a pair file (.jsonl, .tsv, .{src_lang} + .{tgt_lang})")
        except UnicodeDecodeError:
            other = [sibling(path, src_lang, tgt_lang)] if kind == f".{src_lang}" else []
            where = next(filter(None, map(utf8_error, [path, *other])), f"{path}: not valid UTF-8")
            raise LmforgeError(where) from None
        except STREAM_ERRORS as e:  # a damaged .gz/.xz/.zst too
            raise LmforgeError(f"{path}: cannot read: {e}") from None


def _norm(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def _read_jsonl(path: Path, src_lang: str, tgt_lang: str) -> Iterator[Pair]:
    with open_text(path) as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise LmforgeError(f"{path}:{number}: not valid JSON") from None
            if not isinstance(record, dict):
                raise LmforgeError(f"{path}:{number}: not a JSON object")
            src, tgt = record.get(src_lang), record.get(tgt_lang)
            if not isinstance(src, str) or not isinstance(tgt, str):
                raise LmforgeError(f"{path}:{number}: needs string fields {src_lang!r} and {tgt_lang!r}")
            yield Pair(_norm(src), _norm(tgt), str(record.get("doc", path.name)))


def _read_tsv(path: Path, src_lang: str, tgt_lang: str) -> Iterator[Pair]:
    """Tab-separated pairs; a first line naming the two languages (`en<TAB>fr`, a spreadsheet's
    header) is a header, not a pair, and stderr says so. A cell in quotes as spreadsheets and
    Python's csv.writer write one that holds quotes, a tab or a line break (tsv_cells) is read out
    of its quotes, and stderr says so once; other quotes are text. Only an LF ends a line, as for
    aligned files: a lone CR in a cell ended one (a pair of fragments, silently) until 2026-12-08."""
    with open_text(path, "\n") as f:
        first, told = True, False
        for number, cols, unquoted in tsv_records(lf_lines(f)):
            named = [c.strip().lower() for c in cols[:2]]
            if (
                first
                and named == [tgt_lang.lower(), src_lang.lower()]
                and src_lang.lower() != tgt_lang.lower()
            ):
                raise LmforgeError(
                    f"{path}:{number}: its header names the columns {cols[0].strip()}, {cols[1].strip()}: the"
                    f" other way round from --src-lang {src_lang} --tgt-lang {tgt_lang} (give"
                    f" --src-lang {cols[0].strip()} --tgt-lang {cols[1].strip()}, or swap the columns)"
                )
            if first and named == [src_lang.lower(), tgt_lang.lower()]:
                print(
                    f"lmforge: {path}:{number}: read as a header ({cols[0]}, {cols[1]}), not a pair",
                    file=sys.stderr,
                )
                first = False
                continue
            first = False
            if len(cols) not in (2, 3):
                raise LmforgeError(f"{path}:{number}: expected 2 or 3 tab-separated columns, got {len(cols)}")
            if unquoted and not told:
                print(f"lmforge: {path}:{number}: cells in quotes with doubled quotes inside are read as"
                      ' spreadsheets write them ("a ""b""" is a "b"), as are a tab and a line break in'
                      " quotes (csv.writer's)", file=sys.stderr)  # fmt: skip
                told = True
            yield Pair(_norm(cols[0]), _norm(cols[1]), cols[2] if len(cols) == 3 else path.name)


def _read_aligned(src_path: Path, tgt_path: Path) -> Iterator[Pair]:
    if not tgt_path.is_file():
        raise LmforgeError(f"{src_path}: its aligned file {tgt_path} is missing")
    # only an LF ends a line, as `wc -l` counts them: a lone CR inside a sentence ended one, which
    # shifted every pair after it (to a second stray CR in the other file, silently) until 2026-12-08
    with open_text(src_path, "\n") as fs, open_text(tgt_path, "\n") as ft:
        try:  # strict: a source with one line more is caught too (a plain zip reads it, then stops)
            for number, (s, t) in enumerate(zip(lf_lines(fs), lf_lines(ft), strict=True)):
                yield Pair(_norm(s), _norm(t), f"{src_path.name}#{number // LINES_PER_DOC}")
        except UnicodeDecodeError:  # a ValueError too: reported by the caller with its position
            raise
        except ValueError:
            counts = [_count_lines(p) for p in (src_path, tgt_path)]
            raise LmforgeError(
                f"{src_path} and {tgt_path}: different numbers of lines ({counts[0]:,} and {counts[1]:,})"
            ) from None


def _count_lines(path: Path) -> int:
    with open_text(path, "\n") as f:
        return sum(1 for _ in lf_lines(f))
