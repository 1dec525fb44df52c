"""The cleaning pipeline: configured stages, in their configured order, over a document stream,
on every core, with bounded memory.

Stages are cut into groups: the per-document stages up to a corpus-level one (exact_dedup,
near_dedup) run in a worker process, which also computes that corpus stage's key (a digest, a
MinHash signature); the keep/drop decision is taken in the main process, in input order. Each
group keeps at most 2 x workers batches in flight, so memory does not grow with the corpus.
`boilerplate` needs a counting pass over every document: the stages before it run first, their
output goes to a temporary file while its lines are counted, and the rest runs from that file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import IO, Any

from lmforge.config import changed_keys
from lmforge.data import clean, dedup, pii
from lmforge.data.report import Report, StageStats
from lmforge.errors import LmforgeError
from lmforge.processes import die_with_parent

ALL_STAGES = [
    "normalize",
    "markup",
    "whitespace",
    "boilerplate",
    "length",
    "quality",
    "repetition",
    "exact_dedup",
    "near_dedup",
    "pii",
    "stopwords",
]
CORPUS_STAGES = {"exact_dedup", "near_dedup"}
BATCH_BYTES = 1 << 20
BATCH_DOCS = 1024


def parse_stages(stages: str | list[str]) -> list[str]:
    names = [s.strip() for s in stages.split(",")] if isinstance(stages, str) else list(stages)
    if not any(names):  # an unset shell variable (`--stages "$STAGES"`) turned off PII scrubbing too
        raise LmforgeError(
            f"prep.stages={stages!r} names no stage: give the stages to run, or 'none' to run none"
        )
    if "none" in names and len([n for n in names if n]) > 1:  # `none,pii`: which was meant?
        raise LmforgeError(
            f"prep.stages={stages!r}: 'none' with other stages; give 'none' alone or the stages"
        )
    names = [n for n in names if n and n != "none"]
    for name in names:
        if name not in ALL_STAGES:
            raise LmforgeError(f"prep.stages: unknown stage {name!r} (known: {', '.join(ALL_STAGES)})")
    if len(set(names)) != len(names):
        raise LmforgeError(f"prep.stages: a stage is listed twice in {','.join(names)}")
    return names


# The [prep] keys each stage reads (build_stage): set for a stage that does not run, they would
# change nothing, so check_stage_options refuses them.
STAGE_OPTIONS = {
    "markup": ("html_extractor", "trafilatura_timeout"),
    "length": ("min_chars", "max_chars"),
    "quality": ("quality_min_words",),
    "stopwords": ("stopwords_file",),
    "pii": ("pii_kinds", "pii_ip", "pii_phone_regions"),
    "near_dedup": ("near_dup_bands", "near_dup_rows"),
    "boilerplate": ("boilerplate_min_docs", "boilerplate_fraction", "boilerplate_min_chars"),
}


def check_stage_options(names: list[str], options: Any) -> None:
    """One line for a [prep] key given another value than its default for a stage not in `names`
    (`options`: the PrepConfig): `--prep.min_chars=200` without the length stage dropped nothing."""
    for stage, keys in STAGE_OPTIONS.items():
        changed = [] if stage in names else changed_keys(options, keys)
        if changed:
            key, value = changed[0]
            raise LmforgeError(
                f"prep.{key}={value!r} is for the {stage} stage, which prep.stages does not run"
                f" ({','.join(names) or 'none'}): add {stage} to the stages, or leave the key out"
            )


def _stopwords(file: str) -> list[str]:
    """prep.stopwords_file's words (whitespace-separated, UTF-8), or one line naming the key."""
    try:
        words = Path(file).read_text(encoding="utf-8").split()
    except (OSError, UnicodeDecodeError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise LmforgeError(f"prep.stopwords_file={file!r}: cannot read it ({why})") from None
    if not words:  # the English list would be used in its place, unsaid
        raise LmforgeError(f"prep.stopwords_file={file!r}: holds no words")
    odd = clean.unmatchable(words)
    if odd:
        raise LmforgeError(
            f"prep.stopwords_file={file!r}: {odd[0]!r} can never match a word (letters and digits, with"
            f" ' - . inside){f' nor can {len(odd) - 1} more' if len(odd) > 1 else ''}: remove them"
        )
    return words


def build_stage(name: str, options: dict[str, Any]) -> Any:
    """One stage object from its name and the [prep] options."""
    o = options
    if name == "normalize":
        return clean.Normalize()
    if name == "markup":
        return clean.Markup(o["html_extractor"], o["trafilatura_timeout"])
    if name == "whitespace":
        return clean.Whitespace()
    if name == "length":
        return clean.Length(o["min_chars"], o["max_chars"])
    if name == "quality":
        return clean.Quality(o["quality_min_words"])
    if name == "repetition":
        return clean.Repetition()
    if name == "stopwords":
        return clean.Stopwords(_stopwords(o["stopwords_file"]) if o["stopwords_file"] else None)
    if name == "pii":
        return pii.PII(o["pii_kinds"], o["pii_ip"], o["pii_phone_regions"])
    if name == "exact_dedup":
        return dedup.ExactDedup()
    if name == "near_dedup":
        return dedup.NearDedup(o["near_dup_bands"], o["near_dup_rows"])
    if name == "boilerplate":
        return dedup.Boilerplate(
            o["boilerplate_min_docs"], o["boilerplate_fraction"], o["boilerplate_min_chars"]
        )
    raise LmforgeError(f"unknown stage {name!r}")


Group = tuple[list[Any], Any]  # (per-document stages, corpus stage or None)
_GROUPS: list[Group] = []  # set before the pool forks; read by the workers
_OBSERVER: dict[str, Any] = {}


def _group(stages: list[Any]) -> list[Group]:
    groups: list[Group] = []
    current: list[Any] = []
    for stage in stages:
        if stage.name in CORPUS_STAGES:
            groups.append((current, stage))
            current = []
        else:
            current.append(stage)
    if current or not groups:
        groups.append((current, None))
    return groups


def _work(index: int, texts: list[str]) -> tuple[list[str | None], list[Any], dict[str, StageStats], Any]:
    """Worker: run group `index` on a batch. Returns texts (None = dropped), corpus-stage keys,
    per-stage stats and, after the last group of a first segment, the boilerplate line keys."""
    per_doc, corpus = _GROUPS[index]
    stats = {stage.name: StageStats() for stage in per_doc}
    out: list[str | None] = []
    for text in texts:
        for stage in per_doc:
            s = stats[stage.name]
            start = time.perf_counter()
            size = len(text.encode("utf-8"))
            s.docs_in, s.bytes_in = s.docs_in + 1, s.bytes_in + size
            new = stage.apply(text, s)
            if new is not None and not new.strip():
                s.dropped["empty after cleaning"] += 1
                new = None
            s.seconds += time.perf_counter() - start
            if new is None:
                text = None  # type: ignore[assignment]
                break
            if new != text:
                s.changed += 1
                size = len(new.encode("utf-8"))
            s.docs_out, s.bytes_out = s.docs_out + 1, s.bytes_out + size
            text = new
        out.append(text)
    keys = []
    if corpus is not None:  # the corpus stage's expensive half (digests, signatures) runs here
        start = time.perf_counter()
        keys = [corpus.key(t) if t is not None else None for t in out]
        stats[corpus.name] = StageStats(seconds=time.perf_counter() - start)
    observe = None
    if index == len(_GROUPS) - 1 and "boilerplate" in _OBSERVER:
        bp = _OBSERVER["boilerplate"]
        observe = [bp.line_keys(t) if t is not None else None for t in out]
    return out, keys, stats, observe


def _batches(texts: Iterable[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES or len(batch) >= BATCH_DOCS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _work_to_file(index: int, texts: list[str], folder: str, number: int) -> str:
    """Worker: `_work`'s result, written to a file of prep's temporary folder; returns its path.
    A large result sent through the pool's pipe could be cut by a kill (the OOM killer) in the
    middle, and the pool's result thread then waited for its rest forever. A path is sent in one
    write of fewer than PIPE_BUF bytes, which a kill cannot cut."""
    path = os.path.join(folder, f"result-{index}-{number}.pickle")
    with open(path, "wb") as f:
        pickle.dump(_work(index, texts), f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _result(future: Future) -> Any:
    path = future.result()
    with open(path, "rb") as f:  # written by prep's own worker, above, a moment ago
        result = pickle.load(f)
    os.unlink(path)
    return result


def _bounded(
    pool: ProcessPoolExecutor, index: int, batches: Iterator[list[str]], pending: int, folder: Path
) -> Iterator[Any]:
    """Like pool.map, but with at most `pending` batches in flight (map reads its whole input). A
    worker that died breaks the pool: the next submit or result says so, whichever comes first."""
    queue: deque[Future] = deque()
    try:
        for number, batch in enumerate(batches):
            queue.append(pool.submit(_work_to_file, index, batch, str(folder), number))
            if len(queue) >= pending:
                yield _result(queue.popleft())
        while queue:
            yield _result(queue.popleft())
    except BrokenProcessPool:
        raise LmforgeError(
            "prep: a cleaning worker died (killed, perhaps by the system when memory ran out); "
            "nothing was written: run it again, with fewer --prep.workers if memory is short"
        ) from None


def _run_groups(
    pool: Any,
    groups: list[Group],
    batches: Iterator[list[str]],
    report: Report,
    pending: int,
    observe: Callable,
    folder: Path,
) -> Iterator[list[str]]:
    stream = batches
    for index, (_, corpus) in enumerate(groups):
        results = _bounded(pool, index, stream, pending, folder)
        stream = _decide(results, corpus, report, observe, index == len(groups) - 1)
    return stream


def _decide(
    results: Iterator[Any], corpus: Any, report: Report, observe: Callable, last: bool
) -> Iterator[list[str]]:
    """Main process: merge the workers' stats, apply the corpus stage's decisions in order."""
    for texts, keys, stats, observed in results:
        report.merge_stages(stats)
        alive = [t is not None for t in texts]
        if corpus is not None:
            s = report.stage(corpus.name)
            start = time.perf_counter()
            for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
                if text is None:
                    continue
                size = len(text.encode("utf-8"))
                s.docs_in, s.bytes_in = s.docs_in + 1, s.bytes_in + size
                if corpus.keep(key, s):
                    s.docs_out, s.bytes_out = s.docs_out + 1, s.bytes_out + size
                else:
                    alive[i] = False
            s.seconds += time.perf_counter() - start
        kept = [t for t, a in zip(texts, alive, strict=True) if a]
        if last and observed is not None:  # only the documents that go on count their lines
            observe([k for k, a in zip(observed, alive, strict=True) if a])
        if kept:
            yield kept


def _write_doc(f: IO[bytes], text: str) -> None:
    data = text.encode("utf-8")
    f.write(struct.pack("<Q", len(data)))
    f.write(data)


def read_docs(path: Path) -> Iterator[str]:
    """Documents of a file written by `write_docs` (length-prefixed UTF-8)."""
    with open(path, "rb", buffering=1 << 20) as f:
        while header := f.read(8):
            (size,) = struct.unpack("<Q", header)
            yield f.read(size).decode("utf-8")


def clean_documents(
    texts: Iterable[str],
    stage_names: list[str],
    options: dict[str, Any],
    report: Report,
    tmp: Path,
    workers: int = 0,
) -> Iterator[str]:
    """Run the configured stages over `texts`, yielding the cleaned documents in input order."""
    global _GROUPS
    workers = workers or os.cpu_count() or 1
    stages = [build_stage(name, options) for name in stage_names]
    for stage in stages:
        report.stage(stage.name)  # the report lists stages in their configured order
    cut = stage_names.index("boilerplate") if "boilerplate" in stage_names else None
    segments = [stages] if cut is None else [stages[:cut], stages[cut:]]
    ctx = mp.get_context("fork")  # workers inherit the stages (and the frozen boilerplate sketch)
    source: Iterable[str] = texts
    for number, segment in enumerate(segments):
        first_of_two = len(segments) == 2 and number == 0
        _GROUPS = _group(segment)
        _OBSERVER.clear()
        if first_of_two:
            _OBSERVER["boilerplate"] = stages[cut]  # type: ignore[index]
        # Not mp.Pool: its terminate (on Ctrl-C) can hang for good when a worker holds the result
        # pipe's lock, blocked writing a batch that its stopped result thread no longer reads; and
        # a worker killed by the system left its batch's result waited for forever.
        pool = ProcessPoolExecutor(workers, ctx, initializer=_die_with_parent, initargs=(os.getpid(),))
        try:
            stream = _run_groups(pool, _GROUPS, _batches(source), report, 2 * workers, _count_lines, tmp)
            if not first_of_two:
                for batch in stream:
                    yield from batch
                continue
            spill = tmp / "before_boilerplate.bin"
            with open(spill, "wb", buffering=1 << 20) as f:
                for batch in stream:
                    for text in batch:
                        _write_doc(f, text)
        finally:  # on Ctrl-C, the batches the workers hold finish; the queued ones are dropped
            pool.shutdown(cancel_futures=True)
        limit = stages[cut].freeze()  # type: ignore[index]
        report.extra["boilerplate_min_docs"] = limit
        source = read_docs(spill)


def _die_with_parent(parent: int) -> None:
    """A worker ends when prep does (processes.py): after a kill -9 of prep, orphaned workers would
    go on cleaning, and print broken-pipe tracebacks, into a folder the next prep removes. It leaves
    Ctrl-C to prep, which ends the pool: a terminal's Ctrl-C reaches every process of the group, and
    each worker printed its KeyboardInterrupt traceback above prep's `lmforge: interrupted`."""
    die_with_parent(parent, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # a forked worker inherits the CLI's SIGTERM handler (processes.signals_stop), which would turn
    # the pool's terminate() of a broken pool into an exception inside a batch: prep then hung
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _count_lines(documents: list[tuple[int, Any]]) -> None:
    _OBSERVER["boilerplate"].count(documents)


def write_docs(path: Path, texts: Iterable[str]) -> tuple[int, int]:
    """Write documents length-prefixed; returns (documents, bytes)."""
    n = size = 0
    with open(path, "wb", buffering=1 << 20) as f:
        for text in texts:
            _write_doc(f, text)
            n, size = n + 1, size + len(text.encode("utf-8"))
    return n, size
