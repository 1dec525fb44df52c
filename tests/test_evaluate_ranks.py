"""Validation on several ranks: sharded engines (FSDP, ZeRO-3) gather weights inside forward, so a
rank must run as many forwards as the others even when its share of the validation split is empty
(FSDP on 2 ranks hung at its first evaluation with one validation batch: rank 1 had none)."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import torch

from lmforge.config import ModelConfig
from lmforge.model.gpt import GPT
from lmforge.train.evaluate import evaluate, rank_share


class Counted(GPT):
    calls = 0

    def forward(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        Counted.calls += 1
        return super().forward(*args, **kwargs)


def test_a_rank_without_batches_runs_the_forwards_of_the_others() -> None:
    model = Counted(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    batch = (torch.randint(0, 11, (2, 8)), torch.randint(0, 11, (2, 8)))
    summed = lambda v: v + 1  # noqa: E731 - rank 0's totals: 1 each
    engine = SimpleNamespace(rank=1, world_size=2, device=torch.device("cpu"), all_reduce=summed)
    mine, pad_to = rank_share([batch], engine)  # type: ignore[arg-type]
    assert (mine, pad_to) == ([], 1)
    token_bytes = torch.ones(11, dtype=torch.int64)
    evaluate(model, mine, token_bytes, engine, contextlib.nullcontext, pad_to, spare=batch)  # type: ignore[arg-type]
    assert Counted.calls == 1  # rank 0 runs one forward on its batch: this rank runs one too
