"""`lmforge plan`: parameters and FLOPs equal the built model's, per-rank model states equal what
a real run's summary.json measures (memory_per_rank, key by key), DeepSpeed's own estimators agree
where their assumptions are lmforge's, and a recipe that fits nowhere gets one line on what would.
The multi-rank validation against every engine is benchmarks/bench_plan.py (docs/plan.md)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge import cli
from lmforge.config import LoraConfig, ModelConfig
from lmforge.errors import LmforgeError
from lmforge.model import lora
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.tools import plan_calibrate, plan_memory, plan_model
from lmforge.tools.plan_calibrate import OthersCpu, step_figures
from lmforge.tools.plan_memory import Setup
from lmforge.train.report import flops_per_token

TINY = ["--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32", "--model.block_size=16"]
SHAPES = {
    "gpt2-like": {},
    "llama-like": dict(
        pos="rope", mlp="swiglu", bias=False, norm="rmsnorm", n_kv_head=2, tie_embeddings=False
    ),
    "qwen-like": dict(pos="rope", bias=False, qkv_bias=True, mlp="gelu_tanh", mlp_hidden=100),
    "qwen3-like": dict(
        pos="rope", mlp="swiglu", bias=False, norm="rmsnorm", n_kv_head=2, head_dim=16, qk_norm=True
    ),
    "seq2seq": dict(arch="seq2seq", pos="rope"),
    "seq2seq-untied": dict(arch="seq2seq", tie_embeddings=False, bias=False),
}


def _build(c: ModelConfig) -> torch.nn.Module:
    return Seq2Seq(c, pad_id=0) if c.arch == "seq2seq" else GPT(c)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_counts_equal_the_built_model(name: str) -> None:
    from deepspeed.runtime.zero.stage3 import model_to_params

    c = ModelConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16, **SHAPES[name])
    model = _build(c)
    counts = plan_model.count(c)
    assert counts.params == sum(p.numel() for p in model.parameters())  # tied weights once
    assert (counts.params, counts.largest_module) == model_to_params(model)  # DeepSpeed's own count
    assert counts.flops_per_token == flops_per_token(model, c.block_size)  # what the step log uses


def _saved_bytes(model: torch.nn.Module, dtype: torch.dtype, *inputs: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one forward (each storage once, parameters not)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    cast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        model(*inputs)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in seen.items() if ptr not in params)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_activations_equal_what_autograd_saves_on_the_cpu(dtype: torch.dtype, dropout: float) -> None:
    # a QA span model on the CPU's bmm route, where the attention probabilities are kept; with
    # dropout the CPU keeps fp32 noise per probability (a one-byte mask was counted: 21-29% short)
    shape = dict(vocab_size=500, n_layer=2, n_head=4, n_embd=64, block_size=256)
    c = ModelConfig(arch="encoder", dropout=dropout, **shape)
    torch.manual_seed(0)
    model = SpanModel(Encoder(c)).train()
    ids = torch.randint(0, 500, (4, 256))
    saved = _saved_bytes(model, dtype, ids, torch.ones_like(ids), torch.zeros_like(ids))
    width = 4 if dtype == torch.float32 else 2
    planned = plan_model.activation_bytes(c, 4 * 256, 256, width, True, plan_model.Head("span", encoder=True))
    assert 0.9 < planned["activations"] / saved < 1.1


LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc")
LOSS_PEAK = """
import sys, torch, torch.nn.functional as F
from lmforge.processes import own_status
def high_water():  # this process's peak RSS in bytes; ru_maxrss would start at the parent's
    return int(own_status("VmHWM")) * 1024
tokens, vocab = 1024, 50304
head = torch.randn(vocab, 64, requires_grad=True)
hidden = torch.randn(tokens, 64, requires_grad=True)
targets = torch.randint(0, vocab, (tokens,))
before = high_water()
with torch.autocast("cpu", dtype=torch.bfloat16, enabled=sys.argv[1] == "bf16"):
    loss = F.cross_entropy(F.linear(hidden, head).float(), targets, reduction="none").sum()
