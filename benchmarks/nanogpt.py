"""nanoGPT's `model.py` as a benchmark peer, at a pinned commit, kept in a cache outside the project.

    python -m benchmarks.nanogpt [--from-git DIR]   # place it in the cache (once)

nanoGPT (https://github.com/karpathy/nanoGPT, MIT licence, Copyright (c) 2022 Andrej Karpathy) is
never copied into this repository: its `model.py` and `LICENSE` at COMMIT go to
`~/.cache/lmforge/peers/nanogpt-<commit>/` (or `$LMFORGE_PEERS/...`), from a local clone
(`--from-git`, or `$LMFORGE_NANOGPT_GIT`) or from GitHub's raw files, and are checked against
their SHA-256 before they are imported. The benchmarks call `nanogpt_model`; where the file
cannot be had they print why and leave nanoGPT out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import torch

from lmforge.config import ModelConfig

COMMIT = "3adf61e154c3fe3fca428ad6bc3818b27a3b8291"  # master, 2025-11-12; model.py as of f08abb4
FILES = {  # name -> SHA-256 at COMMIT
    "model.py": "7c01703240dbec5d554527dc666e35b3df8391d0b117fddc07afcf325a21d11c",
    "LICENSE": "a59ec5cdb1c1e447e5266a014b3e7ded511f8d6e5a08931e931c87490ff821fe",
}
RAW = "https://raw.githubusercontent.com/karpathy/nanoGPT/{commit}/{name}"


def cache_dir() -> Path:
    root = Path(os.environ.get("LMFORGE_PEERS", Path.home() / ".cache" / "lmforge" / "peers"))
    return root / f"nanogpt-{COMMIT[:7]}"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _from_git(repo: Path, name: str) -> bytes:
    return subprocess.run(
        ["git", "-C", str(repo), "show", f"{COMMIT}:{name}"],
        capture_output=True,
        check=True,  # a clone or its .git
    ).stdout


def _from_github(name: str) -> bytes:
    with urllib.request.urlopen(RAW.format(commit=COMMIT, name=name), timeout=30) as response:
        return response.read()


def fetch(git: Path | None = None) -> Path:
    """The cache folder holding model.py and LICENSE at COMMIT, filled first if need be."""
    folder = cache_dir()
    for name, digest in FILES.items():
        path = folder / name
        if path.exists() and _sha256(path.read_bytes()) == digest:
            continue
        data = _from_git(git, name) if git is not None else _from_github(name)
        if _sha256(data) != digest:
            raise RuntimeError(f"nanoGPT {name} at {COMMIT[:7]}: SHA-256 {_sha256(data)} is not {digest}")
        folder.mkdir(parents=True, exist_ok=True)  # only once there is something to keep
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return folder


def load() -> ModuleType | None:
    """nanoGPT's model module, or None (with a printed reason) when it cannot be had."""
    git = os.environ.get("LMFORGE_NANOGPT_GIT")
    try:
        folder = fetch(Path(git) if git else None)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as e:
        print(f"nanoGPT: left out ({e}); place it with `python -m benchmarks.nanogpt --from-git DIR`")
        return None
    spec = importlib.util.spec_from_file_location("nanogpt_model", folder / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_model(module: ModuleType, cfg: ModelConfig) -> torch.nn.Module:
    """nanoGPT's GPT with lmforge's shape: learned positions, GELU MLP, biases (GPT-2's), tied
    head, dropout 0. Its constructor's parameter-count line is swallowed."""
    config = module.GPTConfig(
        block_size=cfg.block_size,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=0.0,
        bias=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):
        return module.GPT(config)


def nanogpt_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """nanoGPT's own AdamW set-up (decay on matrices only; fused only on CUDA), train.py's values."""
    with contextlib.redirect_stdout(io.StringIO()):
        return model.configure_optimizers(0.1, 1e-3, (0.9, 0.99), "cpu")  # type: ignore[operator]


def main() -> None:
    parser = argparse.ArgumentParser(description="Place nanoGPT's model.py in the peers cache.")
    parser.add_argument("--from-git", type=Path, help="a nanoGPT git directory holding the commit")
    args = parser.parse_args()
    try:
        print(f"nanoGPT {COMMIT[:7]} (MIT licence) in {fetch(args.from_git)}")
    except subprocess.CalledProcessError:
        sys.exit(f"nanogpt: {args.from_git} is not a nanoGPT git directory holding commit {COMMIT[:7]}")
    except (OSError, RuntimeError) as e:
        sys.exit(f"nanogpt: {e}")


if __name__ == "__main__":
    main()
