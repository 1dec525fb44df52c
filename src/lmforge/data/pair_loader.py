"""Padded batches of sentence pairs, grouped by length; resumable from (epoch, cursor).

Each epoch shuffles the pairs (from (seed, epoch)), sorts each pool of 64 global batches by
length so that a batch holds sentences of similar length (little padding), cuts the pools into
global batches of `batch_size` pairs and shuffles the batch order. The global batch is the same
at any world size: it is dealt out to the ranks in turn, then cut into micro-batches.

A batch is (src, tgt_in, tgt_out), all (B, T) int64: src = source + EOS, right-padded with PAD;
tgt_in = START + target (START is EOS for lmforge's models, the pad token for Marian's),
right-padded with PAD;
tgt_out = target + EOS, right-padded with IGNORE so padding counts in neither loss nor tokens.
Widths are rounded up to a multiple of PAD_TO (data/loader.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmforge.data.fingerprint import digest_of
from lmforge.data.loader import IGNORE, check_cursor, padded_width
from lmforge.errors import LmforgeError, counted

PairBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
POOL = 64  # global batches sorted together by length


def _pad(rows: list[list[int]], value: int, limit: int = 0) -> torch.Tensor:
    """Right-pad to the longest row rounded up to PAD_TO, but never past `limit` (positions)."""
    width = padded_width(max(len(r) for r in rows), limit)
    out = torch.full((len(rows), width), value, dtype=torch.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
    return out


def collate(
    src: list[np.ndarray], tgt: list[np.ndarray], eos: int, pad: int, limit: int = 0, start: int | None = None
) -> PairBatch:
    s = [[*map(int, x), eos] for x in src]
    t = [list(map(int, y)) for y in tgt]
    first = eos if start is None else start
    return (
        _pad(s, pad, limit),
        _pad([[first, *y] for y in t], pad, limit),
        _pad([[*y, eos] for y in t], IGNORE, limit),
    )


def encode_sources(src: list[list[int]], eos: int, pad: int, limit: int = 0) -> torch.Tensor:
    """Sources for decoding: ids + EOS, right-padded to (B, S)."""
    return _pad([[*x, eos] for x in src], pad, limit)


class PairLoader:
    def __init__(
        self,
        src: list[np.ndarray],
        tgt: list[np.ndarray],
        batch_size: int,
        micro_batch_size: int,
        eos: int,
        pad: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        limit: int = 0,
        start: int | None = None,
    ) -> None:
        if len(src) < batch_size:
            raise LmforgeError(
                f"training split has {counted(len(src), 'pair')}, fewer than train.batch_size={batch_size}"
            )
        if batch_size % (micro_batch_size * world_size):
            raise LmforgeError(
                f"train.batch_size={batch_size} is not divisible by micro_batch_size={micro_batch_size}"
                f" x world_size={world_size}"
            )
        self.src, self.tgt, self.eos, self.pad, self.limit, self.start = src, tgt, eos, pad, limit, start
        self.lengths = np.asarray([len(s) + len(t) for s, t in zip(src, tgt, strict=True)])
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.cursor = 0, 0
        self._batches = self._plan(0)

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """This epoch's global batches (index arrays), in visiting order."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.src))
        pool = POOL * self.batch_size
        batches = []
        for p in range(0, len(order) - self.batch_size + 1, pool):
            chunk = order[p : p + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [
                chunk[i : i + self.batch_size]
                for i in range(0, len(chunk) - self.batch_size + 1, self.batch_size)
            ]
        return [batches[i] for i in rng.permutation(len(batches))]

    def data_digest(self) -> str:
        return digest_of(zip(self.src, self.tgt, strict=True))

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps that visit every pair once (the batches of one epoch's plan)."""
        return len(self._batches)

    def next_step(self) -> list[PairBatch]:
        """This rank's micro-batches for one optimizer step."""
        if self.cursor == len(self._batches):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._batches = self._plan(self.epoch)
        batch = self._batches[self.cursor]
        self.cursor += 1
        # the batch is sorted by length: dealt out in turn, every rank gets short and long pairs
        # alike (a contiguous half would give one rank all the long ones, and the others wait)
        mine = batch[self.rank :: self.world_size]
        m = self.micro_batch_size
        return [self._collate(mine[i : i + m]) for i in range(0, len(mine), m)]

    def _collate(self, idx: np.ndarray) -> PairBatch:
        return collate(
            [self.src[i] for i in idx], [self.tgt[i] for i in idx], self.eos, self.pad, self.limit, self.start
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._batches = self._plan(self.epoch)
        check_cursor(self.cursor, len(self._batches), "batches")


def eval_pair_batches(
    src: list[np.ndarray],
    tgt: list[np.ndarray],
    micro_batch_size: int,
    eos: int,
    pad: int,
    limit: int = 0,
    start: int | None = None,
) -> list[PairBatch]:
    """Every validation pair once, in length-sorted micro-batches (fixed order)."""
    order = np.argsort([len(s) + len(t) for s, t in zip(src, tgt, strict=True)], kind="stable")
    chunks = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    return [collate([src[i] for i in c], [tgt[i] for i in c], eos, pad, limit, start) for c in chunks]
