"""Streams EOS-terminated documents into `train_NNNNN.bin` / `val_NNNNN.bin` shards.

Raw little-endian token ids, uint16 when the vocabulary fits, else uint32; a new shard starts
after `shard_tokens` tokens. Nothing is held in memory beyond one document's ids.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO, Any

import numpy as np

SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    def __init__(self, directory: Path, vocab_size: int, shard_tokens: int) -> None:
        self.directory, self.shard_tokens = directory, shard_tokens
        self.dtype = token_dtype(vocab_size)
        self.shards: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.tokens: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.bytes: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.docs: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.sizes: dict[str, int] = {}
        """Tokens in each shard file (meta.json's shard_tokens: a damaged shard is named)."""
        self._files: dict[str, IO[bytes]] = {}
        self._in_shard: Counter[str] = Counter()

    def _file(self, split: str) -> IO[bytes]:
        f = self._files.get(split)
        if f is None or self._in_shard[split] >= self.shard_tokens:
            if f is not None:
                f.close()
            name = f"{split}_{len(self.shards[split]):05d}.bin"
            self.shards[split].append(name)
            self.sizes[name] = 0
            f = self._files[split] = open(self.directory / name, "wb", buffering=1 << 20)  # noqa: SIM115
            self._in_shard[split] = 0
        return f

    def add(self, split: str, ids: Any, eos: int | None, size: int) -> None:
        """One document's ids (+ EOS) and its size in UTF-8 bytes."""
        array = np.asarray(ids, dtype=self.dtype)
        f = self._file(split)
        array.tofile(f)
        n = len(array)
        if eos is not None:
            np.asarray([eos], dtype=self.dtype).tofile(f)
            n += 1
        self._in_shard[split] += n
        self.sizes[self.shards[split][-1]] += n
        self.tokens[split] += n
        self.bytes[split] += size
        self.docs[split] += 1

    def finish(self, val_fraction: float, token_bytes: np.ndarray, tail: bool = False) -> str:
        """Close the shards. When asked (`tail`) or when the hash split left one side empty (a corpus
        of very few documents), the last `val_fraction` of the stream becomes val. Returns the kind."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if not tail and self.tokens["train"] and self.tokens["val"]:
            return "hash"
        source = "train" if self.tokens["train"] else "val"
        stream = np.concatenate(
            [np.fromfile(self.directory / n, dtype=self.dtype) for n in self.shards[source]]
        )
        for name in self.shards["train"] + self.shards["val"]:
            (self.directory / name).unlink()
        self.sizes.clear()
        n_val = max(1, int(len(stream) * val_fraction))
        total_docs = self.docs["train"] + self.docs["val"]
        for split, part in (("train", stream[: len(stream) - n_val]), ("val", stream[len(stream) - n_val :])):
            name = f"{split}_00000.bin"
            part.tofile(self.directory / name)
            self.shards[split] = [name]
            self.sizes[name] = len(part)
            self.tokens[split] = len(part)
            self.bytes[split] = int(token_bytes[part].sum())  # UTF-8 bytes the tokens stand for
        self.docs = Counter({"train": total_docs, "val": 0})
        return "tail"
