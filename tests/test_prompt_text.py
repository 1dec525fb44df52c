"""Text that is not valid Unicode (a lone surrogate: Python's stand-in for an undecodable byte in
argv or stdin, or JSON's "\\ud800") is refused by every tokenizer's encode with one clear
LmforgeError naming the character, never the tokenizer library's bare TypeError or RuntimeError;
the CLI prints it as one line (generate, chat)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_text

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer, check_text

BAD = [
    ("ab\udcffcd", "a lone surrogate U+DCFF, the undecodable byte 0xff, at character 2"),
    ("\ud800", "a lone surrogate U+D800, at character 0"),
]


@pytest.fixture(scope="module")
def char() -> Tokenizer:
    return Tokenizer.train_char([make_text(lines=50)])


@pytest.mark.parametrize("text,where", BAD)
def test_every_tokenizer_names_the_bad_character(char: Tokenizer, text: str, where: str) -> None:
    bpe = Tokenizer.train_bpe([make_text(lines=50)], 300)
    for tokenizer in (char, bpe):
        with pytest.raises(LmforgeError) as e:
            tokenizer.encode(text)
        assert str(e.value) == f"the text is not valid UTF-8 ({where})"
    with pytest.raises(LmforgeError, match="at character 70000"):  # the parallel path of long text
        char.encode("a" * 70_000 + "\udfff")
    assert char.encode("ab") == char.encode("a") + char.encode("b")  # valid text is untouched
    check_text("é ✓ 😀")  # any valid character passes


def test_marian_tokenizer_too(tmp_path: Path) -> None:
    from marian_helpers import make_marian_tokenizer

    from lmforge.tokenization.marian import MarianTokenizer

    make_marian_tokenizer(tmp_path)
    tokenizer = MarianTokenizer(tmp_path)
    for encode in (tokenizer.encode, tokenizer.encode_target):
        with pytest.raises(LmforgeError, match=r"\(a lone surrogate U\+D800, at character 7\)"):
            encode(">>fr<< \ud800")


def test_the_cli_prints_one_line(tmp_path: Path, char: Tokenizer, capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.model.gpt import GPT

    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=char.vocab_size)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), char)
    # `--prompt $'ab\xffcd'` under a UTF-8 locale: Python decodes argv with surrogateescape
    assert main(["generate", str(tmp_path / "gpt"), "--prompt", "ab\udcffcd", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert err == f"lmforge: error: the text is not valid UTF-8 ({BAD[0][1]})\n"


def test_chat_from_stdin_stops_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Latin-1 byte in piped stdin (surrogateescape again): chat's one-line error, exit 2."""
    from test_chat import make_chat_llama

    torch.manual_seed(0)
    make_chat_llama(tmp_path / "llama")
    capsys.readouterr()  # transformers' progress bars
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi \udcff there\n"))
    assert main(["chat", str(tmp_path / "llama"), "--max-new-tokens", "2", "--dtype", "fp32"]) == 2
    err = capsys.readouterr().err
    assert "the text is not valid UTF-8 (a lone surrogate U+DCFF, the undecodable byte 0xff" in err
    assert all(line.startswith("lmforge: ") for line in err.splitlines())  # no traceback
