"""Classifying texts with a classifier directory (`lmforge classify`) and scoring it on a labelled
file (`lmforge eval-classify`): the label scores behind the text-classification pipeline, and the
figures that training's validation reports too (accuracy and macro F1; for multi-label and
regression heads, inference/label_metrics.py's).

A label's score is what transformers' text-classification pipeline gives: by default the
classifier's own reading of its outputs (model/classifier.py's `function`: a softmax over the
labels, a sigmoid per label for a multi-label or one-output head, the raw output for a
regression), or the one `function_to_apply` names ("softmax", "sigmoid", "none", any case).

A classifier directory is what `lmforge finetune-classify` or a classification run writes, or a
Hugging Face `...ForSequenceClassification` folder (formats/hf_heads.py).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.data.input_files import JSON_LINES, suffixes
from lmforge.data.labelled import encode_batch, named, read_labelled, text_fields
from lmforge.data.sources import strict_lines
from lmforge.data.text_pairs import Item, encode_items
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.label_metrics import (
    multi_label_counts,
    multi_label_scores,
    regression_counts,
    regression_scores,
)
from lmforge.inference.options import check_options, check_texts, is_int
from lmforge.model.classifier import FUNCTIONS, Classifier, apply_function, trained_as
from lmforge.model.kinds import describe
from lmforge.tokenization.tokenizer import Tokenizer


def load_classifier(model: str | Path) -> tuple[Classifier, Tokenizer]:
    """The classifier in `model` (run, checkpoint or model directory), or a one-line error that
    says what the directory holds instead."""
    net, tokenizer = load_model(model)
    if not isinstance(net, Classifier):
        base = type(net).__name__ in ("GPT", "Encoder")  # what finetune-classify starts from
        hint = f" (train one from it with `lmforge finetune-classify {model} ...`)" if base else ""
        why = getattr(net, "unread_head", "")  # formats/hf_heads.py: a head loaded as its body alone
        if why:  # an HF multi-label or regression head: "not a classifier" alone misled
            raise LmforgeError(f"{model}: {why}: lmforge loads its body alone, {describe(net)}{hint}")
        raise LmforgeError(f"{model}: {describe(net)}, not a classifier{hint}")
    return net.eval(), tokenizer


def checked_function(function_to_apply: str | None) -> str | None:
    """function_to_apply in lower case (transformers takes any case), None for the model's own."""
    if function_to_apply is None:
        return None
    if not isinstance(function_to_apply, str) or function_to_apply.lower() not in FUNCTIONS:
        names = ", ".join(repr(f) for f in FUNCTIONS)
        raise LmforgeError(f"function_to_apply={function_to_apply!r} must be one of {names} (or None)")
    return function_to_apply.lower()


@torch.inference_mode()
def label_probabilities(
    model: Classifier,
    tokenizer: Tokenizer,
    texts: list[Item],
    batch_size: int,
    function: str | None = None,
    truncation: str = "longest_first",
) -> torch.Tensor:
    """(len(texts), labels) scores, `batch_size` texts per forward, each cut to the model's
    context: the logits through `function` ("softmax", "sigmoid", "none"; None: the model's own,
    see the module doc). An item may be a (text, text_pair) pair, encoded with the tokenizer's
    pair template and cut by `truncation` (data/text_pairs.py), as a cross-encoder reads it."""
    for n, item in enumerate(texts, start=1):
        parts = (item,) if isinstance(item, str) else item
        for text, what in zip(parts, ("text", "text_pair"), strict=False):
            if not text.strip():  # a label for nothing is a guess (training and evaluation refuse it)
                raise LmforgeError(f"{what} {n} is empty: nothing to classify")
    out = []
    device = next(model.parameters()).device  # wherever the caller put the model
    for i in range(0, len(texts), batch_size):
        batch = texts[i : i + batch_size]
        if all(isinstance(item, str) for item in batch):
            ids, mask = encode_batch(tokenizer, batch, model.config.block_size, model.pad_id)  # type: ignore[arg-type]
            logits = model(ids.to(device), mask.to(device))
        else:
            c = model.config
            ids, mask, types = encode_items(tokenizer, batch, c.block_size, model.pad_id, truncation,
                                            c.type_vocab_size)  # fmt: skip
            logits = model(ids.to(device), mask.to(device), types.to(device))
        out.append(apply_function(logits, function or model.function).cpu())
    return torch.cat(out) if out else torch.zeros(0, len(model.labels))


