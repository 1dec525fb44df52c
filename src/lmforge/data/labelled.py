"""Labelled text for classification: JSON lines in, padded id batches out."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path
from typing import IO

import torch

from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

_OPENERS = {".gz": gzip.open, ".xz": lzma.open, ".bz2": bz2.open}


def _open(path: Path) -> IO[str]:
    return _OPENERS.get(path.suffix, open)(path, "rt", encoding="utf-8")  # type: ignore[operator]


def read_labelled(
    path: str | Path, labels: list[str], text_field: str = "text", label_field: str = "label"
) -> list[tuple[str, int]]:
    """[(text, label index)] from a .jsonl file (optionally .gz/.xz/.bz2)."""
    path = Path(path)
    rows = []
    try:
        with _open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text, label = record[text_field], record[label_field]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise LmforgeError(
                        f"{path}:{n}: needs JSON with {text_field!r} and {label_field!r} ({e})"
                    ) from None
                if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(labels):
                    rows.append((str(text), label))
                elif label in labels:
                    rows.append((str(text), labels.index(label)))
                else:
                    raise LmforgeError(f"{path}:{n}: label {label!r} is not one of {labels}")
    except (OSError, EOFError, UnicodeDecodeError, lzma.LZMAError) as e:
        raise LmforgeError(f"{path}: unreadable: {e}") from None
    if not rows:
        raise LmforgeError(f"{path}: no labelled examples")
    return rows


def encode_batch(
    tokenizer: Tokenizer, texts: list[str], context: int, encoder: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), each (B, T), right-padded. Encoders get their special tokens
    ([CLS] ... [SEP]); texts longer than the context are cut, keeping the final special token."""
    rows = []
    for text in texts:
        ids = tokenizer.hf.encode(text).ids if encoder else tokenizer.encode(text)
        ids = ids or [tokenizer.eos_id if tokenizer.eos_id is not None else 0]
        if len(ids) > context:
            ids = ids[: context - 1] + ids[-1:] if encoder else ids[:context]
        rows.append(ids)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask
