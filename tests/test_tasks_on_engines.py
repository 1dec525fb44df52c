"""Every task, the same guarantees from the one loop: 2 ranks on DDP and on DeepSpeed ZeRO-2 give
the local engine's losses in fp32, and `kill -9` then `--resume` gives the uninterrupted run's
losses exactly.

Language modelling is covered by tests/test_engines.py and tests/test_resume.py, translation's
engines by tests/test_translation.py; this file adds classification and chat (instruction tuning,
on a tiny random Llama with a chat template) on the engines, and kill -9 for translation,
classification and chat, through `lmforge train` in subprocesses as a user runs it.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hf_helpers import VOCAB, tiny_bpe
from run_helpers import kill_mid_run
from test_chat_task import tiny_chat_model, write_chats

from lmforge.config import ModelConfig
from lmforge.data.pairs import prepare_pairs
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.metrics import read_metrics

WORDS = {"good": "bon", "bad": "mauvais", "cat": "chat", "dog": "chien", "red": "rouge", "the": "le",
         "house": "maison", "big": "grand", "small": "petit", "sees": "voit", "eats": "mange"}  # fmt: skip
GOOD, BAD = ["good", "great", "fine", "noble"], ["bad", "awful", "vile", "grim"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tasks")
    rng = random.Random(0)
    rows = []
    for i in range(400):
        label = rng.choice(["negative", "positive"])
        words = [rng.choice(list(WORDS)) for _ in range(rng.randint(3, 7))]
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label == "positive" else BAD))
        rows.append({"text": " ".join(words), "label": label, "doc": f"d{i // 4}"})
    (root / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = []
    for r in rows:
        en = [w for w in r["text"].split() if w in WORDS]
        if en:
            pairs.append({"doc": r["doc"], "en": " ".join(en), "fr": " ".join(WORDS[w] for w in en)})
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    prepare_pairs(root / "pairs.jsonl", root / "pairs", vocab_size=300, val_fraction=0.1, test_fraction=0.1)
    tiny_bpe(root)
    gpt = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=VOCAB))
    write_model_dir(root / "gpt", gpt.config, gpt.state_dict(), Tokenizer.load(root / "tokenizer.json"))
    tiny_chat_model(root / "llama")
    write_chats(root / "chats.jsonl", 200)
    return {"labelled": root / "labelled.jsonl", "pairs": root / "pairs", "gpt": root / "gpt",
            "chats": root / "chats.jsonl", "llama": root / "llama"}  # fmt: skip


def recipe(task: str, data: dict[str, Path], steps: int) -> list[str]:
    common = [f"--train.max_steps={steps}", "--train.dtype=fp32", "--train.log_interval=1",
              "--train.warmup_steps=2", "--train.lr=3e-3", "--model.dropout=0.1"]  # fmt: skip
    if task == "classification":
        return [*common, "--data.task=classification", f"--data.input={data['labelled']}",
                "--data.labels=negative,positive", f"--train.init_from={data['gpt']}",
                "--train.batch_size=8", "--train.pooling=mean"]  # fmt: skip
    if task == "chat":
        return [*common, "--data.task=chat", f"--data.input={data['chats']}",
                f"--train.init_from={data['llama']}", "--train.batch_size=8"]  # fmt: skip
    return [*common, "--data.task=translation", "--model.arch=seq2seq", f"--data.input={data['pairs']}",
            "--model.n_layer=1", "--model.n_head=2", "--model.n_embd=32", "--model.block_size=32",
            "--train.batch_size=8", "--train.eval_bleu_sentences=4"]  # fmt: skip


def lmforge(*args: str, out: Path, timeout: int = 300) -> str:
    """Run the CLI; returns its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", *args, "--engine.timeout_s=60", "--out", str(out)],
        capture_output=True, text=True, cwd=out.parent, timeout=timeout,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


ENGINES = {
    "ddp": ["--engine.name=ddp"],
    "zero2": ["--engine.name=deepspeed", "--engine.zero_stage=2"],
    "fsdp": ["--engine.name=fsdp"],
    "zero3": ["--engine.name=deepspeed", "--engine.zero_stage=3"],
}
# Engines know no task, so `make test` runs each task on one engine and each engine under some
# task (classification on DDP, chat on ZeRO-3 here; translation on ZeRO-2, QA on FSDP2, LoRA on
# ZeRO-2 in their files; language modelling on all of them in test_engines.py). The rest of the
# cross product is marked slow and runs in `make test-all`.
FAST = {("ddp", "classification"), ("zero3", "chat")}
PAIRS = [
    pytest.param(e, t, marks=() if (e, t) in FAST else pytest.mark.slow)
    for t in ("classification", "chat")
    for e in ENGINES
    if t == "chat" or e in ("ddp", "zero2")
]


@pytest.fixture(scope="module")
def local_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], Path]:
    """The local engine's run of each recipe, made once and compared with every engine."""
    return {}


