"""Text classification: a pooled linear head on train.init_from's decoder or encoder.

Data is JSON lines with a text and a label field (data.input, data.labels, data.text_field,
data.label_field); a seeded shuffle holds out data.val_fraction of it, a text also on the
training side staying there (data/holdout.py). The loss is cross-entropy summed over examples
(the loop divides by the examples of the whole step). Validation: loss, accuracy and macro F1 on
the held-out split. The export is the last step's model: the held-out
split is also what the run reports, so choosing the best step on it would flatter the report.
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
from lmforge.data.labelled import LabelledLoader, encode_batch, read_labelled
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.formats.lmforge_dirs import write_classifier_files
from lmforge.inference.classify import count_into, macro_scores
from lmforge.model import lora
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.span import SpanModel
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import rank_share
from lmforge.train.run_inputs import adopt_model_config
from lmforge.train.tasks.base import Autocast, Setup, Task


def split_labelled(
    rows: list[tuple[str, int]], fraction: float, seed: int, source: str, say: Callable[[str], None]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(train, held-out) (text, label) rows: a text's copies on one side (data/holdout.py)."""
    return hold_out(rows, key=lambda row: row[0], fraction=fraction, seed=seed, source=source, noun="example",
                    say=say)  # fmt: skip


def dense_start(loaded: nn.Module, dense: str) -> tuple[dict[str, torch.Tensor], str] | None:
    """(weights, where from) for the classifier's dense layer, or None for a random start: a
    classifier's own dense layer of the same activation, or for `tanh` an encoder's pretrained
    pooler (BERT's dense + tanh over [CLS], which BertForSequenceClassification fine-tunes). An
    import without a pooler (DistilBERT, RoBERTa) has zeros there, which are no start."""
    if isinstance(loaded, Classifier):
        if dense and loaded.dense is not None and loaded.dense_act == dense:
            return _copy(loaded.dense), "train.init_from's own dense layer"
        loaded = loaded.backbone
    if dense == "tanh" and isinstance(loaded, Encoder) and bool(loaded.pooler.weight.any()):
        return _copy(loaded.pooler), "the encoder's pretrained pooler (BERT's)"
    return None


def _copy(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in layer.state_dict().items()}


