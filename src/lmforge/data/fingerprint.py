"""What a training loader draws from, as a short digest: a checkpoint records it, and a resume whose
data differs (its input edited, RUN/data prepared again from a changed file) is refused rather than
continued on other examples at the saved position, unsaid.

Small data (conversations, pairs, labelled rows, QA windows) is digested whole; token shards, which
may be gigabytes, by their lengths and their first and last SAMPLE tokens."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

SAMPLE = 4096  # tokens digested at each end of a shard


def digest_of(items: Iterable[Any]) -> str:
    """A sha256 prefix of the items: arrays, tensors, text, numbers, and tuples, lists and
    dataclasses of them, each with its type and length so that no two layouts collide."""
    h = hashlib.sha256()
    count = 0
    for item in items:
        _feed(h, item)
        count += 1
    h.update(f"#{count}".encode())
    return h.hexdigest()[:16]


def shards_digest(shards: list[np.ndarray]) -> str:
    """Token shards by their lengths and their first and last SAMPLE tokens."""
    return digest_of((len(s), s[:SAMPLE], s[-SAMPLE:]) for s in shards)


def _as_ints(items: tuple | list) -> np.ndarray | None:
    """A list of plain ints or bools as one array (its kind says which), else None."""
    if not items or not all(type(x) is int or type(x) is bool for x in items[:8]):
        return None
    try:
        flat = np.asarray(items)
    except (ValueError, OverflowError):
        return None
    return flat if flat.ndim == 1 and flat.dtype.kind in "iub" else None


def _feed(h: Any, item: Any) -> None:
    if isinstance(item, torch.Tensor):
        item = item.detach().cpu().numpy()
    if isinstance(item, np.ndarray):
        h.update(f"a{item.dtype}{item.shape}".encode())
        h.update(np.ascontiguousarray(item).tobytes())
    elif isinstance(item, str | bytes):
        data = item.encode("utf-8", "surrogatepass") if isinstance(item, str) else item
        h.update(f"s{len(data)}:".encode())
        h.update(data)
    elif isinstance(item, bool | int | float) or item is None:
        h.update(f"n{item!r};".encode())
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        h.update(f"d{type(item).__name__}".encode())
        for field in dataclasses.fields(item):
            _feed(h, getattr(item, field.name))
    elif isinstance(item, tuple | list):
        h.update(f"l{len(item)}(".encode())
        flat = _as_ints(item)
        if flat is not None:  # token ids or target flags: at C speed, not one Python call a token
            h.update(flat.dtype.kind.encode())
            h.update(flat.astype(np.int64).tobytes())
            return
        for part in item:
            _feed(h, part)
    else:
        raise TypeError(f"cannot digest a {type(item).__name__}")
