"""A whole run through the CLI: the run directory holds what the README promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import LmforgeError, generate, load, pipeline, prep, train
from lmforge.train.metrics import read_metrics


def test_cli_train_then_generate(tmp_path: Path, tiny_overrides: list[str]) -> None:
    run = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "lmforge",
        "train",
        "--out",
        str(run),
        *tiny_overrides,
        "--train.max_steps=30",
        "--train.eval_interval=10",
        "--train.checkpoint_interval=10",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    out = proc.stderr + proc.stdout  # the start-up lines name the kernels chosen (train/autotune.py)
    assert "kernels" in out and "attention" in out and "AdamW" in out
    for name in (
        "config.toml",
        "metrics.jsonl",
        "loss.png",
        "summary.json",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
    ):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000020", "step_00000030"]
    records = read_metrics(run)
    assert all({"step", "loss", "lr"} <= r.keys() for r in records)
    assert records[-1]["loss"] < records[0]["loss"]
    summary = json.loads((run / "summary.json").read_text())
    assert {"val_loss", "val_bpb", "tokens_per_s", "wall_s", "steps"} <= summary.keys()
    assert summary["steps"] == 30 and "peak_gpu_gb_per_rank" not in summary  # a CPU run: RSS only

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmforge",
            "generate",
            str(run),
            "--prompt",
            "ROMEO:",
            "--max-new-tokens",
            "20",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("ROMEO:") and len(out.stdout) > len("ROMEO:")
    text = generate(run, "ROMEO:", max_new_tokens=20, seed=1)[0]
    assert text == out.stdout.rstrip("\n")


def test_existing_run_is_protected(tmp_path: Path, tiny_overrides: list[str]) -> None:
    run = tmp_path / "run"
    args = [*tiny_overrides, "--train.max_steps=2"]
    train(None, args, run, quiet=True)
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "train", "--out", str(run), *args], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    train(None, args, run, overwrite=True, quiet=True)


def test_python_api_on_prepared_data_with_bpe(tmp_path: Path, corpus: Path) -> None:
    meta = prep(corpus, tmp_path / "data", tokenizer="bpe", vocab_size=300)
    assert meta["vocab_size"] <= 300
    summary = train(
        None,
        [
            f"--data.input={tmp_path / 'data'}",
            "--model.n_layer=1",
            "--model.n_embd=32",
            "--model.n_head=2",
            "--model.block_size=16",
            "--train.batch_size=4",
            "--train.micro_batch_size=2",
            "--train.max_steps=3",
            "--train.warmup_steps=1",
            "--model.pos=rope",
            "--model.mlp=swiglu",
            "--train.dtype=bf16",
        ],
        tmp_path / "run",
        quiet=True,
    )
    assert summary["dtype"] == "bfloat16" and summary["steps"] == 3
    model, tokenizer = load(tmp_path / "run")
    assert model.config.pos == "rope" and tokenizer.kind == "bpe"


def test_text_generation_pipeline_matches_generate(tmp_path: Path, tiny_overrides: list[str]) -> None:
    train(None, [*tiny_overrides, "--train.max_steps=10"], tmp_path / "run", quiet=True)
    pipe = pipeline("text-generation", model=tmp_path / "run", dtype="fp32")
    one = pipe("the king", max_new_tokens=8, do_sample=False)
    assert list(one[0]) == ["generated_text"] and one[0]["generated_text"].startswith("the king")
    expected = generate(tmp_path / "run", "the king", max_new_tokens=8, temperature=0, dtype="fp32")
    assert one[0]["generated_text"] == expected[0]
    many = pipe(["the king", "love"], max_new_tokens=4, do_sample=False, return_full_text=False)
    love = generate(tmp_path / "run", "love", max_new_tokens=4, temperature=0, dtype="fp32")[0]
    assert len(many) == 2 and many[1][0]["generated_text"] == love[len("love") :]
    with pytest.raises(LmforgeError, match="unknown pipeline task"):
        pipeline("summarization", model=tmp_path / "run")
