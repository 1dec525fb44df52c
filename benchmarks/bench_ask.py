"""`lmforge ask` on the held-out reading-comprehension set: retrieval recall and answer EM/F1,
against closed-book answering by the same model.

    python -m benchmarks.bench_ask --model /tmp/q2-smollm2 [--data data/qa-test.json.xz]
        [--max-questions 200] [--k 3] [--passage-words 200] [--max-new-tokens 24] [--out FILE]
        [--handle-impossible-answer] [--retriever bm25|hybrid] [--embedder DIR]

The documents are the test split's contexts, one per line of a JSONL file (so a question's own
context is `contexts.jsonl:N`), indexed by inference/retrieval.py as `lmforge ask` indexes a
folder. Only answerable questions are asked (unanswerable ones have no passage to find), unless
`--handle-impossible-answer` (an extractive model only) lets the reader decline: then the
unanswerable questions are asked too, scored as SQuAD v2.0 scores them (only no answer is right),
and the figures are given for each group with the share declined; recall stays the answerable ones'.
`--retriever hybrid` ranks the passages as `lmforge ask --retriever hybrid` does (BM25 and sentence
embeddings, fused; the time to embed the passages is `index.embed_seconds`).

- recall@k: the share of questions where one of the k best passages holds the gold answer's
  span (the passage of the question's own context that covers answer_start); `answer in top k`
  is looser: any of the k passages holds the answer's words (SQuAD-normalised).
- answers, greedy, in the model's chat template (an extractive model: the best span, as `lmforge
  ask` reads one; no closed-book row, since it can only copy), scored by the official SQuAD v2.0 EM/F1
  (inference/squad_metric.py) on the reply's first line:
  `closed-book` (the question alone), `open-book` (the k best passages, as `lmforge ask` gives
  them) and `gold passage` (the question's own context alone: what reading costs when retrieval is
  perfect). `blank filled` scores a cloze reply that rewrites the sentence (the usual reply of a
  small model) by the words it put where the blank was, found between the three words before the
  blank and the two after it; other replies are scored by their first line as above.
"""

from __future__ import annotations

import argparse
import json
import lzma
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import hardware_line
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.hardware import resolve_dtype
from lmforge.inference.ask import cited, fit_prompt, read_spans
from lmforge.inference.chat import ChatSpec
from lmforge.inference.embeddings import Embedder
from lmforge.inference.instruct_eval import answer_all
from lmforge.inference.retrieval import Passage, PassageIndex
from lmforge.inference.squad_metric import exact_match, f1
from lmforge.model.span import SpanModel

RECALL_KS = (1, 3, 5, 10)
BLANK = "____"  # data/build_qa.py's blank