loss.backward()
print((high_water() - before) / (tokens * vocab))
"""


@LINUX_PROC
@pytest.mark.parametrize(  # bf16 slow: emulated where the CPU has no bf16 units (14 s on AVX2)
    "dtype", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)]
)
def test_a_language_models_loss_peak_is_planned(dtype: str) -> None:
    # GPT-2 small on an H200 peaked 25% above the plan when it counted only the kept log-softmax:
    # the loss's backward holds two more fp32 gradients per logit. Measured here as a fresh
    # process's peak RSS over the head and loss alone (tensors this large are mmap'ed and given
    # back whole by glibc, so the peak is the live bytes), per logit, against the plan's bytes
    # per logit (the difference one more vocabulary row makes). Linux only (/proc)
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}  # no LD_PRELOAD'ed allocator
    out = subprocess.run([sys.executable, "-c", LOSS_PEAK, dtype], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    measured = float(out.stdout)
    width = 4 if dtype == "fp32" else 2
    c = ModelConfig(vocab_size=1000, n_layer=2, n_head=4, n_embd=64, block_size=256)
    per_logit = [
        plan_model.activation_bytes(dataclasses.replace(c, vocab_size=v), 256, 256, width, False)
        for v in (1000, 1001)
    ]
    for key in ("activations", "activations_checkpointed"):
        planned = (per_logit[1][key] - per_logit[0][key]) / 256
        assert 0.9 < planned / measured < 1.1, (key, planned, measured)


@LINUX_PROC
def test_a_spawned_processs_peak_rss_is_its_own() -> None:
    # summary.json's peak_rss_gb_per_rank, which plans are checked against: ru_maxrss starts a
    # spawned process at its parent's resident size, so a run launched from a big process (a
    # benchmark, a notebook) reported the parent's memory as its own
    held = bytearray(1 << 30)
    held[:: 1 << 12] = b"\1" * len(held[:: 1 << 12])  # touch every page: 1 GiB resident here
    code = "from lmforge.train.metrics import peak_rss_gb; print(peak_rss_gb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert float(out.stdout) < 0.75  # lmforge's imports take about 0.3 GiB
    del held


# Measured on one H200 (benchmarks/gpu_check.sh plan, 2026-12-04): GPT-2 small, vocabulary 50,304,
# micro-batch 16 x 1024, bf16, one rank; torch.cuda.max_memory_allocated, MiB
H200_PEAKS = {"local": 16_431, "deepspeed": 15_828}


@pytest.mark.parametrize("engine", sorted(H200_PEAKS))
def test_the_h200s_measured_peaks_are_planned(engine: str) -> None:
    # the plan's peak less its runtime allowance (the CUDA context max_memory_allocated does not see);
    # before the loss's gradients were counted the local plan was 25% short, and before DeepSpeed's
    # buffers made after them stopped adding to them the ZeRO-2 plan was 10% over
    shape = ["--model.n_layer=12", "--model.n_head=12", "--model.n_embd=768", "--model.block_size=1024",
             "--model.vocab_size=50304", "--model.pos=learned", "--train.dtype=bf16", "--train.batch_size=16",
             f"--engine.name={engine}", "--engine.zero_stage=2"]  # fmt: skip
    p = lmforge.plan(None, shape, device="h200")
    planned = (p["peak_per_rank"]["step"] - p["device"]["runtime"]) / 2**20
    assert abs(planned / H200_PEAKS[engine] - 1) < 0.05, planned


def test_lora_counts_equal_the_injected_model() -> None:
    c = ModelConfig(
        vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16, pos="rope", mlp="swiglu", n_kv_head=2
    )
    spec = LoraConfig(enabled=True, rank=4, targets="q_proj,v_proj,o_proj,up_proj,down_proj")
    model = lora.inject(GPT(c), spec)
    counts = plan_model.count(c, spec, seq_len=12)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.flops_per_token == flops_per_token(model, 12)


@pytest.mark.parametrize(
    "targets", ["q_proj,v_proj", "q_proj,k_proj,v_proj,o_proj,up_proj", "cross.kv,attn.qkv"]
)
def test_lora_counts_of_an_encoder_decoder_equal_the_injected_model(targets: str) -> None:
    """Cross-attention's adapters included; a frozen base weight costs 4 FLOPs, not 6, in the
    encoder-decoder's own count too."""
    c = ModelConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16, arch="seq2seq", pos="rope")
    spec = LoraConfig(enabled=True, rank=4, targets=targets)
    model = lora.inject(Seq2Seq(c, pad_id=0), spec)
    counts = plan_model.count(c, spec, seq_len=12)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.flops_per_token == flops_per_token(model, 12) < plan_model.count(c).flops_per_token


