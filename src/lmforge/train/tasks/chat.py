"""Instruction tuning: next-token loss on the assistant's tokens of conversations, a pretrained
chat model (train.init_from) and its own chat template.

Data is JSON lines of message lists (data/chat_data.py); conversations marked `"split": "test"`
are left out (they are for `lmforge eval-instruct`), and a seeded shuffle holds out
data.val_fraction of the rest for validation loss. Each conversation is rendered with the
model's chat template and only the tokens the assistant wrote, each turn's end-of-turn token
included, are targets (inference/chat_masks.py); the system prompt, the user's turns and the
template's own markup count for nothing. Conversations longer than data.max_len tokens (at most
the model's context) are cut there. Batches group conversations of similar length (no packing:
see data/chat_data.py). The export is the last step's model, with the chat template, generation
defaults and special tokens of train.init_from, so it chats like the model it started from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.data.chat_data import ChatLoader, Conversation, Example, eval_batches, read_chats
from lmforge.data.holdout import hold_out
from lmforge.errors import LmforgeError, counted
from lmforge.formats.chat_files import (
    TOKENIZER_CONFIG,
    missing_template,
    pick_template,
    read_chat_templates,
    read_generation_config,
    special_tokens,
    write_chat_files,
)
from lmforge.formats.directory import resolve_model_dir, write_model_files
from lmforge.formats.hf_files import model_special_ids
from lmforge.formats.hf_tokenizers import tokenizer_sides
from lmforge.inference.chat_masks import encode_chat
from lmforge.inference.chat_template import check_messages
from lmforge.model.gpt import GPT
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import rank_share
from lmforge.train.losses import lm_loss, lm_token_losses
from lmforge.train.run_inputs import init_model
from lmforge.train.tasks.base import Autocast, Setup, Task, count_targets, take_loaded


def chat_template_of(directory: Path) -> str:
    """The model directory's chat template, or a one-line error naming the directory."""
    templates = read_chat_templates(directory)
    if "default" not in templates:  # the conversations render without tools
        raise LmforgeError(
            f"{missing_template(directory, templates)}; instruction tuning and eval-instruct need"
            " a chat model"
        )
    return templates["default"]