def questions(data: Path, limit: int, unanswerable: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """The contexts, and the answerable questions (with `unanswerable`, every question; the first
    `limit`, in file order)."""
    dataset = json.loads(lzma.decompress(data.read_bytes()) if data.suffix == ".xz" else data.read_bytes())
    contexts: list[str] = []
    asked: list[dict[str, Any]] = []
    for article in dataset["data"]:
        kind = article["title"].split(":")[0]
        for paragraph in article["paragraphs"]:
            contexts.append(paragraph["context"])
            for qa in paragraph["qas"]:
                if qa["answers"] or unanswerable:
                    asked.append({"kind": kind, "context": len(contexts) - 1, **qa})
    return contexts, asked[:limit] if limit else asked


def holds_gold(passage: Passage, docs: Path, q: dict[str, Any]) -> bool:
    gold = q["answers"][0]
    start, end = gold["answer_start"], gold["answer_start"] + len(gold["text"])
    return passage.source == f"{docs}:{q['context'] + 1}" and passage.start <= start and end <= passage.end


def first_line(reply: str) -> str:
    return (reply.strip().splitlines() or [""])[0].strip()


def filled_blank(question: str, reply: str) -> str | None:
    """The words a reply that rewrites a cloze sentence puts where the blank was: the text between
    the (up to) three words before the blank and the two after it, or None if it does not."""
    sentence = question.removeprefix("Fill in the blank: ")
    if BLANK not in sentence:
        return None
    before, after = sentence.split(BLANK, 1)
    left = r"\W+".join(map(re.escape, re.findall(r"\w+", before)[-3:]))
    right = r"\W+".join(map(re.escape, re.findall(r"\w+", after)[:2]))
    match = re.search(rf"{left}\W*(.+?)\W*{right}" if right else rf"{left}\W*(.+?)\W*$", reply, re.IGNORECASE)
    return match.group(1) if match and left else None


def extract(reply: str, q: dict[str, Any], fill: bool) -> str:
    """The answer scored: the reply's first line, or (fill) the words it put in a cloze blank."""
    filled = filled_blank(q["question"], reply) if fill and q["kind"] == "cloze" else None
    return filled if filled is not None else first_line(reply)


def score(replies: list[str], asked: list[dict[str, Any]], fill: bool = False) -> dict[str, Any]:
    """EM and F1 (percent, SQuAD v2.0: an unanswerable question is right only with no answer)
    overall and by kind; where unanswerable questions were asked, also for each group, with the
    share of questions given no answer."""
    groups = {"all": lambda q: True} | {
        k: (lambda q, k=k: q["kind"] == k) for k in sorted({q["kind"] for q in asked})
    }
    if any(not q["answers"] for q in asked):
        groups |= {"answerable": lambda q: bool(q["answers"]), "unanswerable": lambda q: not q["answers"]}
    out: dict[str, Any] = {}
    for name, member in groups.items():
        rows = [(r, q) for r, q in zip(replies, asked, strict=True) if member(q)]
        golds = [[a["text"] for a in q["answers"]] for _, q in rows]
        answers = [extract(r, q, fill) for r, q in rows]
        out[name] = {
            "n": len(rows),
            "exact": 100 * sum(exact_match(a, g) for a, g in zip(answers, golds, strict=True)) / len(rows),
            "f1": 100 * sum(f1(a, g) for a, g in zip(answers, golds, strict=True)) / len(rows),
        }
        if "answerable" in groups:
            out[name]["no answer"] = 100 * sum(not a.strip() for a in answers) / len(rows)
    return out


def rescore(earlier: Path, data: Path) -> None:
    """Print the scores of an earlier run's replies (this script's --out) under today's scoring."""
    saved = json.loads(earlier.read_text(encoding="utf-8"))
    _, asked = questions(data, saved["questions"], saved.get("handle_impossible_answer", False))
    by_id = {row["id"]: row for row in saved["replies"]}
    for name in ("closed-book", "open-book", "gold passage"):
        if name not in saved["replies"][0]:  # an extractive reader has no closed-book replies
            continue
        replies = [by_id[q["id"]][name] for q in asked]
        print(
            name,
            json.dumps({"first line": score(replies, asked), "blank filled": score(replies, asked, True)}),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", help="an instruct model directory (SmolLM2 imported), or an extractive QA one"
    )
    parser.add_argument("--data", default="data/qa-test.json.xz")
    parser.add_argument("--max-questions", type=int, default=200, help="answerable questions (0: all)")
    parser.add_argument("--k", type=int, default=3, help="passages given to the model")
    parser.add_argument("--passage-words", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", help="also write the figures and every reply as JSON here")
    parser.add_argument("--rescore", help="score the replies of an earlier --out file again (no model)")
    parser.add_argument("--retriever", choices=["bm25", "hybrid"], default="bm25")
    parser.add_argument("--embedder", help="--retriever hybrid's encoder (default: all-MiniLM-L6-v2)")
    parser.add_argument(
        "--handle-impossible-answer",
        action="store_true",
        help="an extractive reader may decline (as `lmforge ask --handle-impossible-answer`); the"
        " unanswerable questions are asked too",
    )
    args = parser.parse_args()
    if args.rescore:
        rescore(Path(args.rescore), Path(args.data))
        return
    if not args.model:
        parser.error("--model is needed (all but --rescore ask a model)")

    contexts, asked = questions(Path(args.data), args.max_questions, args.handle_impossible_answer)
    directory = resolve_model_dir(args.model)
    net, tokenizer = load_model(directory)
    extractive = isinstance(net, SpanModel)  # reads spans in fp32, as lmforge ask runs it
    if args.handle_impossible_answer and not extractive:
        parser.error("--handle-impossible-answer is for an extractive question-answering model")
    net = net.eval() if extractive else net.to(resolve_dtype("auto", net.config)[0])
    spec = None if extractive else ChatSpec.read(directory, tokenizer)
    limit = net.config.block_size - args.max_new_tokens
    result: dict[str, Any] = {"hardware": hardware_line(), "model": str(directory), "data": args.data}
    print(result["hardware"], flush=True)
    result |= {"questions": len(asked), "k": args.k, "passage_words": args.passage_words}
    result["handle_impossible_answer"] = args.handle_impossible_answer
    result["retriever"] = args.retriever
    embedder = Embedder(args.embedder) if args.retriever == "hybrid" else None
    with tempfile.TemporaryDirectory() as tmp:
        docs = Path(tmp) / "docs" / "contexts.jsonl"
        docs.parent.mkdir()
        docs.write_text("".join(json.dumps({"text": c}) + "\n" for c in contexts), encoding="utf-8")
        started = time.perf_counter()
        index = PassageIndex.build(docs.parent, Path(tmp) / "index", args.passage_words, quiet=True)
        result["index"] = {"passages": len(index.passages), "seconds": time.perf_counter() - started}
        if embedder is not None:
            started = time.perf_counter()
            index.embeddings(embedder)  # made once, then reused by every search
            result["index"]["embed_seconds"] = time.perf_counter() - started
            found = [
                [p for p, _ in index.search_hybrid(q["question"], max(RECALL_KS), embedder)] for q in asked
            ]
        else:
            found = [[p for p, _ in index.search(q["question"], max(RECALL_KS))] for q in asked]
        gold_passage = [Passage(f"{docs}:{q['context'] + 1}", 0, 0, contexts[q["context"]]) for q in asked]
        recall = {}
        has = [(ps, q) for ps, q in zip(found, asked, strict=True) if q["answers"]]  # what there is to find
        for k in RECALL_KS:
            hits = [any(holds_gold(p, docs, q) for p in ps[:k]) for ps, q in has]
            named = [any(cited(q["answers"][0]["text"], ps[:k])) for ps, q in has]
            recall[f"recall@{k}"] = 100 * sum(hits) / len(has)
            recall[f"answer in top {k}"] = 100 * sum(named) / len(has)
        result["retrieval"] = recall
        given = {
            "open-book": [ps[: args.k] for ps in found],
            "gold passage": [[g] for g in gold_passage],
        }
        replies: dict[str, list[str]] = {}
        for name, passages in (({} if extractive else {"closed-book": [[] for _ in asked]}) | given).items():
            started = time.perf_counter()
            if extractive:  # lmforge ask's extractive reader: the best span of the passages
                replies[name] = [
                    read_spans(net, tokenizer, q["question"], ps, args.handle_impossible_answer)[0]
                    for ps, q in zip(passages, asked, strict=True)
                ]
                result[name] = score(replies[name], asked)
            else:
                prompts = [
                    fit_prompt(spec, tokenizer, q["question"], ps, limit, None)[0]
                    for ps, q in zip(passages, asked, strict=True)
                ]
                new = answer_all(net, prompts, args.max_new_tokens, spec.stops, args.batch_size, name)
                replies[name] = [tokenizer.decode(ids) for ids in new]
                result[name] = score(replies[name], asked)
                result[name]["blank filled"] = score(replies[name], asked, fill=True)
                result[name]["prompt_tokens_mean"] = sum(map(len, prompts)) / len(prompts)
            result[name]["seconds"] = time.perf_counter() - started
            print(name, json.dumps(result[name]), flush=True)
    print(json.dumps(result, indent=2))
    if args.out:
        golds = [q["answers"][0]["text"] if q["answers"] else "" for q in asked]  # "": unanswerable
        rows = [{"id": q["id"], "question": q["question"], "gold": golds[i],
                 **{name: replies[name][i] for name in replies}} for i, q in enumerate(asked)]  # fmt: skip
        Path(args.out).write_text(
            json.dumps({**result, "replies": rows}, indent=1, ensure_ascii=False) + "\n"
        )


if __name__ == "__main__":
    main()