@pytest.mark.parametrize(("engine", "task"), PAIRS)
def test_task_on_two_ranks_matches_local(
    data: dict[str, Path], tmp_path: Path, local_runs: dict[tuple[str, ...], Path], engine: str, task: str
) -> None:
    """Global batch 8 = 2 ranks x 2 x 2 accumulation against 8 in one pass; dropout off so the
    ranks' RNG streams cannot differ; the validation split (40 examples; chat: 18 conversations,
    9 batches) is dealt unevenly."""
    if engine.startswith("zero"):
        pytest.importorskip("deepspeed")
    head = ["--train.classifier_dropout=0"] if task == "classification" else []  # a key only it reads
    base = [*recipe(task, data, 8), "--model.dropout=0.0", *head, "--train.eval_interval=4",
            "--train.micro_batch_size=2", "--train.checkpoint_interval=8"]  # fmt: skip
    if tuple(base) not in local_runs:
        lmforge("train", "--quiet", *base, out=tmp_path / "local")
        local_runs[tuple(base)] = tmp_path / "local"
    lmforge("launch", "--nproc=2", "train", "--quiet", *base, *ENGINES[engine], out=tmp_path / engine)
    local, other = read_metrics(local_runs[tuple(base)]), read_metrics(tmp_path / engine)
    assert [r["step"] for r in local] == [r["step"] for r in other] == list(range(1, 9))
    assert "val_loss" in local[3] and (task == "chat" or "val_f1" in local[-1])
    for a, b in zip(local, other, strict=True):
        for key in ("loss", "val_loss", "val_accuracy", "val_f1"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-7), (a["step"], key)


# translation (its length-grouped loader and best-BLEU bookkeeping) in `make test`; classification and
# chat, whose loaders resume as the language model's and QA's do (test_resume.py, test_qa_task.py), slow
@pytest.mark.parametrize(
    "task", ["translation", *(pytest.param(t, marks=pytest.mark.slow) for t in ("classification", "chat"))]
)
def test_sigkill_then_resume_matches_an_uninterrupted_run(
    data: dict[str, Path], tmp_path: Path, task: str
) -> None:
    """Dropout is on, so the RNG state must come back too; the loader's position, the schedule and
    (translation) the best-BLEU bookkeeping as well."""
    steps = 100  # killed after 45 logged steps, resumed from step 40; evaluations at 50 and 100
    args = [*recipe(task, data, steps), "--train.checkpoint_interval=20", "--train.eval_interval=50"]
    whole, killed = kill_resume_and_compare(args, steps, tmp_path)
    a, b = (json.loads((run / "summary.json").read_text()) for run in (whole, killed))
    assert a["val_loss"] == b["val_loss"] and a.get("best_step") == b.get("best_step")


def kill_resume_and_compare(args: list[str], steps: int, tmp_path: Path) -> tuple[Path, Path]:
    """Train `args` whole, and again killed (-9) after a checkpoint then resumed: every logged value
    of the resumed run equals the uninterrupted one's. Returns the two run directories."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    lmforge("train", "--quiet", *args, out=whole)
    cmd = [sys.executable, "-m", "lmforge", "train", "--quiet", *args, "--out", str(killed)]
    resumed_from = kill_mid_run(cmd, killed, cwd=tmp_path)
    assert 20 <= resumed_from < steps
    result = subprocess.run([sys.executable, "-m", "lmforge", "train", "--quiet", "--resume", str(killed)],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {r["step"]: r for r in read_metrics(whole)}
    got = {r["step"]: r for r in read_metrics(killed)}
    assert sorted(got) == sorted(expected)  # the resumed log reads as one run
    for step, record in expected.items():
        assert got[step] == record | {k: got[step][k] for k in ("tok_s", "mfu") if k in record}, step
    return whole, killed


def test_two_ranks_with_dropout_resume_exactly(data: dict[str, Path], tmp_path: Path) -> None:
    """Each rank's RNG states come back at resume: only rank 0's were saved and every rank took
    them, so where the ranks' padded micro-batches differ in shape (classification, chat) and
    dropout draws different amounts on each, rank 1's masks after a resume were not the
    uninterrupted run's (losses 1e-2 apart; the K6 pass)."""
    args = [*recipe("classification", data, 12), "--train.checkpoint_interval=6", "--train.eval_interval=6",
            "--train.micro_batch_size=2", "--engine.name=ddp"]  # fmt: skip
    whole = tmp_path / "whole"
    lmforge("launch", "--nproc=2", "train", "--quiet", *args, out=whole)
    copy = tmp_path / "resumed"
    shutil.copytree(whole, copy)
    shutil.rmtree(copy / "checkpoints" / "step_00000012")  # continue from step 6
    result = subprocess.run(
        [sys.executable, "-m", "lmforge", "launch", "--nproc=2", "train", "--quiet", "--resume", str(copy),
         "--engine.timeout_s=60"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    expected = {r["step"]: r for r in read_metrics(whole)}
    got = {r["step"]: r for r in read_metrics(copy)}
    assert sorted(got) == sorted(expected) == list(range(1, 13))
    for step in range(7, 13):
        for key in ("loss", "grad_norm", "val_loss"):
            if key in expected[step]:
                assert got[step][key] == expected[step][key], (step, key)
