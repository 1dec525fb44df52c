"""Extractive QA on the held-out reading-comprehension split: SQuAD EM/F1 of QA models beside the
SQuAD paper's sliding-window baseline, by kind of question, and a few answers of the first model.

    python -m benchmarks.bench_qa RUN_OR_SCORES [...] [--baseline] [--data data/qa-test.json.xz]
        [--examples 6] [--markdown]
    python -m benchmarks.bench_qa --baseline-words 1,2,3,4,6,8 --data data/qa-train.json.xz

Each argument is a model/run directory, scored now by `lmforge.eval_qa` (what `lmforge eval-qa`
runs), or the JSON that `lmforge eval-qa ... --out PREDICTIONS > SCORES.json` wrote, read back
(its predictions file gives the by-kind columns). `--baseline` adds the sliding-window baseline
(`eval_qa(baseline="sliding-window")`), scored now; `--baseline-words 1,2,4` scores it with each
longest candidate instead (how its default was chosen, on the train split). Kinds are the article
title's prefix in data/qa-*.json.xz: `cloze` (a name blanked from the next paragraph) and `cast`
(Shakespeare's cast lists). The examples are answered by `pipeline("question-answering")`, the
null answer allowed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import hardware_line
from lmforge import eval_qa, pipeline
from lmforge.data.qa_squad import load_squad_json, read_squad
from lmforge.inference.qa_baseline import sliding_window_answer
from lmforge.inference.squad_metric import squad_scores


def kinds(raw: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The data set cut by kind of question ("cloze", "cast"): SQuAD JSON each."""
    out: dict[str, dict[str, Any]] = {}
    for article in raw["data"]:
        kind = str(article.get("title", "")).split(":")[0] or "all"
        out.setdefault(kind, {**raw, "data": []})["data"].append(article)
    return out


def score(item: str, data: Path, tmp: Path) -> dict[str, Any]:
    """eval-qa's JSON for a model directory (scored now), the baseline, or a saved scores file."""
    if item == "baseline":
        return eval_qa(data=data, baseline="sliding-window", out=tmp / "baseline.json")
    path = Path(item)
    if path.suffix == ".json" and path.is_file():
        return json.loads(path.read_text())
    return eval_qa(path, data, out=tmp / f"{len(list(tmp.iterdir()))}.json")


def row(scores: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    out = {"model": scores["model"], "EM": scores["exact"], "F1": scores["f1"],
           "HasAns F1": scores.get("HasAns_f1"), "NoAns EM": scores.get("NoAns_exact")}  # fmt: skip
    if "predictions" in scores:
        predictions = json.loads(Path(scores["predictions"]).read_text())
        for kind, part in kinds(raw).items():
            s = squad_scores(predictions, part, version=scores["version"])
            out[f"{kind} EM"], out[f"{kind} F1"] = s["exact"], s["f1"]
    summary = Path(scores["model"]).parent / "summary.json"  # a run's model/: how it was trained
    if summary.is_file():
        s = json.loads(summary.read_text())
        out["steps"], out["best step"] = s.get("steps"), s.get("best_step")
        out["train min"] = round(s.get("wall_s", 0) / 60, 1)
    return out


def show(rows: list[dict[str, Any]], markdown: bool) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))

    def cell(v: Any) -> str:
        return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)

    if markdown:
        print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
        for r in rows:
            print("| " + " | ".join(cell(r.get(c)) for c in columns) + " |")
        return
    width = max(len(str(r["model"])) for r in rows)
    print(f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in columns[1:]))
    for r in rows:
        print(f"{r['model']:<{width}}  " + "  ".join(f"{cell(r.get(c)):>9}" for c in columns[1:]))


def examples(model: str, data: Path, n: int) -> None:
    qa = pipeline("question-answering", model=model, handle_impossible_answer=True)
    questions = read_squad(data, keep_unanswered=True).examples
    print(
        f"--- {n} answers of {model} (pipeline('question-answering'), every {len(questions) // n}th question)"
    )
    for e in questions[:: max(1, len(questions) // n)][:n]:
        answer = qa(question=e.question, context=e.context)
        gold = " | ".join(sorted({text for text, _ in e.answers})) or "(no answer in the context)"
        question = e.question if len(e.question) <= 110 else e.question[:107] + "..."
        said = answer["answer"] or "(none)"
        print(f"Q: {question}\n   answer: {said!r} ({answer['score']:.2f})  gold: {gold!r}")


def baseline_words(data: Path, raw: dict[str, Any], sizes: list[int]) -> None:
    """The baseline's EM/F1 with candidates of at most each of `sizes` words."""
    questions = read_squad(data, keep_unanswered=True).examples
    print(f"--- {data}: the sliding-window baseline by its longest candidate (words)")
    for size in sizes:
        predictions = {e.id: sliding_window_answer(e.question, e.context, size) for e in questions}
        s = squad_scores(predictions, raw)
        print(f"max_words {size:>2}: EM {s['exact']:5.1f}  F1 {s['f1']:5.1f}  ({s['total']} questions)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("items", nargs="*", help="model/run directories or eval-qa JSON files")
    parser.add_argument("--baseline", action="store_true", help="add the sliding-window baseline")
    parser.add_argument("--data", type=Path, default=Path("data/qa-test.json.xz"))
    parser.add_argument("--examples", type=int, default=0, help="answers of the first model to show")
    parser.add_argument("--markdown", action="store_true", help="a markdown table (for the docs)")
    parser.add_argument("--baseline-words", help="comma-separated longest candidates to compare")
    args = parser.parse_args()
    raw = load_squad_json(args.data)
    if args.baseline_words:
        return baseline_words(args.data, raw, [int(n) for n in args.baseline_words.split(",")])
    items = [*args.items, *(["baseline"] if args.baseline else [])]
    if not items:
        parser.error("give model/run directories, eval-qa JSON files or --baseline")
    with tempfile.TemporaryDirectory() as tmp:
        results = [score(item, args.data, Path(tmp)) for item in items]
        rows = [row(r, raw) for r in results]
    print(f"--- {args.data}: SQuAD {results[0]['version']} EM/F1 (percent) | {hardware_line()}")
    show(rows, args.markdown)
    models = [r["model"] for r in results if not r["model"].endswith(" baseline")]
    if args.examples and models:
        examples(models[0], args.data, args.examples)


if __name__ == "__main__":
    main()