class ChatTask(Task):
    name = "chat"

    def __init__(self, setup: Setup) -> None:
        cfg, d, t, engine = setup.cfg, setup.cfg.data, setup.cfg.train, setup.engine
        self.cfg = cfg
        model_dir = resolve_model_dir(t.init_from)
        self.template = chat_template_of(model_dir)
        self.templates = read_chat_templates(model_dir)  # the named ones (tool_use) go to its export too
        self.sides = tokenizer_sides(model_dir)  # padding_side "left" and the like, for its export
        # replaces cfg.model with the model's own architecture; build_model takes the model, once
        self.init_model, self.tokenizer = init_model(cfg, setup.say)
        self.generation = read_generation_config(model_dir)
        self.variables = special_tokens(model_dir, self.tokenizer)
        # its BOS and padding ids, which the run's model keeps for export (an export wrote the EOS as
        # BOS and no pad, so a template's {{ bos_token }} began with the end of turn)
        self.specials = model_special_ids(t.init_from, self.tokenizer)
        chats = read_chats(d.input)
        for c in chats:  # a bad role or message is named before the split's sizes are judged
            check_messages(c.messages, f"{d.input}:{c.line}")
        empty = [c.line for c in chats if c.split == "train" and _empty_reply(c)]
        if empty and engine.rank == 0:  # its only target is the end of turn: shown even with --quiet
            print(
                f"lmforge: warning: {d.input}: {counted(len(empty), 'conversation')} with an empty"
                f" assistant reply ({_line_list(empty)}): the model learns to answer nothing there",
                file=sys.stderr,
            )
        rows = [c for c in chats if c.split == "train"]
        self.n_test = len(chats) - len(rows)
        rows, self.n_seen = _without_test(rows, chats, d.input, engine.rank == 0)
        if not rows:  # else hold_out would count "0 conversations", silent on the test ones
            raise LmforgeError(
                f'{d.input}: {counted(self.n_test, "conversation")} held out as "split": "test" and'
                ' none to train on; give the ones to learn from "split": "train" (or no split)'
            )
        train_rows, val_rows = hold_out(
            rows, key=lambda c: json.dumps(c.messages, sort_keys=True), fraction=d.val_fraction,
            seed=t.seed, source=str(d.input), noun="conversation", say=setup.say,
        )  # fmt: skip
        self.context = min(cfg.model.block_size, d.max_len)  # tokens kept per conversation
        self.cut = self.dropped = 0
        self.train_examples = self._encode(train_rows, d.input)
        self.val_examples = self._encode(val_rows, d.input)
        if not self.val_examples:
            raise LmforgeError(
                f"{d.input}: no held-out conversation has an assistant token within data.max_len"
            )
        self.pad_id = next(i for i in (self.tokenizer.pad_id, self.tokenizer.eos_id, 0) if i is not None)
        self.loader = ChatLoader(
            self.train_examples,
            t.batch_size,
            setup.micro,
            self.pad_id,
            engine.rank,
            engine.world_size,
            t.seed + 1,
        )
        val = eval_batches(self.val_examples, setup.micro, self.pad_id)
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0]
        self.micro = setup.micro

    def _encode(self, rows: list[Conversation], source: str) -> list[Example]:
        """Token ids and target flags per conversation, cut to the context (+1: the last target);
        conversations left without a target by the cut are dropped and counted."""
        out = []
        for c in rows:
            # the line's tools, and its template as transformers picks it: `tool_use` with tools
            template = pick_template(self.templates, c.tools) or self.template
            ids, mask = encode_chat(
                self.tokenizer, template, c.messages, self.variables, f"{source}:{c.line}", c.tools
            )
            if len(ids) > self.context + 1:
                ids, mask = ids[: self.context + 1], mask[: self.context + 1]
                self.cut += 1
            if any(mask[1:]):
                out.append((ids, mask))
            else:
                self.dropped += 1
        return out

    def build_model(self) -> nn.Module:
        """The model to train, built once: the loaded weights go into it and the task lets go of
        them (else they stayed in memory twice for the whole run: 532 MiB more for SmolLM2)."""
        model = GPT(self.cfg.model)
        model.load_state_dict(take_loaded(self).state_dict())
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        inputs, _, targets = batch
        return lm_loss(model, inputs, targets)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """val_loss: nats per assistant token of the held-out conversations."""
        was_training = model.training
        model.eval()
        totals = torch.zeros(2, dtype=torch.float64)  # summed loss, target tokens
        for _ in range(self.val_per_rank - len(self.val)):  # sharded engines: equal forwards
            with autocast():
                model(self.val_spare[0].to(engine.device))
        for inputs, _, targets in self.val:
            with autocast():
                losses = lm_token_losses(model, inputs.to(engine.device), targets.to(engine.device))
            totals += torch.tensor(
                [float(losses.double().sum()), float(count_targets(targets))], dtype=torch.float64
            )
        totals = engine.all_reduce(totals)
        model.train(was_training)
        return {"val_loss": float(totals[0] / totals[1].clamp(min=1.0))}

    def write_model_files(self, directory: Path) -> None:
        write_model_files(directory, self.cfg.model, self.tokenizer, extra=self.specials or None)
        write_chat_files(directory, self.templates, self.generation)
        # the template's bos_token / eos_token, as transformers reads them, and the padding sides
        named = {**self.variables, **self.sides}
        if named:
            (directory / TOKENIZER_CONFIG).write_text(json.dumps(named, indent=2) + "\n")

    def step_tokens(self, micro_batches: list[tuple[torch.Tensor, ...]]) -> int:
        return sum(int(attention.sum()) for _, attention, _ in micro_batches)  # real tokens, no padding

    def micro_batch_tokens(self) -> int:
        sample = self.train_examples[:200]
        return int(self.micro * sum(len(ids) for ids, _ in sample) / max(len(sample), 1))

    def _targets(self) -> int:
        return sum(sum(mask[1:]) for _, mask in self.train_examples)

    def describe(self) -> str:
        d = self.cfg.data
        return (
            f"{d.input}: {len(self.train_examples)} train / {len(self.val_examples)} held-out conversations"
            f" ({self.n_test} test ones left out), {self._targets():,} assistant target tokens,"
            f" at most {self.context} tokens each ({self.cut} cut, {self.dropped} dropped)"
        )

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "train_conversations": len(self.train_examples),
            "heldout_conversations": len(self.val_examples),
            "test_conversations_left_out": self.n_test,
            "train_copies_of_test_left_out": self.n_seen,
            "cut_to_context": self.cut,
            "dropped": self.dropped,
            "assistant_target_tokens": self._targets(),
        }


def _key(c: Conversation) -> str:
    return json.dumps(c.messages, sort_keys=True)


def _line_list(lines: list[int]) -> str:
    """`line 4`, or `lines 1, 2, 3, 4, 5, ...` (the first five): where in the file, in a note."""
    shown = ", ".join(map(str, lines[:5])) + (", ..." if len(lines) > 5 else "")
    return f"line{'s' if len(lines) > 1 else ''} {shown}"


def _without_test(rows: list[Conversation], chats: list[Conversation], source: str,
                  say: bool) -> tuple[list[Conversation], int]:  # fmt: skip
    """The train conversations but the copies of a test one (eval-instruct would score what the
    model learnt by heart), and how many those were; said on stderr, even with --quiet."""
    test = {_key(c) for c in chats if c.split == "test"}
    seen = [c.line for c in rows if _key(c) in test]
    if seen and say:
        print(
            f"lmforge: note: {source}: {counted(len(seen), 'train conversation')} repeat a"
            f' "split": "test" one ({_line_list(seen)}): left out of training,'
            " so eval-instruct scores conversations the model has not seen",
            file=sys.stderr,
        )
    return [c for c in rows if _key(c) not in test], len(seen)


def _empty_reply(chat: Conversation) -> bool:
    """An assistant turn with no text and no tool call: its only target is the end of turn."""
    return any(
        m["role"] == "assistant" and not m.get("content", "").strip() and not m.get("tool_calls")
        for m in chat.messages
    )
