"""Task heads of Hugging Face encoder checkpoints, put on the imported body (formats/hf_files.py).

- `...ForSequenceClassification` (BERT, DistilBERT, RoBERTa) -> lmforge's `Classifier`
  (model/classifier.py) on the first token ([CLS], <s>), with transformers' head shape: BERT's
  pooler (dense + tanh), DistilBERT's pre_classifier (dense + ReLU) or RoBERTa's
  classifier.dense (dense + tanh), then the label layer. The labels are config.json's `id2label`,
  its `problem_type` (`problem_type_of`) how the outputs are read, as transformers' pipeline reads
  them: a softmax over the labels, a sigmoid per label (multi-label, and a head of one output: a
  cross-encoder's relevance, a reward) or the raw scores (regression).
- `...ForQuestionAnswering` -> `SpanModel` (formats/hf_qa.py).
- Back (`lmforge export`, `classifier_state_to_hf`): a Classifier whose head transformers has, an
  encoder pooling its first token through BERT's tanh or DistilBERT's ReLU dense layer, exports as
  `BertForSequenceClassification` or `DistilBertForSequenceClassification` with its labels
  (RoBERTa's head is BERT's: its body exports as BERT). Other classifiers are refused in one line.
- A decoder's `...ForSequenceClassification` (GPT-2, Llama, Mistral, Qwen2) is
  formats/hf_decoder_heads.py's; the checks of config.json (`labels_of`, `problem_type_of`) are shared.
- Heads lmforge has no model for (token classification, multiple choice, next-sentence prediction,
  a classifier of another family) and pretraining heads (`...ForMaskedLM`, `...ForPreTraining`)
  are dropped with a note naming the head: the body is what a fine-tune starts from
  (bert-base-uncased's config.json names BertForMaskedLM), and a pipeline that needs the head says
  the body is not a classifier.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.hf_family import Family, typed_key
from lmforge.formats.hf_qa import body_to_hf, wants_span_head, with_span_head
from lmforge.model.classifier import PROBLEM_TYPES, Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.span import SpanModel

B = TypeVar("B", bound=torch.nn.Module)

# model_type -> (the dense layer's HF names, tried in order; its activation; the label layer's module)
CLASSIFIER_HEADS: dict[str, tuple[tuple[str, ...], str, str]] = {
    "bert": (("bert.pooler.dense", "pooler.dense"), "tanh", "classifier"),
    "distilbert": (("pre_classifier",), "relu", "classifier"),
    "roberta": (("classifier.dense",), "tanh", "classifier.out_proj"),  # dropout, dense, tanh, dropout, out
}
# model_type -> config.json's key for the dropout before the label layer (head_dropout)
DROPOUT_KEYS = {
    "bert": "classifier_dropout",
    "distilbert": "seq_classif_dropout",
    "roberta": "classifier_dropout",
}
REFUSED = {
    "ForTokenClassification": "a label per token",
    "ForMultipleChoice": "multiple choice",
    "ForNextSentencePrediction": "next-sentence prediction",
}
SCORE_HEADS = (
    "gpt2",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma2",
    "gemma3_text",
    "smollm3",
)  # decoders' `score` heads: formats/hf_decoder_heads.py


def architecture_of(raw: dict[str, Any]) -> str:
    """config.json's first `architectures` entry, or "" when it names none."""
    names = raw.get("architectures")
    first = names[0] if isinstance(names, list) and names else ""
    return first if isinstance(first, str) else ""


def unread_head(raw: dict[str, Any]) -> str:
    """Why config.json's task head is not read ("" when it is, or when it names none): its body
    loads alone, with a note (see the module doc)."""
    arch = architecture_of(raw)
    for suffix, what in REFUSED.items():
        if arch.endswith(suffix):
            return f"{arch} ({what})"
    read = (*CLASSIFIER_HEADS, *SCORE_HEADS)
    if arch.endswith("ForSequenceClassification") and raw.get("model_type") not in read:
        return f"{arch} (classifier heads are read for {', '.join(sorted(read))})"
    return ""


def problem_type_of(raw: dict[str, Any], file: str) -> str:
    """config.json's problem_type ("" for none), one of those transformers allows."""
    problem = raw.get("problem_type")
    if problem is None:
        return ""
    if problem not in PROBLEM_TYPES[1:]:
        allowed = ", ".join(repr(p) for p in PROBLEM_TYPES[1:])
        raise LmforgeError(f"{file}: problem_type={problem!r} must be one of {allowed} (or null)")
    return problem


def body_alone(body: B, why: str, file: str, unused: list[str]) -> tuple[B, list[str]]:
    """The body of a head lmforge does not read, with a note naming the head."""
    print(f"lmforge: note: {file}: {why}: a head lmforge does not read; its body is loaded", file=sys.stderr)
    body.unread_head = why  # for the pipelines' "not a classifier" (inference/classify.py)
    return body, unused


def with_head(
    encoder: Encoder,
    raw: dict[str, Any],
    hf: dict[str, torch.Tensor],
    unused: list[str],
    files: tuple[str, str],
) -> tuple[Encoder | Classifier | SpanModel, list[str]]:
    """The imported body with the head config.json's architecture names (the body itself when it
    names none lmforge reads); `files` are (config.json, the weights) for messages. Returns
    (model, HF names still unused)."""
    if wants_span_head(raw):
        return with_span_head(encoder, hf, unused, files[1])
    why = unread_head(raw)
    if why:
        return body_alone(encoder, why, files[0], unused)
    if architecture_of(raw).endswith("ForSequenceClassification"):
        return with_classifier_head(encoder, raw, hf, unused, files)
    return encoder, unused


