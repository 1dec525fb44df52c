"""What the serving tests share (test_serve*.py, test_playground.py): the tiny random models they
serve, and a real uvicorn server on a free port, started in a thread and stopped at the end."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

QA_FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"  # a tiny random BertForQuestionAnswering


def make_model_dirs(root: Path, block_size: int = 32) -> dict[str, Path]:
    """A char GPT ("gpt"), an encoder-decoder ("s2s"), a classifier ("clf") and a random Llama with
    a ChatML template ("llama"), written under root."""
    from conftest import make_text
    from test_chat import make_chat_llama

    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.formats.lmforge_dirs import save_classifier
    from lmforge.model.classifier import Classifier
    from lmforge.model.gpt import GPT
    from lmforge.model.seq2seq import Seq2Seq
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char([make_text(lines=200)])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=block_size, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(root / "gpt", config, GPT(config).state_dict(), tok)
    s2s = Seq2Seq(ModelConfig(**{**config.__dict__, "arch": "seq2seq"}), tok.pad_id or 0)
    write_model_dir(root / "s2s", s2s.config, s2s.state_dict(), tok)
    save_classifier(Classifier(GPT(config), ["neg", "pos"]), root / "clf", tok)
    make_chat_llama(root / "llama")
    return {name: root / name for name in ("gpt", "s2s", "clf", "llama")}


def make_endless_gpt(root: Path, block_size: int = 2**16) -> Path:
    """A char GPT ("endless", under root) whose completions run until max_tokens or its long
    context: its vocabulary has no end-of-text token to stop at. For the tests that need a
    decode still running (timeouts, a full queue, clients leaving, shutdown)."""
    from conftest import make_text
    from tokenizers import Tokenizer as HFTokenizer

    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.model.gpt import GPT
    from lmforge.tokenization.tokenizer import EOS, Tokenizer

    char = Tokenizer.train_char([make_text(lines=200)])
    tok = Tokenizer(HFTokenizer.from_str(char.hf.to_str().replace(EOS, "<|not-an-end|>")))
    assert tok.eos_id is None
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=block_size, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(root / "endless", config, GPT(config).state_dict(), tok)
    return root / "endless"


def serve_argv(*args: str | Path) -> list[str]:
    """`python -m lmforge serve ARGS...` as a child process runs it."""
    import sys

    return [sys.executable, "-m", "lmforge", "serve", *map(str, args)]


def wait_healthy(port: int, proc: Any = None, seconds: float = 60) -> None:
    """Poll a served process's /health until it answers 200 (or `proc` exits, or time is up)."""
    import httpx

    deadline = time.monotonic() + seconds
    while (proc is None or proc.poll() is None) and time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve app with uvicorn on a free loopback port; yields its URL, stops it on exit."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
