"""Question-answering models in Hugging Face's layout (BertForQuestionAnswering) and lmforge's own
(`lmforge-qa`).

HF's BertForQuestionAnswering is BERT's body under `bert.` (no pooler) and a `qa_outputs` linear
map to two logits per token; DistilBertForQuestionAnswering and RobertaForQuestionAnswering are the
same under `distilbert.` and `roberta.`. Import reads the body with its family (formats/hf.py) and
takes `qa_outputs` as it is; export writes the body as BERT or DistilBERT (RoBERTa is not written)
and leaves the pooler out, so transformers loads the directory without a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import WEIGHTS, load_tokenizer, load_weights, read_model_config
from lmforge.formats.hf_convert import lmforge_to_hf
from lmforge.formats.hf_family import Family
from lmforge.model.empty import empty
from lmforge.model.encoder import Encoder
from lmforge.model.span import SpanModel
from lmforge.tokenization.tokenizer import Tokenizer

QA_TYPE = "lmforge-qa"
HEAD = "qa_outputs"


def wants_span_head(raw: dict[str, Any]) -> bool:
    """An HF config.json naming a question-answering architecture."""
    architectures = raw.get("architectures") or []
    return isinstance(architectures, list) and any(
        isinstance(a, str) and a.endswith("ForQuestionAnswering") for a in architectures
    )


def with_span_head(
    encoder: Encoder, hf: dict[str, torch.Tensor], unused: list[str], file: str
) -> tuple[SpanModel, list[str]]:
    """The imported encoder with HF's `qa_outputs` on top; returns (model, HF names still unused)."""
    model = SpanModel(encoder)
    head = {}
    for param in ("weight", "bias"):
        name = f"{HEAD}.{param}"
        if name not in hf:
            raise LmforgeError(f"{file}: missing tensor {name!r} (a question-answering model's span head)")
        expected = getattr(model.qa_outputs, param).shape
        if hf[name].shape != expected:
            raise LmforgeError(
                f"{file}: tensor {name!r} has shape {tuple(hf[name].shape)}, expected {tuple(expected)}"
            )
        head[param] = hf[name]
    model.qa_outputs.load_state_dict(head)
    return model, [n for n in unused if not n.startswith(f"{HEAD}.")]


def body_to_hf(encoder: Encoder, family: Family) -> dict[str, torch.Tensor]:
    """The encoder body of a task model (...ForQuestionAnswering, ...ForSequenceClassification) in
    transformers' names, under the family's `bert.` / `distilbert.` prefix, without lmforge's
    pooler (those classes have none, or keep the classifier's dense layer there)."""
    body = {k: v.float() for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    prefix = family.alt_prefix[1]
    return {f"{prefix}{k}": v for k, v in lmforge_to_hf(family, encoder.config, body).items()}


def span_state_to_hf(model: SpanModel, family: Family) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors, architecture) of transformers' ...ForQuestionAnswering for the family the body
    exports as (formats/hf.py's export_family): the body under `bert.` / `distilbert.` without the
    pooler, and the head."""
    out = body_to_hf(model.backbone, family)
    out.update({f"{HEAD}.{k}": v.float().contiguous() for k, v in model.qa_outputs.state_dict().items()})
    return out, family.architecture.removesuffix("Model") + "ForQuestionAnswering"


def load_qa_dir(directory: Path) -> tuple[SpanModel, Tokenizer]:
    """The LOADERS entry for `lmforge-qa` directories (written by import, training and export)."""
    config = read_model_config(directory, QA_TYPE)
    model = empty(lambda: SpanModel(Encoder(config)))
    load_weights(model, directory / WEIGHTS)
    return model.eval(), load_tokenizer(directory, config.vocab_size)
