"""`lmforge finetune-classify`: fine-tune a classification head (or the whole model) on labelled text.

Labelled data is JSON lines with a text and a label field (the label a name from `labels` or its
index). A seeded shuffle holds out `val_fraction` of it; the report is accuracy and macro F1 on
that held-out split. The step itself goes through the same engine interface and optimizer
builders as train/loop.py; only the batch (texts, labels) and the loss (cross-entropy) differ.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from lmforge.config import EngineConfig, TrainConfig
from lmforge.data.labelled import encode_batch, read_labelled
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.formats.lmforge_dirs import save_classifier
from lmforge.hardware import resolve_dtype
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.train.engines import build_engine
from lmforge.train.engines.base import Plan
from lmforge.train.optim import build_optimizer, build_scheduler


def scores(predicted: list[int], gold: list[int], n_labels: int) -> dict[str, float]:
    """Accuracy and macro F1 (the mean over labels of 2PR / (P + R)); written out, it is four lines."""
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    f1s = []
    for c in range(n_labels):
        tp = sum(p == c and g == c for p, g in zip(predicted, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(predicted, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(predicted, gold, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {"accuracy": accuracy, "f1": sum(f1s) / n_labels}


@torch.inference_mode()
def evaluate_classifier(
    model: Classifier, tokenizer: Any, rows: list[tuple[str, int]], context: int = 0, batch: int = 64
) -> dict:
    """Accuracy and macro F1 on rows; texts are cut to `context` tokens (0: the model's context)."""
    context = context or model.config.block_size
    model.eval()
    predicted = []
    for i in range(0, len(rows), batch):
        ids, mask = encode_batch(tokenizer, [t for t, _ in rows[i : i + batch]], context, model.encoder)
        predicted += model(ids, mask).argmax(-1).tolist()
    return scores(predicted, [g for _, g in rows], len(model.labels))


def finetune_classify(
    model: str | Path,
    train: str | Path,
    labels: list[str] | str,
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
    max_len: int = 128,
    seed: int = 0,
    dtype: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    """Fine-tune `model` (any lmforge or HF model directory) to classify `train`'s texts into
    `labels`; write the classifier to `out` (when given) and return the held-out metrics.

    head_only freezes the backbone; from_scratch re-initialises it (same size, random weights): the
    baseline that shows what pretraining brings."""
    labels = labels.split(",") if isinstance(labels, str) else list(labels)
    rows = read_labelled(train, labels, text_field, label_field)
    random.Random(seed).shuffle(rows)
    n_val = max(1, int(len(rows) * val_fraction))
    if len(rows) - n_val < 1:
        raise LmforgeError(f"{train}: {len(rows)} examples leave nothing to train on")
    train_rows, val_rows = rows[:-n_val], rows[-n_val:]

    torch.manual_seed(seed)
    backbone, tokenizer = load_model(model)
    if isinstance(backbone, Classifier):
        backbone = backbone.backbone
    if not isinstance(backbone, GPT | Encoder):
        raise LmforgeError(f"{model}: not a decoder or encoder model")
    if from_scratch:
        backbone = type(backbone)(backbone.config)
    context = min(backbone.config.block_size, max_len)  # tokens kept per text while training
    classifier = Classifier(backbone, labels, pooling)
    if head_only:
        classifier.backbone.requires_grad_(False)
    steps = epochs * -(-len(train_rows) // batch_size)
    cfg = TrainConfig(
        max_steps=steps, lr=lr, min_lr=0.0, warmup_steps=steps // 10, schedule="linear", weight_decay=0.01
    )
    tokens = batch_size * sum(min(len(t) // 4 + 2, max_len) for t, _ in train_rows[:200]) // 200
    compute, dtype_reason = resolve_dtype(dtype, backbone.config, tokens)
    engine = build_engine(EngineConfig(), cfg)
    module, _ = engine.prepare(
        classifier,
        lambda m: build_optimizer(m, cfg),
        lambda o: build_scheduler(o, cfg),
        Plan(compute, batch_size, batch_size, 1),
    )
    autocast = (
        (lambda: torch.autocast("cpu", dtype=compute)) if compute != torch.float32 else contextlib.nullcontext
    )
    say = (lambda _: None) if quiet else tqdm.write
    what = "head only" if head_only else "whole model"
    say(
        f"finetune-classify: {type(backbone).__name__} {backbone.config.n_layer}L x {backbone.config.n_embd}"
        f"{' (from scratch)' if from_scratch else ''}, {what}, {classifier.pooling} pooling"
        f" | {len(train_rows)} train / {len(val_rows)} held out"
        f" | {epochs} epochs x {steps // epochs} steps of {batch_size} | {dtype_reason}"
    )
    order = random.Random(seed + 1)
    start, step = time.perf_counter(), 0
    bar = tqdm(total=steps, disable=None if not quiet else True, unit="step", leave=False)
    for epoch in range(epochs):
        module.train()
        order.shuffle(train_rows)
        for i in range(0, len(train_rows), batch_size):
            chunk = train_rows[i : i + batch_size]
            ids, mask = encode_batch(tokenizer, [t for t, _ in chunk], context, module.encoder)
            with autocast():
                loss = F.cross_entropy(module(ids, mask).float(), torch.tensor([g for _, g in chunk]))
            engine.backward(loss)
            engine.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        with autocast():
            metrics = evaluate_classifier(classifier, tokenizer, val_rows, context)
        say(
            f"epoch {epoch + 1}/{epochs}: held-out accuracy {metrics['accuracy']:.4f}"
            f" | macro F1 {metrics['f1']:.4f}"
        )
    bar.close()
    result = {
        **metrics,
        "train_examples": len(train_rows),
        "heldout_examples": len(val_rows),
        "epochs": epochs,
        "steps": step,
        "seconds": round(time.perf_counter() - start, 1),
        "head_only": head_only,
        "from_scratch": from_scratch,
        "dtype": str(compute).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }
    if out is not None:
        save_classifier(classifier, out, tokenizer)
        (Path(out) / "classify_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    engine.close()
    return result