def ranked_labels(labels: list[str], row: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
    """[{"label", "score"}], best first: the top_k of them, or all with None."""
    ranked = sorted(zip(labels, row.tolist(), strict=True), key=lambda pair: -pair[1])
    return [{"label": label, "score": score} for label, score in ranked][:top_k]


def macro_scores(confusion: torch.Tensor) -> dict[str, float]:
    """Accuracy and macro F1 from a confusion matrix, confusion[gold, predicted]: the mean of
    2TP / (2TP + FP + FN) over the labels that occur in the gold or the predictions, as
    scikit-learn's f1_score(average="macro") takes them; a label in neither has no F1 to average
    (counted as 0, it would lower the score of a model for a label the data never asks about)."""
    tp = confusion.diag()
    occurs = confusion.sum(0) + confusion.sum(1)  # 2TP + FP + FN: > 0 where gold or predicted
    f1 = 2 * tp[occurs > 0] / occurs[occurs > 0]
    return {
        "accuracy": float(tp.sum() / confusion.sum().clamp(min=1)),
        "f1": float(f1.mean()) if len(f1) else 0.0,
    }


def count_into(confusion: torch.Tensor, gold: torch.Tensor, predicted: torch.Tensor) -> None:
    """Add each (gold, predicted) pair of label indices to confusion[gold, predicted] (float64)."""
    ones = torch.ones(len(predicted), dtype=torch.float64)
    confusion.index_put_((gold, predicted), ones, accumulate=True)


def read_texts(path: str | Path, text_field: str = "text", text_pair_field: str = "") -> list[Item]:
    """The texts of a file: each record's `text_field` in JSON lines (.jsonl, .ndjson or .json,
    any case, also compressed), every line of any other text file. Blank lines are skipped; a bad
    or empty record is named by line. With `text_pair_field` (JSON lines only), each record's
    (text_field, text_pair_field) pair, as a cross-encoder reads it."""
    path = Path(path)
    kind = suffixes(path)[0]
    jsonl = kind in (*JSON_LINES, ".json")
    fields = text_fields(text_field, text_pair_field)
    if text_pair_field and not jsonl:
        raise LmforgeError(
            f"{path}: text_pair_field={text_pair_field!r} names a field of JSON lines (.jsonl), and"
            " this file is read as plain text, one text a line"
        )
    if path.suffix.lower() in (".csv", ".tsv"):  # not read as columns: say so before the results
        print(f"lmforge: warning: {path}: read as plain text, one text a line (a header and every"
              " column included); JSON Lines picks a field (--text-field)", file=sys.stderr)  # fmt: skip
    texts: list[Item] = []
    for n, line in strict_lines(path):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        if not jsonl:
            texts.append(line)
            continue
        try:
            record = json.loads(line)
            found = [record[field] for field in fields]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            lines = " (a .json file is read as JSON Lines: one object a line, not an array)" if (
                kind == ".json") else ""  # fmt: skip
            raise LmforgeError(f"{path}:{n}: needs JSON with {named(*fields)} ({e}){lines}") from None
        for field, text in zip(fields, found, strict=True):
            if not isinstance(text, str) or not text.strip():
                raise LmforgeError(f"{path}:{n}: {field!r} is {json.dumps(text)[:40]}, not a text")
        texts.append(found[0] if len(found) == 1 else (found[0], found[1]))
    if not texts:
        raise LmforgeError(f"{path}: empty, no texts to classify")
    return texts


def classify(
    model: str | Path,
    texts: str | list[str] | None = None,
    file: str | Path | None = None,
    text_field: str | None = None,
    top_k: int = 1,
    batch_size: int = 32,
    function_to_apply: str | None = None,
    text_pair_field: str | None = None,
) -> list[dict[str, Any]]:
    """Label `texts` (a string or a list), then the texts of `file` (a .jsonl's `text_field`, or
    one per line), with a classifier directory: [{"text", "labels": [{"label", "score"}, ...]}],
    one per text in order, its top_k labels best first (0: every label), scored as transformers'
    pipeline scores them (function_to_apply: see the module doc). text_pair_field names the second
    text of each record of a .jsonl `file`: each (text, text_pair) pair is scored as the pipeline
    scores {"text": a, "text_pair": b} (a cross-encoder), and its result has a "text_pair". Left
    out (None), the fields are the ones the run was trained on (trained_fields)."""
    check_options(batch_size=batch_size)
    if file is not None:
        text_field, text_pair_field = trained_fields(model, text_field, text_pair_field)
    text_field, text_pair_field = text_field or "text", text_pair_field or ""
    function = checked_function(function_to_apply)
    if not (is_int(top_k) and top_k >= 0):
        raise LmforgeError(f"top_k={top_k!r}: must be an integer >= 0 (labels per text; 0 = all)")
    if texts is None and file is None:
        raise LmforgeError("nothing to classify: give some text or --file")
    if text_pair_field and file is None:
        raise LmforgeError(
            f"text_pair_field={text_pair_field!r} names a field of a .jsonl --file; none is given"
        )
    given = [] if texts is None else check_texts(texts)
    net, tokenizer = load_classifier(model)  # checked even for no texts, as translate does
    items: list[Item] = [*given, *([] if file is None else read_texts(file, text_field, text_pair_field))]
    probabilities = label_probabilities(net, tokenizer, items, batch_size, function)
    return [
        {**_as_texts(item), "labels": ranked_labels(net.labels, row, top_k or None)}
        for item, row in zip(items, probabilities, strict=True)
    ]


def trained_fields(model: str | Path, text: str | None, pair: str | None) -> tuple[str | None, str | None]:
    """The text fields to read: the ones given, else the ones a finetune-classify run (`model`,
    or its model/ folder) recorded in its config.toml, said on stderr. A cross-encoder's data read
    without its pair field was scored on the first texts alone: a plausible, wrong figure (until
    2026-12-07)."""
    import tomllib

    folder = Path(model)
    runs = [folder / "config.toml", folder.parent / "config.toml"]
    recorded = next((f for f in runs if f.is_file()), None)
    if recorded is None or (text is not None and pair is not None):
        return text, pair
    try:
        data = tomllib.loads(recorded.read_text(encoding="utf-8")).get("data", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return text, pair  # not a run's: the defaults
    taken = {}
    if text is None and isinstance(data.get("text_field"), str) and data["text_field"] != "text":
        text = taken["text_field"] = data["text_field"]
    if pair is None and isinstance(data.get("text_pair_field"), str) and data["text_pair_field"]:
        pair = taken["text_pair_field"] = data["text_pair_field"]
    if taken:
        said = ", ".join(f"{k}={v!r}" for k, v in taken.items())
        print(f"lmforge: {said}, as {recorded.parent} was trained (given otherwise: --text-field,"
              " --text-pair-field '')", file=sys.stderr)  # fmt: skip
    return text, pair


def _as_texts(item: Item) -> dict[str, str]:
    """{"text"}, or {"text", "text_pair"}: the pipeline's own input form."""
    return {"text": item} if isinstance(item, str) else {"text": item[0], "text_pair": item[1]}


def eval_classify(
    model: str | Path,
    data: str | Path,
    text_field: str | None = None,
    label_field: str = "label",
    batch_size: int = 32,
    text_pair_field: str | None = None,
) -> dict[str, Any]:
    """A classifier's figures on a labelled .jsonl file, read as finetune-classify reads its
    training data for the head's problem type: single-label, accuracy, macro F1 and the confusion
    matrix (rows: the gold label, columns: the predicted), the labels the model's names (or their
    indices); multi-label (a list of labels per text), subset accuracy and micro F1 at a sigmoid
    above 0.5; regression (a number per text, also a head of one output without a problem_type,
    as transformers trains it), MSE and Pearson's r of the raw outputs
    (inference/label_metrics.py). text_pair_field names each record's second text: the classifier
    reads (text, text_pair) pairs, as finetune-classify trains a cross-encoder on them. Left out
    (None), the text fields are the ones the run was trained on (trained_fields)."""
    check_options(batch_size=batch_size)
    text_field, text_pair_field = trained_fields(model, text_field, text_pair_field)
    text_field, text_pair_field = text_field or "text", text_pair_field or ""
    net, tokenizer = load_classifier(model)
    kind = trained_as(net.problem_type, len(net.labels))
    rows = read_labelled(data, net.labels, text_field, label_field, kind, text_pair_field)
    started = time.perf_counter()
    texts = [text for text, _ in rows]
    gold = torch.tensor([label for _, label in rows])
    head = {"model": str(model), "data": str(data), "examples": len(rows), "problem_type": kind}
    if kind != "single_label_classification":  # the raw outputs, as the losses read them
        logits = label_probabilities(net, tokenizer, texts, batch_size, "none")
        if kind == "regression":
            scores = regression_scores(regression_counts(logits, gold))
        else:
            scores = multi_label_scores(multi_label_counts(logits, gold))
        return {**head, **scores, "labels": list(net.labels), "seconds": time.perf_counter() - started}
    predicted = label_probabilities(net, tokenizer, texts, batch_size, "none").argmax(-1)
    n = len(net.labels)
    confusion = torch.zeros(n, n, dtype=torch.float64)
    count_into(confusion, gold, predicted)
    return {
        **head,
        **macro_scores(confusion),
        "labels": list(net.labels),
        "confusion": confusion.long().tolist(),
        "seconds": time.perf_counter() - started,
    }