@pytest.mark.parametrize("also", ["blocks.1", "blocks.0.mlp,lm_head", "blocks", "blocks.0,blocks.1.ln_1"])
def test_lora_also_train_one_block_or_part_of_one(also: str) -> None:
    c = ModelConfig(vocab_size=97, n_layer=3, n_head=4, n_embd=32, block_size=16, tie_embeddings=False)
    spec = LoraConfig(enabled=True, rank=4, targets="q_proj,v_proj", also_train=also)
    model = lora.inject(GPT(c), spec)
    counts = plan_model.count(c, spec, seq_len=12)
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.flops_per_token == flops_per_token(model, 12)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_a_huge_layer_count_is_one_block_times_n_layer(name: str) -> None:
    """Blocks are identical: one is counted and multiplied, so 10**20 layers take no time or memory
    (each block was listed: n_layer=10**8 took 6 GB and never returned)."""

    def counts(n_layer: int) -> plan_model.Counts:
        return plan_model.count(ModelConfig(vocab_size=97, n_layer=n_layer, n_head=4, n_embd=32,
                                            block_size=16, **SHAPES[name]))  # fmt: skip

    huge = 10**20
    one, two, many = counts(1), counts(2), counts(huge)
    assert many.params == one.params + (huge - 1) * (two.params - one.params)
    flops = two.flops_per_token - one.flops_per_token
    assert many.flops_per_token == one.flops_per_token + (huge - 1) * flops
    assert many.largest_module == one.largest_module
    with pytest.raises(LmforgeError, match=r"parameters at .* do not fit on 1 x h100"):
        lmforge.plan(overrides=["--model.vocab_size=100", f"--model.n_layer={huge}"], device="h100")


def test_llama_7b_and_gpt2_shapes() -> None:
    """The published sizes: Llama-7B 6,738,415,616 (Touvron et al. 2023, HF's count), GPT-2 124M."""
    llama = ModelConfig(n_layer=32, n_head=32, n_embd=4096, block_size=4096, vocab_size=32000,
                        mlp="swiglu", mlp_hidden=11008, pos="rope", bias=False, norm="rmsnorm",
                        tie_embeddings=False)  # fmt: skip
    assert plan_model.count(llama).params == 6_738_415_616
    gpt2 = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, mlp="gelu_tanh")
    assert plan_model.count(gpt2).params == 124_439_808


@pytest.fixture(scope="module")
def gpt2_two_layers() -> tuple[ModelConfig, torch.nn.Module]:
    """52.8M parameters: enough that DeepSpeed's printed GB (2 decimals) resolve 1%."""
    c = ModelConfig(vocab_size=50257, n_layer=2, n_head=12, n_embd=768, block_size=64)
    return c, GPT(c)


