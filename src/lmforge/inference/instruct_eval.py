"""`lmforge eval-instruct`: how well a chat model follows the instructions of a test split.

Each test conversation (`"split": "test"` in a chat JSONL file, data/chat_data.py) ends with the
gold assistant message; the conversation before it is rendered with the model's own chat template
(add_generation_prompt) and answered greedily until an end-of-turn token. Scores by `kind`:

- `translation`: sacreBLEU corpus BLEU and chrF (default settings, signatures reported) of the
  answers, stripped of surrounding whitespace, against the gold messages;
- `sentiment`: accuracy, where an answer counts when its first word, lower-cased and stripped of
  punctuation, is the gold label ("Positive." counts for positive; "The review is positive" does
  not). `label_mentioned` is a looser figure beside it: the answer names the gold label and no
  other label of the set (a label inside a longer one found there, "toxic" in "non-toxic", is no
  other mention). Sentiment answers are cut at 16 tokens; a gold answer without a word is refused.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from lmforge.data.chat_data import Conversation, read_chats
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.formats.peft import is_adapter_dir, load_adapted
from lmforge.inference.autotune import to_inference_dtype
from lmforge.inference.chat import ChatSpec
from lmforge.inference.generate import generate_ids
from lmforge.inference.options import check_options
from lmforge.inference.translate import check_out, score
from lmforge.model import lora
from lmforge.model.gpt import GPT
from lmforge.model.kinds import require_decoder
from lmforge.outputs import write_file

KINDS = ("translation", "sentiment")
SAMPLES = 3  # answers shown per kind in the output, to read beside the figures
SENTIMENT_TOKENS = 16  # a sentiment answer's first words decide it: no need to decode a ramble


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())


def first_words(text: str, count: int = 1) -> str:
    """The first `count` whitespace-separated words, lower-cased, their punctuation removed
    ("Positive." -> "positive"; a hedge "positive/negative" -> "positivenegative", which is no
    label). A token of punctuation alone ("-", "**") is no word."""
    found = (w for token in text.split() if (w := "".join(re.findall(r"\w", token.casefold()))))
    return " ".join(next(found, "") for _ in range(count)).strip()


def _mentioned(answer: list[str], labels: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """The labels (their words) that stand together among the answer's words. Longer labels are found
    first and their words taken: "non-toxic" holds "toxic" and "very positive" "positive", which
    are no second mention there (until 2026-12-07 the exact gold answer "Non-toxic." counted as
    naming both, so as wrong)."""
    taken: set[int] = set()
    found: set[tuple[str, ...]] = set()
    for key in sorted((k for k in labels if k), key=len, reverse=True):
        n = len(key)
        for i in range(len(answer) - n + 1):
            span = set(range(i, i + n))
            if tuple(answer[i : i + n]) == key and not span & taken:
                taken |= span
                found.add(key)
    return found


def sentiment_scores(answers: list[str], gold: list[str], labels: set[str] | None = None) -> dict[str, float]:
    """accuracy (the first words are the gold label's, each without punctuation: "non-toxic" and
    "very positive" are labels too) and label_mentioned (the gold label's words, and no other
    label's, stand together among the answer's words; a label inside a longer one found there is
    no mention of its own). labels: every label of the test split
    (default: the golds given), so that a subset with one label still counts an answer naming
    another as wrong."""
    every = {tuple(words(g)) for g in (labels or gold)}  # "Non-toxic" and "non toxic" alike
    n = max(len(gold), 1)
    right = sum(
        first_words(a, len(g.split())) == first_words(g, len(g.split()))
        for a, g in zip(answers, gold, strict=True)
    )
    named = [_mentioned(words(a), every) for a in answers]
    return {
        "accuracy": right / n,
        "label_mentioned": sum(m == {tuple(words(g))} for m, g in zip(named, gold, strict=True)) / n,
    }


def asked(c: Conversation) -> str:
    """What the gold answers: the last user message before it (a conversation may hold an earlier
    assistant turn or end its prompt with a system message), else the message before it."""
    before = c.messages[:-1]
    return next(
        (m["content"] for m in reversed(before) if m["role"] == "user"), before[-1].get("content", "")
    )


def test_items(data: str | Path, max_items: int) -> tuple[dict[str, list[Conversation]], set[str]]:
    """The test split by kind, the first `max_items` of each (0: all), in file order; and the
    sentiment labels of the whole test split."""
    by_kind: dict[str, list[Conversation]] = {k: [] for k in KINDS}
    labels: set[str] = set()
    for c in read_chats(data):
        if c.split != "test":
            continue
        if c.kind not in KINDS:
            kind = f"kind {c.kind!r}" if c.kind else 'no "kind"'
            raise LmforgeError(
                f"{data}:{c.line}: a test item with {kind}; eval-instruct scores {' and '.join(KINDS)}"
                ' (set "kind" on its test items, or give them "split": "train")'
            )
        if c.messages[-1]["role"] != "assistant":
            raise LmforgeError(f"{data}:{c.line}: the last message must be the gold assistant answer")
        if "content" not in c.messages[-1]:  # "content": null beside tool calls
            raise LmforgeError(
                f"{data}:{c.line}: the gold assistant answer is a tool call with no text to score"
            )
        if c.kind == "sentiment" and not words(c.messages[-1]["content"]):  # any answer would match ""
            raise LmforgeError(
                f"{data}:{c.line}: a sentiment test item whose gold answer (its last message) holds"
                f" no label: {c.messages[-1]['content']!r}"
            )
        if c.kind == "sentiment":
            labels.add(c.messages[-1]["content"].strip())
        if not max_items or len(by_kind[c.kind]) < max_items:
            by_kind[c.kind].append(c)
    if not any(by_kind.values()):
        raise LmforgeError(f'{data}: no test conversations ("split": "test")')
    return by_kind, labels


def eval_instruct(
    model: str | Path,
    data: str | Path,
    max_items: int = 0,
    max_new_tokens: int = 128,
    dtype: str = "auto",
    out: str | Path | None = None,
    quiet: bool = False,
    batch_size: int = 8,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Answer the test split of `data` greedily with the model's chat template; BLEU and chrF on
    `translation` items, first-word accuracy on `sentiment` items. `model` may be a LoRA run (its
    adapters are merged in memory). max_items: test items per kind (0: all). Returns the figures
    (also written as JSON to `out`). batch_size: conversations decoded together, grouped by
    prompt length (left-padded; each answers as it would alone)."""
    check_options(max_new_tokens=max_new_tokens, dtype=dtype)
    if max_items < 0:
        raise LmforgeError(f"max_items={max_items} must be >= 0 (0: every test item)")
    if batch_size < 1:
        raise LmforgeError(f"batch_size={batch_size} must be >= 1")
    out_file = check_out(out, {"data": data}, overwrite, model) if out is not None else None
    by_kind, labels = test_items(data, max_items)
    directory = resolve_model_dir(model)
    if is_adapter_dir(directory):  # a LoRA run: its adapters merged into the base for decoding
        net, tokenizer, _ = load_adapted(directory)
        lora.strip(net)
    else:
        net, tokenizer = load_model(directory)
    net = require_decoder(net, model)
    spec = ChatSpec.read(directory, tokenizer)
    spec.require_template("so it cannot follow instructions: eval-instruct needs an instruct model")
    context = net.config.block_size
    prompts = {
        k: [_prompt(spec, tokenizer, c, f"{data}:{c.line}", context) for c in items]
        for k, items in by_kind.items()
    }  # fmt: skip  (checks the template and the lengths before decoding)
    net = to_inference_dtype(net, dtype)[0]
    compute = next(net.parameters()).dtype
    started = time.perf_counter()
    result: dict[str, Any] = {"model": str(directory), "data": str(data), "max_items": max_items}
    every: dict[str, list[dict[str, Any]]] = {}  # each kind's answers, for --out
    for kind, items in by_kind.items():
        if not items:
            continue
        limit = min(max_new_tokens, SENTIMENT_TOKENS) if kind == "sentiment" else max_new_tokens
        answers = answer_all(
            net, prompts[kind], limit, spec.stops, batch_size, f"{kind}" if not quiet else None
        )
        # stopped where the context is full (lmforge chat's rule): a window sliding past it would
        # no longer see the instruction
        cut = sum(len(new) == context - len(p) < limit for new, p in zip(answers, prompts[kind], strict=True))
        answers = [tokenizer.decode(new).strip() for new in answers]
        gold = [c.messages[-1]["content"].strip() for c in items]
        figures = score(answers, gold) if kind == "translation" else sentiment_scores(answers, gold, labels)
        every[kind] = [{"line": c.line, "prompt": asked(c), "answer": a, "gold": g}
                       for c, a, g in zip(items, answers, gold, strict=True)]  # fmt: skip
        shown = [{k: v for k, v in item.items() if k != "line"} for item in every[kind][:SAMPLES]]
        result[kind] = {"items": len(items), **figures, "stopped_at_context": cut, "samples": shown}
    result["seconds"] = time.perf_counter() - started
    result["threads"], result["dtype"] = torch.get_num_threads(), str(compute).removeprefix("torch.")
    if out_file is not None:  # with every answer, so that the figures can be checked
        written = {**result, "answers": every}
        write_file(out_file, json.dumps(written, indent=2, ensure_ascii=False) + "\n")
    return result


