"""Each model class in words, for messages that name what a directory holds."""

from __future__ import annotations

from lmforge.errors import LmforgeError
from lmforge.model.gpt import GPT

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


def require_decoder(model: object, source: object, consequence: str = "") -> GPT:
    """`model` itself when it is a GPT; otherwise the one-line error every decoding verb gives:
    'SOURCE: an encoder (Encoder), not a decoder language model, so it cannot chat'."""
    if isinstance(model, GPT):
        return model
    tail = f", {consequence}" if consequence else ""
    hint = " (try translate)" if type(model).__name__ == "Seq2Seq" else ""
    raise LmforgeError(f"{source}: {describe(model)}, not a decoder language model{tail}{hint}")


def heads_note(head_dim: int, qk_norm: bool) -> str:
    """'(128, q/k norms)' after the head count where a head's size is not n_embd / n_head or its
    queries and keys are normed (Qwen3): else the parameter count would not follow from the line."""
    parts = [str(head_dim)] * bool(head_dim) + ["q/k norms"] * qk_norm
    return f" ({', '.join(parts)})" if parts else ""