@pytest.mark.parametrize("ranks", [1, 2, 8])
def test_deepspeed_estimators_agree(
    ranks: int, gpt2_two_layers: tuple[ModelConfig, torch.nn.Module], capsys: pytest.CaptureFixture[str]
) -> None:
    """DeepSpeed's estimators assume bf16 compute with fp32 masters, as lmforge's ZeRO in bf16, and
    count an fp32 gradient partition and (ZeRO-3) the largest layer gathered with its gradient. They
    leave out the reduce bucket and ZeRO-3's prefetch (lmforge's other buffers), and ZeRO-3's bf16
    gradient partition (stage3.py's grad_partitions_flat_buffer, which memory_per_rank counts), and
    the small parameters ZeRO-3 keeps whole beside their partition (stage3_param_persistence_threshold),
    which memory_per_rank counts too."""
    from deepspeed.runtime.zero.offload_config import OffloadDeviceEnum
    from deepspeed.runtime.zero.stage3 import (
        estimate_zero3_model_states_mem_needs,
        estimate_zero3_model_states_mem_needs_all_live,
        model_to_params,
    )
    from deepspeed.runtime.zero.stage_1_and_2 import (
        estimate_zero2_model_states_mem_needs,
        estimate_zero2_model_states_mem_needs_all_live,
    )

    c, model = gpt2_two_layers
    counts, modules = plan_model.count(c), plan_model.modules(c)
    total, largest = model_to_params(model)  # what the _all_live estimators read from the model
    assert (counts.params, counts.largest_module) == (total, largest)

    def device_bytes(engine: str, offload: str, skip: tuple[str, ...] = ()) -> int:
        s = Setup(engine, offload, ranks, 2)
        host = plan_memory.on_host(s)
        states = plan_memory.model_states(counts, s)
        buffers = plan_memory.buffers(counts, modules, s, gpu=True)
        kept = ("fp32_grads", "gathered_layer")
        return sum(v for k, v in states.items() if k not in host and k not in skip) + sum(
            b for k, (b, on_host) in buffers.items() if k in kept and not on_host
        )

    def zero2(offload: bool) -> int:
        return estimate_zero2_model_states_mem_needs(total, ranks, cpu_offload=offload)[1]

    def zero3(offload: bool, params: bool) -> int:
        return estimate_zero3_model_states_mem_needs(total, largest, ranks, 1, offload, params)[1]

    # (DeepSpeed's per-GPU bytes, lmforge's, the options as DeepSpeed prints them)
    cpu = f"{OffloadDeviceEnum.cpu:4}"  # as DeepSpeed prints an offload device
    cases = [
        (zero2(False), device_bytes("zero2", "none"), "offload_optimizer=none"),
        (zero2(True), device_bytes("zero2", "optimizer"), f"offload_optimizer={cpu}"),
        (
            zero3(False, False),
            device_bytes("zero3", "none", ("grads",)) - 2 * counts.persistent,
            "offload_param=none, offload_optimizer=none",
        ),
        (
            zero3(True, False),
            device_bytes("zero3", "optimizer") - 2 * counts.persistent,
            f"offload_param=none, offload_optimizer={cpu}",
        ),
        (zero3(True, True), device_bytes("zero3", "all"), f"offload_param={cpu}, offload_optimizer={cpu}"),
    ]
    estimate_zero2_model_states_mem_needs_all_live(model, num_gpus_per_node=ranks)
    estimate_zero3_model_states_mem_needs_all_live(model, num_gpus_per_node=ranks)
    printed = capsys.readouterr().out
    for theirs, ours, options in cases:
        assert ours == pytest.approx(theirs, abs=64), options  # partitions round up, DeepSpeed's down
        assert f"| {ours / 2**30:6.2f}GB | {options}" in printed, (options, printed)


