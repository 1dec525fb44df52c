"""Which files a recipe's inputs name (files, folders, globs) and what format each is by its name.

A folder is read recursively, its hidden files and files of other suffixes named but not read; a
`**` glob that goes round linked folders is stopped; a file reached twice is read once.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from lmforge.data.compressed import COMPRESSION
from lmforge.data.shards import META, PREP_FORMATS
from lmforge.errors import LmforgeError, counted

JSON_LINES = (".jsonl", ".ndjson")  # one JSON record a line
WARC = (".warc", ".wet")  # web archives (Common Crawl's WARC files; its WET files of extracted text)
TABLES = {".csv": ",", ".tsv": "\t"}  # delimited text, a header row naming the columns
TEXT_SUFFIXES = {".txt", ".md", ".html", ".htm", *JSON_LINES, ".json", *TABLES, ".parquet", *WARC}
# PDF, Word and EPUB files (documents.py, epub.py): read whole, never compressed
DOCUMENTS = (".docx", ".epub", ".pdf")
READ_SUFFIXES = TEXT_SUFFIXES | set(DOCUMENTS)


def readable() -> str:
    """The suffixes read, as a message lists them:
    `.csv, ..., .txt (or compressed: .gz, ...), .docx, .epub, .pdf`."""
    text = f"{', '.join(sorted(TEXT_SUFFIXES))} (or compressed: {', '.join(COMPRESSION)})"
    return f"{text}, {', '.join(DOCUMENTS)}"


def suffixes(path: Path) -> tuple[str, str]:
    """(format suffix, compression suffix or '') for names like `a.jsonl.gz`."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSION:
        return (suffixes[-2] if len(suffixes) > 1 else "", suffixes[-1])
    return (suffixes[-1] if suffixes else "", "")


def split_inputs(value: str | list[str]) -> list[str]:
    """A recipe's files, folders or globs (prep.inputs, data.input) as a list: a string split on
    commas, or a TOML list of names, each whole (`a,b.txt` is one file)."""
    if isinstance(value, list):
        return [s for s in value if s.strip()]
    return [s.strip() for s in value.split(",") if s.strip()]


def list_files(inputs: str | Path | list[str | Path], passed_over: list[Path] | None = None) -> list[Path]:
    """Expand files, folders (recursively) and globs into a sorted list of input files.

    Folders contribute their files with a known suffix that are not hidden (the others go to
    `passed_over`, for the caller to name); broken links among them are kept so that reading
    reports them as unreadable rather than silently ignoring them.
    """
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            _refuse_model_folder(path)
            files += _folder_files(path, passed_over)
        elif path.is_file() or path.is_symlink():  # a broken link or a link loop: named as unreadable
            files.append(path)
        else:
            matches = sorted(_glob(str(item)))
            if not matches:
                raise LmforgeError(f"{item}: no such file, folder or glob match")
            for match in matches:  # a folder `raw/*` matches is read as a named folder; `**` lists its files
                if match.is_dir() and "**" not in str(item):
                    files += _folder_files(match, passed_over)
                elif match.is_file():
                    files.append(match)
    if not files:
        raise LmforgeError(f"{', '.join(map(str, items))}: no {readable()} files found")
    # A file reached twice (named twice; a ** glob through a linked loop) is read once, in the
    # place it was first found, under its shortest name (not raw/loop/loop/.../a.txt).
    found: dict[str, list[Path]] = {}
    for file in files:
        found.setdefault(os.path.realpath(file), []).append(file)
    return [min(names, key=lambda p: (len(p.parts), str(p))) for names in found.values()]


def _refuse_model_folder(path: Path) -> None:
    """A model, run or prep output directory named as a corpus: its config.json, tokenizer.json,
    meta.json and metrics would be read as .json and .jsonl text (or fail as such), far from what
    was meant."""
    what = output_folder(path)
    if what:
        raise LmforgeError(f"{path}: {what}, not a corpus: give text files or folders of them ({readable()})")


def output_folder(path: Path) -> str | None:
    """What lmforge output `path` is (a model or run directory, a prep output), or None."""
    model = path / "model" if (path / "model" / "config.json").is_file() else path
    if (model / "config.json").is_file() and any((model / n).is_file() for n in MODEL_FILES):
        run = "run " if model != path else ""
        return f"a model {run}directory (config.json and its weights or tokenizer)"
    try:  # not any meta.json: prep's, which names its format
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(meta, dict) and meta.get("format") in PREP_FORMATS:
        return "a prep output (meta.json, its shards and report.json)"
    return None


MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "tokenizer.json", "pytorch_model.bin")


def _glob(pattern: str) -> list[Path]:
    """glob.glob, stopped where a `**` goes round folder links that loop back: Python's follows
    links, so two such links multiply the paths without end (a helper's prep: 3 GB and growing
    after 10 minutes); one link loop gives each file ~40 names, which list_files reads once."""
    found: list[Path] = []
    real: set[str] = set()
    for name in glob.iglob(pattern, recursive=True):
        found.append(Path(name))
        real.add(os.path.realpath(name))
        if len(found) > 10_000 + 100 * len(real):
            raise LmforgeError(
                f"{pattern}: the ** glob goes round folder links that loop back ({len(found):,} paths for"
                f" {len(real):,} files and folders): name the folder itself, whose links are not followed"
            )
    return found


def _folder_files(path: Path, passed_over: list[Path] | None) -> list[Path]:
    """A folder's files with a known suffix, not hidden, recursively (the others go to `passed_over`)."""
    found = list(path.rglob("*"))  # Python 3.11's rglob does not enter linked folders
    # an earlier output inside the folder (`prep raw/ --out raw/prepared`, then `prep raw/`): named,
    # not read (its meta.json and report.json were read as text, "not a JSON array")
    outputs = [
        p for p in found if p.is_dir() and not p.is_symlink() and not _hidden(p, path) and output_folder(p)
    ]
    found = [p for p in found if not any(p.is_relative_to(o) for o in outputs)] + outputs
    entries = sorted(
        p for p in found if not p.is_dir() or p in outputs or (p.is_symlink() and not _hidden(p, path))
    )
    candidates = [p for p in entries if p.is_file() or not p.exists()]  # broken links too
    taken = [p for p in candidates if suffixes(p)[0] in READ_SUFFIXES and not _hidden(p, path)]
    if passed_over is not None:  # and pipes, sockets, devices: never read, but named
        kept = set(taken)
        passed_over += [p for p in entries if p not in kept]
    return taken


def _hidden(file: Path, folder: Path) -> bool:
    """Whether a file found in `folder` is hidden there, or lies in a hidden folder below it (an
    editor's `.#notes.txt`, a `.git` or `.cache` folder): not a corpus file, as Hugging Face
    datasets also leave them."""
    return any(part.startswith(".") for part in file.relative_to(folder).parts)


def input_notes(files: list[Path], passed_over: list[Path], shown: int | None = 5) -> list[str]:
    """Lines naming a folder's files not read (hidden, or of other suffixes) and which named files
    of an unknown suffix are read as plain text: neither is bad input, but a `data.yaml` dropped
    into a corpus folder, or named, should not go by unsaid. `shown`: names a line gives (None:
    every one, as report.json keeps them)."""

    def listed(paths: list[Path]) -> str:
        more = shown is not None and len(paths) > shown
        return ", ".join(str(p) for p in paths[:shown]) + (", ..." if more else "")

    lines = []
    outputs = [p for p in passed_over if p.is_dir() and not p.is_symlink()]
    if outputs:
        many = counted(len(outputs), "folder")
        lines.append(
            f"not read: {many} in the input folders holding lmforge's own output (a prep output, a"
            f" model or run directory): {listed(outputs)}"
        )
    linked = [p for p in passed_over if p.is_symlink() and p.is_dir()]
    if linked:
        many = counted(len(linked), "link") + (" to a folder" if len(linked) == 1 else " to folders")
        lines.append(
            f"not read: {many} in the input folders, not followed (name the folder itself to read"
            f" it): {listed(linked)}"
        )
    special = [p for p in passed_over if p.exists() and not p.is_file() and not p.is_dir()]
    if special:
        many = f"{len(special):,} " + ("entry" if len(special) == 1 else "entries")
        lines.append(
            f"not read: {many} in the input folders that are not files (pipes, sockets, devices):"
            f" {listed(special)}"
        )
    passed_over = [p for p in passed_over if p not in special and p not in linked and p not in outputs]
    if passed_over:
        known = readable()
        many = counted(len(passed_over), "file")
        lines.append(f"not read: {many} in the input folders, hidden or not {known} ({listed(passed_over)})")
    plain = [p for p in files if suffixes(p)[0] not in READ_SUFFIXES]
    if plain:
        lines.append(f"read as plain text, one document a file: {listed(plain)} (named, of another suffix)")
    return lines
