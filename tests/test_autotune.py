"""Kernels chosen by measurement (train/autotune.py, inference/autotune.py, tuning.py): what is
chosen from which timings, that the probe changes nothing else, and that choices are remembered."""

from __future__ import annotations

import datetime
import json
import re
from pathlib import Path

import pytest
import torch

from lmforge import hardware, tuning
from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.inference import autotune as decode_tune
from lmforge.model import kernels
from lmforge.model.attention import set_sequence_route
from lmforge.model.gpt import GPT
from lmforge.train import autotune
from lmforge.train.engines.local import LocalEngine
from lmforge.train.optim import build_optimizer

STEPS = ["--train.max_steps=4", "--train.checkpoint_interval=2", "--train.eval_interval=4"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_AUTOTUNE", raising=False)  # conftest turns it off for other tests
    yield tmp_path / "cache" / tuning.FILE_NAME
    set_sequence_route("bmm")  # the process-wide default, for the tests that follow


def _train(overrides: list[str], out: Path | None, **kwargs: object) -> dict:
    from lmforge.train.loop import train

    return train(None, overrides, out, quiet=True, **kwargs)  # type: ignore[arg-type]


def _train_entries(cache: Path) -> dict:
    """The cache's training-kernel entries (it also keeps the matmul peak, tuning.matmul_peak)."""
    return {k: v for k, v in json.loads(cache.read_text()).items() if " | train | " in k}


def _fake_timings(monkeypatch: pytest.MonkeyPatch, steps: dict, adamw: dict) -> list[int]:
    """Make the probe report these seconds (and bf16 units exist); returns a list counting probes."""
    calls: list[int] = []

    def time_steps(model, batch, loss, candidates, engine):  # noqa: ANN001, ANN202
        calls.append(1)
        assert set(candidates) <= set(steps)  # all of them, or a runoff between two
        return {c: [steps[c]] for c in candidates}  # one timed round

    monkeypatch.setattr(autotune, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(autotune, "_time_steps", time_steps)
    monkeypatch.setattr(autotune, "_time_adamw", lambda model, engine: dict(adamw))
    return calls


@pytest.mark.parametrize(
    ("steps", "adamw", "chosen"),
    [  # the tiny model's fixed rule is fp32 (too narrow for bf16), bmm, fused
        ({("fp32", "bmm"): 1.0, ("fp32", "sdpa"): 0.9, ("bf16", "bmm"): 0.6, ("bf16", "sdpa"): 0.5},
         {"fused": 0.010, "foreach": 0.005}, {"dtype": "bf16", "attention": "sdpa", "adamw": "foreach"}),
        ({("fp32", "bmm"): 1.0, ("fp32", "sdpa"): 0.97, ("bf16", "bmm"): 0.99, ("bf16", "sdpa"): 0.98},
         {"fused": 0.010, "foreach": 0.0099}, {"dtype": "fp32", "attention": "bmm", "adamw": "fused"}),
        ({("fp32", "bmm"): 1.0, ("fp32", "sdpa"): 0.5, ("bf16", "bmm"): 2.0, ("bf16", "sdpa"): 2.0},
         {"fused": 0.002, "foreach": 0.009}, {"dtype": "fp32", "attention": "sdpa", "adamw": "fused"}),
    ],
)  # fmt: skip
def test_the_fastest_kernels_win_by_a_margin(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, steps: dict, adamw: dict,
    chosen: dict,
) -> None:  # fmt: skip
    _fake_timings(monkeypatch, steps, adamw)
    summary = _train([*tiny_overrides, *STEPS], tmp_path / "run")
    assert summary["kernels"] == {**chosen, "compile": False}  # a few seconds' run: compiling would not pay
    assert summary["dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[chosen["dtype"]]
    assert summary["val_loss"] == summary["val_loss"]  # trained to the end with them: finite


def test_a_choice_is_measured_once_then_remembered_and_resumed(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    steps = {("fp32", "bmm"): 1.0, ("fp32", "sdpa"): 0.5, ("bf16", "bmm"): 2.0, ("bf16", "sdpa"): 2.0}
    calls = _fake_timings(monkeypatch, steps, {"fused": 0.01, "foreach": 0.01})
    first = _train([*tiny_overrides, *STEPS], tmp_path / "a")
    assert calls == [1] and first["kernels"]["attention"] == "sdpa"
    entries = _train_entries(own_cache)
    assert len(entries) == 1 and tuning.machine_key() in next(iter(entries))

    second = _train([*tiny_overrides, *STEPS], tmp_path / "b")  # same machine and shapes: cached
    assert calls == [1] and second["kernels"] == first["kernels"]
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "refresh")  # measure again, and remember the new answer
    _train([*tiny_overrides, *STEPS], tmp_path / "b2")
    assert calls == [1, 1] and len(_train_entries(own_cache)) == 1
    monkeypatch.delenv("LMFORGE_AUTOTUNE")
    calls.clear()
    assert next(iter(_train_entries(own_cache).values()))["when"] == datetime.date.today().isoformat()
    _train([*tiny_overrides, *STEPS, "--train.activation_checkpointing=true"], tmp_path / "c")
    assert calls == [1]  # recomputing activations changes the step's cost: measured again

    own_cache.unlink()  # a resumed run takes its kernels from the checkpoint, not a new probe
    resumed = _train(["--train.max_steps=6"], None, resume=tmp_path / "a")
    assert calls == [1] and resumed["kernels"] == first["kernels"] and resumed["steps"] == 6


def _probe(monkeypatch: pytest.MonkeyPatch, rounds: dict) -> autotune.StepKernels:
    """What autotune.measure chooses for the tiny GPT from these rounds of seconds (fp32 only)."""
    monkeypatch.setattr(autotune, "_time_steps", lambda *args: rounds)
    monkeypatch.setattr(autotune, "_time_adamw", lambda model, engine: {"fused": 0.01, "foreach": 0.01})
    engine = LocalEngine(EngineConfig(), TrainConfig())
    batch = (torch.zeros(1, 8, dtype=torch.long),) * 2
    return autotune.measure(_gpt(), batch, None, ["fp32"], "fp32", engine)[0]


def test_one_lucky_round_does_not_flip_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """sdpa's best round is 2x bmm's, but bmm, timed beside it, was as fast in the other four:
    the median round decides, and a consistent 10% gain wins."""
    bmm = [1.0, 1.0, 0.98, 1.02, 1.0]
    lucky = {("fp32", "bmm"): bmm, ("fp32", "sdpa"): [0.5, 1.01, 1.0, 1.03, 0.99]}
    kernels = _probe(monkeypatch, lucky)
    assert kernels.attention == "bmm" and "(best of 5 rounds)" in kernels.why
    steady = {("fp32", "bmm"): bmm, ("fp32", "sdpa"): [0.9, 0.92, 0.88, 0.93, 0.91]}
    assert _probe(monkeypatch, steady).attention == "sdpa"


def test_two_close_winners_are_timed_again_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 with bmm or sdpa both beat fp32/bmm by far; beside it, noise put sdpa first in the median
    round. Timed against each other alone, bmm wins its median round: bmm it is (the Zen 4 EPYC's
    6x384 probe of 2026-12-07 chose sdpa, 5% slower, this way)."""
    first = {("fp32", "bmm"): [0.93, 0.93], ("fp32", "sdpa"): [0.85, 0.85],
             ("bf16", "bmm"): [0.48, 0.55], ("bf16", "sdpa"): [0.51, 0.50]}  # fmt: skip
    alone = {("bf16", "sdpa"): [0.51, 0.51, 0.50], ("bf16", "bmm"): [0.46, 0.47, 0.52]}
    timed: list[list] = []

    def time_steps(model, batch, loss, candidates, engine):  # noqa: ANN001, ANN202
        timed.append(sorted(candidates))
        return {c: (alone if len(timed) > 1 else first)[c] for c in candidates}

    monkeypatch.setattr(autotune, "_time_steps", time_steps)
    monkeypatch.setattr(autotune, "_time_adamw", lambda model, engine: {"fused": 0.01, "foreach": 0.01})
    engine = LocalEngine(EngineConfig(), TrainConfig())
    batch = (torch.zeros(1, 8, dtype=torch.long),) * 2
    kernels = autotune.measure(_gpt(), batch, None, ["fp32", "bf16"], "fp32", engine)[0]
    assert timed[1] == [("bf16", "bmm"), ("bf16", "sdpa")]
    assert (kernels.dtype, kernels.attention) == ("bf16", "bmm")
    assert "bf16/bmm 460 ms" in kernels.why and "bf16/bmm faster" in kernels.why

    timed.clear()  # far apart (sdpa 20% ahead): no second timing, sdpa
    first[("bf16", "bmm")] = [0.6, 0.6]
    kernels = autotune.measure(_gpt(), batch, None, ["fp32", "bf16"], "fp32", engine)[0]
    assert len(timed) == 1 and (kernels.dtype, kernels.attention) == ("bf16", "sdpa")


@pytest.mark.parametrize(("micro_batch_s", "timed_rounds"), [(0.1, autotune.ROUNDS), (0.8, 3), (5.0, 1)])
def test_the_probe_takes_as_many_rounds_as_fit(
    monkeypatch: pytest.MonkeyPatch, micro_batch_s: float, timed_rounds: int
) -> None:
    """PROBE_S of timed rounds (a warm-up before them), at least one and at most ROUNDS."""
    calls: list[tuple[str, str]] = []

    def timed(model, batch, loss, dtype, route):  # noqa: ANN001, ANN202
        calls.append((dtype, route))
        return micro_batch_s

    monkeypatch.setattr(autotune.compiling, "micro_batch_s", timed)
    candidates = [("fp32", "bmm"), ("fp32", "sdpa"), ("bf16", "bmm"), ("bf16", "sdpa")]
    engine = LocalEngine(EngineConfig(), TrainConfig())
    rounds = autotune._time_steps(None, (), None, candidates, engine)
    assert rounds == {c: [micro_batch_s] * timed_rounds for c in candidates}
    assert len(calls) == 4 * (1 + timed_rounds) and calls[:4] == candidates  # taking turns


def test_the_probe_leaves_the_run_as_it_was(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that probes (really timing, with dropout drawing random numbers) and keeps the fixed
    rule's kernels trains exactly as a run that never probed: random state and data position kept."""
    overrides = [*tiny_overrides, *STEPS, "--model.dropout=0.1", "--train.dtype=fp32"]
    monkeypatch.setattr(autotune, "MARGIN", 1e9)  # measure for real, but keep the rule's choice
    probed = _train(overrides, tmp_path / "probed")
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    plain = _train(overrides, tmp_path / "plain")
    fixed_rule = {"dtype": "fp32", "attention": "bmm", "adamw": "fused", "compile": False}
    assert probed["kernels"] == plain["kernels"] == fixed_rule

    def losses(run: Path) -> list[float]:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]

    assert losses(tmp_path / "probed") == losses(tmp_path / "plain")
    assert probed["val_loss"] == plain["val_loss"]


def test_an_unreadable_cache_is_left_alone(
    tmp_path: Path, tiny_overrides: list[str], own_cache: Path, capsys: pytest.CaptureFixture
) -> None:
    own_cache.parent.mkdir(parents=True)
    own_cache.write_text("not json")
    _train([*tiny_overrides, *STEPS], tmp_path / "run")
    assert own_cache.read_text() == "not json"
    assert "is not a readable autotune cache" in capsys.readouterr().err


def test_routes_and_optimizers_compute_the_same_step() -> None:
    """What the probe chooses between are equal computations (sums in another order)."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=50))
    x = torch.randint(0, 50, (4, 16))
    grads = {}
    for route in ("bmm", "sdpa"):
        set_sequence_route(route)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
        grads[route] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["bmm"], grads["sdpa"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    states = {}
    for fused in (True, False):
        copy = GPT(model.config)
        copy.load_state_dict(model.state_dict())
        for p, g in zip(copy.parameters(), grads["bmm"], strict=True):
            p.grad = g.clone()
        optimizer = build_optimizer(copy, TrainConfig(lr=1e-2), fused)
        for _ in range(3):
            optimizer.step()
        states[fused] = copy.state_dict()
    for key, value in states[True].items():
        torch.testing.assert_close(value, states[False][key], rtol=1e-5, atol=1e-6)


def _gpt(n_embd: int = 64) -> GPT:
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=n_embd, block_size=64, vocab_size=100)).eval()


@pytest.mark.parametrize(
    ("fp32_s", "bf16_s", "dtype"), [(1.0, 0.5, torch.bfloat16), (1.0, 0.93, torch.float32)]
)
def test_decoding_dtype_is_the_faster_by_a_margin(
    monkeypatch: pytest.MonkeyPatch, fp32_s: float, bf16_s: float, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(decode_tune, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(decode_tune, "_time_decoding", lambda nets: [fp32_s, bf16_s])
    net, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert next(net.parameters()).dtype == dtype and "measured" in why
    assert decode_tune.remembered_step_ms(_gpt(), "bf16") == 1e3 * bf16_s  # for serve's start line
    assert decode_tune.remembered_step_ms(_gpt(128), "bf16") is None  # never measured


def test_decoding_dtype_is_measured_for_real_then_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_tune, "cpu_has_bf16", lambda: True)
    net, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert why.startswith(("fp32 (auto, measured: fp32 ", "bf16 (auto, measured: fp32 "))
    first = next(net.parameters()).dtype

    def no_probe(nets: list) -> list[float]:
        raise AssertionError("the cached choice should have been used")

    monkeypatch.setattr(decode_tune, "_time_decoding", no_probe)
    again, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert next(again.parameters()).dtype == first
    assert f"measured on {datetime.date.today().isoformat()} on this machine" in why
    assert next(decode_tune.to_inference_dtype(_gpt(), "fp32")[0].parameters()).dtype == torch.float32


def test_a_remembered_decoding_dtype_costs_no_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the decoding step nor the bf16 product route is timed again once fp32 is remembered."""
    monkeypatch.setattr(decode_tune, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(decode_tune, "_time_decoding", lambda nets: [1.0, 0.95])
    assert "measured: fp32" in decode_tune.to_inference_dtype(_gpt(), "auto")[1]

    def no_probe(*args: object) -> None:
        raise AssertionError("the remembered choice should need no probe")

    monkeypatch.setattr(decode_tune, "_time_decoding", no_probe)
    monkeypatch.setattr(kernels, "choose_bf16_routes", no_probe)
    net, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert next(net.parameters()).dtype == torch.float32 and "on this machine" in why


def test_without_bf16_units_or_with_autotune_off_the_rule_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decode_tune, "_time_decoding", lambda nets: pytest.fail("no probe expected"))
    monkeypatch.setattr(decode_tune, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr("lmforge.hardware.cpu_has_bf16", lambda: False)
    net, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert next(net.parameters()).dtype == torch.float32
    monkeypatch.setattr(decode_tune, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    _, why = decode_tune.to_inference_dtype(_gpt(), "auto")
    assert "LMFORGE_AUTOTUNE=0" in why


def test_the_matmul_peak_is_the_best_this_machine_has_shown(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """MFU's denominator: a slow moment at start does not lower it once a faster one was seen."""
    readings = iter([100e9, 40e9, 250e9, 60e9])
    monkeypatch.setattr(hardware, "_measure_peak", lambda dtype, device, size: next(readings))
    peaks = [tuning.matmul_peak(torch.float32) for _ in range(3)]
    assert peaks == [100e9, 100e9, 250e9]
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")  # nothing remembered: the reading itself
    assert tuning.matmul_peak(torch.float32) == 60e9


def test_mfu_never_counts_against_less_than_the_runs_own_rate(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture
) -> None:
    """A first run whose start met a busy moment (no better peak remembered) logged MFU 117%: the
    peak is measured again once the run beats it, and MFU counts against no less than the run's rate."""
    from lmforge.train.loop import train

    monkeypatch.setattr(hardware, "_measure_peak", lambda dtype, device, size: 1e6)  # 1 MFLOP/s
    train(None, [*tiny_overrides, "--train.max_steps=4", "--train.dtype=fp32"], tmp_path / "run")
    said = capsys.readouterr().out
    assert re.search(r"the matmul peak measured at start \(0 GFLOP/s\) is below this run's own rate", said)
    assert said.count("measured again") == 1  # once: from then on the peak is the run's own rate
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["mfu"] for r in logged if "mfu" in r] and all(r["mfu"] <= 1.0 for r in logged if "mfu" in r)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["mfu"] <= 1.0


def test_privacy_never_takes_sdpa_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """DP-SGD's per-example gradients run under torch.func.vmap, which batches bmm but has no rule for
    sdpa's CPU kernel (a slow per-example loop, with a raw PyTorch warning): with [privacy] enabled
    the route is bmm, unmeasured (a probe that would pick sdpa is not run), also when a checkpoint
    names sdpa, and the kernels line says why."""
    from types import SimpleNamespace

    from lmforge.config import load_config

    steps = {("fp32", "bmm"): 1.0, ("fp32", "sdpa"): 0.5, ("bf16", "bmm"): 2.0, ("bf16", "sdpa"): 0.4}
    calls = _fake_timings(monkeypatch, steps, {"fused": 0.01, "foreach": 0.001})
    cfg = load_config(None, ["--privacy.enabled=true", "--privacy.target_epsilon=8", "--train.dtype=fp32"])
    engine = LocalEngine(EngineConfig(), TrainConfig())
    task = SimpleNamespace(micro_batch_tokens=lambda: 8 * 32)  # the probe would read task.loader
    fresh = autotune.choose_kernels(cfg, _gpt(), task, engine, None)  # type: ignore[arg-type]
    saved = {"dtype": "fp32", "attention": "sdpa", "adamw": "foreach", "compile": False}
    resumed = autotune.choose_kernels(cfg, _gpt(), task, engine, saved)  # type: ignore[arg-type]
    assert calls == [] and fresh.attention == resumed.attention == "bmm"
    assert fresh.describe().startswith("fp32, bmm attention, fused AdamW (fixed rules, privacy.enabled:")
    assert "vmap" in fresh.why and "no vmap batching rule" in fresh.why
    assert resumed.adamw == "foreach"  # the rest of the checkpoint's choice stands
    assert resumed.why.startswith("as the checkpoint this run resumes, but bmm attention: privacy.enabled")


@pytest.mark.parametrize(
    ("value", "on"), [("1", True), ("Refresh", True), ("", True), ("off", False), ("0", False)]
)
def test_the_autotune_switch_takes_its_words_and_refuses_others(
    monkeypatch: pytest.MonkeyPatch, value: str, on: bool
) -> None:
    """A typo such as LMFORGE_AUTOTUNE=of is one line, not silently "on"."""
    from lmforge.errors import LmforgeError

    monkeypatch.setenv("LMFORGE_AUTOTUNE", value)
    assert tuning.enabled() is on
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "of")
    with pytest.raises(LmforgeError, match=r"LMFORGE_AUTOTUNE='of': expected 1 .*, 0 .* or refresh"):
        tuning.enabled()


def test_a_run_keeps_another_runs_compile_verdict_only_for_the_same_kernels() -> None:
    ours = {"dtype": "fp32", "attention": "sdpa", "adamw": "fused", "measured": "ours"}
    theirs = {"dtype": "fp32", "attention": "sdpa", "adamw": "fused", "compile": True, "compiled": "1.3x"}
    assert autotune._merged(ours, theirs) == {**ours, "compile": True, "compiled": "1.3x"}
    other_kernels = {**theirs, "attention": "bmm"}  # its verdict was for bmm: not ours to keep
    assert autotune._merged(ours, other_kernels) == ours
    assert autotune._merged(ours, {}) == ours