def test_a_short_run_measures_what_the_plan_predicts(tmp_path: Path) -> None:
    """--calibrate runs real steps of the recipe: its summary.json's memory_per_rank equals the
    plan's, key by key, and the JSON the command line prints uses the same keys."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    args = [*TINY, f"--data.input={corpus}", "--train.batch_size=4", "--train.dtype=fp32"]
    result = lmforge.plan(overrides=args, calibrate=True, calibrate_steps=2)
    measured = result["calibration"]["memory_per_rank"]
    assert set(measured) == set(result["memory_per_rank"]) == {"params", "grads", "optimizer"}
    for key, value in measured.items():
        assert result["memory_per_rank"][key] == pytest.approx(value, rel=0.05), key
    assert result["mfu_source"] == "calibrated" and 0 < result["mfu"] <= 1
    assert result["time_s"] == pytest.approx(
        result["train_flops"] / (result["device"]["peak_flops"] * result["mfu"])
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["plan", *args, "--json"]) == 0
    printed = json.loads(out.getvalue())
    assert printed["memory_per_rank"] == result["memory_per_rank"]
    c = result["calibration"]
    assert c["step_s"] == min(c["step_times"]) <= c["step_s_median"] and len(c["step_times"]) == 1


def test_calibration_keeps_the_command_lines_rank_over_the_recipe(tmp_path: Path) -> None:
    """The calibration run gets the recipe's keys as a recipe and the command line's as overrides:
    as in `train`, a recipe's tokenizer='char' yields to BPE shards given by --data.input (one
    recipe of every key made the child refuse them, and calibration failed)."""
    from lmforge.config import command_line_overrides, config_to_toml, load_config
    from lmforge.data.shards import prepare_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    prepared = tmp_path / "bpe"
    prepare_corpus(corpus, prepared, tokenizer="bpe", vocab_size=300)
    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\ntokenizer = "char"\n[train]\nbatch_size = 4\ndtype = "fp32"\n')
    args = [*TINY, f"--data.input={prepared}"]
    cfg = load_config(recipe, args)
    assert command_line_overrides(cfg) == [*TINY, f"--data.input={prepared}"]
    assert "input" not in config_to_toml(cfg, chosen_only=True, exclude={"data.input"})
    result = lmforge.plan(recipe, args, calibrate=True, calibrate_steps=2)
    assert result["calibration"]["steps"] == 2 and result["mfu_source"] == "calibrated"


def test_a_gpus_calibrated_time_is_the_measured_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    """The calibration's MFU is of the matmul peak its run measured (an H200: 694-788 TFLOP/s); a
    GPU's plan states the datasheet's (989). Multiplying one by the other planned an H200 run 28%
    faster than its calibration ran: the plan re-expresses the measured FLOP/s as the datasheet's share."""
    from lmforge.tools import plan_calibrate as module

    measured = {"mfu": 0.4, "peak_flops": 700e12, "steps": 2, "step_s": 1.0, "step_s_median": 1.0,
                "step_times": [1.0], "mfu_median": 0.4, "memory_per_rank": {},
                "peak_rss_gb_per_rank": [1.0]}  # fmt: skip
    monkeypatch.setattr(module, "calibrate", lambda *args: measured)
    result = lmforge.plan(None, ["--model.vocab_size=100", *TINY], device="h200", calibrate=True)
    flops_per_s = 0.4 * 700e12  # what the calibration's steps achieved
    assert result["mfu"] == pytest.approx(flops_per_s / result["device"]["peak_flops"])
    assert result["time_s"] == pytest.approx(result["train_flops"] / flops_per_s)


def test_calibration_takes_the_fastest_step() -> None:
    """The calibrated step is the fastest after the first (a quiet machine's): a warm-up step and
    a stretch of slow steps (another process on the machine) do not move it; its MFU is that step's."""
    tokens = 1000

    def row(step: int, seconds: float) -> dict[str, float]:
        return {"step": step, "tok_s": tokens / seconds, "mfu": 0.3 * 0.5 / seconds, "loss": 1.0}

    quiet = [row(1, 4.0)] + [row(i, 0.5 + 0.01 * (i % 3)) for i in range(2, 9)]
    noisy = quiet[:4] + [row(i, 0.9) for i in range(5, 9)] + [{"step": 8, "val_loss": 1.0}]
    for rows in (quiet, noisy):
        got = step_figures(rows, tokens)
        assert got["step_s"] == pytest.approx(0.5) and got["mfu"] == pytest.approx(0.3)
        assert len(got["step_times"]) == 7  # the first step is warm-up, the eval row has no time
    assert step_figures(noisy, tokens)["step_s_median"] == pytest.approx(0.9)
    assert step_figures(quiet, tokens)["step_s_median"] == pytest.approx(0.51)
    with pytest.raises(LmforgeError, match="no step after the first"):
        step_figures(quiet[:1], tokens)


