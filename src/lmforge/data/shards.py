"""Token shards: raw little-endian token ids (`train_00000.bin`, `val_00000.bin`) + meta.json.

This is the format nanoGPT and llm.c users know: uint16 when the vocabulary fits, else uint32.
`prepare_corpus` (the `lmforge prep` verb) turns raw text into such a directory; `open_split`
memory-maps it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.sources import read_documents
from lmforge.data.tokenizer import Tokenizer
from lmforge.errors import LmforgeError

META = "meta.json"


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def prepare_corpus(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    tokenizer: str | Tokenizer = "char",
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    text_field: str = "text",
) -> dict[str, Any]:
    """`lmforge prep`: train a `char` or `bpe` tokenizer on the inputs and write train/val shards,
    meta.json and tokenizer.json to `out` (atomically). Returns the metadata.

    Documents are joined with EOS; the last `val_fraction` of the token stream is validation.
    """
    if not isinstance(tokenizer, Tokenizer) and tokenizer not in ("char", "bpe"):
        raise LmforgeError(f"tokenizer={tokenizer!r} must be 'char' or 'bpe'")
    if not 0.0 < val_fraction < 1.0:
        raise LmforgeError(f"val_fraction={val_fraction} must be in (0, 1)")
    start = time.time()
    docs = lambda: (d.text for d in read_documents(inputs, text_field))  # noqa: E731 - two passes
    if isinstance(tokenizer, Tokenizer):  # an existing model's tokenizer (train.init_from)
        tok = tokenizer
    else:
        tok = Tokenizer.train_char(docs()) if tokenizer == "char" else Tokenizer.train_bpe(docs(), vocab_size)
    dtype = token_dtype(tok.vocab_size)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        total, n_docs = 0, 0
        with open(tmp / "all.bin", "wb") as f:
            for text in docs():
                ids = tok.encode(text)
                ids.append(tok.eos_id)  # type: ignore[arg-type] - our tokenizers always have EOS
                np.asarray(ids, dtype=dtype).tofile(f)
                total, n_docs = total + len(ids), n_docs + 1
        if total - n_docs == 0:
            raise LmforgeError(f"{inputs}: the corpus is empty")
        n_val = max(1, int(total * val_fraction))
        stream = np.memmap(tmp / "all.bin", dtype=dtype, mode="r")
        sizes = np.asarray(tok.token_bytes(), dtype=np.int64)
        splits = {"train": stream[: total - n_val], "val": stream[total - n_val :]}
        for split, ids in splits.items():
            ids.tofile(tmp / f"{split}_00000.bin")
        meta = {
            "format": "lmforge-shards-1",
            "dtype": dtype.name,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "tokenizer": tok.kind,
            "tokenizer_sha256": tok.sha256(),
            "documents": n_docs,
            "shards": {split: [f"{split}_00000.bin"] for split in splits},
            "tokens": {split: int(len(ids)) for split, ids in splits.items()},
            "bytes": {split: int(sizes[np.asarray(ids)].sum()) for split, ids in splits.items()},
            "sources": [str(p) for p in _source_list(inputs)],
            "seconds": round(time.time() - start, 2),
        }
        del stream, splits
        (tmp / "all.bin").unlink()
        tok.save(tmp / "tokenizer.json")
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _source_list(inputs: str | Path | list[str | Path]) -> list[str | Path]:
    return [inputs] if isinstance(inputs, str | Path) else list(inputs)


def read_meta(path: str | Path) -> dict[str, Any]:
    file = Path(path) / META
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise LmforgeError(f"{file}: not found (not a prepared shard directory)") from None
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{file}: invalid JSON: {e}") from None
    for key in ("dtype", "vocab_size", "shards", "tokens"):
        if key not in meta:
            raise LmforgeError(f"{file}: missing key {key!r}")
    return meta


def open_split(path: str | Path, split: str) -> list[np.ndarray]:
    """Memory-map a split's shards, checking each against meta.json."""
    path = Path(path)
    meta = read_meta(path)
    dtype = np.dtype(meta["dtype"])
    arrays = []
    for name in meta["shards"].get(split, []):
        file = path / name
        if not file.is_file():
            raise LmforgeError(f"{file}: shard listed in meta.json is missing")
        size = file.stat().st_size
        if size % dtype.itemsize:
            raise LmforgeError(f"{file}: corrupt shard ({size} bytes is not a multiple of {dtype.itemsize})")
        arrays.append(np.memmap(file, dtype=dtype, mode="r"))
    count = sum(len(a) for a in arrays)
    if count != meta["tokens"].get(split):
        raise LmforgeError(
            f"{path}: {split} shards hold {count} tokens, meta.json says {meta['tokens'].get(split)}"
        )
    for a in arrays:
        if len(a) and int(a.max()) >= meta["vocab_size"]:
            raise LmforgeError(f"{path}: corrupt shard (token id >= vocab_size {meta['vocab_size']})")
    return arrays
