"""The feature-extraction pipeline: transformers' FeatureExtractionPipeline over an encoder (an HF
BERT-style folder, an lmforge encoder) or a decoder (GPT, Llama...): per text, the model's last
hidden states, as transformers' AutoModel gives them (a decoder's after its final norm, before
the LM head), nested lists of shape [1, tokens, hidden]; `return_tensors=True` gives that tensor.

Each text runs alone, as transformers' pipeline runs it (batch_size 1): no padding can touch a row.
Keywords, at construction (the defaults of every call) or per call, as transformers':
`truncation` (cut a text over the model's context to it: its first tokens, an encoder's final
special token kept; not given, such a text is a one-line error) and `tokenize_kwargs`
(`truncation`, `max_length`, `add_special_tokens`); any other is an error naming it. For a
sentence's one vector (the mean, unit length) see `lmforge.embed` (inference/embed.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.options import check_keywords, check_texts, is_int, keyword_names
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.kinds import describe
from lmforge.pipelines.streaming import streams

TOKENIZE_KWARGS = ("truncation", "max_length", "add_special_tokens")  # the tokenizer's that apply here


class FeatureExtractionPipeline:
    def __init__(
        self,
        model: str | Path,
        truncation: bool | None = None,
        tokenize_kwargs: dict[str, Any] | None = None,
        return_tensors: bool = False,
    ) -> None:
        self.options = _tokenize_options(truncation, tokenize_kwargs)
        self.return_tensors = _checked_flag("return_tensors", return_tensors)
        net, self.tokenizer = load_model(model)
        if not isinstance(net, Encoder | GPT):
            raise LmforgeError(
                f"{model}: {describe(net)}; feature-extraction takes an encoder or a decoder language model"
            )
        self.model = net.float().eval()
        self.encoder = isinstance(net, Encoder)

    @streams(lambda pipe: 1)  # a generator or dataset: an iterator of results
    def __call__(
        self,
        text: str | list[str] | None = None,
        *,
        truncation: bool | None = None,
        tokenize_kwargs: dict[str, Any] | None = None,
        return_tensors: bool | None = None,
        **unknown: Any,
    ) -> Any:
        """A string gives its hidden states, [1][tokens][hidden] floats (a tensor (1, tokens,
        hidden) with return_tensors=True); a list of strings a list of those, one per text."""
        if text is None:  # transformers' name for it
            text = unknown.pop("inputs", None)
        check_keywords(unknown, keyword_names(FeatureExtractionPipeline.__call__), "feature-extraction")
        if text is None:
            raise LmforgeError("feature-extraction needs a text or a list of texts")
        given = truncation is not None or tokenize_kwargs is not None
        options = _tokenize_options(truncation, tokenize_kwargs) if given else self.options
        tensors = (
            self.return_tensors if return_tensors is None else _checked_flag("return_tensors", return_tensors)
        )
        results = [self._hidden(t, **options) for t in check_texts(text)]
        results = results if tensors else [r.tolist() for r in results]
        return results[0] if isinstance(text, str) else results

    @torch.inference_mode()
    def _hidden(
        self,
        text: str,
        truncation: bool | None = None,
        max_length: int | None = None,
        add_special_tokens: bool = True,
    ) -> torch.Tensor:
        """(1, T, C): the last hidden states of one text."""
        context = int(self.model.config.block_size)
        if add_special_tokens and not self.encoder:  # a Llama's BOS, as transformers' tokenizer adds it
            ids = self.tokenizer.encode_prompt(text)
        else:
            ids = self.tokenizer.hf.encode(text, add_special_tokens=add_special_tokens).ids
        if not ids:
            raise LmforgeError(f"feature-extraction: {text!r} is no tokens at all; give some text")
        length = min(max_length or context, context)
        if len(ids) > length and (truncation or (max_length is not None and truncation is None)):
            ids = ids[: length - 1] + ids[-1:] if self.encoder and add_special_tokens else ids[:length]
        if len(ids) > context:
            raise LmforgeError(
                f"feature-extraction: a text of {len(ids)} tokens, over the model's context of {context};"
                " give truncation=True to cut it"
            )
        idx = torch.tensor([ids])
        return self.model(idx) if self.encoder else self.model.hidden_states(idx)


def _checked_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise LmforgeError(f"{name}={value!r}: must be True or False")
    return value


def _tokenize_options(truncation: bool | None, tokenize_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The tokenizer's options, from transformers' two places for them; one line for a bad one."""
    options = dict(tokenize_kwargs or {})
    if not isinstance(tokenize_kwargs, dict | None):
        raise LmforgeError(
            f"tokenize_kwargs={tokenize_kwargs!r}: must be a dict of {', '.join(TOKENIZE_KWARGS)}"
        )
    check_keywords(options, TOKENIZE_KWARGS, "feature-extraction's tokenize_kwargs")
    if truncation is not None:
        if "truncation" in options:  # as transformers refuses it
            raise LmforgeError("truncation given twice (as a keyword and in tokenize_kwargs); give it once")
        options["truncation"] = truncation
    for key in ("truncation", "add_special_tokens"):
        if key in options:
            _checked_flag(key, options[key])
    length = options.get("max_length")
    if length is not None and not (is_int(length) and length >= 1):
        raise LmforgeError(f"max_length={length!r}: must be an integer >= 1 (tokens a text is cut to)")
    return options
