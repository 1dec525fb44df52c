"""The prompt's side of /v1/completions: token-id prompts, and the prompt's log-probabilities
(`echo` with `logprobs`), which is what lm-evaluation-harness's `local-completions` reads to score
the choices of a multiple-choice task or a text's perplexity.

The prompt is scored by one forward pass over it (the model's hidden states, then its LM head a
chunk of positions at a time, so a long prompt never holds (T, vocab) logits whole), log_softmax in
float32 of those logits: the same distribution the generated tokens' log-probabilities come from
(inference/batching.py). Position i's token is scored by the distribution after tokens 0..i-1; the
first token has nothing before it, so its log-probability and alternatives are null, as OpenAI and
vLLM send them. `text_offset` follows the generated tokens' rule (decoding.py): where the token's
text starts in the decoded text, a token that completes a character sharing the offset of the one
that began it.
"""

from __future__ import annotations

from typing import Any

import torch
from tokenizers.decoders import DecodeStream

from lmforge.errors import LmforgeError
from lmforge.inference.batching import token_logprobs
from lmforge.inference.generate import encode_prompts
from lmforge.model.gpt import GPT
from lmforge.model.layers import linear
from lmforge.server.decoding import TokenLogprob
from lmforge.server.errors import ApiError
from lmforge.server.logprobs import completion_logprobs
from lmforge.server.schemas import CompletionRequest
from lmforge.tokenization.tokenizer import Tokenizer

CHUNK = 256  # positions through the LM head at once: 8k positions x 49k vocab in fp32 would be 1.6 GB


def read_prompts(
    tokenizer: Tokenizer, net_vocab: int, body: CompletionRequest
) -> tuple[list[list[int]], list[str]]:
    """(token ids, echo text) per prompt: text is encoded as `lmforge generate` encodes it; token ids
    are checked against the vocabulary (the tokenizer's and the model's) and echo their decoded text."""
    prompts = body.token_prompts()
    if prompts is None:
        texts = body.prompts()
        try:
            return encode_prompts(tokenizer, texts), texts
        except LmforgeError as e:  # an empty prompt, and no EOS to start from
            raise ApiError(400, str(e), "prompt", "invalid_value") from None
    nested, vocab = isinstance(body.prompt[0], list), min(tokenizer.vocab_size, net_vocab)
    for p, ids in enumerate(prompts):
        for i, token in enumerate(ids):
            if not 0 <= token < vocab:
                where = f"item {p}, position {i}" if nested else f"position {i}"
                outside = (
                    f"token id {token} is outside the vocabulary of model {body.model!r} (ids 0-{vocab - 1})"
                )
                raise ApiError(400, f"prompt: {where}: {outside}", "prompt", "invalid_value")
    return prompts, [tokenizer.decode(p) for p in prompts]


@torch.inference_mode()
def score_prompt(
    net: GPT,
    tokenizer: Tokenizer,
    prompt: list[int],
    k: int,
    hidden: torch.Tensor | None = None,
    text: str | None = None,
) -> list[TokenLogprob]:
    """Each prompt token's log-probability and its k most likely alternatives (the first: None),
    from the prompt's final hidden states (T, C): given (the prefill's), or computed here; each
    token's offset into `text`, the prompt as echoed (text_offsets)."""
    if hidden is None:
        device = next(net.parameters()).device
        hidden = net.hidden_states(torch.tensor([prompt], device=device))[0]  # (T, C), as forward computes it
    offsets = text_offsets(tokenizer, prompt, text)
    out = [TokenLogprob(prompt[0], None, None, 0)]
    for start in range(0, len(prompt) - 1, CHUNK):
        end = min(start + CHUNK, len(prompt) - 1)
        scored = token_logprobs(
            net.cap_logits(linear(net.lm_head, hidden[start:end])), prompt[start + 1 : end + 1], k
        )
        for i, (value, top) in enumerate(scored, start=start + 1):  # i: the token scored
            out.append(TokenLogprob(prompt[i], value, top, offsets[i]))
    return out


def text_offsets(tokenizer: Tokenizer, ids: list[int], text: str | None = None) -> list[int]:
    """Where each token's text starts in decode(ids): the length of the text decoded before it,
    held at the last whole character while a byte-level token leaves one unfinished. tokenizers'
    DecodeStream gives each token's new text from a few tokens around it, so a prompt of T tokens
    costs O(T), where decoding every prefix cost O(T^2) (5 s for 8,000 tokens). `text`: the
    prompt as echoed; where the ids do not decode back to it (a character vocabulary's <|unk|>,
    which decodes to nothing), the offsets are the encoding's own, into `text`."""
    if text is not None and tokenizer.decode(ids) != text:
        encoding = tokenizer.hf.encode(text, add_special_tokens=False)
        if encoding.ids == ids:
            return [start for start, _ in encoding.offsets]
    stream, offsets, length = DecodeStream(skip_special_tokens=True), [], 0
    for token in ids:
        offsets.append(length)
        piece = stream.step(tokenizer.hf, token)  # None while a character is unfinished
        length += len(piece or "")
    return offsets


def echo_logprobs(
    tokenizer: Tokenizer, prompt: list[TokenLogprob], generated: dict[str, Any]
) -> dict[str, Any]:
    """/v1/completions' logprobs object of an echoed choice: the prompt's tokens, then the generated
    ones (`generated`, their offsets already shifted past the echoed prompt)."""
    head = completion_logprobs(tokenizer, prompt)
    return {key: head[key] + generated[key] for key in head}
