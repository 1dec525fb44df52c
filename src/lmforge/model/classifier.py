"""Sequence classification: a pooled linear head on a decoder (GPT) or an encoder (BERT-style).

Pooling: `mean` over real tokens (what sentence encoders such as MiniLM are trained for), `cls`
(the first token, BERT's convention) or `last` (the last real token: the only one a causal decoder
lets see the whole text, as HF's GPT2ForSequenceClassification). `dense` puts one more linear map
and its activation between the pooling and the head, which is how transformers' fine-tuned
classifiers are shaped: BERT's pooler (`tanh`), DistilBERT's pre_classifier (`relu`), RoBERTa's
classification head (`tanh`). A classifier directory holds config.json (`lmforge-classifier`:
labels, pooling, dense, the backbone's config and `add_special_tokens`: texts read with what the
tokenizer puts around them, formats/lmforge_dirs.py), model.safetensors (`backbone.*`,
`dense.*`, `head.*`) and tokenizer.json.

A decoder's head has no bias by default (`head_bias=None`: none on a decoder, transformers' `score`
layer, so it exports as ...ForSequenceClassification; one on an encoder, as transformers' encoder
classifiers have). An imported HF decoder classifier (formats/hf_decoder_heads.py) keeps its
`pad_id` too: transformers pools the
rightmost token that is not `pad_token_id`, so `last` pooling then skips real tokens equal to it at
the end of a text too (GPT-2's pad is its EOS), and gives transformers' logits on every input;
so does a decoder classifier `finetune-classify` trains (its pad token:
train/tasks/classification_head.py's pad_id_for), which then exports with it. Without `pad_id` (lmforge's
classifiers trained before they had one, a pad-less HF import) `last` is the last token of the
attention mask.

`problem_type` is transformers' config.json key, kept as an HF directory gives it ("" where it
gives none): it says how the outputs are read (`function`, transformers' TextClassificationPipeline
rule): `regression` raw scores ("none"), `multi_label_classification` or a single output (a reward
model, a cross-encoder) a sigmoid per output, else a softmax over the labels (lmforge's own
single-label classifiers, which record no problem_type). `trained_as` is the loss transformers
trains a head with (train/tasks/classification_head.py keeps such a head).
"""

from __future__ import annotations

import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT

POOLINGS = ("mean", "cls", "last")
DENSE = {"": None, "tanh": torch.tanh, "relu": torch.relu}  # activation after the optional dense layer
PROBLEM_TYPES = ("", "single_label_classification", "multi_label_classification", "regression")
FUNCTIONS = ("softmax", "sigmoid", "none")  # transformers' function_to_apply values


def default_function(problem_type: str, outputs: int) -> str:
    """How transformers' text-classification pipeline reads the logits of a head with `outputs`
    outputs and config.json's `problem_type` ("" for none), in its order of tests."""
    if problem_type == "regression":
        return "none"
    if problem_type == "multi_label_classification" or outputs == 1:
        return "sigmoid"
    return "softmax"


def trained_as(problem_type: str, outputs: int) -> str:
    """The problem type transformers' ...ForSequenceClassification trains a head with `outputs`
    outputs and config.json's `problem_type` as ("" for none): one output without one is a
    regression (its forward's rule), more a single-label classification."""
    if problem_type:
        return problem_type
    return "regression" if outputs == 1 else "single_label_classification"


def apply_function(logits: torch.Tensor, function: str) -> torch.Tensor:
    """(B, labels) logits -> the scores `function` ("softmax", "sigmoid" or "none") makes of them."""
    logits = logits.float()
    if function == "softmax":
        return logits.softmax(-1)
    return logits.sigmoid() if function == "sigmoid" else logits


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """hidden (B, T, C) averaged over the real tokens of mask (B, T), 1 = real -> (B, C): the
    `mean` pooling here and sentence-transformers' (inference/embeddings.py)."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def left_padded(mask: torch.Tensor) -> bool:
    """Whether a (B, T) attention mask pads some row on the left (as HF tokenizers with
    padding_side="left" do: Gemma's and Llama's by default). Not while exported (ONNX), which
    cannot branch on data: an exported classifier reads right-padded batches, as lmforge pads."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    return bool((mask[:, 0] == 0).any())


