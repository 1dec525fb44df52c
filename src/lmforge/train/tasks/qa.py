"""Extractive question answering: a span head (model/span.py) on train.init_from's encoder.

Data is SQuAD v1.1/v2.0 JSON (data.input; data/qa_squad.py): answers whose answer_start does not
match their text are skipped and counted in one line. A seeded shuffle of the paragraphs holds
out data.val_fraction of their distinct contexts (every question on one context text stays on one
side, however many paragraphs repeat it). Each question becomes
windows of data.max_len tokens ([CLS] question [SEP] context [SEP]) overlapping by data.doc_stride
(data/qa_features.py); a window's targets are the token positions of the question's first answer,
or [CLS] when the window does not hold it whole or the question is unanswerable (SQuAD v2), as in
transformers' run_qa.py. The loss is cross-entropy of the start and of the end over the window's
real tokens, summed; the loop divides by the targets (two per window), which makes it
BertForQuestionAnswering's (start + end) / 2.

Validation: loss per target, and SQuAD exact match and F1 (inference/squad_metric.py) of the
answers the pipeline would give (inference/qa.py; the null answer allowed when the file is v2).
Every rank decodes every held-out question, so every rank runs the same forwards. The export is
the best step by val_f1.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.holdout import hold_out
from lmforge.data.labelled import LabelledLoader
from lmforge.data.loader import padded_width
from lmforge.data.qa_features import Inputs, Window, WindowMaker, pad_windows, span_targets
from lmforge.data.qa_squad import QAExample, read_squad
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, write_model_files
from lmforge.formats.hf_files import model_special_ids
from lmforge.formats.hf_qa import QA_TYPE
from lmforge.inference.qa import QAOptions, decode_example, window_logits
from lmforge.inference.squad_metric import exact_match, f1
from lmforge.model import lora
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.span import SpanModel
from lmforge.train.engines.base import Engine
from lmforge.train.run_inputs import adopt_model_config
from lmforge.train.tasks.base import Autocast, Setup, Task

Feature = tuple[Window, tuple[int, int]]  # a window and its (start, end) target
TrainFeature = tuple[Inputs, tuple[int, int]]  # the same without what decoding needs


def collate(features: list[TrainFeature] | list[Feature], limit: int = 0) -> tuple[torch.Tensor, ...]:
    """(ids, token_type_ids, attention_mask) each (B, T), right-padded to a multiple of PAD_TO
    (data/loader.py) but not past `limit` tokens, and targets (B, 2)."""
    windows = [w for w, _ in features]
    width = padded_width(max(len(w.ids) for w in windows), limit)
    return *pad_windows(windows, width), torch.tensor([target for _, target in features])


class FeatureLoader(LabelledLoader):
    """The classification loader's shuffle, dealing and exact-resume position, over windows of at
    most `limit` tokens."""

    def __init__(self, features: list[TrainFeature], limit: int, *args: Any) -> None:
        super().__init__(features, None, *args)  # type: ignore[arg-type]
        self.limit = limit

    def collate(self, rows: list[Any]) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return collate(rows, self.limit)


def span_loss(logits: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits (B, T, 2), mask (B, T), targets (B, 2) -> start + end cross-entropy summed over B.
    Padding is masked out, so a window's loss does not depend on what it is batched with."""
    logits = logits.float().masked_fill(~mask.bool().unsqueeze(-1), float("-inf"))
    start = F.cross_entropy(logits[..., 0], targets[:, 0], reduction="sum")
    return start + F.cross_entropy(logits[..., 1], targets[:, 1], reduction="sum")


