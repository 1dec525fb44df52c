"""Each model class in words, for messages that name what a directory holds."""

from __future__ import annotations

KINDS = {
    "GPT": "a decoder (GPT)",
    "Seq2Seq": "an encoder-decoder (Seq2Seq)",
    "Encoder": "an encoder (Encoder)",
    "Classifier": "a classifier (Classifier)",
    "SpanModel": "a question-answering model (SpanModel)",
}


def describe(model: object) -> str:
    """'an encoder (Encoder)' for an Encoder: the article and the kind, then the class."""
    name = type(model).__name__
    return KINDS.get(name, f"a {name}")