def _tensor(
    hf: dict[str, torch.Tensor], names: tuple[str, ...], shape: tuple[int, ...], file: str
) -> torch.Tensor:
    found = next((n for n in names if n in hf), None)
    if found is None:
        raise LmforgeError(f"{file}: missing tensor {names[0]!r} (a sequence classifier's head)")
    if tuple(hf[found].shape) != shape:
        raise LmforgeError(f"{file}: tensor {found!r} has shape {tuple(hf[found].shape)}, expected {shape}")
    return hf[found]


def _shapes(rows: int, n: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """A linear map's parameters and their shapes, (rows, n) and (rows,)."""
    return (("weight", (rows, n)), ("bias", (rows,)))


def labels_of(raw: dict[str, Any], rows: int, file: str) -> list[str]:
    """The label of each output row: config.json's id2label ({"0": "NEGATIVE", ...}), or
    transformers' default names LABEL_0, LABEL_1, ... when it has none."""
    if rows < 1:
        raise LmforgeError(f"{file}: the sequence classifier's head has no output")
    id2label = raw.get("id2label")
    if not id2label:
        return [f"LABEL_{i}" for i in range(rows)]
    if not isinstance(id2label, dict) or set(id2label) != {str(i) for i in range(rows)}:  # JSON keys
        raise LmforgeError(
            f"{file}: 'id2label' must name each of the classifier's {rows} outputs, 0 to {rows - 1}"
        )
    labels = [id2label[str(i)] for i in range(rows)]
    if not all(isinstance(label, str) for label in labels) or len(set(labels)) != rows:
        raise LmforgeError(f"{file}: 'id2label' must give {rows} distinct label names, got {labels}")
    return labels


def head_dropout(raw: dict[str, Any], file: str, body_dropout: float) -> float:
    """The dropout transformers' encoder ...ForSequenceClassification puts before its label layer:
    config.json's `classifier_dropout` (BERT, RoBERTa; null: none given), DistilBERT's
    `seq_classif_dropout` (0.2 where absent, as DistilBertConfig), else the body's hidden dropout
    (`body_dropout`, lmforge's model.dropout as imported)."""
    key = DROPOUT_KEYS.get(raw.get("model_type", ""), "classifier_dropout")
    given = typed_key(raw, key, file, float, 0.2 if key == "seq_classif_dropout" else None)
    if given is not None and not 0.0 <= given <= 1.0:
        raise LmforgeError(f"{file}: config key {key!r} must be a probability in [0, 1], not {given}")
    return body_dropout if given is None else given


def with_classifier_head(
    encoder: Encoder,
    raw: dict[str, Any],
    hf: dict[str, torch.Tensor],
    unused: list[str],
    files: tuple[str, str],
) -> tuple[Classifier | Encoder, list[str]]:
    """A Classifier on [CLS] with transformers' dense layer and labels (see the module doc)."""
    dense_names, activation, head = CLASSIFIER_HEADS[raw["model_type"]]
    config_file, file = files
    n = encoder.config.n_embd
    weight_name = f"{head}.weight"
    if weight_name not in hf:
        raise LmforgeError(f"{file}: missing tensor {weight_name!r} (a sequence classifier's head)")
    rows = hf[weight_name].shape[0]
    labels = labels_of(raw, rows, config_file)
    problem = problem_type_of(raw, config_file)
    dropout = head_dropout(raw, config_file, encoder.config.dropout)
    model = Classifier(encoder, labels, "cls", dropout, dense=activation, problem_type=problem)
    dense = {p: _tensor(hf, tuple(f"{d}.{p}" for d in dense_names), s, file) for p, s in _shapes(n, n)}
    model.get_submodule("dense").load_state_dict(dense)
    model.head.load_state_dict({p: _tensor(hf, (f"{head}.{p}",), s, file) for p, s in _shapes(rows, n)})
    taken = {f"{m}.{p}" for m in (*dense_names, head) for p in ("weight", "bias")}
    return model, [name for name in unused if name not in taken]


def classifier_state_to_hf(
    model: Classifier, model_type: str, family: Family
) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors, architecture) of transformers' ...ForSequenceClassification for the family the
    body exports as (formats/hf.py's export_family): the body under `bert.` / `distilbert.`, the
    dense layer where that class keeps it, and the label layer. A one-line error, before anything
    is written, for a classifier no transformers class computes."""
    if not model.encoder:  # a decoder's: formats/hf_decoder_heads.py's score_state_to_hf
        raise LmforgeError("an encoder classifier's export was given a decoder classifier")
    dense_names, activation, head = CLASSIFIER_HEADS[model_type]
    architecture = family.architecture.removesuffix("Model") + "ForSequenceClassification"
    if model.pooling != "cls" or model.dense is None or model.dense_act != activation:
        through = f"a {model.dense_act} dense layer" if model.dense is not None else "no dense layer"
        raise LmforgeError(
            f"a classifier exports to HF as {architecture}, which pools the first token through a"
            f" {activation} dense layer; this one has {model.pooling!r} pooling through {through},"
            " which no transformers class computes"
        )
    out = body_to_hf(model.backbone, family)  # type: ignore[arg-type]  # an encoder, checked above
    for module, name in ((model.dense, dense_names[0]), (model.head, head)):
        out.update({f"{name}.{p}": t.detach().float().contiguous() for p, t in module.state_dict().items()})
    return out, architecture
