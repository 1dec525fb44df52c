"""The graphs `lmforge export --format onnx` writes: each model's forward with tensors in and out.

The model's KV cache (model/attention.py `KVCache`) is a buffer written in place; an ONNX graph
instead takes the past keys/values as inputs and returns the present ones (past + new) as outputs,
as optimum's decoder graphs do. `PastCache` gives the model's layers KVCache's interface over such
tensors, so every graph here runs the model's own code, unchanged:

- `DecoderGraph` (GPT): input_ids (B, T), attention_mask (B, P+T), past (B, n_kv, P, hs) per layer
  -> logits (B, T, V), present (B, n_kv, P+T, hs) per layer. The first step passes P = 0.
- `EncoderGraph` / `ClassifierGraph` / `SpanGraph`: ids and mask -> hidden states, class logits,
  or answer start/end logits.
- `Seq2SeqEncoderGraph`: source ids and mask -> the memory and every decoder layer's
  cross-attention keys/values (computed once per source, as decoding does);
  `Seq2SeqDecoderGraph`: target ids, source mask, cross keys/values, past -> logits, present.

Each graph also names its inputs and outputs and their dynamic axes (`io()`), which the exporter
and the runner (inference/onnx_runner.py) share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel


class PastCache:
    """KVCache's interface (`length`, `update`, `advance`) over past tensors: appends by
    concatenation, not in place, and keeps what it returns as the present keys/values."""

    def __init__(self, past: Sequence[torch.Tensor]) -> None:
        self.past = past  # k0, v0, k1, v1, ...: (B, n_kv, P, hs) each
        self.length = past[0].size(2)
        self.present: list[torch.Tensor] = []

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = torch.cat([self.past[2 * layer], k], dim=2)  # (B, n_kv, P+T, hs)
        v = torch.cat([self.past[2 * layer + 1], v], dim=2)
        self.present += [k, v]
        return k, v

    def advance(self, n: int) -> None:  # the graph's caller keeps the length: P+T next time
        pass


@dataclass
class GraphIO:
    """A graph's input and output names, in order, and each one's dynamic axes {axis: name}."""

    inputs: list[str]
    outputs: list[str]
    axes: dict[str, dict[int, str]] = field(default_factory=dict)


def _kv_names(prefix: str, n_layer: int) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(n_layer) for kv in ("key", "value")]


def _reference_attention(model: nn.Module) -> None:
    """The written-out formula on every attention: it has no branch on sequence lengths, which
    the fast routes take (bmm or sdpa, by whether queries and keys are equally long), so one
    graph serves the prompt and each decoding step. On it a sliding-window layer always applies
    its band mask (SelfAttention._slide), rather than slicing a step's keys or skipping the band
    inside the window: one graph for both sides of the window."""
    model.set_attention("reference")  # type: ignore[operator]


class DecoderGraph(nn.Module):
    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        _reference_attention(gpt)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, past: list[torch.Tensor]
    ) -> tuple[torch.Tensor, ...]:
        cache = PastCache(past)
        logits = self.gpt(input_ids, cache, mask=attention_mask.bool())  # (B, T, V)
        return (logits, *cache.present)

    def io(self) -> GraphIO:
        n = self.gpt.config.n_layer
        past, present = _kv_names("past_key_values", n), _kv_names("present", n)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"}}
        axes["logits"] = {0: "batch", 1: "sequence"}
        axes.update({name: {0: "batch", 2: "past"} for name in past})
        axes.update({name: {0: "batch", 2: "total"} for name in present})
        return GraphIO(["input_ids", "attention_mask", *past], ["logits", *present], axes)


_IDS_AXES = {0: "batch", 1: "sequence"}


class _IdsGraph(nn.Module):
    """input_ids, attention_mask (1 = real token) [, token_type_ids] (B, T) -> `net`'s output. The
    types are an input where the encoder has token type embeddings (BERT's: a pair's second text)."""

    def __init__(self, net: nn.Module, encoder: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.types = isinstance(encoder, Encoder) and encoder.wtt is not None
        _reference_attention(encoder)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.net(input_ids, attention_mask, token_type_ids)

    def inputs(self) -> list[str]:
        return ["input_ids", "attention_mask"] + (["token_type_ids"] if self.types else [])


class EncoderGraph(_IdsGraph):
    """-> hidden (B, T, C)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder, encoder)

    def io(self) -> GraphIO:
        axes = {name: _IDS_AXES for name in [*self.inputs(), "last_hidden_state"]}
        return GraphIO(self.inputs(), ["last_hidden_state"], axes)