def test_others_cpu_share_leaves_out_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over 2 s on 2 CPUs the machine was busy 3 CPU-seconds, 1 of them ours: others took 2 of 4."""
    clock = iter([10.0, 12.0])
    busy, own = iter([100.0, 103.0]), iter([5.0, 6.0])
    monkeypatch.setattr(plan_calibrate, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(plan_calibrate, "_machine_busy_s", lambda: next(busy))
    monkeypatch.setattr(plan_calibrate, "_own_cpu_s", lambda: next(own))
    monkeypatch.setattr(plan_calibrate.os, "cpu_count", lambda: 2)
    with OthersCpu() as others:
        pass
    assert others.share == pytest.approx(0.5)
    monkeypatch.undo()
    with OthersCpu() as real:  # this machine's counters: a share, or None off Linux
        sum(range(10**5))
    assert real.share is None or 0 <= real.share <= 1


def test_what_would_fit() -> None:
    big = ["--model.n_layer=32", "--model.n_head=32", "--model.n_embd=4096", "--model.block_size=2048",
           "--model.vocab_size=32000", "--train.batch_size=8"]  # fmt: skip
    ddp = lmforge.plan(overrides=[*big, "--engine.name=ddp"], world_size=8, device="h100")
    assert ddp["engine"] == "ddp" and ddp["peak_per_rank"]["step"] > 80 * 2**30
    assert ddp["advice"].startswith(
        "ddp does not fit one sequence per rank; fits with: fsdp (micro-batch <= "
    )
    zero3 = lmforge.plan(
        overrides=[*big, "--engine.name=deepspeed", "--engine.zero_stage=3"], world_size=8, device="h100"
    )
    big_model = ModelConfig(n_layer=32, n_head=32, n_embd=4096, block_size=2048, vocab_size=32000)
    kept_whole = plan_model.count(big_model).persistent  # norms and biases, on every rank
    assert zero3["memory_per_rank"]["params"] == 2 * (-(-zero3["parameters"] // 8) + kept_whole)
    assert zero3["advice"] == "" and 0 < kept_whole < zero3["parameters"] // 1000
    with pytest.raises(
        LmforgeError, match=r"do not fit on 1 x l4 .* more ranks do not help; model\.block_size=\d+"
    ):
        lmforge.plan(overrides=["--model.vocab_size=50257", "--model.block_size=131072"], device="l4")


def test_a_char_recipe_not_yet_prepared_counts_its_prep_inputs(tmp_path: Path) -> None:
    """Before `lmforge prep RECIPE`, the plan reads the characters of prep.inputs (any format, here
    compressed JSONL), and the vocabulary it plans is the one prep then builds."""
    texts = ["To be, or not to be: that is the question.", "Ay, there's the rub; ¿qué? Ça va."]
    src = tmp_path / "works.jsonl.xz"
    src.write_bytes(lzma.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode()))
    recipe = tmp_path / "r.toml"
    out = tmp_path / "prepared"
    recipe.write_text(
        f'[data]\ninput = "{out}"\ntokenizer = "char"\n[prep]\ninputs = "{src}"\nout = "{out}"\n'
        'stages = "none"\n' + "[model]\n" + "".join(f"{o[2:].split('.')[1]}\n" for o in TINY)
    )
    planned = lmforge.plan(str(recipe))["model"]["vocab_size"]
    assert planned == len(set("".join(texts))) + 3
    assert lmforge.prep(config=recipe, quiet=True)["vocab_size"] == planned
    missing = recipe.read_text().replace(str(src), str(tmp_path / "gone.txt"))
    (tmp_path / "r2.toml").write_text(missing.replace(str(out), str(tmp_path / "p2")))
    with pytest.raises(LmforgeError, match=r"prep\.inputs=.*gone\.txt.* give --model\.vocab_size=N"):
        lmforge.plan(str(tmp_path / "r2.toml"))


@pytest.mark.parametrize("world_size", [0, 1.5, 2.0, True, "2"])
def test_a_world_size_not_a_whole_number_of_ranks_is_one_line(world_size: object) -> None:
    with pytest.raises(
        LmforgeError, match=rf"^world_size={re.escape(repr(world_size))}: must be an integer >= 1$"
    ):
        lmforge.plan(overrides=["--model.vocab_size=10"], world_size=world_size)  # type: ignore[arg-type]


def test_cpu_ranks_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks on this CPU were planned twice as fast as one, each at the whole machine's peak;
    a measured pair of runs (2 ranks: 12.74 s, 1 process: 12.57 s) took the same time."""
    from lmforge import tuning

    monkeypatch.setattr(tuning, "matmul_peak", lambda *a, **k: 4e11)
    tiny = [*TINY, "--model.vocab_size=64", "--train.max_steps=40"]
    one = lmforge.plan(overrides=tiny)
    two = lmforge.plan(overrides=[*tiny, "--engine.name=ddp"], world_size=2)
    assert one["device"]["peak_flops"] == 4e11 and two["device"]["peak_flops"] == 2e11
    assert two["time_s"] == pytest.approx(one["time_s"])
    gpus = lmforge.plan(overrides=[*tiny, "--engine.name=ddp"], world_size=2, device="h100")
    assert gpus["time_s"] == pytest.approx(lmforge.plan(overrides=tiny, device="h100")["time_s"] / 2)


