"""Conversations for instruction tuning: JSON lines of message lists in, length-grouped batches out.

Each line is `{"messages": [{"role": ..., "content": ...}, ...]}` (JSON Lines, as labelled examples
are: a .json array of conversations is named as such, not read), optionally with a `split`
("train" or "test": test conversations are held out for evaluation and never trained on), a `kind`
(what eval-instruct scores them as), `tools` (a list of tool objects, passed to the chat template as
transformers' `apply_chat_template(messages, tools=...)` passes them, as TRL does with a `tools`
column) and any other fields (ignored). Files may be .gz, .xz or .bz2 compressed.

Batching groups conversations of similar length rather than packing them. Packing several
conversations into one row would let each attend to the ones before it (the model takes no
per-document mask); grouping keeps every conversation its own row, and sorting each shuffled
window of `batch_size x GROUP` conversations by length before cutting it into batches keeps the
padding small. The batches' order is shuffled again, so lengths do not drift over an epoch.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.data.fingerprint import digest_of
from lmforge.data.loader import IGNORE, check_cursor
from lmforge.data.sources import strict_lines
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import check_text

SPLITS = ("train", "test")
GROUP = 16  # global batches per sorting window: larger pads less, smaller mixes lengths more


@dataclass
class Conversation:
    messages: list[dict[str, Any]]
    split: str
    line: int  # where it is in the file, for error messages
    kind: str = ""  # the record's "kind" field, if any (eval-instruct scores each kind its way)
    tools: list[dict[str, Any]] | None = None  # the record's "tools": the chat template renders them


def read_chats(path: str | Path) -> list[Conversation]:
    """Every conversation in a .jsonl file; a malformed line is a one-line error naming it."""
    path = Path(path)
    out = [_parse(line, f"{path}:{n}", n) for n, line in strict_lines(path, "a .jsonl file") if line.strip()]
    if not out:
        raise LmforgeError(f"{path}: no conversations")
    return out


# chat data is read as the other supervised data is (labelled.py): JSON Lines, a named line per error
JSON_LINES = (
    'a JSON array, but chat data is JSON Lines: one {"messages": [...]} conversation a line, no'
    " brackets around them (write a .json array's elements out one a line)"
)


def _parse(line: str, where: str, n: int) -> Conversation:
    try:
        record = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as e:  # its column: json's "line 2" was the line's own newline
        if line.lstrip().startswith("["):  # an indented .json array's opening line
            raise LmforgeError(f"{where}: {JSON_LINES}") from None
        raise LmforgeError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if isinstance(record, list):  # a .json array written on one line
        raise LmforgeError(f"{where}: {JSON_LINES}")
    messages = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(messages, list) or not messages:
        raise LmforgeError(f'{where}: needs {{"messages": [{{"role": ..., "content": ...}}, ...]}}')
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not _has_content(m):
            raise LmforgeError(
                f"{where}: messages[{i}] needs a string 'role' and a string 'content' (null only"
                " beside an assistant's 'tool_calls')"
            )
    # None-valued keys dropped, as transformers 5 drops them ("content": null beside tool calls)
    messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
    if "\\u" in line:  # only a JSON escape makes a lone surrogate (half an emoji's pair, cut)
        _check_unicode(record, messages, where)
    if not any(m["role"] == "assistant" for m in messages):
        roles = ", ".join(dict.fromkeys(repr(m["role"]) for m in messages))  # a misspelt one shows
        raise LmforgeError(f"{where}: no assistant message (roles: {roles}), so nothing to learn from")
    split = record.get("split", "train")
    if split not in SPLITS:
        raise LmforgeError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    kind = record.get("kind", "")
    tools = record.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise LmforgeError(
            f'{where}: "tools" must be a list of tool objects ({{"type": "function", "function":'
            f" {{...}}}}), not {json.dumps(tools)[:60]}"
        )
    return Conversation(messages, split, n, kind if isinstance(kind, str) else str(kind), tools)


def _check_unicode(record: dict[str, Any], messages: list[dict[str, Any]], where: str) -> None:
    """A one-line error naming the message for a lone surrogate, which the tokenizer refuses with a
    bare TypeError (it was a traceback from deep in the encoding)."""
    for i, m in enumerate(messages):
        for key, value in ((k, v) for k, v in m.items() if isinstance(v, str)):
            try:
                check_text(value)
            except LmforgeError as e:
                raise LmforgeError(f"{where}: messages[{i}].{key}: {e}") from None
    try:  # anywhere else the template may render (tools, tool calls)
        check_text(json.dumps(record, ensure_ascii=False))
    except LmforgeError as e:
        raise LmforgeError(f"{where}: {str(e).split(', at character')[0]})") from None


def _has_content(m: dict[str, Any]) -> bool:
    """A string content, or null beside an assistant's tool calls (what the OpenAI API returns)."""
    content = m.get("content")
    return isinstance(content, str) or (
        content is None and m.get("role") == "assistant" and bool(m.get("tool_calls"))
    )


