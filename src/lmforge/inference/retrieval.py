"""A saved BM25 index of a folder of documents, cut into passages, for `lmforge ask`.

Documents are read as `lmforge prep` reads them (data/sources.py: .txt .md .jsonl .json .csv .tsv .parquet
.warc, compressed, folders, globs); a .jsonl/.csv/.parquet record is one document, named `path:line`.
Each document is cut into passages of at most `passage_words` words: whole paragraphs (blank-line
separated) packed together, a longer paragraph cut at word boundaries. Passages keep their
character offsets in the document, so a citation names where the text is.

Retrieval is BM25 (bm25s, Lucene's variant, k1 = 1.5, b = 0.75) over lower-cased words without
English stop words, stemmed by Snowball's English stemmer (PyStemmer); `search_hybrid` fuses it
with sentence embeddings (inference/embeddings.py), kept in `embeddings.safetensors` beside the
rest with the embedder's identity and each row's passage digest (blake2b of its text): a rebuilt
index carries them over, and only passages whose text no saved row has are embedded (saved as the
table doubles, so an interrupted run keeps at least half of what it made); a row is never given to
a passage of other text, whichever run wrote the file.

The index is a folder of plain files, nothing pickled: `manifest.json` (the settings and, per
file, its size, mtime and sha256 and its passages' range), `passages.jsonl` (source, offsets,
text) and `bm25/` (bm25s' own .npy arrays and JSON vocabulary, loaded with allow_pickle=False).
It is reused while every file is unchanged; a changed, new or removed file is re-read (the others'
passages are reused) and the BM25 matrix is rebuilt, as its weights depend on every passage. It is
written to a temporary folder and renamed into place, so an interrupted run leaves the previous
index whole. A file that is not valid UTF-8 is skipped with one line naming the file, line and
byte (its passages would be repaired text otherwise); nothing of it is lost or changed.

An index folder is never read as documents: a folder among the documents whose manifest.json is an
index manifest (this index, another one, or one being written: the manifest is written first) is
skipped with everything in it, whatever its name. Otherwise the index of `docs/a.txt`, kept in
`docs/a.txt.lmforge-index`, would give its own passages.jsonl as documents to `ask --docs docs`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import Stemmer

from lmforge.data.clean import Markup
from lmforge.data.input_files import DOCUMENTS, input_notes, list_files, suffixes
from lmforge.data.report import Report, StageStats
from lmforge.data.sources import read_documents, utf8_error
from lmforge.errors import LmforgeError
from lmforge.inference.embeddings import Embedder, embed_kept, fuse
from lmforge.outputs import check_place, describe_foreign, foreign_entries, staged_folder

FORMAT = 1  # manifest "format": bump when the files' meaning changes
MANIFEST, PASSAGES, BM25_DIR, EMBEDDINGS = "manifest.json", "passages.jsonl", "bm25", "embeddings.safetensors"
OURS = {MANIFEST, PASSAGES, EMBEDDINGS}
EMBEDDING_TEMP = f".{EMBEDDINGS}.tmp-"  # outputs.write_file's temporary file, if a write was cut short
SUFFIX = ".lmforge-index"
GLOB = re.compile(r"[*?[]")  # what makes a path a glob for glob.glob (and so list_files)


@dataclass
class Passage:
    source: str  # `path` or `path:line`
    start: int  # character offsets of the passage in its document's text
    end: int
    text: str


def split_passages(text: str, max_words: int) -> list[tuple[int, int]]:
    """(start, end) character spans of passages of at most `max_words` words: paragraphs packed
    together, a longer paragraph cut at word boundaries."""
    spans: list[tuple[int, int]] = []
    current: tuple[int, int] | None = None  # the passage being packed
    count = 0
    for paragraph in re.finditer(r"\S(?:.*?\S)?(?=\s*\n\s*\n|\s*$)", text, re.DOTALL):
        words = [m.span() for m in re.finditer(r"\S+", paragraph.group())]
        base = paragraph.start()
        if current is not None and count + len(words) > max_words:
            spans.append(current)
            current, count = None, 0
        if len(words) > max_words:  # a long paragraph: its own windows
            for i in range(0, len(words), max_words):
                chunk = words[i : i + max_words]
                spans.append((base + chunk[0][0], base + chunk[-1][1]))
            continue
        current = (current[0] if current else paragraph.start(), paragraph.end())
        count += len(words)
    if current is not None:
        spans.append(current)
    return spans


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _tokens(texts: list[str]) -> list[list[str]]:
    stemmer = Stemmer.Stemmer("english")
    return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)


def _owner(folder: Path) -> str | None:
    foreign = foreign_entries(folder, lambda name: name in OURS or name.startswith(EMBEDDING_TEMP))
    if foreign != [BM25_DIR] or not (folder / MANIFEST).is_file():
        return describe_foreign([f for f in foreign if f != BM25_DIR] or foreign, "ask")
    return None


def is_glob(docs: str | Path) -> bool:
    """Whether list_files reads `docs` as a glob: no such file or folder, and a wildcard in it."""
    path = Path(docs)
    return not (path.exists() or path.is_symlink()) and bool(GLOB.search(str(docs)))


def _glob_base(docs: str | Path) -> tuple[Path, list[str]]:
    """A glob's fixed folder (the parts before the first wildcard) and the parts from there on."""
    parts = Path(docs).parts
    first = next(n for n, part in enumerate(parts) if GLOB.search(part))
    return Path(*parts[:first]) if first else Path("."), list(parts[first:])


