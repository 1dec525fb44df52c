"""Text classification: a pooled linear head on train.init_from's decoder or encoder.

Data is JSON lines with a text and a label field (data.input, data.labels, data.text_field,
data.label_field), or a text pair and a label (data.text_pair_field: a cross-encoder's input,
through the tokenizer's pair template with token types, as data/text_pairs.py encodes it for the
pipeline; a decoder reads the two texts one after the other); a seeded shuffle holds out
data.val_fraction of it, a text also on the training side staying there (data/holdout.py).
data.problem_type chooses the head and its loss, as transformers' ...ForSequenceClassification
computes it (classification_head.py): single-label, cross-entropy summed over examples (the loop
divides by the examples of the whole step); multi-label, binary cross-entropy summed over every
(text, label); regression, squared error summed over every output (the loop divides by their count:
transformers' means). Validation: loss, accuracy and macro F1 on the held-out split (multi-label:
subset accuracy and micro F1; regression: MSE and Pearson's r, inference/label_metrics.py). The
export is the last step's model: the held-out split is also what the run reports, so choosing the
best step on it would flatter the report.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.holdout import hold_out
from lmforge.data.labelled import (
    MULTI_LABEL,
    REGRESSION,
    Item,
    LabelledLoader,
    Target,
    encode_batch,
    read_labelled,
)
from lmforge.data.text_pairs import encode_items
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.formats.hf_files import model_special_ids
from lmforge.formats.lmforge_dirs import write_classifier_files
from lmforge.inference.classify import count_into, macro_scores
from lmforge.inference.label_metrics import (
    multi_label_counts,
    multi_label_scores,
    regression_counts,
    regression_scores,
)
from lmforge.model import lora
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.span import SpanModel
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import rank_share
from lmforge.train.run_inputs import adopt_model_config
from lmforge.train.tasks.base import Autocast, Setup, Task, count_targets
from lmforge.train.tasks.classification_head import (
    SINGLE_LABEL,
    dense_start,
    head_dropout,
    pad_id_for,
    plan_head,
)
from lmforge.train.tasks.classification_rules import bare_reader, kept_line, resumed_rules

__all__ = ["ClassificationTask", "classifier_loss", "dense_start", "split_labelled"]


def split_labelled(
    rows: list[tuple[Item, Target]], fraction: float, seed: int, source: str, say: Callable[[str], None]
) -> tuple[list[tuple[Item, Target]], list[tuple[Item, Target]]]:
    """(train, held-out) (text, label) rows: a text's (a pair's) copies on one side (data/holdout.py)."""
    return hold_out(rows, key=lambda row: row[0], fraction=fraction, seed=seed, source=source, noun="example",
                    say=say)  # fmt: skip


def classifier_loss(logits: torch.Tensor, targets: torch.Tensor, problem_type: str) -> torch.Tensor:
    """The summed loss of transformers' ...ForSequenceClassification for `problem_type`:
    cross-entropy, binary cross-entropy per (text, label), or squared error per output (one
    output: logits (B, 1) against targets (B,)). The loop divides by count_targets: the texts, or
    every (text, label) of float targets, which gives transformers' means."""
    logits = logits.float()
    if problem_type == REGRESSION:
        outputs = logits.squeeze(-1) if logits.size(-1) == 1 and targets.dim() == 1 else logits
        return F.mse_loss(outputs, targets.float(), reduction="sum")
    if problem_type == MULTI_LABEL:
        return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="sum")
    return F.cross_entropy(logits, targets, reduction="sum")


