"""`lmforge finetune-classify`: a thin alias of `lmforge train` with data.task = "classification".

It keeps its own arguments (epochs, batch size, learning rate, ...) and turns them into a recipe
with the schedule HF's Trainer uses for fine-tuning (linear decay to 0 after a 10% warmup, weight
decay 0.01), so classification gains everything the one loop has: engines, checkpoints, exact
resume, metrics.jsonl, TensorBoard and loss.png. The classifier is the run's exported model
(OUT/model; `lmforge.load(OUT)` and pipelines take OUT itself).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmforge.config import COMMAND_LINE, load_config
from lmforge.data.labelled import labelled_records
from lmforge.errors import LmforgeError
from lmforge.outputs import write_file
from lmforge.train import loop
from lmforge.train.tasks.classification import split_labelled

# the recipe keys finetune-classify sets from its options, for messages that name the keys
OPTION_OF = {
    "train.batch_size": "--batch-size",
    "data.val_fraction": "--val-fraction",
    "train.lr": "--lr",
    "data.max_len": "--max-len",
    "train.pooling": "--pooling",
    "train.classifier_dense": "--dense",
    "data.text_pair_field": "--text-pair-field",  # before data.text_field, which its messages name
    "data.text_field": "--text-field",
    "data.label_field": "--label-field",
    "data.problem_type": "--problem-type",
    "data.labels": "--labels",
}


def _in_our_words(message: str) -> str:
    """train's message, for the options finetune-classify was given: the key's option beside it,
    and `lmforge train --resume` (finetune-classify has no --resume)."""
    message = message.replace("use --resume", "use lmforge train --resume")
    key = next((k for k in OPTION_OF if k in message), None)
    return f"{message} ({key} is finetune-classify's {OPTION_OF[key]})" if key else message


def finetune_classify(
    model: str | Path,
    train: str | Path,
    labels: list[str] | str = "",
    out: str | Path | None = None,
    text_field: str = "text",
    label_field: str = "label",
    val_fraction: float = 0.1,
    epochs: int = 2,
    batch_size: int = 32,
    lr: float = 5e-5,
    head_only: bool = False,
    from_scratch: bool = False,
    pooling: str = "",
    dense: str = "",
    max_len: int = 128,
    seed: int = 0,
    dtype: str = "auto",
    quiet: bool = False,
    overwrite: bool = False,
    problem_type: str = "",
    text_pair_field: str = "",
) -> dict[str, Any]:
    """Fine-tune `model` (any lmforge or HF model directory) to classify `train`'s texts into
    `labels`; train in the run directory `out` (its classifier in OUT/model) and return the
    held-out metrics. Without `out` it trains in a temporary folder, removed at the end: only the
    metrics remain. An earlier run in `out` is kept unless `overwrite` (as `train`
    does; `lmforge train --resume OUT` continues it).

    head_only freezes the backbone; from_scratch re-initialises it (same size, random weights): the
    baseline that shows what pretraining brings. dense (`tanh`, `relu`) puts a dense layer before
    the head, as transformers' classifiers have; `tanh` on an imported BERT starts from its
    pretrained pooler, and with pooling `cls` that is BertForSequenceClassification's recipe, which
    `lmforge export` writes back (train.classifier_dense).

    problem_type (data.problem_type) is transformers': `single_label_classification` (one label
    per text), `multi_label_classification` (a JSON list of labels per text) or `regression` (a
    number per text; labels may then be empty: one output). "" keeps `model`'s multi-label,
    regression or one-output head where labels are empty or its own, else single-label.

    text_pair_field (data.text_pair_field) names each record's second text: the classifier then
    reads (text, text_pair) pairs, a cross-encoder for NLI or paraphrase data, encoded as
    transformers' `tokenizer(text, text_pair=...)` (the pair template, BERT's token types)."""
    if not isinstance(labels, str) and not (
        isinstance(labels, list | tuple) and all(isinstance(name, str) for name in labels)
    ):
        raise LmforgeError(f"labels={labels!r} must be a string or a list of strings")
    labels = labels if isinstance(labels, str) else list(labels)
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(value, int) or value < 1:
            raise LmforgeError(f"{name}={value!r} must be an integer >= 1")
    # the texts alone, to count the steps (the split keys on them); the run reads the labels,
    # whose names may come from `model`'s kept head
    try:
        rows = [(text, 0) for _, text, _ in labelled_records(train, text_field, label_field, text_pair_field)]
    except LmforgeError as e:
        raise LmforgeError(_in_our_words(str(e))) from None
    if not rows:
        raise LmforgeError(f"{train}: no labelled examples")
    n = len(rows) - int(len(rows) * val_fraction)  # the config check refuses a fraction outside (0, 1)
    if 0 < val_fraction < 1:  # the task's own split: a repeated text keeps its copies on one side
        try:
            n = len(split_labelled(rows, val_fraction, seed, str(train), lambda _: None)[0])
        except LmforgeError as e:
            raise LmforgeError(_in_our_words(str(e))) from None
    steps = epochs * -(-n // batch_size)
    overrides = {
        "data.task": "classification",
        "data.input": str(train),
        "data.problem_type": problem_type,
        "data.text_field": text_field,
        "data.text_pair_field": text_pair_field,
        "data.label_field": label_field,
        "data.val_fraction": val_fraction,
        "data.max_len": max_len,
        "train.init_from": str(model),
        "train.head_only": head_only,
        "train.from_scratch": from_scratch,
        "train.pooling": pooling,
        "train.classifier_dense": dense,
        "train.max_steps": max(steps, 1),
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.min_lr": 0.0,
        "train.warmup_steps": steps // 10,
        "train.schedule": "linear",
        "train.weight_decay": 0.01,
        "train.eval_interval": max(steps // max(epochs, 1), 1),  # once per epoch
        # at least each epoch and every 100 steps: a kill loses minutes, not the run
        "train.checkpoint_interval": min(max(steps // max(epochs, 1), 1), 100),
        "train.keep_checkpoints": 1,
        "train.seed": seed,
        "train.dtype": dtype,
    }
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="lmforge-classify-"))
    try:
        cfg = load_config(None, [f"{k}={v}" for k, v in overrides.items()], validate=False)
        cfg.data.labels = labels  # a list's names each whole: `good, mostly` is one label
        cfg.given["data.labels"] = COMMAND_LINE
        cfg = cfg.validate()
        summary = loop.train(cfg, out=run_dir, overwrite=overwrite, quiet=quiet)
    except LmforgeError as e:
        raise LmforgeError(_in_our_words(str(e))) from None
    finally:
        if out is None:
            shutil.rmtree(run_dir, ignore_errors=True)
    if out is None and not quiet:  # the loop's last line named the temporary folder, now gone
        print(f"not kept: {run_dir} is removed, as no out (--out DIR) was given; only these metrics remain")
    figures = ("mse", "pearson") if summary["problem_type"] == "regression" else ("accuracy", "f1")
    result = {
        "problem_type": summary["problem_type"],
        **{name: summary[f"val_{name}"] for name in figures},
        "train_examples": summary["train_examples"],
        "heldout_examples": summary["heldout_examples"],
        "epochs": epochs,
        "steps": summary["steps"],
        "seconds": round(summary["train_s"], 1),
        "head_only": head_only,
        "from_scratch": from_scratch,
        "dtype": summary["dtype"],
        "threads": summary["threads"],
    }
    if out is not None:
        write_file(Path(out) / "classify_metrics.json", json.dumps(result, indent=2) + "\n")
    return result
