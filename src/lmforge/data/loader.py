"""Batches of token windows: shuffled, resumable from a two-number position, rank-aware.

Each epoch cuts every shard into non-overlapping windows of `block_size + 1` tokens starting at
a random offset, and visits them in a random order; both come from (seed, epoch), so the
loader's whole state is (epoch, cursor). A global batch of `batch_size` windows is split by
rank, then into micro-batches: the same global batch at any world size or accumulation.

A batch may run from one epoch's last windows into the next one's, whose windows start elsewhere,
so a token can be in two windows of one step. DP-SGD bounds each example's share of a step, so a
private run asks for `whole_epochs`: an epoch's last windows that do not fill a batch are skipped,
and a batch larger than an epoch's windows is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmforge.data.fingerprint import shards_digest
from lmforge.errors import LmforgeError

IGNORE = -100  # target id that counts neither in the loss nor in the token count

# Batches of variable-length rows (translation pairs, QA windows) are padded to a width rounded up
# to a multiple of this. On the CPU every new (batch, length) shape costs oneDNN a kernel set-up,
# and freed activations of ever-new sizes stay in glibc's heap. Translation, 3x256 in bf16, exact
# lengths 2..130: 2,100 and then 4,100 tok/s for the first 100 steps, 9,000 only after ~150;
# rounded to 16: 6,900 for the first 100 steps, then 9,200. QA on MiniLM, 40 steps of
# configs/qa-demo.toml: peak RSS 3.38-3.41 GiB with exact widths, 2.54-2.63 GiB rounded to 16 at
# the same tokens/s (2.23-2.25 GiB rounded to 64, but 11% slower: more padding to compute).
PAD_TO = 16


def padded_width(longest: int, limit: int = 0) -> int:
    """`longest` rounded up to a multiple of PAD_TO, but not past `limit` (positions; 0: no limit)."""
    return max(longest, min(-(-longest // PAD_TO) * PAD_TO, limit or 1 << 30))


Batch = tuple[torch.Tensor, torch.Tensor]  # inputs (B, T), targets (B, T), int64


class WindowIndex:
    """Windows of `span` tokens over the shards read as one stream, from token `offset` on: a window
    may run from one shard into the next, as it runs from one document into the next (prep cuts
    shards at a token count, prep.shard_tokens). Windows cut inside each shard lost every shard's
    tail, and shards shorter than a window gave none: small shards trained on 0.1% of the tokens."""

    def __init__(self, shards: list[np.ndarray], span: int, offset: int = 0) -> None:
        self.shards, self.span, self.offset = shards, span, offset
        self.starts = np.cumsum(
            [0, *map(len, shards)]
        )  # each shard's first token in the stream, then the end
        self.count = max(0, (int(self.starts[-1]) - offset) // span)

    def window(self, i: int) -> np.ndarray:
        start = self.offset + i * self.span
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1  # past empty shards
        at = start - int(self.starts[shard])
        piece = self.shards[shard][at : at + self.span]
        if len(piece) == self.span:  # the usual case: no copy
            return piece
        pieces, need = [piece], self.span - len(piece)
        while need:
            shard += 1
            pieces.append(self.shards[shard][:need])
            need -= len(pieces[-1])
        return np.concatenate(pieces)


def to_batch(windows: list[np.ndarray]) -> Batch:
    data = torch.from_numpy(np.stack(windows).astype(np.int64))
    return data[:, :-1], data[:, 1:]


class BatchLoader:
    def __init__(
        self,
        shards: list[np.ndarray],
        block_size: int,
        batch_size: int,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        whole_epochs: bool = False,
    ) -> None:
        if batch_size % (micro_batch_size * world_size):
            raise LmforgeError(
                f"train.batch_size={batch_size} is not divisible by micro_batch_size={micro_batch_size}"
                f" x world_size={world_size}"
            )
        self.shards, self.span = shards, block_size + 1
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.whole_epochs = whole_epochs
        self.epoch, self.cursor = 0, 0
        self._index, self._order = self._plan(0)
        if self._index.count < 1:
            tokens = sum(len(s) for s in shards)
            raise LmforgeError(f"training split has {tokens} tokens, fewer than block_size+1={self.span}")
        fewest = WindowIndex(shards, self.span, offset=max(0, self.span - 2)).count  # a later epoch's
        if whole_epochs and batch_size > fewest:
            raise LmforgeError(
                f"train.batch_size={batch_size} is more than the {fewest:,} windows of an epoch of the"
                " training split: a private run's step takes each window at most once (lower"
                " train.batch_size or model.block_size, or prepare more text)"
            )

    def _plan(self, epoch: int) -> tuple[WindowIndex, np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        index = WindowIndex(self.shards, self.span, offset=int(rng.integers(self.span - 1)) if epoch else 0)
        return index, rng.permutation(index.count)

    def data_digest(self) -> str:
        """What this loader draws from (data/fingerprint.py), recorded in every checkpoint."""
        return shards_digest(self.shards)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps that visit every window once."""
        return max(1, self._index.count // self.batch_size)

    def next_step(self) -> list[Batch]:
        """This rank's micro-batches for one optimizer step."""
        if self.whole_epochs and len(self._order) - self.cursor < self.batch_size:
            self._next_epoch()
        windows = []
        for _ in range(self.batch_size):  # the global batch, identical on every rank
            if self.cursor == len(self._order):
                self._next_epoch()
            windows.append(self._index.window(int(self._order[self.cursor])))
            self.cursor += 1
        per_rank = self.batch_size // self.world_size
        mine = windows[self.rank * per_rank : (self.rank + 1) * per_rank]
        m = self.micro_batch_size
        return [to_batch(mine[i : i + m]) for i in range(0, per_rank, m)]

    def _next_epoch(self) -> None:
        self.epoch, self.cursor = self.epoch + 1, 0
        self._index, self._order = self._plan(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._index, self._order = self._plan(self.epoch)
        check_cursor(self.cursor, len(self._order), "windows")


def check_cursor(cursor: int, size: int, unit: str) -> None:
    """A restored loader position within its epoch's plan of `size` (a cursor there, at the end,
    starts the next epoch): past it, a damaged trainer.json, one line rather than an IndexError."""
    if cursor > size:
        raise LmforgeError(
            f"loader.cursor is {cursor}, past its epoch's {size:,} {unit}: the checkpoint is damaged"
        )


def eval_batches(
    shards: list[np.ndarray], block_size: int, n_windows: int, micro_batch_size: int
) -> list[Batch]:
    """A fixed, evenly spaced set of `n_windows` validation windows (all of them if 0 or fewer)."""
    index = WindowIndex(shards, block_size + 1)
    if index.count < 1:
        raise LmforgeError(
            f"validation split is shorter than block_size+1={block_size + 1} tokens: hold out more"
            " (a larger data.val_fraction; with few documents, --prep.split=tail takes the last"
            " part of the token stream) or use a smaller model.block_size"
        )
    picks = np.unique(
        np.linspace(0, index.count - 1, num=min(n_windows or index.count, index.count)).astype(np.int64)
    )
    windows = [index.window(int(i)) for i in picks]
    return [to_batch(windows[i : i + micro_batch_size]) for i in range(0, len(windows), micro_batch_size)]
