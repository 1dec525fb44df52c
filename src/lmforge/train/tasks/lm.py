"""Language modelling: next-token prediction over windows of a token stream, a GPT decoder.

Data is a prepared shard directory (data.input itself, or raw text prepared into RUN/data once,
by rank 0). Validation: loss per token and bits per byte on a fixed, evenly spaced set of
held-out windows. The export is the last step's model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.data.loader import BatchLoader, eval_batches
from lmforge.data.shards import check_same_tokenizer, check_shards_tokenizer, open_split, read_meta
from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import TOKENIZER_CONFIG, copy_chat_files
from lmforge.formats.directory import resolve_model_dir, write_model_files
from lmforge.formats.hf_files import source_special_ids
from lmforge.formats.hf_tokenizers import tokenizer_sides
from lmforge.model.gpt import GPT
from lmforge.tokenization.marian import load_translation_tokenizer
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import evaluate, rank_share
from lmforge.train.losses import lm_loss
from lmforge.train.lost_rank import rank_lost
from lmforge.train.run_inputs import ensure_data, init_model
from lmforge.train.tasks.base import Autocast, Setup, Task, take_loaded


def prepared_data(setup: Setup, init: tuple[Any, Any] | None) -> tuple[Path, dict[str, Any], Any]:
    """(shard directory, its meta.json, its tokenizer): rank 0 prepares raw input once, the
    others wait and read the same shards. Shared by the tasks whose data is a prep output."""
    cfg, engine = setup.cfg, setup.engine
    init_tokenizer = init[1] if init else None
    if engine.rank == 0:
        ensure_data(cfg, setup.run_dir, setup.say, init_tokenizer)
    try:
        engine.barrier()
    except RuntimeError as e:  # the others wait within the collective's timeout (the K6 pass)
        lost = rank_lost(e, engine.world_size, cfg.engine.timeout_s)
        if engine.rank == 0 or lost is None:
            raise
        if "Timed out" not in str(e):  # rank 0 stopped (its own line says why), it did not take long
            raise lost from e
        raise LmforgeError(
            f"data.input={cfg.data.input!r}: rank {engine.rank} waited engine.timeout_s="
            f"{cfg.engine.timeout_s} s for rank 0 to prepare it; prepare it once first (lmforge prep,"
            " then its output folder as data.input) or give a longer engine.timeout_s"
        ) from e  # the backend's traceback under --debug
    data_dir = ensure_data(cfg, setup.run_dir, setup.say, init_tokenizer, prepare=False)
    meta = read_meta(data_dir)
    if (meta.get("task", "lm") == "translation") != (cfg.data.task == "translation"):
        raise LmforgeError(
            f"{data_dir}: prepared for task {meta.get('task', 'lm')!r}, but data.task={cfg.data.task!r}"
        )
    tokenizer = load_translation_tokenizer(data_dir)  # tokenizer.json, or a Marian model's files
    check_shards_tokenizer(data_dir, meta, tokenizer)
    if init is not None:
        check_same_tokenizer(data_dir, tokenizer, init[1], cfg.train.init_from)
    start = tokenizer.text_affixes()[0] if cfg.data.task != "translation" else []
    if start and meta.get("document_start") != start and engine.rank == 0:  # prep before 2026-12-06
        print(
            f"lmforge: warning: {data_dir}: its documents start without {start}, which the tokenizer puts"
            " before a text (Llama's BOS: its model never read a document without it): prepare the data"
            " again (lmforge prep, or raw text as data.input) for that layout",
            file=sys.stderr,
        )
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = meta["vocab_size"]
    elif cfg.model.vocab_size < meta["vocab_size"]:
        raise LmforgeError(
            f"model.vocab_size={cfg.model.vocab_size} < the data's vocabulary of {meta['vocab_size']}"
        )
    return data_dir, meta, tokenizer


def data_line(data_dir: Path, meta: dict[str, Any]) -> str:
    return (
        f"{data_dir}: {meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val tokens,"
        f" vocab {meta['vocab_size']} ({meta.get('tokenizer', '?')})"
    )


class LanguageModelling(Task):
    name = "lm"
    fixed_shapes = True  # windows of data.seq_len (default block_size) tokens

    def __init__(self, setup: Setup) -> None:
        cfg, t, engine = setup.cfg, setup.cfg.train, setup.engine
        self.cfg = cfg
        init = init_model(cfg, setup.say) if t.init_from else None
        self.init_model = init[0] if init is not None else None  # build_model takes it, once
        self.source = resolve_model_dir(t.init_from) if t.init_from else None  # its chat files go along
        self.data_dir, self.meta, self.tokenizer = prepared_data(setup, init)
        if init is not None:
            self.tokenizer = init[1]  # keeps the model's own EOS id
        n = self.seq_len = cfg.lm_window()
        self.loader = BatchLoader(
            open_split(self.data_dir, "train"), n, t.batch_size, setup.micro, engine.rank, engine.world_size,
            t.seed, whole_epochs=cfg.privacy.enabled,  # DP: no window twice in one step (data/loader.py)
        )  # fmt: skip
        val = eval_batches(open_split(self.data_dir, "val"), n, t.eval_batches * t.batch_size, setup.micro)
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0] if val else None  # a rank without batches pads with it
        self.token_bytes = torch.tensor(self.tokenizer.token_bytes(), dtype=torch.int64)
        self.micro = setup.micro

    def build_model(self) -> nn.Module:
        """The model to train, built once: train.init_from's weights go into it and the task
        lets go of them (else they stayed in memory twice for the whole run)."""
        model = GPT(self.cfg.model)
        if self.cfg.train.init_from:
            model.load_state_dict(take_loaded(self).state_dict())
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        return lm_loss(model, *batch)

    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        loss, bpb = evaluate(
            model, self.val, self.token_bytes, engine, autocast, self.val_per_rank, self.val_spare
        )
        return {"val_loss": loss, "val_bpb": bpb}

    def write_model_files(self, directory: Path) -> None:
        if self.source is None:
            write_model_files(directory, self.cfg.model, self.tokenizer)
            return
        # a pretrained model trained on more text keeps its BOS and padding, its chat template and
        # its generation defaults, as transformers' save_pretrained of a fine-tune does
        ids = source_special_ids(self.source, self.tokenizer)
        write_model_files(directory, self.cfg.model, self.tokenizer, extra=ids or None)
        copy_chat_files(self.source, directory)
        sides = tokenizer_sides(self.source)  # padding_side "left": the export keeps it for transformers
        if sides:
            (directory / TOKENIZER_CONFIG).write_text(json.dumps(sides, indent=2) + "\n")

    def describe(self) -> str:
        return data_line(self.data_dir, self.meta)

    def micro_batch_tokens(self) -> int:
        return self.micro * self.seq_len