def default_index_dir(docs: str | Path) -> Path:
    """`DOCS.lmforge-index` beside the documents' folder or file; for a glob, in its fixed folder,
    named after the pattern with `_` for each wildcard (`docs/*.txt`: `docs/_.txt.lmforge-index`),
    as a folder name with `*` in it is a trap for every shell."""
    if is_glob(docs):
        base, pattern = _glob_base(docs)
        name = "-".join(re.sub(r"(?:[*?]|\[[^]]*\]?)+", "_", part) for part in pattern)
        return base.resolve() / f"{name}{SUFFIX}"
    path = Path(docs).resolve()
    if path == path.parent:
        raise LmforgeError(f"{docs}: give --index for an index of the root folder")
    return path.parent / f"{path.name}{SUFFIX}"


def is_index_dir(folder: Path) -> bool:
    """Whether `folder` holds an index's manifest (by its content, not the folder's name)."""
    manifest = _read_manifest(folder)
    settings = manifest.get("settings")
    return isinstance(settings, dict) and "passage_words" in settings and "files" in manifest


def document_files(docs: str | Path) -> tuple[list[Path], list[str]]:
    """(list_files(docs) less the files inside an index folder among the documents (below the folder
    or the glob's fixed folder given: a file named on its own is read whatever it is), the lines
    naming a folder's files not read and a named file read as plain text, as prep says them)."""
    root = _glob_base(docs)[0] if is_glob(docs) else Path(docs)
    seen: dict[Path, bool] = {}  # folder -> is an index folder, each folder read once

    def in_index(path: Path) -> bool:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            return False
        for folder in (root.joinpath(*parts[:n]) for n in range(1, len(parts))):  # root < folder < file
            if folder not in seen:
                seen[folder] = is_index_dir(folder)
            if seen[folder]:
                return True
        return False

    passed_over: list[Path] = []
    files = list_files(docs, passed_over)
    kept = [p for p in files if not in_index(p)]
    if not kept:
        raise LmforgeError(f"{docs}: no documents: every file found lies in an lmforge index folder")
    return kept, input_notes(kept, [p for p in passed_over if not in_index(p)])


