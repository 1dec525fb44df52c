"""How each verb's result prints on the command line, and the hooks that run before a verb
(cli_verbs.py's table names them)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lmforge import malloc
from lmforge.errors import LmforgeError, counted


def show_prep(meta: dict[str, Any], _: dict[str, Any]) -> None:
    t = meta["tokens"]
    print(
        f"{meta['out']}: {counted(meta['documents'], 'document')} ->"
        f" {t['train']:,} train / {t['val']:,} val tokens,"
        f" vocab {meta['vocab_size']} ({meta['tokenizer']})"
    )


def show_pairs(meta: dict[str, Any], kw: dict[str, Any]) -> None:
    p, d = meta["pairs"], meta["dropped"]
    print(
        f"{kw['out']}: {meta['read']:,} pairs read -> {p['train']:,} train / {p['val']:,} val /"
        f" {p['test']:,} test; dropped {', '.join(f'{v:,} {k}' for k, v in d.items())};"
        f" vocab {meta['vocab_size']} (shared {meta['tokenizer']})"
    )
    if meta["split"]["by"] != "document":
        print(f"  split by {meta['split']['by']}")
    asked = {"val": meta["split"]["val_fraction"], "test": meta["split"]["test_fraction"]}
    empty = [split for split, fraction in asked.items() if fraction and not p[split]]
    if empty:  # training needs validation pairs, eval-translate test ones: said now, not there
        none = " and no ".join(empty)
        print(f"lmforge: warning: {kw['out']}: no {none} pairs (too few pairs read; training needs"
              " validation ones)", file=sys.stderr)  # fmt: skip


def show_texts(texts: list[str], _: dict[str, Any]) -> None:
    if len(texts) > 1:  # one prompt was streamed as it was generated
        for text in texts:
            print(text + "\n" + "-" * 40)


def show_translations(lines: list[str], _: dict[str, Any]) -> None:
    from lmforge.inference.translate import one_per_line

    if lines:
        print(*one_per_line(lines), sep="\n")  # line N of the output is sentence N


def _figures(r: dict[str, Any]) -> str:
    """A classifier's figures by its problem type (inference/label_metrics.py)."""
    if r.get("problem_type") == "regression":
        return f"MSE {r['mse']:.4f} | Pearson r {r['pearson']:.4f}"
    if r.get("problem_type") == "multi_label_classification":
        return f"subset accuracy {r['accuracy']:.4f} | micro F1 {r['f1']:.4f}"
    return f"accuracy {r['accuracy']:.4f} | macro F1 {r['f1']:.4f}"


def show_classify(r: dict[str, Any], _: dict[str, Any]) -> None:
    print(f"held-out {_figures(r)} | {r['heldout_examples']} examples | {r['seconds']:.0f}s training")


def show_labels(rows: list[dict[str, Any]], _: dict[str, Any]) -> None:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))


def show_eval_classify(r: dict[str, Any], _: dict[str, Any]) -> None:
    print(f"{r['model']}: {_figures(r)} | {r['examples']} examples of {r['data']} | {r['seconds']:.0f}s")
    print(json.dumps(r))


def show_scores(r: dict[str, Any], _: dict[str, Any]) -> None:
    cut = f" ({r['truncated']} cut to the model's limit by --truncate)" if r.get("truncated") else ""
    print(f"{r['sentences']} sentences{cut}")
    print(f"{r['bleu_text']}\n  signature: {r['bleu_signature']}")
    print(f"{r['chrf_text']}\n  signature: {r['chrf_signature']}")


def show_eval(r: dict[str, Any], _: dict[str, Any]) -> None:
    print(
        f"{r['model']}: perplexity {r['ppl']:.4f} | {r['bpb']:.4f} bits per byte | {r['tokens']:,} tokens,"
        f" {r['bytes']:,} bytes | context {r['context']} stride {r['stride']} | {r['seconds']:.0f}s"
    )
    print(json.dumps(r))


def show_ask(r: dict[str, Any], _: dict[str, Any]) -> None:
    print(r["answer"] or "(no answer)")
    for p in r["passages"]:
        where = f"{p['source']} chars {p['start']}-{p['end']}"
        score = f"bm25 {p['score']:.2f}" if r["retriever"] == "bm25" else f"{r['retriever']} {p['score']:.4f}"
        print(f"  [{p['n']}] {where} ({score})" + (" holds the answer" if p["cited"] else ""))
    if r["note"]:
        print(f"  ({r['note']})")  # why none given (no word in common, no room), or why no answer


def show_inspect(result: Any, _: dict[str, Any]) -> None:
    print(result.headline())
    print(*result.files, sep="\n")


def show_audit(result: dict[str, Any], _: dict[str, Any]) -> None:
    from lmforge.tools.audit import format_table

    print(format_table(result))
    print(json.dumps(result))


def no_words_no_texts(kw: dict[str, Any]) -> None:
    """`lmforge translate MODEL` with no sentences passes no texts (argparse gives an empty list),
    so that translate() says there is nothing to translate; lmforge.translate(model, []) is []."""
    if not kw.get("texts"):
        kw.pop("texts", None)


def train_on_tcmalloc(kw: dict[str, Any]) -> None:
    """Restart `lmforge train` on tcmalloc (lmforge/malloc.py), before torch is imported or a file
    touched; not for DeepSpeed, nor when the recipe cannot be read (train then says why)."""
    from lmforge.config import load_config

    resume = kw.get("resume")
    try:
        recipe = Path(resume) / "config.toml" if resume else kw.get("config")
        engine = load_config(recipe, kw.get("overrides")).engine.name
    except (LmforgeError, OSError):
        return
    if engine != "deepspeed":
        malloc.restart_with_tcmalloc()


def show_plan(plan: dict[str, Any], kw: dict[str, Any]) -> None:
    from lmforge.tools.plan_report import format_plan

    print(json.dumps(plan, indent=2) if kw.get("json") else format_plan(plan))
