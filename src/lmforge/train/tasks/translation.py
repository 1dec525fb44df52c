"""The translation task for THE training loop: what differs from language modelling.

The loop asks a task for its model, its batches (a PairLoader: padded, length-grouped sentence
pairs), its loss (label-smoothed cross-entropy summed over target tokens; the loop divides by
the target count of the whole accumulated batch, as for LM), the tokens a step processed, and
its validation metrics: loss and bits per byte on every validation pair, plus sacreBLEU and
chrF of greedy translations, which also pick the best checkpoint (highest BLEU).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.data.input_files import suffixes
from lmforge.data.loader import IGNORE
from lmforge.data.pair_loader import PairBatch, PairLoader, eval_pair_batches
from lmforge.data.pairs import load_split, read_lines
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_files
from lmforge.model.seq2seq import Seq2Seq, decoding_extra
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import rank_share
from lmforge.train.run_inputs import init_model
from lmforge.train.tasks.base import Autocast, Setup, Task, take_loaded
from lmforge.train.tasks.lm import data_line, prepared_data


def seq2seq_token_losses(
    model: nn.Module,
    src: torch.Tensor,
    tgt_in: torch.Tensor,
    tgt_out: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy per target position, (B*T,); padded targets give 0."""
    logits = model(src, tgt_in)  # (B, T, vocab)
    return F.cross_entropy(
        logits.flatten(0, 1).float(),
        tgt_out.flatten(),
        ignore_index=IGNORE,
        reduction="none",
        label_smoothing=label_smoothing,
    )


