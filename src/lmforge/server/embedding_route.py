"""POST /v1/embeddings: OpenAI's embeddings from an encoder directory served as `feature-extraction`
(all-MiniLM-L6-v2, an HF BERT-style folder, an lmforge encoder): the sentence embeddings of
`lmforge embed` (inference/embeddings.py: the mean over the real tokens, scaled to length 1).

Inputs are texts (encoded with the encoder's special tokens) or token ids (embedded as given). An
input longer than the model's context (sentence_bert_config.json's max_seq_length, else its
positions) is a 400 unless the request has vLLM's truncate_prompt_tokens (truncation.py): a text
then keeps its first tokens and its final special token (as sentence-transformers cuts it, and as
vLLM cuts an embedding's text: its pooling runner truncates on the right), token ids their first
ones (as vLLM's renderer now cuts them for pooling; it once kept the last). `dimensions` must be the
model's width: cutting a vector short keeps its meaning only for a model trained to allow it
(Matryoshka), which no encoder here says it is, so another size is refused rather than answered
with vectors that compare badly. base64 is the vector's little-endian float32 bytes, as OpenAI
sends it (and as its Python client asks by default)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

from lmforge.inference.embeddings import Embedder
from lmforge.server.errors import ApiError
from lmforge.server.models import ServedModel
from lmforge.server.schemas import EmbeddingRequest
from lmforge.server.truncation import kept_tokens

KIND = "feature-extraction"


def embedding_inputs(served: ServedModel, body: EmbeddingRequest) -> list[list[int]]:
    """The token ids to embed, one list per input, each within the model's context; a 400 naming
    the field otherwise."""
    embedder: Embedder = served.pipeline
    width = embedder.width
    if body.dimensions is not None and body.dimensions != width:
        raise ApiError(
            400,
            f"dimensions={body.dimensions}: model {served.id!r} gives {width} dimensions, and is no"
            f" Matryoshka model whose embeddings may be cut shorter; give {width} or leave it out",
            "dimensions",
            "invalid_value",
        )
    rows = body.token_inputs()
    texts = rows is None
    if rows is None:
        rows = embedder.token_ids(body.texts())
    else:
        vocab = min(embedder.tokenizer.vocab_size, embedder.net.config.vocab_size)
        for p, ids in enumerate(rows):
            bad = next((i for i, t in enumerate(ids) if not 0 <= t < vocab), None)
            if bad is not None:
                raise ApiError(
                    400,
                    f"input: item {p}, position {bad}: token id {ids[bad]} is outside the vocabulary of"
                    f" model {served.id!r} (ids 0-{vocab - 1})",
                    "input",
                    "invalid_value",
                )
    limit, keep = served.context, kept_tokens(body.truncate_prompt_tokens, served.context)
    if keep is not None:
        rows = [embedder.cut(ids, keep) if texts else ids[:keep] for ids in rows]
    for p, ids in enumerate(rows):
        if len(ids) > limit:
            raise ApiError(
                400,
                f"input: item {p} is {len(ids)} tokens, longer than model {served.id!r}'s context of"
                f" {limit} (truncate_prompt_tokens: -1 cuts it to fit)",
                "input",
                "context_length_exceeded",
            )
    return rows


def embedding_reply(
    served: ServedModel, body: EmbeddingRequest, rows: list[list[int]], vectors: np.ndarray
) -> dict[str, Any]:
    """OpenAI's list object: one embedding per input, in order, and the tokens embedded."""
    data = []
    for i, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()  # float32s as JSON numbers: each reads back to the same float32
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(map(len, rows))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": served.id, "usage": usage}