class ClassificationTask(Task):
    name = "classification"

    def __init__(self, setup: Setup) -> None:
        cfg, d, t, engine = setup.cfg, setup.cfg.data, setup.cfg.train, setup.engine
        self.labels = [label.strip() for label in d.labels.split(",") if label.strip()]
        if len(self.labels) < 2:
            raise LmforgeError(f"data.labels={d.labels!r}: name at least two labels, comma-separated")
        rows = read_labelled(d.input, self.labels, d.text_field, d.label_field)
        unseen = [name for i, name in enumerate(self.labels) if all(label != i for _, label in rows)]
        if unseen and engine.rank == 0:  # shown even with --quiet: the head learns never to say them
            print(
                f"lmforge: warning: {d.input}: no example of {', '.join(map(repr, unseen))}; the classifier"
                " learns never to predict it, and macro F1 counts it as 0",
                file=sys.stderr,
            )
        self.train_rows, self.val_rows = split_labelled(rows, d.val_fraction, t.seed, str(d.input), setup.say)
        backbone, self.tokenizer = load_model(t.init_from)
        if isinstance(backbone, SpanModel):  # a question-answering model: its encoder body
            setup.say(f"train.init_from={t.init_from!r}: a question-answering model; its span head"
                      " (qa_outputs) is left out, its encoder body tuned under a new head")  # fmt: skip
            backbone = backbone.backbone
        self.dense_start = None if t.from_scratch else dense_start(backbone, t.classifier_dense)
        if isinstance(backbone, Classifier):  # a classifier's backbone gets a new head
            if backbone.function != "softmax":  # an HF reward, regression or multi-label head
                setup.say(
                    f"train.init_from={t.init_from!r}: a {backbone.problem_type or 'one-output'} classifier"
                    f" (scores through {backbone.function!r}); its head is left out, its body tuned under a"
                    " new single-label head (a softmax, cross-entropy)"
                )
            backbone = backbone.backbone
        if not isinstance(backbone, GPT | Encoder):
            raise LmforgeError(f"train.init_from={t.init_from!r}: not a decoder or encoder model")
        # the architecture comes with the model, the dropout with the recipe (as train.init_from for LM)
        adopt_model_config(cfg, backbone.config, setup.say)
        lora.require_trained(cfg.lora, "head", "the classification head")
        self.backbone: GPT | Encoder | None = backbone
        self.cfg = cfg
        self.context = min(backbone.config.block_size, d.max_len)  # tokens kept per text
        self.encoder = isinstance(backbone, Encoder)
        encode = partial(encode_batch, self.tokenizer, context=self.context, encoder=self.encoder)
        self.loader = LabelledLoader(
            self.train_rows, encode, t.batch_size, setup.micro, engine.rank, engine.world_size, t.seed + 1
        )
        val = [self.loader.collate(self.val_rows[i : i + setup.micro])
               for i in range(0, len(self.val_rows), setup.micro)]  # fmt: skip
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0]
        self.micro = setup.micro
        self.pooling = t.pooling
        if t.classifier_dense:
            start = self.dense_start[1] if self.dense_start else "a random start"
            setup.say(f"classifier: a dense layer with {t.classifier_dense} before the head, from {start}")

    def build_model(self) -> Classifier:
        """The model to train, built once: the loaded weights go into it and the task lets go of
        them (else the backbone stays in memory twice for the whole run)."""
        t = self.cfg.train
        loaded, self.backbone = self.backbone, None
        backbone = type(loaded)(self.cfg.model)
        if not t.from_scratch:  # from_scratch: the same architecture, random weights (a baseline)
            backbone.load_state_dict(loaded.state_dict())
        # the head: a bias on an encoder, none on a decoder (transformers' `score`: it then exports)
        model = Classifier(backbone, self.labels, self.pooling, t.classifier_dropout, t.classifier_dense)
        self.pooling = model.pooling  # "" resolved to the backbone's default
        if self.dense_start is not None and model.dense is not None:
            model.dense.load_state_dict(self.dense_start[0])
        self.dense_start = None  # let go of the copy
        if t.head_only:
            model.backbone.requires_grad_(False)
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        ids, mask, labels = batch
        return F.cross_entropy(model(ids, mask).float(), labels, reduction="sum")

    @torch.no_grad()
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """val_loss (nats per example), val_accuracy and val_f1 (macro) on every held-out example."""
        was_training = model.training
        model.eval()
        n = len(self.labels)
        confusion = torch.zeros(n, n, dtype=torch.float64)
        loss = torch.zeros(1, dtype=torch.float64)
        for _ in range(self.val_per_rank - len(self.val)):  # sharded engines: equal forwards
            with autocast():
                model(*(x.to(engine.device) for x in self.val_spare[:2]))
        for batch in self.val:
            ids, mask, labels = (x.to(engine.device) for x in batch)
            with autocast():
                logits = model(ids, mask).float()
            loss += F.cross_entropy(logits, labels, reduction="sum").double().cpu()
            count_into(confusion, labels.cpu(), logits.argmax(-1).cpu())
        confusion = engine.all_reduce(confusion)
        total = float(engine.all_reduce(loss))
        model.train(was_training)
        scores = macro_scores(confusion)
        return {
            "val_loss": total / max(float(confusion.sum()), 1.0),
            "val_accuracy": scores["accuracy"],
            "val_f1": scores["f1"],
        }

    def write_model_files(self, directory: Path) -> None:
        c, dense = self.cfg.model, self.cfg.train.classifier_dense
        write_classifier_files(
            directory,
            self.labels,
            self.pooling,
            self.encoder,
            c,
            self.tokenizer,
            dense,
            head_bias=self.encoder,
        )

    def step_tokens(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> int:
        return sum(int(mask.sum()) for _, mask, _ in micro_batches)  # real tokens, no padding

    def micro_batch_tokens(self) -> int:
        sample = self.train_rows[:200]
        per_text = sum(min(len(text) // 4 + 2, self.context) for text, _ in sample) / len(sample)
        return int(self.micro * per_text)

    def describe(self) -> str:
        return (
            f"{self.cfg.data.input}: {len(self.train_rows)} train / {len(self.val_rows)} held-out examples,"
            f" labels {','.join(self.labels)}, {self.context} tokens per text"
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
        }