class ClassificationTask(Task):
    name = "classification"

    def __init__(self, setup: Setup) -> None:
        cfg, d, t, engine = setup.cfg, setup.cfg.data, setup.cfg.train, setup.engine
        backbone, self.tokenizer = load_model(t.init_from)
        if isinstance(backbone, SpanModel):  # a question-answering model: its encoder body
            setup.say(f"train.init_from={t.init_from!r}: a question-answering model; its span head"
                      " (qa_outputs) is left out, its encoder body tuned under a new head")  # fmt: skip
            backbone = backbone.backbone
        self.head = plan_head(backbone, d, t, setup.say)  # kept, or a new one (classification_head.py)
        self.labels, self.problem_type = self.head.labels, self.head.problem_type
        rows = read_labelled(d.input, self.labels, d.text_field, d.label_field, self.problem_type,
                             d.text_pair_field)  # fmt: skip
        unseen = [name for i, name in enumerate(self.labels) if not self._seen(rows, i)]
        if unseen and engine.rank == 0:  # shown even with --quiet: the head learns never to say them
            # macro F1 averages over the labels in the gold or the predictions (inference/classify.py)
            scored = (
                "micro F1 counts it as 0" if self._multi else "macro F1 counts it (as 0) only if predicted"
            )
            print(
                f"lmforge: warning: {d.input}: no example of {', '.join(map(repr, unseen))}; the classifier"
                f" learns never to predict it, and {scored}",
                file=sys.stderr,
            )
        self.train_rows, self.val_rows = split_labelled(rows, d.val_fraction, t.seed, str(d.input), setup.say)
        self.dense_start = None if t.from_scratch else dense_start(backbone, self.head.dense)
        loaded = backbone
        if isinstance(backbone, Classifier):  # plan_head took what it keeps of the head
            backbone = backbone.backbone
        if not isinstance(backbone, GPT | Encoder):
            raise LmforgeError(f"train.init_from={t.init_from!r}: not a decoder or encoder model")
        # the architecture and dropout come with the model; a recipe may set its own dropout
        adopt_model_config(cfg, backbone.config, setup.say)
        # before the head: transformers' for train.init_from unless the recipe sets one
        self.dropout, source = head_dropout(loaded, t, cfg.model.dropout)
        if t.classifier_dropout < 0:
            setup.say(f"classifier: dropout {self.dropout:g} before the head ({source})")
        lora.require_trained(cfg.lora, "head", "the classification head")
        self.backbone: GPT | Encoder | None = backbone
        self.cfg = cfg
        self.context = min(backbone.config.block_size, d.max_len)  # tokens kept per text
        self.encoder = isinstance(backbone, Encoder)
        # the source's BOS and pad (Qwen's <|endoftext|>; an encoder's BOS, RoBERTa's <s>), which the
        # classifier keeps for export
        self.specials = model_special_ids(t.init_from, self.tokenizer)
        # a resumed run keeps the rules its checkpoint was trained with (classification_rules.py)
        self.rules = resumed_rules(setup.resumed, self.encoder)
        pooled_last = not self.encoder and self.head.pad_id is None and self.head.pooling in ("", "last")
        if pooled_last and self.rules.pad_id:
            self.head.pad_id = pad_id_for(self.specials, self.tokenizer)  # classification_head.py
            token = self.tokenizer.hf.id_to_token(self.head.pad_id)
            setup.say(f"classifier: pads with {token!r} (id {self.head.pad_id}) and pools the last token"
                      " that is not it, as transformers' ...ForSequenceClassification")  # fmt: skip
        # each text as transformers' tokenizer(text) gives it (a Llama's BOS first), which the
        # classifier's config.json records (formats/lmforge_dirs.py's add_special_tokens)
        reader = self.tokenizer if self.rules.special_tokens else bare_reader(self.tokenizer)
        affixes = [self.tokenizer.hf.id_to_token(i) for i in sum(self.tokenizer.text_affixes(), [])]
        if line := kept_line(self.rules, pooled_last, affixes):
            setup.say(line)
        self.pairs = bool(d.text_pair_field)
        encode: Callable[[list[Item]], tuple[torch.Tensor, ...]] = (
            partial(
                encode_items,
                reader,
                context=self.context,
                pad_id=self.head.pad_id,
                type_vocab_size=backbone.config.type_vocab_size,
            )  # fmt: skip
            if self.pairs  # (ids, mask, token types): as the pipeline encodes a pair
            else partial(encode_batch, reader, context=self.context, pad_id=self.head.pad_id)  # type: ignore[arg-type]
        )
        self.loader = LabelledLoader(
            self.train_rows, encode, t.batch_size, setup.micro, engine.rank, engine.world_size, t.seed + 1
        )
        held = [name for i, name in enumerate(self.labels)
                if name not in unseen and not self._seen(self.train_rows, i)]  # fmt: skip
        if held and engine.rank == 0:  # as above; after the loader, whose error (too few to train) says more
            print(
                f"lmforge: warning: {d.input}: every example of {', '.join(map(repr, held))} is held out"
                f" (data.val_fraction={d.val_fraction}, train.seed={t.seed}); the classifier never"
                " trains on it and learns never to predict it",
                file=sys.stderr,
            )
        val = [self.loader.collate(self.val_rows[i : i + setup.micro])
               for i in range(0, len(self.val_rows), setup.micro)]  # fmt: skip
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0]
        self.micro = setup.micro
        self.pooling = self.head.pooling
        if self.head.dense and self.head.weights is None:
            start = self.dense_start[1] if self.dense_start else "a random start"
            setup.say(f"classifier: a dense layer with {self.head.dense} before the head, from {start}")

    @property
    def _multi(self) -> bool:
        return self.problem_type == MULTI_LABEL

    def _seen(self, rows: list[tuple[Item, Target]], i: int) -> bool:
        """Whether label i is some training example's (regression: every output has one)."""
        if self.problem_type == REGRESSION:
            return True
        if self._multi:
            return any(target[i] for _, target in rows)  # type: ignore[index]
        return any(target == i for _, target in rows)

    def build_model(self) -> Classifier:
        """The model to train, built once: the loaded weights go into it and the task lets go of
        them (else the backbone stays in memory twice for the whole run)."""
        t, h = self.cfg.train, self.head
        loaded, self.backbone = self.backbone, None
        backbone = type(loaded)(self.cfg.model)
        if not t.from_scratch:  # from_scratch: the same architecture, random weights (a baseline)
            backbone.load_state_dict(loaded.state_dict())
        # a new head: a bias on an encoder, none on a decoder (transformers' `score`: it then exports)
        model = Classifier(backbone, self.labels, self.pooling, self.dropout, h.dense, h.head_bias,
                           h.pad_id, h.model_problem_type)  # fmt: skip
        self.pooling = model.pooling  # "" resolved to the backbone's default
        if self.dense_start is not None and model.dense is not None:
            model.dense.load_state_dict(self.dense_start[0])
        if h.weights is not None:  # the kept head of train.init_from
            model.head.load_state_dict(h.weights)
        self.dense_start, h.weights = None, None  # let go of the copies
        if t.head_only:
            model.backbone.requires_grad_(False)
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        *inputs, labels = batch  # ids, mask[, token types]
        return classifier_loss(model(*inputs), labels, self.problem_type)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """val_loss (per example, or per (text, label) or output where targets are floats, as
        training's), then single-label: val_accuracy and val_f1 (macro); multi-label: val_accuracy
        (subset accuracy) and val_f1 (micro); regression: val_mse and val_pearson."""
        was_training = model.training
        model.eval()
        n = len(self.labels)
        counts = torch.zeros(n, n, dtype=torch.float64)  # single-label: a confusion matrix
        if self.problem_type != SINGLE_LABEL:
            counts = torch.zeros(5 if self._multi else 7, dtype=torch.float64)
        loss = torch.zeros(2, dtype=torch.float64)  # summed loss, targets counted
        for _ in range(self.val_per_rank - len(self.val)):  # sharded engines: equal forwards
            with autocast():
                model(*(x.to(engine.device) for x in self.val_spare[:-1]))
        for batch in self.val:
            *inputs, labels = (x.to(engine.device) for x in batch)  # ids, mask[, token types]
            with autocast():
                logits = model(*inputs).float()
            summed = float(classifier_loss(logits, labels, self.problem_type))
            loss += torch.tensor([summed, count_targets(labels)], dtype=torch.float64)
            logits, labels = logits.cpu(), labels.cpu()
            if self.problem_type == SINGLE_LABEL:
                count_into(counts, labels, logits.argmax(-1))
            else:
                counts += (
                    multi_label_counts(logits, labels) if self._multi else regression_counts(logits, labels)
                )
        counts, loss = engine.all_reduce(counts), engine.all_reduce(loss)
        model.train(was_training)
        total = float(loss[0]) / max(float(loss[1]), 1.0)
        if self.problem_type == REGRESSION:
            scores = regression_scores(counts)
            return {"val_loss": total, "val_mse": scores["mse"], "val_pearson": scores["pearson"]}
        scores = multi_label_scores(counts) if self._multi else macro_scores(counts)
        return {"val_loss": total, "val_accuracy": scores["accuracy"], "val_f1": scores["f1"]}

    def write_model_files(self, directory: Path) -> None:
        c, h = self.cfg.model, self.head
        write_classifier_files(
            directory,
            self.labels,
            self.pooling,
            self.encoder,
            c,
            self.tokenizer,
            h.dense,
            head_bias=self.encoder if h.head_bias is None else h.head_bias,
            pad_id=h.pad_id,
            problem_type=h.model_problem_type,
            bos_id=self.specials.get("bos_token_id"),
            special_tokens=self.rules.special_tokens,
            dropout=self.dropout,
        )

    def step_tokens(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> int:
        return sum(int(batch[1].sum()) for batch in micro_batches)  # the mask's: real tokens, no padding

    def micro_batch_tokens(self) -> int:
        sample = self.train_rows[:200]
        chars = [len(text) if isinstance(text, str) else len(text[0]) + len(text[1]) for text, _ in sample]
        per_text = sum(min(n // 4 + 2, self.context) for n in chars) / len(sample)
        return int(self.micro * per_text)

    def describe(self) -> str:
        return (
            f"{self.cfg.data.input}: {len(self.train_rows)} train / {len(self.val_rows)} held-out examples,"
            f" labels {','.join(self.labels)} ({self.problem_type}), {self.context} tokens per"
            f" {'text pair' if self.pairs else 'text'}"
        )

    def summary(self) -> dict[str, Any]:
        t = self.cfg.train
        return {
            "task": self.name,
            "train_examples": len(self.train_rows),
            "heldout_examples": len(self.val_rows),
            "head_only": t.head_only,
            "from_scratch": t.from_scratch,
            "pooling": self.pooling,
            "problem_type": self.problem_type,
        }