class ClassifierGraph(_IdsGraph):
    """-> class logits (B, labels). An encoder's classifier takes the token types (a cross-encoder:
    until 2026-12-07 the graph had no such input, and every token read as the first text's)."""

    def __init__(self, classifier: Classifier) -> None:
        super().__init__(classifier, classifier.backbone)

    def io(self) -> GraphIO:
        axes = {name: _IDS_AXES for name in self.inputs()} | {"logits": {0: "batch"}}
        return GraphIO(self.inputs(), ["logits"], axes)


class SpanGraph(nn.Module):
    """input_ids, attention_mask, token_type_ids (B, T) -> start_logits, end_logits (B, T)."""

    def __init__(self, span: SpanModel) -> None:
        super().__init__()
        self.span = span
        _reference_attention(span.backbone)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.span(input_ids, attention_mask, token_type_ids)  # (B, T, 2)
        return logits[..., 0], logits[..., 1]

    def io(self) -> GraphIO:
        names = ["input_ids", "attention_mask", "token_type_ids", "start_logits", "end_logits"]
        return GraphIO(names[:3], names[3:], {name: _IDS_AXES for name in names})


class Seq2SeqEncoderGraph(nn.Module):
    """input_ids, attention_mask (B, S) -> last_hidden_state (B, S, C) and, per decoder layer,
    the cross-attention keys and values (B, nh, S, hs)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        _reference_attention(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        memory = self.model.encode(input_ids, attention_mask.bool()[:, None, None, :])
        return (memory, *(t for kv in self.model.memory_kv(memory) for t in kv))

    def io(self) -> GraphIO:
        cross = _kv_names("cross", self.model.config.n_layer)
        axes = {"input_ids": {0: "batch", 1: "source"}, "attention_mask": {0: "batch", 1: "source"}}
        axes.update({name: {0: "batch", 1: "source"} for name in ["last_hidden_state"]})
        axes.update({name: {0: "batch", 2: "source"} for name in cross})
        return GraphIO(["input_ids", "attention_mask"], ["last_hidden_state", *cross], axes)


class Seq2SeqDecoderGraph(nn.Module):
    """input_ids (B, T) target tokens, encoder_attention_mask (B, S), the encoder graph's cross
    keys/values, the past self-attention keys/values (B, nh, P, hs) per layer -> logits
    (B, T, V) and the present keys/values (B, nh, P+T, hs)."""

    def __init__(self, model: Seq2Seq) -> None:
        super().__init__()
        self.model = model
        _reference_attention(model)

    def forward(
        self,
        input_ids: torch.Tensor,
        encoder_attention_mask: torch.Tensor,
        cross: list[torch.Tensor],
        past: list[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        memory = [(cross[2 * i], cross[2 * i + 1]) for i in range(len(cross) // 2)]
        cache = PastCache(past)
        mask = encoder_attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        logits = self.model.decode(input_ids, memory, mask, cache)  # (B, T, V)
        return (logits, *cache.present)

    def io(self) -> GraphIO:
        n = self.model.config.n_layer
        cross, past, present = _kv_names("cross", n), _kv_names("past_key_values", n), _kv_names("present", n)
        axes = {"input_ids": {0: "batch", 1: "sequence"}, "encoder_attention_mask": {0: "batch", 1: "source"}}
        axes["logits"] = {0: "batch", 1: "sequence"}
        axes.update({name: {0: "batch", 2: "source"} for name in cross})
        axes.update({name: {0: "batch", 2: "past"} for name in past})
        axes.update({name: {0: "batch", 2: "total"} for name in present})
        return GraphIO(["input_ids", "encoder_attention_mask", *cross, *past], ["logits", *present], axes)
