"""Streamed text with a byte-fallback tokenizer (Llama 2, Mistral, Gemma: <0xNN> tokens): HF's
ByteFallback decoder turns a run of byte tokens that is not valid UTF-8 into one U+FFFD per token,
so a token can change the text of the run before it. What `generate`/`chat` print and the server's
SSE deltas send must add up to the final text, transformers' `tokenizer.decode` of the ids: for a
valid character split across tokens, an invalid run, a run ended by a normal token, and the end of
the continuation inside a run (and byte-level BPE stays right). A stream printed "\\x05\\x06" where
the text was three U+FFFD until 2026-12-07."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from test_gemma3 import gemma_tokenizer

import lmforge
from lmforge.config import ModelConfig
from lmforge.formats.directory import write_model_dir
from lmforge.inference.text_stream import TextStream
from lmforge.model.gpt import GPT
from lmforge.server.decoding import Row
from lmforge.tokenization.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gemma(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, Path]:
    directory = tmp_path_factory.mktemp("gemma-tok")
    gemma_tokenizer(directory)
    return Tokenizer.load(directory), directory


def byte(tok: Tokenizer, b: int) -> int:
    return int(tok.hf.token_to_id(f"<0x{b:02X}>"))


def word(tok: Tokenizer, text: str) -> int:
    ids = tok.encode(text)
    assert len(ids) == 1 and not tok.hf.id_to_token(ids[0]).startswith("<0x"), (text, ids)
    return ids[0]


def forced(tok: Tokenizer) -> list[int]:
    """\\x05 \\x06 then E2 (no character: all three U+FFFD) ended by "a"; é split in C3 A9, ended
    by "b"; the end inside the run F0 9F (half an emoji)."""
    b = lambda x: byte(tok, x)  # noqa: E731
    return [b(0x05), b(0x06), b(0xE2), word(tok, "a"), b(0xC3), b(0xA9), word(tok, "b"), b(0xF0), b(0x9F)]


def streamed(tok: Tokenizer, ids: list[int], stops: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The pieces `generate`'s stream writes and the server's row sends for each token (until a stop
    string ends them), then the rest each gives at the end."""
    out = io.StringIO()
    stream = TextStream(tok, out, stops)
    row = Row()
    pieces, deltas = [], []
    for token in ids:
        before = out.getvalue()
        stopped = stream(0, token)
        pieces.append(out.getvalue()[len(before) :])
        row.ids.append(token)
        deltas.append(row.pending(tok, list(stops)))
        assert stopped == (row.finish == "stop")
        if stopped:
            break
    before = out.getvalue()
    stream.finish()
    pieces.append(out.getvalue()[len(before) :])
    deltas.append(row.settle(tok, list(stops)))
    return pieces, deltas


def test_a_stream_never_shows_what_a_later_byte_token_changes(gemma: tuple[Tokenizer, Path]) -> None:
    tok, directory = gemma
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    ids = forced(tok)
    final = theirs.decode(ids, skip_special_tokens=True)
    assert final == "\ufffd\ufffd\ufffda" + "éb" + "\ufffd\ufffd" == tok.decode(ids)
    pieces, deltas = streamed(tok, ids)
    # held back only while a run is open: each run comes whole with the token that ends it
    assert pieces == deltas == ["", "", "", "\ufffd\ufffd\ufffda", "", "", "éb", "", "", "\ufffd\ufffd"]
    b = lambda x: byte(tok, x)  # noqa: E731
    cases = [
        [b(0xC3), b(0xA9), b(0x80)],  # "é" so far, then no character at all
        [b(0x05), b(0x05)],  # valid bytes to the end
        [word(tok, "a"), b(0xE2), b(0x82), b(0xAC), word(tok, "a")],  # € split in three
        [b(0xE2), word(tok, "b"), b(0xE2)],
    ]
    for ids in cases:
        want = theirs.decode(ids, skip_special_tokens=True)
        pieces, deltas = streamed(tok, ids)
        assert "".join(pieces) == "".join(deltas) == want, (ids, pieces, deltas)
    # a stop string inside a run's text ends the row there, as the final text is cut
    ids = [b(0x05), b(0x05), b(0xC3), b(0xA9), b(0x80)]
    pieces, deltas = streamed(tok, ids, ["\x05é"])
    assert "".join(pieces) == "".join(deltas) == "\x05"

    # byte-level BPE (GPT-2's, lmforge's own) stays as it was: only a half character waits
    bpe = Tokenizer.train_bpe(["the king and the queen " * 50], 300)
    ids = bpe.encode("the é€ king 😀")
    assert len(ids) > len("the é€ king 😀") - 8  # the characters' bytes are tokens of their own
    for cut in range(1, len(ids) + 1):  # every end, mid-character ones included
        pieces, deltas = streamed(bpe, ids[:cut])
        assert "".join(pieces) == "".join(deltas) == bpe.decode(ids[:cut])
        assert all("\ufffd" not in p for p in pieces[:-1])  # a half character waits for its rest


def forced_model(root: Path, tok: Tokenizer, chain: list[int]) -> Path:
    """A GPT whose greedy next token depends on the last one alone, `chain[i]` -> `chain[i + 1]`:
    one-hot embeddings, no position embedding, attention and MLP outputs zeroed, the head mapping
    each token to its successor (every other token to itself)."""
    vocab = tok.vocab_size
    config = ModelConfig(
        n_layer=1, n_head=1, n_embd=vocab, block_size=32, vocab_size=vocab, tie_embeddings=False
    )
    state = GPT(config).state_dict()
    for name in ("wpe.weight", "blocks.0.attn.proj.weight", "blocks.0.attn.proj.bias"):
        state[name] = torch.zeros_like(state[name])
    state["blocks.0.mlp.down.weight"] = torch.zeros_like(state["blocks.0.mlp.down.weight"])
    state["blocks.0.mlp.down.bias"] = torch.zeros_like(state["blocks.0.mlp.down.bias"])
    state["wte.weight"] = torch.eye(vocab)
    head = torch.eye(vocab)
    for a, b in zip(chain, chain[1:], strict=False):
        head[:, a] = 0
        head[b, a] = 1.0
    state["lm_head.weight"] = head
    write_model_dir(root, config, state, tok)
    return root


def test_the_cli_and_the_server_stream_the_final_text(
    gemma: tuple[Tokenizer, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import create_app
    from lmforge.server.models import load_models

    tok, directory = gemma
    theirs = transformers.PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
    ids = forced(tok)
    start = word(tok, "c")
    model = forced_model(tmp_path / "forced", tok, [start, *ids])
    final = theirs.decode(ids, skip_special_tokens=True)

    text = lmforge.generate(model, "c", max_new_tokens=len(ids), temperature=0.0, stream=True, compile=False)
    assert text == ["c" + final]
    assert capsys.readouterr().out == "c" + final + "\n"  # what the terminal showed, piece by piece

    body = {"model": "forced", "prompt": [start], "max_tokens": len(ids), "temperature": 0}
    with TestClient(create_app(load_models([model], dtype="fp32"))) as api:
        whole = api.post("/v1/completions", json=body).json()["choices"][0]["text"]
        events = api.post("/v1/completions", json={**body, "stream": True, "n": 2}).text
    assert whole == final
    chunks = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: {")]
    for i in range(2):
        deltas = [c["choices"][0]["text"] for c in chunks if c["choices"][0]["index"] == i]
        assert "".join(deltas) == final and "\x05" not in "".join(deltas), deltas
