"""Which head a classification run trains: its problem type, labels and layout, kept from
train.init_from's classifier or new.

data.problem_type is transformers' (`single_label_classification`, `multi_label_classification`,
`regression`); the loss follows it as transformers' ...ForSequenceClassification computes it
(train/tasks/classification.py). A multi-label, regression or one-output classifier given as
train.init_from keeps its head (weights, labels, pooling, dense layer, bias, pad id) where the run
asks for its type or none ("") and names no other labels: a reward model fine-tunes as a reward
model. A head of one output without a problem_type trains as a regression, as transformers'
forward decides (and then records in its config, so its pipeline reads the raw output).
Otherwise the head is new: single-label where no type is asked for, as before.

A decoder's `last` pooling gets a pad id where its head has none (pad_id_for): the token its
batches are padded with and its pooling skips at a text's end, as transformers'
...ForSequenceClassification does with config.json's `pad_token_id`. Its pooling is then
transformers' rule exactly, on every text (one that ends in the pad token, or is made of it,
included), so the export batches padded texts in transformers with lmforge's logits. Without
one it pooled the attention mask's last token, which no `pad_token_id` reproduces for a text
ending in that token: it exported none, and transformers took one text at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import DataConfig, TrainConfig
from lmforge.data.labelled import MULTI_LABEL, REGRESSION
from lmforge.errors import LmforgeError
from lmforge.formats.directory import read_config_json, resolve_model_dir
from lmforge.formats.hf_heads import head_dropout as hf_head_dropout
from lmforge.model.classifier import Classifier, trained_as
from lmforge.model.encoder import Encoder
from lmforge.tokenization.tokenizer import Tokenizer

SINGLE_LABEL = "single_label_classification"


@dataclass
class Head:
    problem_type: str  # one of transformers' three
    labels: list[str]
    pooling: str  # "" for the backbone's default
    dense: str
    head_bias: bool | None = None  # None: one on an encoder, none on a decoder
    pad_id: int | None = None
    weights: dict[str, torch.Tensor] | None = None  # the kept head's, None for a new one

    @property
    def model_problem_type(self) -> str:
        """What the classifier records (config.json's problem_type): "" for single-label, as
        lmforge's classifiers always had, so their softmax reading is unchanged."""
        return "" if self.problem_type == SINGLE_LABEL else self.problem_type


def plan_head(loaded: nn.Module, d: DataConfig, t: TrainConfig, say: Callable[[str], None]) -> Head:
    """The head of the run: train.init_from's (`loaded`) kept, or a new one (see the module doc)."""
    names = d.label_names()
    if isinstance(loaded, Classifier):
        kind = trained_as(loaded.problem_type, len(loaded.labels))
        same = not names or [n.casefold() for n in names] == [n.casefold() for n in loaded.labels]
        wanted = d.problem_type or (kind if same and kind != SINGLE_LABEL else SINGLE_LABEL)
        other_layout = (t.pooling and t.pooling != loaded.pooling) or (
            t.classifier_dense and t.classifier_dense != loaded.dense_act
        )
        if kind == wanted != SINGLE_LABEL and same and not t.from_scratch and not other_layout:
            say(f"train.init_from={t.init_from!r}: its {kind} head is kept and trained on (labels"
                f" {','.join(loaded.labels)})")  # fmt: skip
            weights = {k: v.detach().clone() for k, v in loaded.head.state_dict().items()}
            bias = loaded.head.bias is not None
            return Head(
                kind, list(loaded.labels), loaded.pooling, loaded.dense_act, bias, loaded.pad_id, weights
            )
        if loaded.function != "softmax" or wanted != SINGLE_LABEL:  # else: a new head, as always
            why = "another pooling or dense layer" if other_layout else "its body tuned"
            say(
                f"train.init_from={t.init_from!r}: a {_kind_of(loaded)} classifier (scores through"
                f" {loaded.function!r}); its head is left out, {why} under a new"
                f" {_described(wanted)}"
            )
    else:
        wanted = d.problem_type or SINGLE_LABEL
    if not names and wanted == REGRESSION:
        names = ["LABEL_0"]  # one output, transformers' name for it
    least = 2 if wanted == SINGLE_LABEL else 1
    if len(names) < least:
        some = "two labels" if least == 2 else "one label"
        raise LmforgeError(f"data.labels={d.labels!r}: name at least {some}, comma-separated ({wanted})")
    return Head(wanted, names, t.pooling, t.classifier_dense)


def head_dropout(loaded: nn.Module, t: TrainConfig, body_dropout: float) -> tuple[float, str]:
    """(dropout before the head, where it comes from): train.classifier_dropout where set (not
    -1), else transformers' for train.init_from (`loaded`): a classifier's own (an HF one's from
    its config.json), an encoder's (a question-answering model's body's) from config.json
    (formats/hf_heads.py's head_dropout: BERT's classifier_dropout, DistilBERT's
    seq_classif_dropout, else the body's hidden dropout, here model.dropout, which a recipe may
    set), none on a decoder (transformers' `score` has none)."""
    if t.classifier_dropout >= 0:
        return t.classifier_dropout, "train.classifier_dropout"
    if isinstance(loaded, Classifier):
        return loaded.drop.p, "train.init_from's classifier's"
    if not isinstance(loaded, Encoder):
        return 0.0, "a decoder's, as transformers' score head"
    directory = resolve_model_dir(t.init_from)
    dropout = hf_head_dropout(read_config_json(directory), str(directory / "config.json"), body_dropout)
    return dropout, f"{directory / 'config.json'}'s, as transformers reads it"


def _described(problem_type: str) -> str:
    return {
        SINGLE_LABEL: "single-label head (a softmax, cross-entropy)",
        MULTI_LABEL: "multi-label head (a sigmoid per label, binary cross-entropy)",
        REGRESSION: "regression head (raw outputs, squared error)",
    }[problem_type]


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


def _kind_of(loaded: Classifier) -> str:
    """What a loaded classifier's head is, in words: its problem_type, else by its outputs."""
    n = len(loaded.labels)
    if loaded.problem_type:
        return f"{loaded.problem_type}{f' ({n} labels)' if n > 1 else ''}"
    return "one-output" if n == 1 else f"single-label ({n} labels)"


def pad_id_for(specials: dict[str, int], tokenizer: Tokenizer) -> int:
    """The pad id of a decoder classifier that has none (see the module doc): the model's own
    (`specials`, model_special_ids: an HF directory's pad_token_id or tokenizer_config.json's
    pad_token, Qwen's <|endoftext|>), else the tokenizer's <|pad|> (lmforge's), else its EOS
    (GPT-2's, as transformers' recipes set it), else 0, what lmforge padded with before."""
    for pad in (specials.get("pad_token_id"), tokenizer.pad_id, tokenizer.eos_id):
        if pad is not None:
            return pad
    return 0
