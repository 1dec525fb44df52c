"""Streams EOS-terminated documents into `train_NNNNN.bin` / `val_NNNNN.bin` shards.

Each document is `start` (the ids a tokenizer puts before a text: Llama's BOS; none for lmforge's
own tokenizers), its ids, then EOS.

Raw little-endian token ids, uint16 when the vocabulary fits, else uint32; a new shard starts
after `shard_tokens` tokens. Nothing is held in memory beyond one document's ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

SPLITS = ("train", "val")
TAIL_CHUNK = 1 << 22  # tokens re-cut at a time by the tail split


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


class ShardWriter:
    def __init__(
        self, directory: Path, vocab_size: int, shard_tokens: int, start: Sequence[int] = ()
    ) -> None:
        self.directory, self.shard_tokens = directory, shard_tokens
        self.dtype = token_dtype(vocab_size)
        self.start = np.asarray(start, dtype=self.dtype)  # before every document
        self.shards: dict[str, list[str]] = {s: [] for s in SPLITS}
        self.tokens: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.bytes: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.docs: Counter[str] = Counter({s: 0 for s in SPLITS})
        self.sizes: dict[str, int] = {}
        """Tokens in each shard file (meta.json's shard_tokens: a damaged shard is named)."""
        self._files: dict[str, IO[bytes]] = {}
        self._in_shard: Counter[str] = Counter()
        self._eos: int | None = None  # the documents' end mark (the tail split counts pieces by it)

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
        """One document's ids (after `start`, + EOS) and its size in UTF-8 bytes."""
        array = np.asarray(ids, dtype=self.dtype)
        f = self._file(split)
        self.start.tofile(f)
        array.tofile(f)
        n = len(self.start) + len(array)
        if eos is not None:
            np.asarray([eos], dtype=self.dtype).tofile(f)
            n += 1
            self._eos = eos
        self._in_shard[split] += n
        self.sizes[self.shards[split][-1]] += n
        self.tokens[split] += n
        self.bytes[split] += size
        self.docs[split] += 1

    def finish(self, val_fraction: float, token_bytes: np.ndarray, tail: bool = False) -> str:
        """Close the shards. When asked (`tail`) or when the hash split left one side empty (a corpus
        of very few documents), the last `val_fraction` of the stream becomes val. Returns the kind.
        After a tail split `docs` counts each side's pieces as `lmforge audit` reads them (split at
        EOS): the document the cut runs through counts on both sides."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if not tail and self.tokens["train"] and self.tokens["val"]:
            return "hash"
        # The stream is re-cut from the shards on disk, a chunk at a time: never all in memory.
        source = "train" if self.tokens["train"] else "val"
        moved = []  # the shards' names are reused: each moves aside until the new ones are written
        for name in self.shards["train"] + self.shards["val"]:
            (self.directory / name).rename(self.directory / f"{name}.old")
            moved.append((name, self.directory / f"{name}.old"))
        streams = [np.memmap(path, dtype=self.dtype, mode="r") for name, path in moved
                   if name in self.shards[source] and self.sizes[name]]  # fmt: skip
        total = sum(len(stream) for stream in streams)
        n_val = max(1, int(total * val_fraction))
        total_docs = self.docs["train"] + self.docs["val"]
        self.shards = {s: [] for s in SPLITS}
        self.sizes.clear()
        self.tokens, self.bytes = Counter({s: 0 for s in SPLITS}), Counter({s: 0 for s in SPLITS})
        position = 0
        ends: Counter[str] = Counter()  # EOS marks on each side
        last: dict[str, int] = {}  # each side's last token
        mark = -1 if self._eos is None else self._eos  # -1: no token id
        for stream in streams:
            for at in range(0, len(stream), TAIL_CHUNK):
                chunk = np.asarray(stream[at : at + TAIL_CHUNK])
                cut = min(len(chunk), max(0, total - n_val - position))  # where val begins in it
                for split, part in (("train", chunk[:cut]), ("val", chunk[cut:])):
                    self._write(split, part, token_bytes)
                    if len(part):
                        ends[split] += int(np.count_nonzero(part == mark))
                        last[split] = int(part[-1])
                position += len(chunk)
        for f in self._files.values():
            f.close()
        self._files.clear()
        del streams
        for _, path in moved:
            path.unlink()
        if self._eos is None:  # no marks to count pieces by: the documents, all in train
            self.docs = Counter({"train": total_docs, "val": 0})
        else:  # a side's pieces: its EOS marks, plus one for a last piece the cut left open
            self.docs = Counter({s: ends[s] + (s in last and last[s] != self._eos) for s in SPLITS})
        return "tail"

    def _write(self, split: str, ids: np.ndarray, token_bytes: np.ndarray) -> None:
        """Append ids to the split's shards, a new shard every shard_tokens tokens."""
        while len(ids):
            f = self._file(split)  # a new shard when this one is full
            room = self.shard_tokens - self._in_shard[split]
            piece, ids = ids[:room], ids[room:]
            piece.tofile(f)
            self._in_shard[split] += len(piece)
            self.sizes[self.shards[split][-1]] += len(piece)
            self.tokens[split] += len(piece)
            self.bytes[split] += int(token_bytes[piece].sum())  # UTF-8 bytes the tokens stand for