def last_positions(idx: torch.Tensor, mask: torch.Tensor, pad_id: int | None, left: bool) -> torch.Tensor:
    """(B,) the position `last` pooling reads: the last real token of mask, or with pad_id the
    rightmost real token that is not pad_id (0 when there is none), as transformers'
    ...ForSequenceClassification picks it; `left`: some row is padded on the left."""
    if pad_id is None and not left:  # lmforge pads on the right
        return mask.sum(1).long() - 1
    keep = mask.bool() if pad_id is None else mask.bool() & (idx != pad_id)  # (B, T)
    # float: ONNX Runtime's ArgMax takes it
    return (torch.arange(idx.size(1), device=idx.device) * keep.float()).argmax(-1)


class Classifier(nn.Module):
    def __init__(
        self,
        backbone: GPT | Encoder,
        labels: list[str],
        pooling: str = "",
        dropout: float = 0.1,
        dense: str = "",
        head_bias: bool | None = None,
        pad_id: int | None = None,
        problem_type: str = "",
    ) -> None:
        super().__init__()
        self.encoder = isinstance(backbone, Encoder)
        pooling = pooling or ("mean" if self.encoder else "last")
        if pooling not in POOLINGS:
            raise LmforgeError(f"pooling={pooling!r} must be one of {', '.join(POOLINGS)}")
        if not labels or len(set(labels)) != len(labels):  # one: a reward or regression score
            raise LmforgeError(f"labels {labels} must be one or more distinct names")
        if problem_type not in PROBLEM_TYPES:
            types = ", ".join(repr(p) for p in PROBLEM_TYPES)
            raise LmforgeError(f"problem_type={problem_type!r} must be one of {types}")
        if not isinstance(dense, str) or dense not in DENSE:
            raise LmforgeError(f"dense={dense!r} must be one of {', '.join(repr(d) for d in DENSE)}")
        token = isinstance(pad_id, int) and not isinstance(pad_id, bool)
        if pad_id is not None and (pooling != "last" or not token):
            raise LmforgeError(f"pad_id={pad_id!r} must be a token id, and only with 'last' pooling")
        self.backbone, self.labels, self.pooling, self.dense_act = backbone, list(labels), pooling, dense
        self.pad_id, self.problem_type = pad_id, problem_type
        self.config = backbone.config
        # what forward never runs (the pooling reads hidden states): no FLOPs (train/report.py), and
        # frozen, so DDP (which fails on a trainable weight that gets no gradient) and the optimizer
        # see only weights that train; a tied lm_head is the token embedding, which does train
        self.unused_modules = ("backbone.pooler",) if self.encoder else ("backbone.lm_head",)
        unused = backbone.pooler if isinstance(backbone, Encoder) else backbone.lm_head
        if not (isinstance(backbone, GPT) and backbone.lm_head.weight is backbone.wte.weight):
            unused.requires_grad_(False)
        n = backbone.config.n_embd
        # None when absent, so classifiers without it keep their state dicts
        self.dense = nn.Linear(n, n) if dense else None
        self.drop = nn.Dropout(dropout)
        bias = self.encoder if head_bias is None else head_bias
        self.head = nn.Linear(backbone.config.n_embd, len(labels), bias=bias)
        nn.init.normal_(self.head.weight, std=0.02)
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)

    @property
    def function(self) -> str:
        """How the logits are read by default: "softmax", "sigmoid" or "none" (see the module doc)."""
        return default_function(self.problem_type, len(self.labels))

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """idx (B, T), attention_mask (B, T) 1 = real token (right or left padding), token_type_ids
        (B, T) 0 = a pair's first text, 1 = its second (an encoder's with token type embeddings
        reads them; a decoder none, as transformers gives a GPT-2 or Llama classifier none)
        -> class logits (B, labels)."""
        mask = attention_mask if attention_mask is not None else torch.ones_like(idx)
        left = not self.encoder and left_padded(mask)
        if self.encoder:
            hidden = self.backbone(idx, mask, token_type_ids)  # (B, T, C)
        elif left:  # positions from each row's first real token, padding unattended
            hidden = self.backbone.hidden_states(idx, mask=mask.bool())
        else:  # a causal decoder needs no mask: right padding never reaches the real tokens
            hidden = self.backbone.hidden_states(idx)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "last":
            pooled = hidden[torch.arange(idx.size(0)), last_positions(idx, mask, self.pad_id, left)]
        else:
            pooled = mean_pool(hidden, mask)
        if self.dense is not None:
            pooled = DENSE[self.dense_act](self.dense(pooled))
        return self.head(self.drop(pooled))
