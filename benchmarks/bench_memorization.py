"""Does dedup lower memorization of repeated text? Two short runs on one real corpus, audited:

    python -m benchmarks.bench_memorization [--minutes 2 | --steps N] [--copies 96] [--passages 4]
                                            [--chapters 40] [--out DIR]

The corpus: the first `chapters` chapters of Moby Dick (data/moby_dick.jsonl.xz) as documents,
with passages of Jane Austen (data/austen.jsonl.xz) planted among them at random places:
- `exact`: `passages` passages of 600-1,200 characters, each copied `copies` times verbatim (only
  passages that prep's hash split sends to train: all copies of one text go to the same side);
- `near`: as many other passages, each copied `copies` times with 2 words replaced per copy (a
  near-duplicate: exact dedup keeps every copy, MinHash near dedup finds them);
- `held-out`: twice as many other passages never in the corpus (the extraction baseline: same
  author and style, never seen).
Each corpus is prepared twice with the same `lmforge prep` settings (char tokenizer, canaries
8 per repeat count 1, 4, 16, seed 0) but for the stages: `whitespace` (no dedup) and
`whitespace,exact_dedup,near_dedup` (dedup). A 4x128 char GPT (block 128, 0.8 M parameters) trains
on each for `minutes` of wall time (train.max_minutes), or for `--steps` optimizer steps (the same
number in both runs, whatever the machine's load), then `lmforge audit` measures on each model:
extraction of the exact and near passages (windows of the original text: 50-token prefix, 50 greedy
tokens) against the held-out passages, extraction of the Moby Dick train split against its val split,
and canary exposure (5,000 sampled candidates of 10^6). Results: a table, and DIR/results.json.

The corpus needs a Moby Dick chapter in prep's val split (the baseline of the val loss and of the
corpus's extraction; the canaries need documents on both sides): with the shipped file that takes
`--chapters 5` or more, and fewer end, before any work, in one line saying so.
"""

from __future__ import annotations

import argparse
import json
import lzma
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import hardware_line
from lmforge import audit, prep, train
from lmforge.data.clean import Whitespace
from lmforge.data.prep import is_val
from lmforge.data.report import StageStats
from lmforge.errors import LmforgeError

ROOT = Path(__file__).resolve().parents[1]
VAL_FRACTION = 0.1  # prep's default data.val_fraction
RUNS = {"no dedup": "whitespace", "dedup": "whitespace,exact_dedup,near_dedup"}
MODEL = [
    "model.n_layer=4", "model.n_head=4", "model.n_embd=128", "model.block_size=128", "model.pos=rope",
    "train.batch_size=32", "train.lr=3e-3", "train.min_lr=3e-4", "train.warmup_steps=30",
    "train.max_steps=20000", "train.eval_interval=100000", "train.eval_batches=8",
    "train.checkpoint_interval=100000", "train.log_interval=100", "train.seed=0",
]  # fmt: skip


def _file(name: str) -> Path:
    return ROOT / "data" / f"{name}.jsonl.xz"


def _read(name: str) -> list[str]:
    with lzma.open(_file(name), "rt") as f:
        return [json.loads(line)["text"] for line in f]


def _clean(text: str) -> str:
    """The text as prep's whitespace stage leaves it (what the split hashes, the model trains on)."""
    return Whitespace().apply(text, StageStats())


def chapters_of(book: list[str], asked: int) -> list[str]:
    """The first `asked` chapters, if one of them goes to val; else one line saying what to give."""
    where = _file("moby_dick").relative_to(ROOT)
    if asked > len(book):
        raise SystemExit(
            f"bench_memorization: {where} has {len(book)} chapters: use --chapters {len(book)} or fewer"
        )
    first = next((i for i, text in enumerate(book) if is_val(_clean(text), VAL_FRACTION)), None)
    if first is None or first >= asked:
        need = f"use --chapters {first + 1} or more" if first is not None else "no chapter falls in it"
        which = (
            "the first chapter does not fall" if asked == 1 else f"none of the first {asked} chapters falls"
        )
        raise SystemExit(
            f"bench_memorization: {where}: {which} in prep's val split (text hash, val_fraction"
            f" {VAL_FRACTION}), which the val loss, the corpus's held-out extraction and the canaries"
            f" need: {need}"
        )
    return book[:asked]