class PassageIndex:
    """Passages and their BM25 matrix; `search` gives the best passages for a question."""

    def __init__(self, directory: Path, passages: list[Passage], bm25: bm25s.BM25 | None) -> None:
        self.directory = directory
        self.passages = passages
        self.bm25 = bm25
        self.stats: dict[str, Any] = {}
        self._embedded: tuple[str, np.ndarray] | None = None  # (embedder key, embeddings) once read

    @classmethod
    def build(
        cls,
        docs: str | Path,
        index: str | Path | None = None,
        passage_words: int = 200,
        text_field: str = "text",
        quiet: bool = False,
    ) -> PassageIndex:
        """The index of `docs`, read from `index` when it is up to date, else (re)built there."""
        if passage_words < 1:
            raise LmforgeError(f"passage_words={passage_words} must be >= 1")
        directory = Path(index) if index is not None else default_index_dir(docs)
        # the index folder is replaced whole: not the working directory, not among the documents
        documents = [] if is_glob(docs) else [docs]  # a pattern's matches are checked as files
        check_place(directory, documents, "ask", "--index", "index folder", "documents")
        settings = {"format": FORMAT, "passage_words": passage_words, "text_field": text_field}
        old = _read_manifest(directory)
        old_files = old.get("files", {}) if old.get("settings") == settings else {}
        old_passages = _read_passages(directory) if old_files else []
        if len(old_passages) != sum(e.get("count", 0) for e in old_files.values()):
            old_files = {}  # the passages file does not match its manifest: read every file again
        files: dict[str, Any] = {}
        passages: list[Passage] = []
        stats: dict[str, Any] = {"files": 0, "reused": 0, "read": 0, "skipped": [], "problems": []}
        skipped: set[str] = set()
        found, notes = document_files(docs)
        stats["input_notes"] = notes
        if not quiet:
            for line in notes:  # a folder's .rst or .json files: not bad input, but not silent
                print(f"lmforge: {line}", file=sys.stderr)
        for path in found:
            key, shown = os.path.realpath(path), str(path)  # one file however --docs names it (links too)
            entry = old_files.get(key)
            try:  # a broken link, or a file removed since it was listed: skipped, not fatal
                stat = path.stat()
                same = entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns
                digest = entry["sha256"] if same else _sha256(path)
            except OSError as e:
                skipped.add(key)
                stats["skipped"].append(f"{path}: cannot read ({e.strerror or e}); skipped")
                if not quiet:
                    print(f"lmforge: {stats['skipped'][-1]}", file=sys.stderr)
                continue
            if entry and entry["sha256"] == digest:
                was = str(entry.get("shown", shown))  # cited as --docs names it this time
                kept = old_passages[entry["first"] : entry["first"] + entry["count"]]
                kept = [replace(p, source=_renamed(p.source, was, shown)) for p in kept]
                stats["reused"] += 1
                problems = [_renamed(p, was, shown) for p in entry.get("problems", []) if isinstance(p, str)]
                _say_skipped(problems, stats, quiet)  # again on every run, as a file not UTF-8 is
            else:
                bad = None if suffixes(path)[0] in DOCUMENTS else utf8_error(path)  # a PDF is no text
                if bad is not None:
                    skipped.add(key)
                    stats["skipped"].append(f"{bad}; skipped (convert it to UTF-8 to index it)")
                    if not quiet:
                        print(f"lmforge: {stats['skipped'][-1]}", file=sys.stderr)
                    continue
                before = len(stats["problems"])
                kept = _read_file(path, passage_words, text_field, stats, quiet)
                problems = stats["problems"][before:]
                stats["read"] += 1
            files[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest,
                          "first": len(passages), "count": len(kept), "problems": problems,
                          "shown": shown}  # fmt: skip
            passages += kept
            stats["files"] += 1
        stats["removed"] = len(set(old_files) - set(files) - skipped)
        if not passages:
            raise LmforgeError(f"{docs}: no text to index (no passages in {stats['files']} readable files)")
        bm25 = _load_bm25(directory) if old_files == files else None
        if bm25 is not None and bm25.scores.get("num_docs") != len(passages):
            bm25 = None  # not the matrix of these passages
        out = cls(directory, passages, bm25)
        if bm25 is None:
            out._write(docs, {"settings": settings, "files": files})
        stats["rebuilt"] = bm25 is None
        out.stats = stats
        return out

    def _write(self, docs: str | Path, manifest: dict[str, Any]) -> None:
        self.bm25 = bm25s.BM25()
        self.bm25.index(_tokens([p.text for p in self.passages]), show_progress=False)
        inputs = [] if is_glob(docs) else [docs]
        # not locked: two `ask`s building the same index at once both write it (each a whole one,
        # the last rename wins), where a lock would refuse a question
        staged = staged_folder(
            self.directory, inputs=inputs, owner=_owner, overwrite=None, verb="ask", lock=False
        )
        with staged as tmp:
            # the manifest first: a folder being written is known as an index (never read as documents)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            self.bm25.save(tmp / BM25_DIR, show_progress=False)
            with open(tmp / PASSAGES, "w", encoding="utf-8") as f:
                for p in self.passages:
                    f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
            if (self.directory / EMBEDDINGS).is_file():  # rows keyed by their passage's text: still good
                shutil.copyfile(self.directory / EMBEDDINGS, tmp / EMBEDDINGS)

    def search(self, question: str, k: int) -> list[tuple[Passage, float]]:
        """The `k` best passages with their BM25 scores, best first; none that shares no word."""
        if k < 1:
            raise LmforgeError(f"k={k} must be >= 1")
        tokens = _tokens([question])[0]
        if not tokens or self.bm25 is None:
            return []
        scores = self.bm25.get_scores(tokens)  # (passages,)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.passages[i], float(scores[i])) for i in order if scores[i] > 0]

    def search_hybrid(self, question: str, k: int, embedder: Embedder) -> list[tuple[Passage, float]]:
        """The `k` best passages by BM25 and by cosine similarity to the question, fused by
        reciprocal rank (embeddings.fuse), with their fused scores, best first. Every passage
        has a similarity, so there are `k` (or all) whatever words the question shares."""
        if k < 1:
            raise LmforgeError(f"k={k} must be >= 1")
        tokens = _tokens([question])[0]
        by_words: list[int] = []
        if tokens and self.bm25 is not None:
            scores = self.bm25.get_scores(tokens)  # (passages,)
            by_words = [int(i) for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        similarity = self.embeddings(embedder) @ embedder.embed([question])[0]  # (passages,)
        by_meaning = [int(i) for i in np.argsort(-similarity, kind="stable")]
        return [(self.passages[i], score) for i, score in fuse([by_words, by_meaning], k)]

    def embeddings(self, embedder: Embedder) -> np.ndarray:
        """(passages, width): the passages' embeddings, read from the index when this embedder
        made them for these passages, else made and saved there (atomically); held for the next
        search."""
        if self._embedded is not None and self._embedded[0] == embedder.key:
            return self._embedded[1]
        self._embedded = (embedder.key, self._read_or_embed(embedder))
        return self._embedded[1]

    def _read_or_embed(self, embedder: Embedder) -> np.ndarray:
        return embed_kept(self.directory / EMBEDDINGS, [p.text for p in self.passages], embedder)


def _renamed(text: str, was: str, shown: str) -> str:
    """A passage's source or a file's problem line, written with the file's path as `was`, with
    the path as `shown` instead (`docs/a.txt:3` -> `/abs/docs/a.txt:3`)."""
    return shown + text[len(was) :] if was != shown and text.startswith(was) else text


def _read_file(path: Path, passage_words: int, text_field: str, stats: dict, quiet: bool) -> list[Passage]:
    report = Report()
    out = []
    web_page = suffixes(path)[0] in (".html", ".htm")  # read for its text, as prep's markup stage does
    for doc in read_documents(path, text_field=text_field, report=report):
        text = (Markup().apply(doc.text, StageStats()) or "") if web_page else doc.text
        for start, end in split_passages(text, passage_words):
            out.append(Passage(doc.source, start, end, text[start:end]))
    _say_skipped(report.problems, stats, quiet)  # a binary or empty file, a bad jsonl line
    return out


def _say_skipped(problems: list[str], stats: dict, quiet: bool) -> None:
    """Count each skipped input in `stats` and, unless quiet, say it in one line."""
    for line in problems:
        stats["problems"].append(line)
        if not quiet:
            print(f"lmforge: {line}; skipped", file=sys.stderr)


def _read_manifest(directory: Path) -> dict[str, Any]:
    """The saved manifest, or {} when there is none or it cannot be read (then it is rebuilt)."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _read_passages(directory: Path) -> list[Passage]:
    try:
        with open(directory / PASSAGES, encoding="utf-8") as f:
            return [Passage(**json.loads(line)) for line in f]
    except (OSError, ValueError, TypeError):
        return []  # unreadable: every file is re-read


def _load_bm25(directory: Path) -> bm25s.BM25 | None:
    """The saved BM25 matrix, or None when it is missing or unreadable (then it is rebuilt)."""
    try:
        return bm25s.BM25.load(directory / BM25_DIR, allow_pickle=False, show_progress=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None