class QATask(Task):
    name = "qa"
    best_metric = "val_f1"

    def __init__(self, setup: Setup) -> None:
        cfg, d, t, engine = setup.cfg, setup.cfg.data, setup.cfg.train, setup.engine
        squad = read_squad(d.input)
        skipped = squad.report(d.input)
        if skipped and engine.rank == 0:  # shown even with --quiet: data was left out
            print(f"lmforge: warning: {skipped}", file=sys.stderr)
        self.skipped = squad.skipped_answers
        contexts = {e.paragraph: e.context for e in squad.examples}  # paragraph index -> its text
        # keyed on the text: a context written as several paragraphs lands on one side, so no
        # held-out question is asked of a context trained on
        held_out = set(hold_out(
            sorted(contexts), key=contexts.__getitem__, fraction=d.val_fraction, seed=t.seed,
            source=str(d.input), noun="paragraph", say=setup.say,
        )[1])  # fmt: skip
        self.train_examples = [e for e in squad.examples if e.paragraph not in held_out]
        self.val_examples = [e for e in squad.examples if e.paragraph in held_out]
        self.v2 = any(e.impossible for e in squad.examples)
        model, self.tokenizer = load_model(t.init_from)
        # the source's BOS (RoBERTa's <s>), for the export (which named the EOS until 2026-12-07)
        bos = model_special_ids(t.init_from, self.tokenizer).get("bos_token_id")
        self.specials = {} if bos is None else {"bos_token_id": bos}
        # a span model's or a classifier's body (an imported ...ForSequenceClassification) gets a span head
        self.backbone: Encoder | None = model.backbone if isinstance(model, SpanModel | Classifier) else model
        self.head = model.qa_outputs.state_dict() if isinstance(model, SpanModel) else None
        if not isinstance(self.backbone, Encoder):
            raise LmforgeError(f"train.init_from={t.init_from!r}: not an encoder (BERT, MiniLM) model")
        adopt_model_config(cfg, self.backbone.config, setup.say)
        if self.head is None:  # a QA model's own head goes on training; an encoder gets a new one
            lora.require_trained(cfg.lora, "qa_outputs", "the answer-span head (qa_outputs)")
        self.cfg, self.micro = cfg, setup.micro
        context = cfg.model.block_size
        self.max_len = min(d.max_len, context)
        # errors name the window by the context where max_len was cut to it: not by a max_len never given
        self.size = f"{context} tokens (the model's context)" if d.max_len > context else None
        if d.max_len > context and cfg.is_set("data.max_len"):  # it was cut to 64 unsaid
            self.size = f"{context} tokens (the model's context; data.max_len={d.max_len} is above it)"
            setup.say(
                f"note: data.max_len={d.max_len} is above the model's context: windows of {context} tokens"
            )
        derived = d.doc_stride < 0  # not given (-1)
        self.stride_note = f" (not given: min(data.max_len // 2, 128) of {self.max_len})" if derived else ""
        if derived:  # settled: config.toml records it
            d.doc_stride = min(self.max_len // 2, 128)
        self.maker = WindowMaker(self.tokenizer)
        train = [(Inputs.of(w), target) for w, target in self._features(self.train_examples)]
        self.loader = FeatureLoader(
            train, self.max_len, t.batch_size, setup.micro, engine.rank, engine.world_size, t.seed + 1
        )
        self.val = list(self._features(self.val_examples))  # decoding needs the whole Windows
        self.n_train_windows = len(train)

    def _features(self, examples: list[QAExample]) -> Iterator[Feature]:
        d = self.cfg.data
        for n, e in enumerate(examples):
            name = f"{d.input}: question {e.id!r}"  # an error names the file and the question's id
            keys = ("data.doc_stride", "data.max_len")
            windows = self.maker.windows(
                n, e.question, e.context, self.max_len, d.doc_stride, name, self.stride_note, keys, self.size
            )
            for w in windows:
                text, start = e.answers[0] if e.answers and not e.impossible else ("", 0)
                yield w, span_targets(w, start, start + len(text))

    def build_model(self) -> SpanModel:
        """The model to train, built once: the loaded weights go into it and the task lets go of
        them (else the encoder stays in memory twice for the whole run)."""
        loaded, self.backbone = self.backbone, None
        backbone = Encoder(self.cfg.model)
        if not self.cfg.train.from_scratch and loaded is not None:  # from_scratch: random weights
            backbone.load_state_dict(loaded.state_dict())
        model = SpanModel(backbone)
        if self.head is not None and not self.cfg.train.from_scratch:  # a QA model goes on training
            model.qa_outputs.load_state_dict(self.head)
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        ids, types, mask, targets = batch
        return span_loss(model(ids, mask, types), mask, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """val_loss (nats per target), val_exact and val_f1 (percent, SQuAD's) on every held-out question."""
        was_training = model.training
        model.eval()
        windows = [w for w, _ in self.val]
        with autocast():
            logits = window_logits(model, windows, self.micro, engine.device)
        loss = 0.0
        for (_, target), (start, end) in zip(self.val, logits, strict=True):
            loss -= float(torch.from_numpy(start).log_softmax(-1)[target[0]])
            loss -= float(torch.from_numpy(end).log_softmax(-1)[target[1]])
        options = QAOptions(handle_impossible_answer=self.v2)
        grouped: dict[int, list[int]] = {}
        for i, w in enumerate(windows):
            grouped.setdefault(w.example, []).append(i)
        exact = f1s = 0.0
        version = "v2.0" if self.v2 else "1.1"
        for n, e in enumerate(self.val_examples):
            picked = grouped[n]
            answers = decode_example(
                e.context, [windows[i] for i in picked], [logits[i] for i in picked], options
            )
            prediction = answers[0]["answer"] if answers else ""
            golds = [] if e.impossible else [text for text, _ in e.answers]
            exact += exact_match(prediction, golds, version=version)
            f1s += f1(prediction, golds, version=version)
        model.train(was_training)
        n = max(len(self.val_examples), 1)
        return {
            "val_loss": loss / max(2 * len(self.val), 1),
            "val_exact": 100.0 * exact / n,
            "val_f1": 100.0 * f1s / n,
        }

    def write_model_files(self, directory: Path) -> None:
        write_model_files(directory, self.cfg.model, self.tokenizer, QA_TYPE, self.specials)

    def step_tokens(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> int:
        return sum(int(b[2].sum()) for b in micro_batches)  # real tokens, no padding

    def micro_batch_tokens(self) -> int:
        return self.micro * self.max_len

    def describe(self) -> str:
        return (
            f"{self.cfg.data.input}: {len(self.train_examples)} train questions ({self.n_train_windows}"
            f" windows) / {len(self.val_examples)} held-out, SQuAD {'v2.0' if self.v2 else 'v1.1'},"
            f" {self.max_len} tokens per window, doc stride {self.cfg.data.doc_stride}"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "train_questions": len(self.train_examples),
            "heldout_questions": len(self.val_examples),
            "train_windows": self.n_train_windows,
            "skipped_answers": self.skipped,
            "from_scratch": self.cfg.train.from_scratch,
        }
