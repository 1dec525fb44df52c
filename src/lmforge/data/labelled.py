"""Labelled text for classification: JSON lines in, padded id batches out. A row's target is a
label index (single-label), a multi-hot row (multi-label) or numbers (regression); its input one
text, or a (text, text_pair) pair for a cross-encoder (data.text_pair_field; data/text_pairs.py
encodes those)."""

from __future__ import annotations

import functools
import json
import math
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from lmforge.data.fingerprint import digest_of
from lmforge.data.loader import check_cursor
from lmforge.data.sources import strict_lines
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

Target = int | float | tuple[float, ...]  # a label index, a number, a multi-hot row or numbers
Item = str | tuple[str, str]  # one text, or a (text, text_pair) pair
MULTI_LABEL, REGRESSION = "multi_label_classification", "regression"


def labelled_records(
    path: str | Path, text_field: str = "text", label_field: str = "label", text_pair_field: str = ""
) -> Iterator[tuple[int, Item, Any]]:
    """(line number, text, label as JSON gives it) for each record of a .jsonl file (optionally
    .gz/.xz/.bz2), the text a (text, text_pair) pair where `text_pair_field` names the second;
    blank lines skipped, a line that is no such record or whose text is empty named."""
    path = Path(path)
    fields = text_fields(text_field, text_pair_field, label_field)
    for n, line in strict_lines(path, "a .jsonl file"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            texts, label = [record[f] for f in fields], record[label_field]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            needs = f"needs JSON with {named(*fields, label_field)}"
            if isinstance(e, json.JSONDecodeError) and ".jsonl" not in path.suffixes:  # a CSV, say
                needs += " (labelled examples are JSON Lines, one object a line, whatever the suffix)"
            raise LmforgeError(f"{path}:{n}: {needs} ({e})") from None
        for field, text in zip(fields, texts, strict=True):
            if not isinstance(text, str) or not text.strip():  # str(None) would train as "None"
                raise LmforgeError(f"{path}:{n}: {field!r} is {json.dumps(text)[:40]}, not a text")
        yield n, (texts[0] if len(texts) == 1 else (texts[0], texts[1])), label


def named(*fields: str) -> str:
    """'a', 'b' and 'c': fields as a message names them."""
    quoted = [repr(f) for f in fields]
    return " and ".join([", ".join(quoted[:-1]), quoted[-1]] if len(quoted) > 1 else quoted)


def text_fields(text_field: str, text_pair_field: str, label_field: str | None = None) -> list[str]:
    """[text_field] or [text_field, text_pair_field]; a pair field that is the text's or the
    label's own refused (each record's text would be read as its own pair)."""
    if not text_pair_field:
        return [text_field]
    for name, field in (("text_field", text_field), ("label_field", label_field)):
        if text_pair_field == field:
            raise LmforgeError(
                f"text_pair_field={text_pair_field!r} is also the {name}: name the field holding each"
                " record's second text"
            )
    return [text_field, text_pair_field]


def read_labelled(
    path: str | Path,
    labels: list[str],
    text_field: str = "text",
    label_field: str = "label",
    problem_type: str = "",
    text_pair_field: str = "",
) -> list[tuple[Item, Target]]:
    """[(text, target)] from a .jsonl file (optionally .gz/.xz/.bz2), by problem_type (transformers'),
    each text a (text, text_pair) pair where `text_pair_field` names the second (labelled_records):

    - single-label ("" or `single_label_classification`): the label index. A label is a name in
      `labels`, its index, or a name that differs from exactly one of them only in case (a model's
      `POSITIVE` for data's `positive`), which a line on stderr names. Where the names are numbers
      (star ratings `1,2,3,4,5`), a JSON number is read as a name, never an index: 5 is "5".
    - `multi_label_classification`: a JSON list of such labels ([] for none) -> a multi-hot row.
    - `regression`: a number (one output), or a list of one number per name of `labels`."""
    least = 2 if problem_type in ("", "single_label_classification") else 1
    if len(labels) < least or len(set(labels)) != len(labels):
        some = "two labels" if least == 2 else "one label"
        raise LmforgeError(f"labels={','.join(labels)!r}: name at least {some}, each once")
    path = Path(path)
    folded: dict[str, list[int]] = {}
    for i, name in enumerate(labels):
        folded.setdefault(name.casefold(), []).append(i)
    by_case: dict[str, str] = {}  # a data label -> the model's label it matched ignoring case
    numerals = all(name.lstrip("-").isdigit() for name in labels)  # 1 would be index 1, "2"

    def index(label: Any, n: int) -> int:
        number = isinstance(label, int) and not isinstance(label, bool)
        if number and numerals and str(label) in labels:
            return labels.index(str(label))
        if number and not numerals and 0 <= label < len(labels):
            return label
        if label in labels:
            return labels.index(label)
        if isinstance(label, str) and len(folded.get(label.casefold(), [])) == 1:
            by_case[label] = labels[folded[label.casefold()][0]]
            return folded[label.casefold()][0]
        raise LmforgeError(f"{path}:{n}: label {_said(label)} is not one of {labels}")

    rows: list[tuple[Item, Target]] = []
    for n, text, label in labelled_records(path, text_field, label_field, text_pair_field):
        if problem_type == REGRESSION:
            rows.append((text, _numbers(label, len(labels), f"{path}:{n}")))
        elif problem_type == MULTI_LABEL:
            if not isinstance(label, list):
                raise LmforgeError(f"{path}:{n}: label {_said(label)} is not a list of labels ({MULTI_LABEL}:"
                                   ' a JSON array such as ["anger", "joy"], [] for none)')  # fmt: skip
            hot = [0.0] * len(labels)
            for one in label:
                hot[index(one, n)] = 1.0
            rows.append((text, tuple(hot)))
        else:
            rows.append((text, index(label, n)))
    if not rows:
        raise LmforgeError(f"{path}: no labelled examples")
    if by_case:
        matched = ", ".join(f"{k!r} as {v!r}" for k, v in sorted(by_case.items()))
        _say_once(f"lmforge: {path}: labels read ignoring case: {matched}")
    return rows


def _said(label: Any) -> str:
    return repr(label) if isinstance(label, str) else json.dumps(label)  # JSON's true, not True


FLOAT32_MAX = 3.4028234663852886e38


def _numbers(label: Any, outputs: int, where: str) -> float | tuple[float, ...]:
    """A regression target: a finite number for one output, a list of `outputs` numbers for several."""

    def number(x: Any) -> bool:  # finite in float32, the targets' type (1e300 and 10**400 are not)
        if not isinstance(x, int | float) or isinstance(x, bool):
            return False
        try:
            return math.isfinite(x) and abs(float(x)) <= FLOAT32_MAX
        except OverflowError:  # an integer past any float
            return False

    if outputs == 1 and number(label):
        return float(label)
    if outputs > 1 and isinstance(label, list) and len(label) == outputs and all(map(number, label)):
        return tuple(float(x) for x in label)
    wanted = "a number" if outputs == 1 else f"a list of {outputs} numbers, one per label"
    values = label if isinstance(label, list) else [label]
    if any(isinstance(x, int | float) and not isinstance(x, bool) and not number(x) for x in values):
        wanted += " (each finite, within float32's range of 3.4e38)"
    raise LmforgeError(f"{where}: label {_said(label)[:40]} is not {wanted} (regression)")


@functools.cache
def _say_once(line: str) -> None:
    """On stderr once a process (finetune-classify reads its file twice: to count, then to train)."""
    print(line, file=sys.stderr)


def encode_batch(
    tokenizer: Tokenizer, texts: list[str], context: int, pad_id: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention_mask), each (B, T), right-padded with `pad_id` (a decoder classifier's, the
    token its pooling skips; else the tokenizer's, else 0). Each text is encoded as transformers'
    `tokenizer(text)` encodes it, with the special tokens the tokenizer's post-processor puts
    around it (BERT's [CLS] ... [SEP], Llama 3's and Mistral's BOS; none for GPT-2's and lmforge's
    tokenizers); a text longer than the context is cut inside, its special tokens kept, as
    transformers' truncation cuts it."""
    after = tokenizer.text_affixes()[1]
    rows = [encode_text(tokenizer, text, context, after) for text in texts]
    ids, mask, _ = pad_rows(rows, pad_id if pad_id is not None else tokenizer.pad_id)
    return ids, mask


def encode_text(tokenizer: Tokenizer, text: str, context: int, after: list[int]) -> list[int]:
    """One text's ids for encode_batch: `after`, the special ids its tokenizer puts after a text
    (Tokenizer.text_affixes), stay at the end of a text cut to `context` tokens."""
    ids = tokenizer.encode_prompt(text)
    ids = ids or [tokenizer.eos_id if tokenizer.eos_id is not None else 0]
    if len(ids) > context:
        ids = ids[: context - len(after)] + after if after else ids[:context]
    return ids


def pad_rows(
    rows: list[list[int]], pad: int | None, types: list[list[int]] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention_mask, token_type_ids), each (B, T), the rows right-padded with `pad` (0 for
    None); the token types 0 where `types` gives none."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
    mask, kinds = torch.zeros_like(ids), torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        if types is not None:
            kinds[i, : len(row)] = torch.tensor(types[i])
    return ids, mask, kinds


def token_counts(tokenizer: Tokenizer, texts: list[Item], context: int) -> list[int]:
    """How many tokens encode_batch gives each text, or text_pairs.encode_items each pair (at least
    1, at most `context`), counted in one batch call to the tokenizer (`lmforge plan` reads a whole
    training file this way)."""
    encodings = tokenizer.hf.encode_batch(texts, add_special_tokens=True)
    return [min(max(len(e.ids), 1), context) for e in encodings]


class LabelledLoader:
    """Global batches of labelled texts for classification: a seeded shuffle per epoch, the batch
    dealt out to the ranks in turn, each rank's share cut into micro-batches of
    (ids (B, T), attention_mask (B, T), labels (B,)), right-padded per micro-batch; text pairs'
    `encode` (text_pairs.encode_items) gives token types too: (ids, attention_mask,
    token_type_ids, labels)."""

    def __init__(
        self,
        rows: list[tuple[Item, Target]],
        encode: Callable[[list[Item]], tuple[torch.Tensor, ...]],
        batch_size: int,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
    ) -> None:
        if len(rows) < batch_size:
            raise LmforgeError(f"{len(rows)} training examples, fewer than train.batch_size={batch_size}")
        self.rows, self.encode = rows, encode
        self.batch_size, self.micro_batch_size = batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.epoch, self.cursor = 0, 0
        self._order = self._plan(0)

    def _plan(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def data_digest(self) -> str:
        return digest_of(self.rows)

    @property
    def steps_per_epoch(self) -> int:
        return -(-len(self.rows) // self.batch_size)

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        picks = []
        for _ in range(self.batch_size):  # the global batch, identical on every rank
            if self.cursor == len(self._order):
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._plan(self.epoch)
            picks.append(self._order[self.cursor])
            self.cursor += 1
        mine = picks[self.rank :: self.world_size]
        m = self.micro_batch_size
        return [self.collate([self.rows[i] for i in mine[j : j + m]]) for j in range(0, len(mine), m)]

    def collate(self, rows: list[tuple[Item, Target]]) -> tuple[torch.Tensor, ...]:
        """(what `encode` gives, targets): (ids, mask[, token types]), then label indices (B,)
        long, or multi-hot rows or numbers (B, labels) or (B,) float32, as transformers' losses
        take them."""
        return *self.encode([text for text, _ in rows]), torch.tensor([label for _, label in rows])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.cursor = state["seed"], state["epoch"], state["cursor"]
        self._order = self._plan(self.epoch)
        check_cursor(self.cursor, len(self._order), "examples")
