"""Token shards: raw little-endian token ids (`train_00000.bin`, `val_00000.bin`) + meta.json.

This is the format nanoGPT and llm.c users know: uint16 when the vocabulary fits, else uint32.
`prepare_corpus` (the `lmforge prep` verb, in prep.py) turns raw text into such a directory;
`open_split` memory-maps it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.errors import LmforgeError

if TYPE_CHECKING:
    from lmforge.tokenization.tokenizer import Tokenizer

META = "meta.json"


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def prepare_corpus(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    tokenizer: str | Tokenizer = "char",
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    text_field: str = "text",
    quiet: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """`lmforge prep` with the [data] arguments first (see `lmforge.data.prep.prep`); quiet by
    default, as the trainer calls it when `data.input` is raw text."""
    from lmforge.data.prep import prep

    return prep(inputs, out, tokenizer, vocab_size, val_fraction, text_field, quiet=quiet, **options)


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
