"""DP-SGD ([privacy]): per-example clipping, noise once per step, Opacus' accounting, exact resume."""

from __future__ import annotations

import json
import math
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

from lmforge.config import LoraConfig, ModelConfig, PrivacyConfig, load_config
from lmforge.errors import LmforgeError
from lmforge.model import lora
from lmforge.model.gpt import GPT
from lmforge.train.engines.local import LocalEngine
from lmforge.train.losses import lm_loss
from lmforge.train.metrics import read_metrics
from lmforge.train.privacy import DPSGD, _no_alpha_warning, clip_and_sum, per_sample_grads

C = 0.5  # max_grad_norm
OUTLIER = 7  # an example whose first token is this one has a huge loss


def outlier_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """lm_loss, times 10,000 for examples that start with OUTLIER: one example with a huge loss."""
    weight = 1 + 1e4 * (inputs[:, :1] == OUTLIER).float()  # (B, 1)
    logits = model(inputs)  # (B, T, V)
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, T)
    return (losses * weight).sum()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)  # rotary positions and tied embeddings: what the per-example machinery must handle
    config = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11, pos="rope")
    return GPT(config)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.randint(0, 11, (4, 9), generator=torch.Generator().manual_seed(1))
    data[:, 0] = torch.tensor([1, OUTLIER, 2, 3])  # example 1 is the outlier
    return data[:, :-1], data[:, 1:]


def cpu_engine() -> LocalEngine:
    """What DPSGD asks of an engine: its device."""
    engine = LocalEngine.__new__(LocalEngine)
    engine.device = torch.device("cpu")
    return engine


