"""Gradient accumulation, the LR schedules and the NaN guard."""

from __future__ import annotations

import copy

import pytest
import torch

from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.model.gpt import GPT
from lmforge.train.engines.base import Plan
from lmforge.train.engines.local import LocalEngine
from lmforge.train.loop import forward_backward
from lmforge.train.optim import build_optimizer, build_scheduler, lr_multiplier


def _grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_gives_the_same_gradient(k: int) -> None:
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50))
    other = copy.deepcopy(model)
    inputs, targets = torch.randint(0, 50, (8, 16)), torch.randint(0, 50, (8, 16))
    targets[0, :5] = -100  # ignored targets: normalisation must count tokens, not micro-batches
    loss_full = forward_backward(model, LocalEngine(EngineConfig(), TrainConfig()), [(inputs, targets)])
    m = 8 // k
    micro = [(inputs[i : i + m], targets[i : i + m]) for i in range(0, 8, m)]
    loss_accum = forward_backward(other, LocalEngine(EngineConfig(), TrainConfig()), micro)
    assert loss_accum == pytest.approx(loss_full, rel=1e-6)
    for a, b in zip(_grads(model), _grads(other), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_linear_schedule_values() -> None:
    f = lr_multiplier(TrainConfig(schedule="linear", warmup_steps=10, max_steps=110))
    assert [f(s) for s in (0, 5, 10, 60, 110, 200)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])


def test_linear_schedule_matches_transformers() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = TrainConfig(schedule="linear", warmup_steps=7, max_steps=50, lr=1e-3)
    ours = build_scheduler(build_optimizer(torch.nn.Linear(2, 2), cfg), cfg)
    theirs_opt = torch.optim.AdamW(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    theirs = transformers.get_linear_schedule_with_warmup(theirs_opt, 7, 50)
    for _ in range(55):
        assert ours.get_last_lr()[0] == pytest.approx(theirs.get_last_lr()[0], abs=1e-12)
        ours.optimizer.step()
        theirs_opt.step()
        ours.step()
        theirs.step()


def test_cosine_schedule_ends_at_min_lr() -> None:
    cfg = TrainConfig(schedule="cosine", warmup_steps=10, max_steps=100, lr=1e-3, min_lr=1e-4)
    f = lr_multiplier(cfg)
    assert f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.55)
    assert f(100) == pytest.approx(0.1)


def test_weight_decay_groups() -> None:
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=10))
    decay, no_decay = build_optimizer(model, TrainConfig()).param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and decay["weight_decay"] == 0.1
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_non_finite_gradient_skips_the_update() -> None:
    model = torch.nn.Linear(3, 1)
    cfg = TrainConfig()
    engine = LocalEngine(EngineConfig(), cfg)
    plan = Plan(torch.float32, 1, 1, 1)
    engine.prepare(model, lambda m: build_optimizer(m, cfg), lambda o: build_scheduler(o, cfg), plan)
    before = copy.deepcopy(model.state_dict())
    (model(torch.ones(1, 3)) * float("nan")).sum().backward()
    norm, stepped = engine.step()
    assert not stepped and norm != norm  # NaN
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_run_aborts_after_consecutive_non_finite_steps(tmp_path, tiny_overrides) -> None:
    from lmforge.errors import LmforgeError
    from lmforge.train.loop import train

    # An absurd learning rate blows the weights up; without clipping the gradients turn inf/NaN.
    overrides = [
        *tiny_overrides,
        "--train.lr=1e12",
        "--train.min_lr=0",
        "--train.grad_clip=0",
        "--train.warmup_steps=0",
        "--train.max_steps=200",
        "--train.max_bad_steps=3",
    ]
    with pytest.raises(LmforgeError, match="3 non-finite steps in a row"):
        train(None, overrides, tmp_path / "run", quiet=True)


def test_auto_dtype_needs_width_and_work(monkeypatch) -> None:
    from lmforge import hardware
    from lmforge.config import ModelConfig

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: True)
    wide = ModelConfig(n_embd=128)
    assert hardware.resolve_dtype("auto", wide, 12 * 64)[0] == torch.bfloat16
    assert hardware.resolve_dtype("auto", wide, 64)[0] == torch.float32  # too little work per matmul
    assert hardware.resolve_dtype("auto", ModelConfig(n_embd=32, n_head=4), 4096)[0] == torch.float32
    assert hardware.resolve_dtype("fp32", wide, 12 * 64)[0] == torch.float32
    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)
    assert hardware.resolve_dtype("auto", wide, 12 * 64)[0] == torch.float32


def test_a_onednn_cap_below_bf16_units_counts_as_no_bf16(monkeypatch) -> None:
    """ONEDNN_MAX_CPU_ISA=AVX2 on a bf16 CPU runs its AVX2 kernels: bf16 matmuls are emulated
    there, so dtype=auto must pick fp32 as on an AVX2-only CPU."""
    from lmforge import hardware

    monkeypatch.setattr(hardware, "_cpuinfo", lambda: "flags\t: fpu avx2 avx512f avx512_bf16 amx_bf16\n")
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    for ceiling, bf16 in (("", True), ("AVX2", False), ("avx512_core_vnni", False),
                          ("AVX512_CORE_BF16", True), ("AVX512_CORE_AMX", True), ("ALL", True)):  # fmt: skip
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", ceiling)
        assert hardware.cpu_has_bf16() is bf16, ceiling


def test_flops_per_token_counts_frozen_weights_and_the_trained_length() -> None:
    """MFU's numerator: 6 per trained matmul weight, 4 per frozen one (LoRA's base), attention at
    the length trained on, not the model's context (a chat fine-tune read 134% MFU before)."""
    from lmforge.config import LoraConfig, ModelConfig
    from lmforge.model import lora
    from lmforge.model.gpt import GPT
    from lmforge.train.report import flops_per_token

    c = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=1024, vocab_size=50)
    model = GPT(c)
    matmuls = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert flops_per_token(model, 1024) == 6 * matmuls + 12 * 2 * 32 * 1024
    assert flops_per_token(model, 64) == 6 * matmuls + 12 * 2 * 32 * 64
    assert flops_per_token(model, 0) == flops_per_token(model, 4096) == flops_per_token(model, 1024)
    lora.inject(model, LoraConfig(enabled=True, rank=4, targets="attn.qkv"))
    adapters = sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)
    assert flops_per_token(model, 64) == 4 * matmuls + 6 * adapters + 12 * 2 * 32 * 64


def test_the_step_log_shows_gpu_memory_on_a_gpu_and_rss_elsewhere(monkeypatch) -> None:
    from lmforge.train import metrics

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 3 * 2**30)
    assert metrics.peak_gpu_gb(torch.device("cpu")) is None
    assert metrics.peak_gpu_gb(torch.device("cuda", 0)) == 3.0
    line = metrics.step_line(5, 10, 1.0, 1e-3, 0.5, 100.0, 0.1, 30.0, torch.device("cuda", 0))
    assert "| mem 3.00GiB GPU |" in line
    assert "GiB GPU" not in metrics.step_line(5, 10, 1.0, 1e-3, 0.5, 100.0, 0.1, 30.0, torch.device("cpu"))
