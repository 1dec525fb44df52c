"""Golden loss curve: the first 50 steps of a small fixed fp32 recipe against tests/golden/.

A change that silently alters the training numerics (init, data order, tokenisation, the model's
maths, the loss, AdamW, the schedule, grad clipping, the evaluation) moves this curve and fails
here. If the change is intended, check the new curve and re-record it:

    LMFORGE_UPDATE_GOLDEN=1 pytest tests/test_golden_curve.py

which writes tests/golden/lm-char-50.json (recipe, corpus hash, torch version, 50 losses, final
val loss) instead of comparing; commit it with the change and say why the numbers moved. Without
the variable a missing golden file is a failure, not a skip. Only the public API is used:
lmforge.train and the run directory's metrics.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch

import lmforge

GOLDEN = Path(__file__).parent / "golden" / "lm-char-50.json"
UPDATE = os.environ.get("LMFORGE_UPDATE_GOLDEN", "") not in ("", "0")

# Everything that shapes the numbers is spelled out, except the model's architecture defaults
# (positions, MLP, norm, tied embeddings...): a change of default changes every run that relies
# on it, so it should show up here too.
RECIPE = [
    "--data.tokenizer=char",
    "--data.val_fraction=0.1",
    "--model.n_layer=2",
    "--model.n_head=2",
    "--model.n_embd=32",
    "--model.block_size=32",
    "--model.dropout=0.0",
    "--train.dtype=fp32",
    "--train.seed=1337",
    "--train.max_steps=50",
    "--train.batch_size=8",
    "--train.micro_batch_size=0",
    "--train.lr=0.002",
    "--train.min_lr=0.0002",
    "--train.warmup_steps=10",
    "--train.schedule=cosine",
    "--train.beta1=0.9",
    "--train.beta2=0.99",
    "--train.weight_decay=0.1",
    "--train.grad_clip=1.0",
    "--train.log_interval=1",
    "--train.eval_interval=1000",
    "--train.eval_batches=1",
    "--train.checkpoint_interval=50",
]

# Tolerance: relative, per point (50 step losses and the final val loss, all 2.7-3.8 nats, so
# relative and absolute agree). Measured with torch 2.13.0+cpu on a 2-core AVX-512 x86 CPU (MKL
# BLAS) with this very recipe and corpus:
# - run to run, in one process and in separate processes: bit-identical (difference 0).
# - legitimate variation, max relative difference from the golden curve over the 51 points:
#   torch threads 1 / 4 / 8: 1.5e-7 / 1.6e-7 / 1.7e-7; ATEN_CPU_CAPABILITY=avx2 (an AVX2-only
#   CPU's kernels) 1.6e-7, =default (no SIMD) 1.6e-7; plus MKL_ENABLE_INSTRUCTIONS=AVX2 (MKL's
#   path on AVX2-only and AMD CPUs) 1.5e-7; MKL_CBWR=COMPATIBLE 1.5e-7. That is 1-2 fp32 ulps,
#   and it does not grow over 50 steps, so the test sets no thread count.
# - real changes (max relative difference; points beyond 1e-5 of 51): lr +1% 1.8e-3 (49),
#   lr +0.1% 1.8e-4 (47), lr +0.01% 1.8e-5 (35), seed 1338 5e-2 (51), warmup 10->11 5.9e-3
#   (49), no grad clip 1.2e-2 (46), clip 1.0->1.01 2.4e-4 (41), beta2 0.99->0.991 2.3e-4 (43),
#   weight decay 0.1->0.11 6.9e-5 (36), min_lr +5% 8e-4 (33), norm_eps 1e-5->1e-6 4.6e-4 (50),
#   linear instead of cosine 1.5e-2 (39).
#   A simulated code change, AdamW eps 1e-8 -> 1e-6 (monkeypatched): max 4.5e-5 (39), which a
#   1e-4 tolerance would miss.
# 1e-5 sits between the two on a log scale: about 60x above the noise and 180x below the effect
# of lr +1%; every change above fails. Not caught: effects under ~1e-5 of the loss, e.g. GELU's
# tanh approximation (6e-7), as small as the thread-count noise itself.
RTOL = 1e-5

# Small real changes that must fail (test_changed_recipe_does_not_match): the test can be seen to fail.
MUTATIONS = {
    "lr+1%": ["--train.lr=0.00202"],
    "warmup+1": ["--train.warmup_steps=11"],
    "no-grad-clip": ["--train.grad_clip=0"],
}


def _corpus() -> str:
    """About 15k characters of play-like text from a fixed 64-bit LCG (no `random`: its choice()
    is not guaranteed to stay the same across Python versions)."""
    words = [
        *("the", "king", "queen", "love", "death", "night", "day", "sword", "crown", "heart", "blood"),
        *("fair", "lord", "lady", "speak", "hear", "good", "sweet", "noble", "thou", "thee", "thy"),
        *("art", "doth", "hath", "shall", "will", "come", "go", "stay", "fly"),
    ]
    speakers = ["ROMEO", "JULIET", "KING", "NURSE"]
    state = 20240607

    def draw(n: int) -> int:
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        return (state >> 33) % n

    lines = []
    for _ in range(300):
        speaker = speakers[draw(len(speakers))]
        said = " ".join(words[draw(len(words))] for _ in range(4 + draw(9)))
        lines.append(f"{speaker}:\n{said}.\n")
    return "\n".join(lines)


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str]) -> dict[str, Any]:
    """Train RECIPE (+ extra) on the CPU; the per-step losses and the final val loss."""
    # The golden curve is a CPU curve: on a CUDA machine the run would pick the GPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = _corpus()
    corpus = tmp_path / "plays.txt"
    corpus.write_text(text)
    run_dir = tmp_path / "run"
    summary = lmforge.train(None, [f"--data.input={corpus}", *RECIPE, *extra], out=run_dir, quiet=True)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r}
    assert sorted(losses) == list(range(1, 51)), f"logged steps: {sorted(losses)}"
    assert summary["dtype"] == "float32", summary["dtype"]
    return {
        "corpus_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "losses": [losses[s] for s in range(1, 51)],
        "val_loss": summary["val_loss"],
    }


def _mismatches(got: dict[str, Any], golden: dict[str, Any]) -> list[str]:
    """Human-readable differences beyond RTOL (empty: the curves match)."""
    out = []
    steps = enumerate(zip(got["losses"], golden["losses"], strict=True), 1)
    pairs = [(f"step {i}", a, b) for i, (a, b) in steps]
    pairs.append(("final val_loss", got["val_loss"], golden["val_loss"]))
    for name, a, b in pairs:
        if not math.isclose(a, b, rel_tol=RTOL, abs_tol=0.0):
            out.append(f"{name}: {a!r} vs golden {b!r} (relative {abs(a - b) / abs(b):.2e})")
    return out


def _golden() -> dict[str, Any]:
    assert GOLDEN.exists(), f"{GOLDEN} is missing: record it with LMFORGE_UPDATE_GOLDEN=1"
    golden = json.loads(GOLDEN.read_text())
    assert golden["recipe"] == RECIPE, "RECIPE changed since the curve was recorded: re-record it"
    assert len(golden["losses"]) == 50
    return golden


def test_first_50_steps_match_the_golden_curve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    got = _run(tmp_path, monkeypatch, [])
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        record = {
            "about": "tests/test_golden_curve.py; re-record with LMFORGE_UPDATE_GOLDEN=1",
            "recipe": RECIPE,
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            **got,
        }
        GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
        return
    golden = _golden()
    assert got["corpus_sha256"] == golden["corpus_sha256"], "the test corpus changed: re-record the curve"
    bad = _mismatches(got, golden)
    assert not bad, (
        f"loss curve moved beyond rel {RTOL:g} at {len(bad)} of 51 points (recorded with torch "
        f"{golden['torch']}, running {torch.__version__}); if intended, re-record with "
        "LMFORGE_UPDATE_GOLDEN=1:\n  " + "\n  ".join(bad[:10])
    )


@pytest.mark.parametrize("name", MUTATIONS)
def test_changed_recipe_does_not_match(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """The tolerance is tight enough to see small real changes (see RTOL)."""
    golden = _golden()
    bad = _mismatches(_run(tmp_path, monkeypatch, MUTATIONS[name]), golden)
    assert len(bad) >= 10, f"{name} should move the curve beyond rel {RTOL:g}; differs at {bad}"