def test_a_users_deepspeed_json_is_checked_and_its_sizes_planned(tmp_path: Path) -> None:
    """plan read none of engine.deepspeed_config: a broken file or an offload train refuses planned
    cleanly, and a smaller reduce bucket kept the default's 954 MiB."""
    tiny = [*TINY, "--model.vocab_size=64", "--engine.name=deepspeed", "--engine.zero_stage=3"]
    files = {
        "bad.json": ("{not json", r"bad\.json: invalid JSON"),
        "offload.json": ('{"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}', "engine.offload"),
        "clip.json": ('{"gradient_clipping": 5.0}', r"clip\.json: .*conflicts .*train\.grad_clip"),
        "size.json": (
            '{"zero_optimization": {"reduce_bucket_size": "big"}}',
            "reduce_bucket_size='big'",
        ),
        "typo.json": (
            '{"zero_optimization": {"reduce_bucket_sise": 5}}',
            r"typo\.json: key 'zero_optimization\.reduce_",
        ),
        "utf16.json": ("\ufeff{}".encode("utf-16").decode("latin-1"), r"utf16\.json: not UTF-8 text"),
    }
    for name, (text, error) in files.items():
        (tmp_path / name).write_bytes(text.encode("latin-1" if name == "utf16.json" else "utf-8"))
        with pytest.raises(LmforgeError, match=error):
            lmforge.plan(overrides=[*tiny, f"--engine.deepspeed_config={tmp_path / name}"], device="h100")
    with pytest.raises(LmforgeError, match=r"missing\.json: cannot read DeepSpeed config"):
        lmforge.plan(overrides=[*tiny, f"--engine.deepspeed_config={tmp_path / 'missing.json'}"])
    default = lmforge.plan(overrides=tiny, device="h100")
    sizes = tmp_path / "sizes.json"
    sizes.write_text(
        '{"zero_optimization": {"reduce_bucket_size": 1e7, "stage3_prefetch_bucket_size": 1000,'
        ' "stage3_param_persistence_threshold": 0}}'
    )
    theirs = lmforge.plan(overrides=[*tiny, f"--engine.deepspeed_config={sizes}"], device="h100")
    buffers = [r["buffers"] for r in (default, theirs) for r in r["setups"] if r["engine"] == "ZeRO-3"]
    assert buffers[0]["reduce_bucket"] == 2 * 500_000_000 and buffers[1]["reduce_bucket"] == 2 * 10**7
    assert buffers[1]["prefetch"] == 2 * 1000
    # nothing kept whole on every rank: the parameters are the partition alone
    assert theirs["memory_per_rank"]["params"] < default["memory_per_rank"]["params"]


