"""PII scrubbing: recall and precision per kind on data/pii-eval.jsonl.xz, false positives per
100,000 words of the untouched shipped text, and words/s, side by side with the scrubber lmforge
had before (its patterns, copied below as `Before`).

    python -m benchmarks.bench_pii [--ip-policy all|public] [--rounds 3] [--show 10]

An item counts as found when detections of its kind cover at least 90% of its characters
(`removed` also accepts a detection of another kind: the item is gone either way). A detection
is a true positive when it overlaps a planted item of its kind; in a `trap` document (dates,
ISBNs, versions... planted as negatives) or in the clean text every detection is a false positive.
Build the set first with `python data/build_pii_eval.py` (it is shipped).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import json
import lzma
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from datatrove.pipeline.formatters.pii import PIIFormatter

from benchmarks.common import hardware_line, interleaved
from lmforge.data.pii import KINDS, PII, Span
from lmforge.data.report import StageStats

ROOT = Path(__file__).resolve().parents[1]
EVAL = ROOT / "data" / "pii-eval.jsonl.xz"


class Datatrove:
    """datatrove's `PIIFormatter` (e-mails and IPv4 addresses, public only by default): its two
    `PIIReplacer`s, whose patterns and validator `find` applies to give spans."""

    def __init__(self, public_only: bool = True) -> None:
        self.formatter = PIIFormatter(only_remove_public_ips=public_only)
        self.replacers = [("email", self.formatter.emails_replacer), ("ip", self.formatter.ip_replacer)]

    def find(self, text: str) -> list[Span]:
        taken: list[Span] = []
        for kind, r in self.replacers:
            for m in r.regex.finditer(text):
                valid = r.validator is None or r.validator(m.group())
                if valid and not any(m.start() < e and s < m.end() for s, e, _ in taken):
                    taken.append((m.start(), m.end(), kind))
        return sorted(taken)

    def scrub(self, text: str) -> str:
        return self.formatter.format(text)


class Before:
    """lmforge's PII stage before issue 17 (commit b67a491): hand-written patterns applied one
    kind after another; `find` gives the spans of that order on the original text."""

    EMAIL = r"\b[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}\b"  # noqa: E501
    IPV4 = r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"
    IPV6 = r"\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b"
    CARD = r"\b\d(?:[ -]?\d){12,18}\b"
    PHONE = r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){2,4}(?!\w)"

    def __init__(self) -> None:
        def luhn(s: str) -> bool:
            d = [int(c) for c in s if c.isdigit()]
            total = sum(x if i % 2 == 0 else (x * 2 - 9 if x > 4 else x * 2) for i, x in enumerate(d[::-1]))
            return 13 <= len(d) <= 19 and total % 10 == 0

        def public(s: str) -> bool:
            try:
                return ipaddress.ip_address(s).is_global
            except ValueError:
                return False

        self.kinds = [
            ("email", re.compile(self.EMAIL), lambda s: True),
            ("card", re.compile(self.CARD), luhn),
            ("ip", re.compile(f"{self.IPV4}|{self.IPV6}"), public),
            ("phone", re.compile(self.PHONE), lambda s: 9 <= sum(c.isdigit() for c in s) <= 15),
        ]

    def find(self, text: str) -> list[Span]:
        taken: list[Span] = []
        for kind, pattern, ok in self.kinds:
            for m in pattern.finditer(text):
                if ok(m.group()) and not any(m.start() < e and s < m.end() for s, e, _ in taken):
                    taken.append((m.start(), m.end(), kind))
        return sorted(taken)

    def scrub(self, text: str) -> str:
        for kind, pattern, ok in self.kinds:
            text = pattern.sub(
                lambda m, ok=ok, k=kind: f"<{k.upper()}>" if ok(m.group()) else m.group(), text
            )
        return text


def builder() -> Any:
    """data/build_pii_eval.py as a module (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_pii_eval", ROOT / "data" / "build_pii_eval.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _covered(item: dict, spans: list[Span], kind: str | None) -> bool:
    chars = set()
    for s, e, k in spans:
        if kind is None or k == kind:
            chars.update(range(max(s, item["start"]), min(e, item["end"])))
    return len(chars) >= 0.9 * (item["end"] - item["start"])


def evaluate(scrubber: Any, records: list[dict], show: int) -> dict[str, Any]:
    found, removed, total = Counter(), Counter(), Counter()
    tp, fp = Counter(), Counter()
    missed: dict[str, list[str]] = defaultdict(list)
    trap_hits: Counter[str] = Counter()
    trap_total: Counter[str] = Counter()
    false: list[str] = []
    for r in records:
        spans = scrubber.find(r["text"])
        for item in r["items"]:
            kind = item["kind"]
            if kind == "trap":
                trap_total[item["format"]] += 1
                if any(s < item["end"] and item["start"] < e for s, e, _ in spans):
                    trap_hits[item["format"]] += 1
                continue
            total[kind] += 1
            found[kind] += _covered(item, spans, kind)
            removed[kind] += _covered(item, spans, None)
            if not _covered(item, spans, kind) and len(missed[kind]) < show:
                missed[kind].append(
                    f"{r['text'][item['start'] : item['end']]!r} ({item['format']} {item.get('locale', '')})"
                )
        for s, e, k in spans:
            hit = any(i["kind"] == k and s < i["end"] and i["start"] < e for i in r["items"])
            (tp if hit else fp)[k] += 1
            if not hit and len(false) < show:
                false.append(f"{k}: {r['text'][max(0, s - 25) : e + 25]!r}")
    return {
        "recall": {k: found[k] / total[k] for k in total},
        "removed": {k: removed[k] / total[k] for k in total},
        "items": dict(total),
        "precision": {k: tp[k] / (tp[k] + fp[k]) if tp[k] + fp[k] else None for k in KINDS},
        "false_positives": dict(fp),
        "traps_hit": sum(trap_hits.values()),
        "traps": sum(trap_total.values()),
        "trap_formats_hit": dict(trap_hits),
        "missed": dict(missed),
        "false_examples": false,
    }


def clean_text(scrubber: Any, docs: list[tuple[str, str]], known: dict, show: int) -> dict[str, Any]:
    """Detections in the untouched shipped text: those of `known` (its own e-mail addresses...)
    are counted apart; every other one is a false positive."""
    words = sum(len(t.split()) for _, t in docs)
    hits: Counter[str] = Counter()
    real: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    examples = []
    for source, text in docs:
        for s, e, k in scrubber.find(text):
            if text[s:e] in known.get(k, ()):
                real[k] += 1
                continue
            hits[k] += 1
            by_source[source] += 1
            if len(examples) < show:
                examples.append(f"{source} {k}: {text[max(0, s - 30) : e + 30]!r}")
    total = sum(hits.values())
    return {
        "words": words,
        "false_positives": dict(hits),
        "known_found": dict(real),
        "by_source": dict(by_source),
        "per_100k_words": total / words * 1e5,
        "examples": examples,
    }


def speed(scrubbers: dict[str, Any], docs: list[tuple[str, str]], rounds: int) -> dict[str, float]:
    words = sum(len(t.split()) for _, t in docs)

    def run(fn: Any) -> float:
        start = time.perf_counter()
        for _, text in docs:
            fn(text)
        return words / (time.perf_counter() - start)

    runs = {name: (lambda f=fn: run(f)) for name, fn in scrubbers.items()}
    return interleaved(runs, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ip-policy", default="all", choices=["all", "public"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--show", type=int, default=10, help="misses and false positives printed per list")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    with lzma.open(EVAL, "rt", encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    if args.ip_policy == "public":  # private addresses are then not to be found
        for r in records:
            r["items"] = [i for i in r["items"] if i.get("scope") != "private"]
    print(hardware_line(), flush=True)  # first, as every benchmark does (again above the table)
    build = builder()
    docs, known = list(build.clean_documents()), build.KNOWN_IN_CLEAN
    after, before = PII(ip_policy=args.ip_policy), Before()
    peer = Datatrove(public_only=args.ip_policy == "public")
    results: dict[str, Any] = {"hardware": hardware_line(), "ip_policy": args.ip_policy}
    for name, scrubber in (("before", before), ("datatrove", peer), ("after", after)):
        results[name] = {
            "labelled": evaluate(scrubber, records, args.show),
            "clean": clean_text(scrubber, docs, known, args.show),
        }
    stats = StageStats()
    scrubbers = {"before": before.scrub, "datatrove": peer.scrub, "after": lambda t: after.apply(t, stats)}
    results["words_per_s"] = speed(scrubbers, docs, args.rounds)
    # The labelled set: dense in digits and personal data, where the checks run most.
    dense = [("eval", r["text"]) for r in records]
    results["words_per_s_labelled"] = speed(scrubbers, dense, args.rounds)
    report(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def report(results: dict[str, Any]) -> None:
    print(f"{results['hardware']}; ip policy {results['ip_policy']}")
    names = ("before", "datatrove", "after")
    labelled = {n: results[n]["labelled"] for n in names}
    print(
        f"{'kind':<7}{'items':>7}  recall: {'  '.join(f'{n:>9}' for n in names)}   precision: "
        f"{'  '.join(f'{n:>9}' for n in names)}   removed (after)"
    )
    for kind in KINDS:
        recall = "  ".join(f"{pct(labelled[n]['recall'].get(kind)):>9}" for n in names)
        precision = "  ".join(f"{pct(labelled[n]['precision'].get(kind)):>9}" for n in names)
        removed = pct(labelled["after"]["removed"].get(kind))
        print(
            f"{kind:<7}{labelled['after']['items'].get(kind, 0):>7}{' ' * 10}{recall}{' ' * 14}{precision}"
            f"   {removed}"
        )
    for name in names:
        lab, clean = labelled[name], results[name]["clean"]
        print(f"\n{name}: traps touched {lab['traps_hit']}/{lab['traps']} {lab['trap_formats_hit']}")
        print(
            f"{name}: clean text {clean['words']:,} words, false positives {clean['false_positives']} "
            f"= {clean['per_100k_words']:.2f} per 100,000 words; by source {clean['by_source']}; "
            f"its own addresses found {clean['known_found']}"
        )
        for line in clean["examples"]:
            print("   ", line)
        if name == "after":
            for kind, misses in lab["missed"].items():
                print(f"  missed {kind}: {'; '.join(misses)}")
            for line in lab["false_examples"]:
                print("   false:", line)
    for key, what in (("words_per_s", "the clean text"), ("words_per_s_labelled", "the labelled set")):
        w = results[key]
        rates = ", ".join(f"{n} {w[n]:,.0f}" for n in names)
        print(f"words/s on {what} (median of rounds): {rates}; after/before {w['after'] / w['before']:.2f}x")


if __name__ == "__main__":
    main()