def passages(n: int, size: int = 600) -> list[str]:
    """Up to n distinct ~size-character passages of Austen, cut at paragraph ends, one per chapter,
    each as the whitespace stage leaves it (what the model trains on is what the audit probes)."""
    out = []
    for chapter in _read("austen")[5:]:
        cut = ""
        for para in (p.strip() for p in chapter.split("\n\n") if len(p.strip()) > 40):  # no headings
            cut = f"{cut}\n\n{para}" if cut else para
            if len(cut) >= size:
                break
        if size <= len(cut) <= 2 * size:
            out.append(_clean(cut.replace("_", "")))  # _italics_ marks
        if len(out) == n:
            break
    return out


def choose(pool: list[str], n: int) -> tuple[list[str], list[str], list[str]] | None:
    """n exact, n near and 2n held-out passages from the pool, or None where it has too few. Exact
    copies share a text hash, so prep's split sends all of them to train or all to val: only
    passages whose hash puts them in train are planted exact."""
    exact = [p for p in pool if not is_val(p, VAL_FRACTION)][:n]
    rest = [p for p in pool if p not in exact]
    if len(exact) < n or len(rest) < 3 * n:
        return None
    return exact, rest[:n], rest[n : 3 * n]


def passage_sets(n: int) -> tuple[list[str], list[str], list[str]]:
    """choose() from the first 6n passages; too few is one line with the most --passages can be."""
    chosen = choose(passages(6 * n), n)
    if chosen is None:
        every = passages(1 << 30)
        most = max((m for m in range(len(every) // 4 + 1) if choose(every[: 6 * m], m)), default=0)
        raise SystemExit(
            f"bench_memorization: {_file('austen').relative_to(ROOT)}: {len(every)} passages of 600-1,200"
            f" characters, too few for --passages {n} (each needs an exact, a near and 2 held-out"
            f" ones): use --passages {most} or fewer"
        )
    return chosen


def near_copy(text: str, rng: random.Random) -> str:
    """The passage with 2 of its words replaced by other words of it (a near-duplicate)."""
    words = text.split(" ")
    for _ in range(2):
        words[rng.randrange(len(words))] = rng.choice(words)
    return " ".join(words)


def build(copies: int, n: int, chapters: int) -> dict[str, list[str]]:
    """The texts of each file: the corpus (chapters and planted copies, shuffled) and the passages."""
    rng = random.Random(0)
    base = chapters_of(_read("moby_dick"), chapters)
    exact, near, held = passage_sets(n)
    docs = (
        base
        + [p for p in exact for _ in range(copies)]
        + [near_copy(p, rng) for p in near for _ in range(copies)]
    )
    rng.shuffle(docs)
    return {"corpus": docs, "exact": exact, "near": near, "held-out": held}


def write(folder: Path, texts: dict[str, list[str]]) -> dict[str, Path]:
    names = {"corpus": "corpus", "exact": "exact", "near": "near", "held-out": "heldout"}
    files = {key: folder / f"{names[key]}.jsonl" for key in texts}
    for key, path in files.items():
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[key]))
    return files


def run(folder: Path, files: dict[str, Path], name: str, stages: str, budget: list[str]) -> dict[str, Any]:
    data, model = folder / f"data-{name.replace(' ', '-')}", folder / f"run-{name.replace(' ', '-')}"
    t0 = time.perf_counter()
    meta = prep(files["corpus"], data, "char", stages=stages, workers=2, quiet=True, overwrite=True,
                canaries=8, canary_repeats="1,4,16", canary_seed=0)  # fmt: skip
    t_prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = train(None, [f"data.input={data}", *MODEL, *budget], out=model, overwrite=True, quiet=True)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    common = {"samples": 120, "quiet": True}
    own = audit(model, data, **common)
    planted = {
        key: audit(model, files[key], heldout=files["held-out"], **common)["extraction"]
        for key in ("exact", "near")
    }
    t_audit = time.perf_counter() - t0
    return {
        "stages": stages,
        "documents": meta["documents"],
        "train_tokens": meta["tokens"]["train"],
        "steps": summary["steps"],
        "val_loss": summary.get("val_loss"),
        "tokens_per_s": round(summary["tokens_per_s"]),
        "seconds": {"prep": round(t_prep, 1), "train": round(t_train, 1), "audit": round(t_audit, 1)},
        "extraction": {"exact": planted["exact"], "near": planted["near"], "corpus": own["extraction"]},
        "exposure": own["exposure"]["per_repeat"],
        "exposure_method": own["exposure"]["method"],
        "summary": {k: v for k, v in summary.items() if isinstance(v, int | float | str)},
    }


def table(results: dict[str, Any]) -> str:
    names = list(results["runs"])
    rows = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def line(label: str, get: Any) -> None:
        rows.append(f"| {label} | " + " | ".join(get(results["runs"][n]) for n in names) + " |")

    def pct(part: dict[str, Any]) -> str:
        rate = f"{100 * part['rate']:.1f}%"
        return f"{rate} ({part['extracted']}/{part['samples']}, {part['mean_matched']:.1f} agree)"

    line("documents after prep", lambda r: f"{r['documents']:,}")
    line("train tokens (chars)", lambda r: f"{r['train_tokens']:,}")
    line("steps in the budget (tokens/s)", lambda r: f"{r['steps']:,} ({r['tokens_per_s']:,})")
    line("val loss (Moby Dick val)", lambda r: f"{r['val_loss']:.3f}" if r["val_loss"] else "-")
    line("extraction: exact-repeated passages", lambda r: pct(r["extraction"]["exact"]["train"]))
    line("extraction: near-repeated passages", lambda r: pct(r["extraction"]["near"]["train"]))
    line("extraction: held-out passages", lambda r: pct(r["extraction"]["exact"]["heldout"]))
    line("extraction: corpus train split", lambda r: pct(r["extraction"]["corpus"]["train"]))
    line("extraction: corpus val split", lambda r: pct(r["extraction"]["corpus"]["heldout"]))
    for i, rep in enumerate(results["runs"][names[0]]["exposure"]):
        line(
            f"canary exposure, {rep['repeats']} cop{'y' if rep['repeats'] == 1 else 'ies'} (mean / max bits)",
            lambda r, i=i: f"{r['exposure'][i]['mean']:.1f} / {r['exposure'][i]['max']:.1f}",
        )
    line("seconds: prep / train / audit", lambda r: " / ".join(f"{v:.0f}" for v in r["seconds"].values()))
    return "\n".join(rows)


def _at_least(low: float, kind: type = int) -> Any:
    """An argparse type: a number >= low (argparse names the option in its one-line error)."""

    def number(text: str) -> Any:
        value = kind(text)  # a ValueError: argparse's "invalid number value: 'x'"
        if value < low:
            raise argparse.ArgumentTypeError(f"{text}: must be at least {low}")
        return value

    return number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--minutes", type=_at_least(0.01, float), default=2.0, help="training budget of each run")
    add("--steps", type=_at_least(0), default=0, help="train this many steps instead of --minutes")
    add("--copies", type=_at_least(1), default=96, help="copies of each planted passage")
    add("--passages", type=_at_least(1), default=4, help="passages of each kind (exact, near)")
    add("--chapters", type=_at_least(1), default=40, help="chapters of Moby Dick in the corpus")
    add("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = parser.parse_args()
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: not a folder")
    try:
        bench(args)
    except LmforgeError as e:  # bad input lmforge found (e.g. an --out it will not write into)
        raise SystemExit(f"bench_memorization: {e}") from None


def bench(args: argparse.Namespace) -> None:
    texts = build(args.copies, args.passages, args.chapters)  # a bad choice is refused before any file
    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-memorization-"))
    folder.mkdir(parents=True, exist_ok=True)
    files = write(folder, texts)
    start = time.perf_counter()
    budget = [f"train.max_steps={args.steps}"] if args.steps else [f"train.max_minutes={args.minutes}"]
    results: dict[str, Any] = {"hardware": hardware_line(), "budget": budget, "copies": args.copies}
    print(results["hardware"], flush=True)  # first, as every benchmark does; again above the table
    results |= {"passages": args.passages, "chapters": args.chapters}
    results["runs"] = {name: run(folder, files, name, stages, budget) for name, stages in RUNS.items()}
    results["seconds"] = round(time.perf_counter() - start, 1)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(results["hardware"])
    print(table(results))
    print(f"total {results['seconds']:.0f} s; {folder / 'results.json'}")


if __name__ == "__main__":
    main()