Example = tuple[list[int], list[bool]]  # token ids, True where the token is a target


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, T), attention mask (B, T), targets (B, T)), right-padded: position t predicts
    token t+1, which counts only where it is the assistant's. Right padding needs no mask in a
    causal model (no real token sees a pad); the mask counts real tokens for tokens/s."""
    width = max(len(ids) for ids, _ in examples) - 1
    inputs = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, (ids, mask) in enumerate(examples):
        row = torch.tensor(ids, dtype=torch.long)
        keep = torch.tensor(mask[1:], dtype=torch.bool)
        inputs[i, : len(ids) - 1] = row[:-1]
        attention[i, : len(ids) - 1] = 1
        targets[i, : len(ids) - 1] = torch.where(keep, row[1:], IGNORE)
    return inputs, attention, targets


def eval_batches(examples: list[Example], micro: int, pad_id: int) -> list[tuple[torch.Tensor, ...]]:
    """Fixed validation batches, sorted by length so they pad little."""
    ordered = sorted(examples, key=lambda e: len(e[0]))
    return [collate(ordered[i : i + micro], pad_id) for i in range(0, len(ordered), micro)]


class ChatLoader:
    """Length-grouped global batches of `batch_size` conversations, dealt out to the ranks and cut
    into micro-batches. The plan of an epoch comes from (seed, epoch), so the position is the
    whole state (exact resume). The few conversations left over after the last full batch of an
    epoch wait for a later epoch's shuffle."""

    def __init__(self, examples: list[Example], batch_size: int, micro_batch_size: int, pad_id: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0) -> None:  # fmt: skip
        if len(examples) < batch_size:
            raise LmforgeError(
                f"{len(examples)} training conversations, fewer than train.batch_size={batch_size}"
            )
        self.examples, self.pad_id = examples, pad_id
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.cursor = 0, 0
        self._batches = self._plan(0)

    def _plan(self, epoch: int) -> list[list[int]]:
        rng = random.Random(f"{self.seed}:{epoch}")
        order = list(range(len(self.examples)))
        rng.shuffle(order)
        order = order[: len(order) - len(order) % self.batch_size]
        window = self.batch_size * GROUP
        for start in range(0, len(order), window):
            order[start : start + window] = sorted(order[start : start + window], key=self._length)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def _length(self, i: int) -> int:
        return len(self.examples[i][0])

    def data_digest(self) -> str:
        return digest_of(self.examples)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.examples) // self.batch_size

    def next_step(self) -> list[tuple[torch.Tensor, ...]]:
        if self.cursor == len(self._batches):
            self.epoch, self.cursor = self.epoch + 1, 0
            self._batches = self._plan(self.epoch)
        picks = self._batches[self.cursor]
        self.cursor += 1
        mine = picks[self.rank :: self.world_size]
        m = self.micro_batch_size
        return [
            collate([self.examples[i] for i in mine[j : j + m]], self.pad_id) for j in range(0, len(mine), m)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._batches = self._plan(self.epoch)
        check_cursor(self.cursor, len(self._batches), "batches")