def seq2seq_loss(
    model: nn.Module,
    src: torch.Tensor,
    tgt_in: torch.Tensor,
    tgt_out: torch.Tensor,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Label-smoothed cross-entropy summed over target tokens."""
    return seq2seq_token_losses(model, src, tgt_in, tgt_out, label_smoothing).sum()


def _check_languages(data_dir: Path, meta: dict[str, Any], src: str, tgt: str) -> None:
    """The config's direction is the data's: the validation references are read as val.{tgt}, and the
    model is labelled src -> tgt (a swapped config scored BLEU against the sources and exported
    an en -> fr model labelled fr -> en)."""
    prepared = (meta.get("src_lang"), meta.get("tgt_lang"))
    if None not in prepared and prepared != (src, tgt):
        raise LmforgeError(
            f"{data_dir / 'meta.json'}: pairs prepared {prepared[0]} -> {prepared[1]}, but the config says"
            f" data.src_lang={src!r}, data.tgt_lang={tgt!r}: give --data.src_lang={prepared[0]}"
            f" --data.tgt_lang={prepared[1]}"
        )


class TranslationTask(Task):
    name = "translation"
    best_metric = "val_bleu"

    def __init__(self, setup: Setup) -> None:
        cfg, t, engine = setup.cfg, setup.cfg.train, setup.engine
        self.cfg = cfg
        init = init_model(cfg, setup.say) if t.init_from else None
        self.data_dir, self.meta, tokenizer = prepared_data(setup, init)
        _check_languages(self.data_dir, self.meta, cfg.data.src_lang, cfg.data.tgt_lang)
        self.init_model = init[0] if init is not None else None
        self.tokenizer = init[1] if init is not None else tokenizer  # keeps the model's own EOS id
        self.eos, self.pad = int(tokenizer.eos_id), int(tokenizer.pad_id)  # type: ignore[arg-type]
        # train.init_from's decoder start, never-generated tokens (Marian: its pad token) and beam
        model = self.init_model
        self.start = model.start_id if model is not None else None
        self.suppress = list(model.suppress_ids) if model is not None else []
        self.num_beams = model.num_beams if model is not None else 1
        self.early_stopping = model.early_stopping if model is not None else True
        self.defaults = (
            (1.0, 0, 1.0)
            if model is None
            else (model.repetition_penalty, model.no_repeat_ngram_size, model.length_penalty)
        )  # and its length_penalty: the model's defaults, kept in its directories
        data_dir = self.data_dir
        src, tgt = load_split(data_dir, "train")
        vsrc, vtgt = load_split(data_dir, "val")
        if not vsrc:
            raise LmforgeError(f"{data_dir}: no validation pairs (val.{cfg.data.src_lang} is empty)")
        n = cfg.model.block_size
        longest = max(len(x) for x in [*src, *tgt, *vsrc, *vtgt]) + 1  # + EOS (or the start token)
        if longest > n:
            raise LmforgeError(
                f"{data_dir}: pairs of up to {longest} tokens (with EOS) do not fit model.block_size={n}"
            )
        micro = setup.micro
        self.loader = PairLoader(
            src, tgt, t.batch_size, micro, self.eos, self.pad, engine.rank, engine.world_size, t.seed, n,
            self.start,
        )  # fmt: skip
        val = eval_pair_batches(vsrc, vtgt, micro, self.eos, self.pad, n, self.start)
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0]
        refs = read_lines(data_dir / f"val.{cfg.data.tgt_lang}")
        n = len(vsrc) if t.eval_bleu_sentences == 0 else min(t.eval_bleu_sentences, len(vsrc))
        picks = np.unique(np.linspace(0, len(vsrc) - 1, num=n).astype(np.int64)) if n else []
        self.bleu_src = [vsrc[i].tolist() for i in picks]
        self.bleu_refs = [refs[i] for i in picks]
        self.label_smoothing = t.label_smoothing
        self.token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.int64)
        self.micro = micro

    def build_model(self) -> Seq2Seq:
        decoding = (self.start, self.suppress, self.num_beams, self.early_stopping, *self.defaults)
        model = Seq2Seq(self.cfg.model, self.pad, *decoding)
        if self.cfg.train.init_from:  # let go of it: else in memory twice all run
            model.load_state_dict(take_loaded(self).state_dict())
        return model

    def loss(self, model: nn.Module, *batch: torch.Tensor) -> torch.Tensor:
        return seq2seq_loss(model, *batch, label_smoothing=self.label_smoothing)

    def write_model_files(self, directory: Path) -> None:
        # a Marian start token, its beams, early_stopping, repeat options and length_penalty
        extra = decoding_extra(self.start, self.suppress, self.num_beams, self.early_stopping, *self.defaults)
        sources = [Path(str(p)) for p in self.meta.get("sources", [])]
        if sources and all(suffixes(p)[0] != ".tsv" for p in sources):  # the direction, where the data
            # names its languages (.jsonl keys, NAME.xx files); a .tsv's columns have no names
            extra.update(source_lang=self.cfg.data.src_lang, target_lang=self.cfg.data.tgt_lang)
        write_model_files(directory, self.cfg.model, self.tokenizer, extra=extra)

    def describe(self) -> str:
        return data_line(self.data_dir, self.meta)

    def micro_batch_tokens(self) -> int:
        return self.micro * self.cfg.model.block_size

    def step_tokens(self, micro_batches: list[PairBatch]) -> int:
        """Source + target tokens (no padding) in this rank's step."""
        return sum(int((s != self.pad).sum()) + int((y != IGNORE).sum()) for s, _, y in micro_batches)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, engine: Engine, autocast: Autocast) -> dict[str, float]:
        """val_loss (nats per target token, no smoothing), val_bpb, val_bleu and val_chrf (rank 0's)."""
        from lmforge.inference.translate import score, translate_ids  # sacrebleu: only when evaluating

        was_training = model.training
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64)  # loss, target tokens, loss on text tokens, bytes
        # FSDP2 and ZeRO-3 gather weights inside forward: a rank with fewer batches runs extra
        # forwards that count for nothing, so every rank joins every gather
        for _ in range(self.val_per_rank - len(self.val)):
            with autocast():
                model(*(x.to(engine.device) for x in self.val_spare[:2]))
        for batch in self.val:
            src, tgt_in, tgt_out = (x.to(engine.device) for x in batch)
            with autocast():
                losses = seq2seq_token_losses(model, src, tgt_in, tgt_out).double()
            losses, targets = losses.cpu(), tgt_out.flatten().cpu()
            real = targets != IGNORE
            nbytes = self.token_bytes[targets.clamp(min=0)] * real  # EOS and padding: 0 bytes
            text = nbytes > 0
            totals += torch.stack(
                [losses.sum(), real.sum().double(), losses[text].sum(), nbytes.sum().double()]
            )
        loss, tokens, text_loss, nbytes = engine.all_reduce(totals).tolist()
        out = {"val_loss": loss / max(tokens, 1.0), "val_bpb": text_loss / (math.log(2) * max(nbytes, 1.0))}
        if self.bleu_src:
            # every rank decodes (the same outputs); rank 0 reports
            with engine.full_model() as bare:  # decoding calls the model's methods, not forward
                ids = translate_ids(bare, self.bleu_src, self.eos, beam=1)  # type: ignore[arg-type]
            scores = torch.zeros(2, dtype=torch.float64)
            if engine.rank == 0:
                s = score([self.tokenizer.decode(i).strip() for i in ids], self.bleu_refs)
                scores += torch.tensor([s["bleu"], s["chrf"]], dtype=torch.float64)
            # every rank gets rank 0's scores: the best-checkpoint choice that follows is collective
            bleu, chrf = engine.all_reduce(scores).tolist()
            out.update(val_bleu=bleu, val_chrf=chrf)
        model.train(was_training)
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.name,
            "val_pairs": sum(len(b[0]) for b in self.val),
            "bleu_sentences": len(self.bleu_src),
        }