def grads_by_hand(model: GPT, loss_fn, inputs: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
    """Each example's gradient of its loss per target, one ordinary backward at a time: (P,) each."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(len(inputs)):
        loss = loss_fn(model, inputs[i : i + 1], targets[i : i + 1]) / targets[i].numel()
        out.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]))
    return out


def test_each_example_is_clipped_and_the_outlier_bounded(model: GPT) -> None:
    inputs, targets = batch()
    grads, summed, counts = per_sample_grads(model, outlier_loss, (inputs, targets))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(grads) == names  # the tied head shares wte's tensor: one gradient for both uses
    flat = torch.cat([grads[n].flatten(1) for n in names], dim=1)  # (B, P)
    by_hand = torch.stack(grads_by_hand(model, outlier_loss, inputs, targets))
    # the outlier's gradient is ~1e4 times the others': compare each example's at its own scale
    # (its elements near 0 differed by 8e-6 on AVX2 kernels, a part in 1e8 of its norm)
    scale = by_hand.norm(dim=1, keepdim=True)  # (B, 1)
    torch.testing.assert_close(flat / scale, by_hand / scale, rtol=1e-4, atol=1e-6)
    assert counts.tolist() == [8, 8, 8, 8]
    norms = flat.norm(dim=1)
    assert norms[1] > 1000 * C > norms.max() / 1000  # the outlier's raw gradient is huge
    sums, reported = clip_and_sum(grads, C)
    torch.testing.assert_close(reported, norms)
    clipped = by_hand * (C / (by_hand.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)
    assert float(clipped[1].norm()) <= C * (1 + 1e-5)  # the outlier counts no more than C
    assert all(float(c.norm()) <= C * (1 + 1e-5) for c in clipped)
    torch.testing.assert_close(
        torch.cat([sums[n].flatten() for n in names]), clipped.sum(0), rtol=1e-4, atol=1e-6
    )


def test_lora_examples_get_adapter_gradients_only() -> None:
    """A frozen base (LoRA) is passed through; only the adapters get per-example gradients."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=11))
    lora.inject(model, LoraConfig(enabled=True, rank=2, alpha=4, targets="attn.qkv,attn.proj"))
    inputs, targets = batch()
    grads, _, _ = per_sample_grads(model, lm_loss, (inputs, targets))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(grads) == trained and all("lora" in n for n in trained)
    flat = torch.cat([grads[n].flatten(1) for n in trained], dim=1)
    torch.testing.assert_close(flat, torch.stack(grads_by_hand(model, lm_loss, inputs, targets)))


def test_bf16_autocast_gives_fp32_example_grads_close_to_fp32_ones(model: GPT) -> None:
    inputs, targets = batch()
    exact, _, _ = per_sample_grads(model, lm_loss, (inputs, targets))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed, _, _ = per_sample_grads(model, lm_loss, (inputs, targets))
    for name, g in mixed.items():
        assert g.dtype == torch.float32  # the gradients of the fp32 parameters: clipped in fp32
        assert float((g - exact[name]).norm()) <= 0.05 * float(exact[name].norm()) + 1e-6


def test_update_without_noise_is_the_mean_of_clipped_example_grads(model: GPT) -> None:
    """Two micro-batches of 2 make one logical batch of 4: each example clipped, divided by 4."""
    inputs, targets = batch()
    dp = DPSGD(PrivacyConfig(enabled=True, max_grad_norm=C, noise_multiplier=0.0), 4, 100, 10)
    engine = cpu_engine()
    micro = [(inputs[:2], targets[:2]), (inputs[2:], targets[2:])]
    model.zero_grad(set_to_none=True)
    loss = dp.forward_backward(model, engine, micro, nullcontext, lm_loss)
    by_hand = torch.stack(grads_by_hand(model, lm_loss, inputs, targets))
    expected = (by_hand * (C / (by_hand.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)).mean(0)
    update = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(update, expected, rtol=1e-4, atol=1e-7)
    assert loss == pytest.approx(float(lm_loss(model, inputs, targets).detach()) / targets.numel(), rel=1e-5)
    assert dp.steps == 1 and dp.epsilon() == math.inf  # no noise: no privacy


def test_noise_is_added_once_per_step_with_std_sigma_times_c(model: GPT) -> None:
    inputs, targets = batch()
    sigma, engine = 2.0, cpu_engine()
    dp = DPSGD(PrivacyConfig(enabled=True, max_grad_norm=C, noise_multiplier=sigma), 4, 100, 10)
    micro = [(inputs[:2], targets[:2]), (inputs[2:], targets[2:])]
    model.zero_grad(set_to_none=True)
    dp.forward_backward(model, engine, micro, nullcontext, lm_loss)
    by_hand = torch.stack(grads_by_hand(model, lm_loss, inputs, targets))
    clipped_sum = (by_hand * (C / (by_hand.norm(dim=1, keepdim=True) + 1e-6)).clamp(max=1.0)).sum(0)
    noise = torch.cat([p.grad.flatten() for p in model.parameters()]) * 4 - clipped_sum  # (P,)
    assert noise.numel() > 5000
    assert float(noise.std()) == pytest.approx(sigma * C, rel=0.05)
    assert abs(float(noise.mean())) < 0.1 * sigma * C


def test_a_delta_above_one_over_n_is_warned_of(capsys: pytest.CaptureFixture[str]) -> None:
    DPSGD(PrivacyConfig(enabled=True, noise_multiplier=1.0), 8, 800, 50)  # the default: 1e-5
    DPSGD(PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=1 / 800), 8, 800, 50)
    assert capsys.readouterr().err == ""
    DPSGD(PrivacyConfig(enabled=True, noise_multiplier=1.0, delta=0.5), 8, 800, 50)
    assert "privacy.delta=0.5 is above 1/N = 1/800 (the examples sampled from)" in capsys.readouterr().err


def test_target_epsilon_sets_opacus_noise_and_prv_counts_like_opacus(model: GPT) -> None:
    cfg = PrivacyConfig(enabled=True, target_epsilon=3.0, accountant="rdp")
    dp = DPSGD(cfg, 8, 800, 50)
    assert dp.delta == 1e-5 and dp.sample_rate == 0.01
    with _no_alpha_warning():  # Opacus' own search warns on its trial noise levels
        expected = get_noise_multiplier(
            target_epsilon=3.0, target_delta=1e-5, sample_rate=0.01, steps=50, accountant="rdp"
        )
    assert dp.noise_multiplier == expected
    dp.accountant.history = [(dp.noise_multiplier, 0.01, 50)]
    assert 2.99 <= dp.epsilon() <= 3.0
    # delta defaults to 1/N when that is below 1e-5; the PRV accountant, step by step
    inputs, targets = batch()
    engine = cpu_engine()
    dp = DPSGD(PrivacyConfig(enabled=True, noise_multiplier=1.1, accountant="prv"), 4, 200_000, 3)
    assert dp.delta == 1 / 200_000
    for _ in range(3):
        dp.forward_backward(model, engine, [(inputs, targets)], nullcontext, lm_loss)
    opacus = create_accountant("prv")
    for _ in range(3):
        opacus.step(noise_multiplier=1.1, sample_rate=4 / 200_000)
    assert dp.epsilon() == opacus.get_epsilon(delta=1 / 200_000)


PRIVATE = [
    "--privacy.enabled=true",
    "--privacy.noise_multiplier=1.0",
    "--privacy.max_grad_norm=1.0",
    "--train.schedule=constant",  # the schedule must not depend on max_steps for the resume test
    "--train.warmup_steps=0",
    "--train.eval_interval=100",
]


def _train(tiny_overrides: list[str], out: Path, *extra: str, resume: bool = False) -> dict:
    from lmforge.train.loop import train

    overrides = list(extra) if resume else [*tiny_overrides, *PRIVATE, *extra]
    return train(None, overrides, resume=out if resume else None, out=None if resume else out, quiet=True)


def test_training_reports_epsilon_as_opacus_counts_it(
    tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.train.loop import train

    run = tmp_path / "run"
    summary = train(None, [*tiny_overrides, *PRIVATE, "--train.max_steps=5"], out=run)
    meta = json.loads((run / "data" / "meta.json").read_text())
    windows = meta["tokens"]["train"] // 33  # block_size 32 + 1
    rate = 8 / ((windows // 8) * 8)  # the global batch over one epoch's examples
    assert summary["privacy"]["sample_rate"] == pytest.approx(rate)
    opacus = create_accountant("rdp")
    for record in read_metrics(run):
        opacus.step(noise_multiplier=1.0, sample_rate=summary["privacy"]["sample_rate"])
        assert record["epsilon"] == opacus.get_epsilon(delta=summary["privacy"]["delta"])
    assert summary["epsilon"] == record["epsilon"] > 0
    assert summary["privacy"]["delta"] == 1e-5 and summary["privacy"]["steps"] == 5
    out = capsys.readouterr().out
    assert "privacy DP-SGD: each example clipped to 1" in out
    assert f"| eps {record['epsilon']:.2f}" in out


def test_resume_restores_the_accountant_exactly(tmp_path: Path, tiny_overrides: list[str]) -> None:
    whole = _train(tiny_overrides, tmp_path / "whole", "--train.max_steps=6", "--train.checkpoint_interval=3")
    parts = tmp_path / "parts"
    _train(tiny_overrides, parts, "--train.max_steps=3")
    state = json.loads((parts / "checkpoints" / "step_00000003" / "trainer.json").read_text())["privacy"]
    assert state["history"] == [[1.0, pytest.approx(whole["privacy"]["sample_rate"]), 3]]  # JSON, no pickle
    resumed = _train(tiny_overrides, parts, "--train.max_steps=6", resume=True)
    assert resumed["epsilon"] == whole["epsilon"]
    assert resumed["privacy"]["steps"] == 6
    losses = {r["step"]: r["loss"] for r in read_metrics(parts)}
    assert losses == {r["step"]: r["loss"] for r in read_metrics(tmp_path / "whole")}  # noise RNG too
    assert resumed["val_loss"] == whole["val_loss"]


def test_a_run_from_a_private_runs_weights_says_both_runs_privacy_loss(
    tmp_path: Path, tiny_overrides: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A new run's accountant starts at zero (--init-from is what a refused resume points to): its
    start-up lines and summary.json give the two runs composed, as one accountant of both counts
    them; a run without [privacy] from such weights says it has no DP guarantee of its own."""
    from lmforge.train.loop import train

    first = _train(tiny_overrides, tmp_path / "a", "--train.max_steps=3")
    capsys.readouterr()
    init = f"--train.init_from={tmp_path / 'a'}"
    second = train(None, [*tiny_overrides, *PRIVATE, "--train.max_steps=4", init], out=tmp_path / "b")
    rate, delta = second["privacy"]["sample_rate"], second["privacy"]["delta"]
    both = create_accountant("rdp")
    both.history = [(1.0, first["privacy"]["sample_rate"], 3), (1.0, rate, 4)]
    composed = both.get_epsilon(delta=delta)
    assert second["epsilon_with_init_from"] == pytest.approx(composed) and composed > second["epsilon"]
    out = capsys.readouterr().out
    assert f"was trained with DP-SGD (epsilon {first['epsilon']:.3g} at delta 1e-05 over 3 steps" in out
    assert f"the two composed, epsilon {composed:.3g} after this run's 4 steps" in out
    checkpoint = tmp_path / "a" / "checkpoints" / "step_00000003"  # a checkpoint's trainer.json says it too
    train(
        None, [*tiny_overrides, "--train.max_steps=1", f"--train.init_from={checkpoint}"], out=tmp_path / "c"
    )
    err = capsys.readouterr().err
    assert f"was trained with DP-SGD (epsilon {first['epsilon']:.3g}" in err and "trainer.json)" in err
    assert "this run trains without [privacy]: the model it writes has no DP guarantee" in err


def test_a_private_lora_run_trains_the_adapters_alone(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """DP-SGD on a LoRA run end to end: a pretrained base, per-example gradients of the adapters
    only, an epsilon; the base's weights stay as they were."""
    from safetensors.torch import load_file

    from lmforge.train.loop import train

    base = train(None, [*tiny_overrides, "--train.max_steps=2"], out=tmp_path / "base", quiet=True)
    private = tmp_path / "private"
    lora = ["--lora.enabled=true", "--lora.rank=2", f"--train.init_from={tmp_path / 'base' / 'model'}"]
    summary = _train(tiny_overrides, private, "--train.max_steps=3", *lora)
    assert summary["epsilon"] > 0 and base["steps"] == 2 and summary["steps"] == 3
    assert 0 < summary["trainable_parameters"] < summary["parameters"]
    saved = load_file(private / "checkpoints" / "step_00000003" / "model.safetensors")
    assert saved and all("lora_" in name for name in saved)


def test_a_private_batch_larger_than_an_epoch_is_refused(tmp_path: Path, tiny_overrides: list[str]) -> None:
    """The loader would hold a text several times in one step, which the accountant counts once."""
    with pytest.raises(
        LmforgeError, match=r"train\.batch_size=4096 is more than the [\d,]+ windows of an epoch"
    ):
        _train(tiny_overrides, tmp_path / "big", "--train.max_steps=1", "--train.batch_size=4096")


@pytest.mark.parametrize("engine", ["ddp", "fsdp", "deepspeed"])
def test_other_engines_refuse_privacy(engine: str) -> None:
    with pytest.raises(LmforgeError, match=f"privacy.enabled runs on engine.name=local only, not '{engine}'"):
        load_config(None, ["--privacy.enabled=true", "--privacy.target_epsilon=8", f"--engine.name={engine}"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--privacy.enabled=true"], "needs privacy.noise_multiplier or privacy.target_epsilon"),
        (
            ["--privacy.enabled=true", "--privacy.noise_multiplier=1", "--privacy.target_epsilon=8"],
            "are both set: give one",
        ),
        (["--privacy.accountant=gdp"], "privacy.accountant='gdp' must be 'rdp' or 'prv'"),
        (
            [
                "--privacy.enabled=true",
                "--privacy.noise_multiplier=1",
                "--data.task=chat",
                "--train.init_from=m",
            ],
            "privacy.enabled is implemented for data.task='lm' only, not 'chat'",
        ),
        (["--privacy.noise_multiplier=inf"], "privacy.noise_multiplier=inf: must be a finite number"),
        (["--privacy.max_grad_norm=0"], "privacy.max_grad_norm=0.0 must be > 0"),
        (["--privacy.delta=1"], r"privacy.delta=1.0 must be in \[0, 1\)"),
    ],
)
def test_bad_privacy_settings_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(LmforgeError, match=message):
        load_config(None, overrides)


def test_an_unreachable_target_epsilon_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def too_low(**_: object) -> float:  # what Opacus says once sigma passes 1e6 (minutes of search)
        raise ValueError("The privacy budget is too low.")

    monkeypatch.setattr("opacus.accountants.utils.get_noise_multiplier", too_low)
    with pytest.raises(LmforgeError, match="privacy.target_epsilon=1e-09: no noise multiplier reaches it"):
        DPSGD(PrivacyConfig(enabled=True, target_epsilon=1e-9), 8, 16, 1000)


def test_opacus_alpha_warning_is_hidden_and_said_in_our_words_when_it_matters() -> None:
    """get_noise_multiplier's search made Opacus print a raw "Optimal order is the largest alpha"
    UserWarning before the start-up lines; only that warning is hidden."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dp = DPSGD(PrivacyConfig(enabled=True, target_epsilon=8.0), 32, 36_800, 3)
        dp.accountant.history = [(dp.noise_multiplier, dp.sample_rate, 1)]
        assert dp.epsilon() > 0
        loud = DPSGD(PrivacyConfig(enabled=True, noise_multiplier=20.0), 8, 800, 10)
        loud.accountant.history = [(20.0, 0.01, 10)]
        assert loud.epsilon() < 0.5
        with _no_alpha_warning():
            warnings.warn("another warning", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another warning"]
    assert "alpha" not in dp.describe()  # the chosen noise's best order is inside the range
    assert loud.describe().endswith(
        "; RDP's best order is alpha 63, the end of the range tried, so epsilon is an upper bound"
        " looser than need be (privacy.accountant=prv is tighter)"
    )


def test_a_private_run_takes_an_attention_route_vmap_batches(
    tmp_path: Path,
    tiny_overrides: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With kernel autotuning on and a probe that would find sdpa faster, a DP run trains on bmm:
    vmap has no batching rule for sdpa's CPU kernel, which ran example by example behind a raw
    "There is a performance drop because we have not yet implemented the batching rule" warning."""
    from lmforge.model.attention import set_sequence_route
    from lmforge.train import autotune
    from lmforge.train.loop import train

    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_AUTOTUNE", raising=False)  # conftest turns it off

    def sdpa_faster(model, batch, loss, candidates, engine):  # noqa: ANN001, ANN202
        return {c: [0.5 if c[1] == "sdpa" else 1.0] for c in candidates}

    monkeypatch.setattr(autotune, "_time_steps", sdpa_faster)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            summary = train(None, [*tiny_overrides, *PRIVATE, "--train.max_steps=2"], out=tmp_path / "run")
    finally:
        set_sequence_route("bmm")  # the process-wide default, for the tests that follow
    assert summary["kernels"]["attention"] == "bmm" and summary["steps"] == 2
    assert [str(w.message) for w in caught if "batching rule" in str(w.message)] == []
    assert "bmm attention, fused AdamW (fixed rules, privacy.enabled: DP-SGD's" in capsys.readouterr().out


def test_bench_dp_with_a_bad_epsilon_is_one_line_before_any_work() -> None:
    """--epsilons is read before the data is prepared: a typo is one line, not a traceback after
    the first run."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "benchmarks.bench_dp", "--epsilons", "inf,eight", "--steps", "1"]
    done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == "bench_dp: --epsilons 'inf,eight': comma-separated numbers or inf\n"


def test_bench_dp_compares_time_with_the_no_dp_run_only() -> None:
    """Without a no-DP run in --epsilons the table has no 'time vs no DP' column; it used to divide
    by the first row's time and print 1.0x for a DP run."""
    from benchmarks.bench_dp import table

    def row(epsilon: float, seconds: float) -> dict:
        return {
            "target_epsilon": epsilon,
            "epsilon": epsilon,
            "noise_multiplier": 1.0,
            "val_loss": 2.0,
            "s_per_step": seconds,
        }

    with_base = table([row(float("inf"), 0.1), row(8, 0.3)]).splitlines()
    assert with_base[0].endswith("| time vs no DP |") and with_base[3].endswith("| 0.300 | 3.0x |")
    without = table([row(8, 0.3), row(3, 0.35)]).splitlines()
    assert "time vs no DP" not in without[0] and without[2].endswith("| 0.300 |")
