"""The sequence-classification head of Hugging Face decoders (GPT-2, Llama, Mistral, Qwen2, Qwen3,
Gemma 3, SmolLM3), put on the imported body (formats/hf_files.py), and written back on export
(formats/hf_export.py).

- Import: `GPT2ForSequenceClassification`, `LlamaForSequenceClassification`,
  `MistralForSequenceClassification`, `Qwen2ForSequenceClassification` (reward and sentiment
  models) -> lmforge's `Classifier` (model/classifier.py) on the GPT body with `last` pooling and
  transformers' `score` layer as its head, which has no bias. transformers pools the rightmost
  token that is not config.json's `pad_token_id` (either padding side); the Classifier keeps that
  id and pools the same token within its attention mask, so a text ending in the pad token itself
  (GPT-2's pad is often its EOS) gives transformers' logits too. Without a pad id transformers
  reads the last position and refuses batches of more than one text; lmforge reads each text's
  last token, the same for one text. A decoder classifier has no `lm_head`, unless tied: an untied
  one is left zero (pooling never reads it). The labels are `id2label` (formats/hf_heads.py's
  labels_of), its `problem_type` how the outputs are read (formats/hf_heads.py's problem_type_of):
  a reward model's one output is a score through a sigmoid, as transformers' pipeline gives it.
- Export: a decoder Classifier with transformers' head (`last` pooling, no dense layer, a head
  without a bias) goes back as the family's `...ForSequenceClassification` with its labels and its
  pad id (one `finetune-classify` trains has one), none where it has none (transformers then reads
  the last position, as the mask's last token is, and takes one text at a time), and its
  problem_type (formats/hf_export.py). Others are refused in one line naming what transformers'
  class lacks.
"""

from __future__ import annotations

from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.hf_convert import lmforge_to_hf
from lmforge.formats.hf_family import Family
from lmforge.formats.hf_heads import SCORE_HEADS, architecture_of, labels_of, problem_type_of
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT


def wants_score_head(raw: dict[str, Any]) -> bool:
    """Whether config.json names a decoder's ...ForSequenceClassification (read or not)."""
    return raw.get("model_type") in SCORE_HEADS and architecture_of(raw).endswith("ForSequenceClassification")


def pad_id_of(raw: dict[str, Any], file: str) -> int | None:
    """config.json's pad_token_id (None when it names none), the token transformers' pooling skips."""
    pad = raw.get("pad_token_id")
    if pad is None:
        return None
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < raw.get("vocab_size", pad + 1):
        raise LmforgeError(f"{file}: 'pad_token_id' must be a token id of the vocabulary, got {pad!r}")
    return pad


def with_score_head(
    gpt: GPT, raw: dict[str, Any], hf: dict[str, torch.Tensor], unused: list[str], files: tuple[str, str]
) -> tuple[Classifier, list[str]]:
    """The imported decoder with transformers' `score` head as a Classifier (see the module doc),
    whatever its problem_type and number of outputs. `files` are (config.json, the weights) for
    messages. Returns (model, HF names still unused)."""
    config_file, file = files
    if "score.weight" not in hf:
        raise LmforgeError(f"{file}: missing tensor 'score.weight' (a sequence classifier's head)")
    weight = hf["score.weight"]
    n = gpt.config.n_embd
    if weight.dim() != 2 or weight.shape[1] != n:
        shape = tuple(weight.shape)
        raise LmforgeError(f"{file}: tensor 'score.weight' has shape {shape}, expected (labels, {n})")
    labels = labels_of(raw, weight.shape[0], config_file)
    pad, problem = pad_id_of(raw, config_file), problem_type_of(raw, config_file)
    # dropout 0: transformers' `score` reads the last hidden state as it is
    model = Classifier(gpt, labels, "last", 0.0, head_bias=False, pad_id=pad, problem_type=problem)
    model.head.load_state_dict({"weight": weight})
    return model, [name for name in unused if name != "score.weight"]


def score_state_to_hf(
    model: Classifier, model_type: str, family: Family
) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors, architecture) of transformers' ...ForSequenceClassification for a decoder
    classifier: the body under its family's names (no lm_head: the class has none) and `score`.
    A one-line error, before anything is written, for a head the class cannot compute."""
    prefix = {
        "gpt2": "GPT2",
        "llama": "Llama",
        "mistral": "Mistral",
        "qwen2": "Qwen2",
        "qwen3": "Qwen3",
        "gemma2": "Gemma2",
        "gemma3_text": "Gemma3Text",
        "smollm3": "SmolLM3",
    }[model_type]
    architecture = f"{prefix}ForSequenceClassification"
    lacks = [
        what
        for what, has in (
            (f"{model.pooling!r} pooling (it reads the last token)", model.pooling != "last"),
            (f"a {model.dense_act} dense layer", model.dense is not None),
            ("a head bias (its score layer has none)", model.head.bias is not None),
        )
        if has
    ]
    if lacks:
        raise LmforgeError(
            f"a decoder classifier exports to HF as {architecture}, which pools the last token into a"
            f" score layer without a bias; this one has {' and '.join(lacks)}, which that class cannot"
            " compute"
        )
    state = model.backbone.state_dict()
    body = {k: v.detach().float() for k, v in state.items() if not k.startswith("lm_head.")}
    out = lmforge_to_hf(family, model.config, body)
    out["score.weight"] = model.head.weight.detach().float().contiguous()
    return out, architecture