def test_a_time_budget_and_a_short_time_are_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's plan said 9.5 min, not that its train.max_minutes=5 stops it at 5; a short run's
    0.25 s printed as "0 s"."""
    from lmforge import tuning
    from lmforge.tools.plan_report import duration, format_plan

    monkeypatch.setattr(tuning, "matmul_peak", lambda *a, **k: 1e9)
    tiny = [*TINY, "--model.vocab_size=64", "--train.max_steps=1000"]
    planned = lmforge.plan(overrides=[*tiny, "--train.max_minutes=0.5"])
    assert planned["time_s"] > 30 and planned["budget_s"] == 30
    steps = int(1000 * 30 / planned["time_s"])
    said = f"; train.max_minutes=0.5 ends it at 30 s, after about {steps:,} of 1,000 steps"
    assert said in format_plan(planned)
    assert "max_minutes" not in format_plan(lmforge.plan(overrides=tiny))
    assert [duration(s) for s in (0.25, 7.46, 65)] == ["0.25 s", "7.5 s", "65 s"]


def test_bf16_on_a_cpu_without_bf16_units_is_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan timed such a run at the fp32 peak (MFU's denominator there): 8 s planned, 155 s
    trained on an AVX2 EPYC. Now it says so, and `train` names the cost in its start-up line."""
    import lmforge.hardware

    monkeypatch.setattr(lmforge.hardware, "cpu_has_bf16", lambda: False)
    args = ["--model.vocab_size=100", *TINY]
    warned = lmforge.plan(None, [*args, "--train.dtype=bf16"])["warnings"]
    assert len(warned) == 1 and "bf16 is emulated, 10-100x slower than fp32" in warned[0]
    assert "warnings" not in lmforge.plan(None, [*args, "--train.dtype=fp32"])
    assert "10-100x slower than fp32" in lmforge.hardware.resolve_dtype("bf16", ModelConfig())[1]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["plan", *args, "--train.dtype=bf16"]) == 0
    assert "  warning  train.dtype=bf16 on a CPU without bf16 units" in out.getvalue()


def test_calibrate_steps_0_is_refused_and_a_failed_calibration_names_the_users_recipe(tmp_path: Path) -> None:
    """0 ran the default 10 steps; a failure named the temporary recipe, deleted by then."""
    with pytest.raises(LmforgeError, match=r"calibrate_steps=0: must be >= 2"):
        lmforge.plan(None, ["--model.vocab_size=100", *TINY], calibrate=True, calibrate_steps=0)
    recipe, data = tmp_path / "r.toml", tmp_path / "prepared"
    recipe.write_text(
        f'[data]\ninput = "{data}"\n[prep]\ninputs = "{tmp_path / "raw.txt"}"\nout = "{data}"\n'
    )
    with pytest.raises(LmforgeError, match="calibration run failed") as failed:
        lmforge.plan(recipe, ["--model.vocab_size=100", *TINY], calibrate=True, calibrate_steps=2)
    assert str(failed.value).endswith(f"the recipe's [prep] section builds it: lmforge prep {recipe}")


@pytest.mark.parametrize(
    "model",
    [
        {"pos": "rope"},
        {"pos": "learned"},
        {"pos": "rope", "arch": "seq2seq"},
        {"pos": "sinusoidal", "arch": "seq2seq"},
    ],
)
def test_position_tables_are_the_built_models_buffers(model: dict) -> None:
    """The rotary cos/sin tables were left out of the plan: 128 MiB at Llama 3.2 3B's 131,072."""
    from lmforge.model.seq2seq import Seq2Seq
    from lmforge.tools import plan_model

    m = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=50, **model)
    built = Seq2Seq(m, 0) if m.arch == "seq2seq" else GPT(m)
    held = {id(b): b.numel() * b.element_size() for b in built.buffers()}  # shared tables once
    assert plan_model.position_tables(m) == sum(held.values())