def _prompt(spec: ChatSpec, tokenizer: Any, c: Conversation, where: str, context: int) -> list[int]:
    """The item's prompt ids (its tools rendered too), or a one-line error naming its line when it
    leaves no position of the context for an answer."""
    # the gold answer is a new assistant turn, also after an assistant message (transformers'
    # apply_chat_template(messages[:-1], add_generation_prompt=True)), not a continuation of it
    ids = tokenizer.encode(spec.render(c.messages[:-1], where, c.tools, new_turn=True))
    if len(ids) >= context:
        size = "longer than" if len(ids) > context else "as long as"
        raise LmforgeError(
            f"{where}: the prompt is {len(ids)} tokens in the chat template, {size} the model's"
            f" context of {context}, leaving no room for an answer: shorten it or leave it out"
        )
    return ids


def answer_all(
    net: GPT, prompts: list[list[int]], limit: int, stops: Any, batch_size: int, desc: str | None
) -> list[list[int]]:
    """Greedy answers (new token ids) to every prompt, in order, each stopped where it fills the
    context (as transformers' generate keeps the whole prompt in view; a window sliding past the
    context would forget the instruction). Prompts of similar length decode together, so a batch
    pads little and rarely waits long for its longest answer."""
    context = net.config.block_size
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    with tqdm(total=len(prompts), desc=desc, disable=True if desc is None else None, leave=False) as bar:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            room = [min(limit, context - len(prompts[i])) for i in rows]
            with torch.inference_mode():  # the row with the most room decides how far the batch goes
                new = generate_ids(net, [prompts[i] for i in rows], max(room), temperature=0.0, eos_id=stops)
            for i, ids, r in zip(rows, new, room, strict=True):
                answers[i] = ids[:r]  # a row's tokens before its own window would slide
            bar.update(len(rows))
    return answers
