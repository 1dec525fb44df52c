"""`lmforge plan` counts what Gemma 2's soft caps make autograd save: tanh's output, per attention
score (model.attn_softcap, on every device: a capped attention takes the bmm route, which forms the
scores, on a GPU too) and per logit (model.logit_softcap). Until 2026-12-07 neither was counted, and
a GPU's plan counted no attention matrix for a capped model (a gemma-2-2b shape at 8192 tokens
in bf16: 47.8 GiB of activations planned, 155.7 GiB now)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_plan import _saved_bytes

from lmforge.config import ModelConfig
from lmforge.model.gpt import GPT
from lmforge.tools import plan_model

B, T = 2, 128
SHAPE = ModelConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=2000, block_size=T, pos="rope",
                    norm="rmsnorm", mlp="geglu_tanh")  # fmt: skip


def _saved(c: ModelConfig, route: str, dtype: torch.dtype) -> int:
    torch.manual_seed(0)
    model = GPT(c).train()
    model.set_attention(route)
    return _saved_bytes(model, dtype, torch.randint(0, c.vocab_size, (B, T)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cap", ["attn_softcap", "logit_softcap"])
def test_what_a_soft_cap_makes_autograd_save_is_planned(cap: str, dtype: torch.dtype) -> None:
    # both models on the CPU's route (bmm), so the difference is the cap's alone
    capped = dataclasses.replace(SHAPE, **{cap: 30.0})
    measured = _saved(capped, "bmm", dtype) - _saved(SHAPE, "bmm", dtype)
    width = 4 if dtype == torch.float32 else 2
    planned = [plan_model.activation_bytes(c, B * T, T, width, True)["activations"] for c in (capped, SHAPE)]
    assert measured > 0 and 0.95 < (planned[0] - planned[1]) / measured < 1.05, (planned, measured)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_capped_attention_keeps_its_matrix_on_a_gpus_route_too(dtype: torch.dtype) -> None:
    # asked for sdpa (a GPU's route, cpu=False in the plan), a capped attention takes bmm all the
    # same and saves what it saves there; the GPU's plan counted none of its matrix
    capped = dataclasses.replace(SHAPE, attn_softcap=50.0)
    assert _saved(capped, "sdpa", dtype) == _saved(capped, "bmm", dtype)
    width = 4 if dtype == torch.float32 else 2
    gpu, cpu = (plan_model.activation_bytes(capped, B * T, T, width, c) for c in (False, True))
    assert gpu == cpu  # without dropout a GPU's bmm route keeps what a CPU's does
    per_score = 4 + width + (width if width == 2 else 0)  # softmax's fp32 output, tanh's, the bf16 copy
    uncapped = plan_model.activation_bytes(SHAPE, B * T, T, width, False)
    matrix = SHAPE.n_layer * B * SHAPE.n_head * T * T * per_score
    assert gpu["activations"] - uncapped["activations"] == matrix
