"""The translation task for THE training loop: what differs from language modelling.

The loop asks a task for its model, its batches (a PairLoader: padded, length-grouped sentence
pairs), its loss (label-smoothed cross-entropy summed over target tokens; the loop divides by
the target count of the whole accumulated batch, as for LM), the tokens a step processed, and
its validation metrics: loss and bits per byte on every validation pair, plus sacreBLEU and
chrF of greedy translations, which also pick the best checkpoint (highest BLEU).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lmforge.config import Config
from lmforge.data.pair_loader import PairBatch, PairLoader, eval_pair_batches
from lmforge.data.pairs import load_split, read_lines
from lmforge.errors import LmforgeError
from lmforge.model.seq2seq import Seq2Seq, decoding_extra
from lmforge.tokenization.marian import MarianTokenizer
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.engines.base import Engine
from lmforge.train.evaluate import rank_share
from lmforge.train.losses import IGNORE


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


class TranslationTask:
    def __init__(
        self,
        cfg: Config,
        data_dir: Path,
        tokenizer: Tokenizer | MarianTokenizer,
        engine: Engine,
        micro: int,
        init: Seq2Seq | None = None,
    ) -> None:
        t = cfg.train
        self.cfg, self.tokenizer = cfg, tokenizer
        self.eos, self.pad = int(tokenizer.eos_id), int(tokenizer.pad_id)  # type: ignore[arg-type]
        # train.init_from's decoder start, never-generated tokens (Marian: its pad token) and beam
        self.start = init.start_id if init is not None else None
        self.suppress = list(init.suppress_ids) if init is not None else []
        self.num_beams = init.num_beams if init is not None else 1
        src, tgt = load_split(data_dir, "train")
        vsrc, vtgt = load_split(data_dir, "val")
        n = cfg.model.block_size
        longest = max(len(x) for x in [*src, *tgt, *vsrc, *vtgt]) + 1  # + EOS (or the start token)
        if longest > n:
            raise LmforgeError(
                f"{data_dir}: pairs of up to {longest} tokens (with EOS) do not fit model.block_size={n}"
            )
        self.loader = PairLoader(
            src, tgt, t.batch_size, micro, self.eos, self.pad, engine.rank, engine.world_size, t.seed, n,
            self.start,
        )  # fmt: skip
        val = eval_pair_batches(vsrc, vtgt, micro, self.eos, self.pad, n, self.start)
        self.val, self.val_per_rank = rank_share(val, engine)
        self.val_spare = val[0] if val else None
        refs = read_lines(data_dir / f"val.{cfg.data.tgt_lang}")
        n = len(vsrc) if t.eval_bleu_sentences == 0 else min(t.eval_bleu_sentences, len(vsrc))
        picks = np.unique(np.linspace(0, len(vsrc) - 1, num=n).astype(np.int64)) if n else []
        self.bleu_src = [vsrc[i].tolist() for i in picks]
        self.bleu_refs = [refs[i] for i in picks]
        self.loss_fn = partial(seq2seq_loss, label_smoothing=t.label_smoothing)
        self.token_bytes = torch.tensor(tokenizer.token_bytes(), dtype=torch.int64)

    def build_model(self) -> Seq2Seq:
        return Seq2Seq(self.cfg.model, self.pad, self.start, self.suppress, self.num_beams)

    def model_extra(self) -> dict[str, Any]:
        """config.json keys a model directory needs beyond the ModelConfig (a Marian start token)."""
        return decoding_extra(self.start, self.suppress, self.num_beams)

    def step_tokens(self, micro_batches: list[PairBatch]) -> int:
        """Source + target tokens (no padding) in this rank's step."""
        return sum(int((s != self.pad).sum()) + int((y != IGNORE).sum()) for s, _, y in micro_batches)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, engine: Engine, autocast: Callable[[], AbstractContextManager]
    ) -> dict[str, float]:
        """val_loss (nats per target token, no smoothing), val_bpb, val_bleu and val_chrf (rank 0's)."""
        from lmforge.inference.translate import score, translate_ids

        was_training = model.training
        model.eval()
        totals = torch.zeros(4, dtype=torch.float64)  # loss, target tokens, loss on text tokens, bytes
        # FSDP2 and ZeRO-3 gather weights inside forward: a rank with fewer batches runs extra
        # forwards that count for nothing, so every rank joins every gather
        for _ in range(self.val_per_rank - len(self.val)):
            with autocast():
                model(*self.val_spare[:2])
        for src, tgt_in, tgt_out in self.val:
            with autocast():
                losses = seq2seq_token_losses(model, src, tgt_in, tgt_out).double()
            targets = tgt_out.flatten()
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
            "task": "translation",
            "val_pairs": sum(len(b[0]) for b in self.val),
            "bleu_sentences": len(self.bleu_src),
        }
