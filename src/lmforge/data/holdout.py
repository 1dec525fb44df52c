"""The held-out split of the labelled tasks (classification, QA, instruction tuning): in the data
layer so that `lmforge plan` counts the training side as `train` does (train.epochs).

A seeded shuffle holds out the last data.val_fraction of the distinct items, with every copy of
each: validation is only worth its name on what the model did not train on, and a dataset with
repeats (a review quoted twice, a conversation pasted twice) would otherwise score memory. Without
repeats this is the plain split (shuffle, hold out the tail), so runs made before keep their split.
Language-model and translation data are split by prep instead (by a hash of each document, so
repeats land on one side).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from lmforge.errors import LmforgeError, counted

T = TypeVar("T")


def hold_out(
    items: Sequence[T],
    *,
    key: Callable[[T], Hashable],
    fraction: float,
    seed: int,
    source: str,
    noun: str,
    say: Callable[[str], None],
) -> tuple[list[T], list[T]]:
    """(train, val) of `items`, each in the order of a shuffle with `seed`: val holds every item
    whose key is among the last `fraction` of the distinct keys (in order of first appearance).
    Repeats are told to `say` (the loop's start-up lines: rank 0, not --quiet). `source` and
    `noun` name the data in messages: "data/x.jsonl", "example"."""
    rows = list(items)
    random.Random(seed).shuffle(rows)
    keys = list(dict.fromkeys(key(item) for item in rows))  # distinct, in shuffled order
    n_val = int(len(keys) * fraction)
    if n_val < 1 or len(keys) - n_val < 1:
        what = counted(len(keys), ("distinct " if len(keys) < len(rows) else "") + noun)
        raise LmforgeError(
            f"{source}: {what} with data.val_fraction={fraction} leave"
            f" {n_val} held out and {len(keys) - n_val} to train on; both need at least one"
        )
    held = set(keys[-n_val:])
    train = [item for item in rows if key(item) not in held]
    val = [item for item in rows if key(item) in held]
    if len(keys) < len(rows):
        say(
            f"lmforge: note: {source}: {counted(len(rows) - len(keys), noun)}"
            f" repeat{'s' if len(rows) - len(keys) == 1 else ''} an earlier one;"
            f" each {noun}'s copies stay on one side of the split, so validation scores only unseen"
            f" {noun}s ({len(val):,} held out)"
        )
    return train, val
