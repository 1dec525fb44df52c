"""The prep report: documents and bytes in and out of every stage, what each dropped or changed
and why, each problem with its file (and line), tokens, bytes per token, time and throughput.

One `Report` travels through a run; stages add to it; it prints as a table and saves as JSON
(`report.json` beside the shards).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import counted

MAX_LISTED = 200  # problems of one per-record kind named one by one; the rest are only counted
# the kinds a file can have one of per line, record or element; every other problem (a truncated,
# damaged, binary, UTF-16 or unreadable file) is named whatever the count, as it can lose a file
RECORD_KINDS = {
    "not valid JSON",
    "no string field",
    "empty text",
    "line too long",
    "lone surrogate",
    "record too long",
    "too many fields",
    "too few fields",
}


@dataclass
class StageStats:
    docs_in: int = 0
    bytes_in: int = 0
    docs_out: int = 0
    bytes_out: int = 0
    changed: int = 0
    """Documents kept but modified."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Why documents were removed: reason -> count."""
    edits: Counter[str] = field(default_factory=Counter)
    """What was replaced or removed inside kept documents: kind -> count (e.g. email -> 3)."""
    seconds: float = 0.0

    def merge(self, other: StageStats) -> None:
        self.docs_in += other.docs_in
        self.bytes_in += other.bytes_in
        self.docs_out += other.docs_out
        self.bytes_out += other.bytes_out
        self.changed += other.changed
        self.dropped.update(other.dropped)
        self.edits.update(other.edits)
        self.seconds += other.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "docs_in": self.docs_in,
            "bytes_in": self.bytes_in,
            "docs_out": self.docs_out,
            "bytes_out": self.bytes_out,
            "changed": self.changed,
            "dropped": dict(sorted(self.dropped.items())),
            "edits": dict(sorted(self.edits.items())),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class Report:
    stages: dict[str, StageStats] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    """`path[:line]: what` for each bad input: every file's, the first MAX_LISTED of each
    per-record kind."""
    problem_counts: Counter[str] = field(default_factory=Counter)
    files: list[str] = field(default_factory=list)
    """The problems of whole files (of no per-record kind), shown first."""
    _listed: Counter[str] = field(default_factory=Counter, repr=False)
    """Problems named, by kind."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Tokens, bytes per token, split, timings: filled in by the pipeline."""

    def stage(self, name: str) -> StageStats:
        return self.stages.setdefault(name, StageStats())

    def problem(self, where: str, kind: str, detail: str = "", record: bool | None = None) -> None:
        """Count and (see `problems`) name a bad input; `record`: whether it is one record's
        (a CSV row's bad bytes), where its kind does not say (default: kind in RECORD_KINDS)."""
        self.problem_counts[kind] += 1
        line = f"{where}: {kind}" + (f" ({detail})" if detail else "")
        if not (kind in RECORD_KINDS if record is None else record):
            self.files.append(line)
        elif self._listed[kind] >= MAX_LISTED:
            return
        self._listed[kind] += 1
        self.problems.append(line)

    def first(self, shown: int) -> list[str]:
        """The first `shown` problems named, whole files' first (a truncated file after 300 bad
        lines was not among them)."""
        files = self.files[:shown]
        taken = set(files)
        return files + [p for p in self.problems if p not in taken][: shown - len(files)]

    def skipped(self, shown: int = 5) -> list[str]:
        """Warning lines for the inputs skipped (or repaired and kept: invalid UTF-8, a lone
        surrogate; "skipped" until 2026-12-07, though eval and audit scored them): the first
        `shown`, then, when there were more, one line with the total by kind (a long list would
        bury the result)."""
        lines = [f"{'repaired' if _repaired(p) else 'skipped'} {p}" for p in self.first(shown)]
        total = sum(self.problem_counts.values())
        if total > shown:
            kinds = ", ".join(f"{n:,} {kind}" for kind, n in sorted(self.problem_counts.items()))
            what = "skipped or repaired" if any(k in REPAIRED for k in self.problem_counts) else "skipped"
            lines.append(f"{what} {total:,} inputs in all ({kinds}); the first {shown} are above")
        return lines

    def merge_stages(self, stages: dict[str, StageStats]) -> None:
        for name, stats in stages.items():
            self.stage(name).merge(stats)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stages": {name: s.to_dict() for name, s in self.stages.items()},
            "problems": dict(sorted(self.problem_counts.items())),
            "problem_list": self.problems,
            **self.extra,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        """One line: bad inputs and drops by reason."""
        problems = ", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts.items()))
        dropped = ", ".join(
            f"{name}: {why} {count}"
            for name, s in self.stages.items()
            for why, count in sorted(s.dropped.items())
        )
        read = self.stages["read"].docs_out if "read" in self.stages else 0
        return (
            f"{counted(read, 'document')} read; bad input: {problems or 'none'}; dropped: {dropped or 'none'}"
        )

    def format(self) -> str:
        """A human-readable table of the run."""
        head = f"{'stage':<14}{'docs in':>10}{'docs out':>10}{'MB in':>10}{'MB out':>10}{'s':>8}"
        rows = [head + "  dropped / changed"]
        for name, s in self.stages.items():
            why = ", ".join(f"{k} {v}" for k, v in sorted(s.dropped.items()))
            edits = ", ".join(f"{k} {v}" for k, v in sorted(s.edits.items()))
            notes = "; ".join(x for x in (why, f"changed {s.changed}" if s.changed else "", edits) if x)
            rows.append(
                f"{name:<14}{s.docs_in:>10,}{s.docs_out:>10,}"
                f"{s.bytes_in / 1e6:>10.2f}{s.bytes_out / 1e6:>10.2f}{s.seconds:>8.1f}  {notes}"
            )
        if self.problem_counts:
            total = sum(self.problem_counts.values())
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.problem_counts.items()))
            rows.append(f"bad input skipped or repaired: {total} ({kinds})")
            rows += [f"  {p}" for p in self.first(20)]
            listed, counted_only = len(self.problems), total - len(self.problems)
            if listed > 20:
                rows.append(f"  ... {listed - 20:,} more named in report.json")
            if counted_only:  # over MAX_LISTED of a kind
                rows.append(
                    f"  ... and {counted_only:,} only counted (after the first {MAX_LISTED} of a kind)"
                )
        for key, value in self.extra.items():
            if not isinstance(value, dict | list):
                rows.append(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")
        return "\n".join(rows)


REPAIRED = {"invalid UTF-8", "lone surrogate"}  # kinds whose text is kept, repaired (U+FFFD), not skipped


def _repaired(problem: str) -> bool:
    """Whether a `path[:line]: kind (detail)` line is of a repaired kind."""
    return any(f": {kind}" in problem for kind in REPAIRED)
