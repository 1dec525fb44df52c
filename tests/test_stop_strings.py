"""Stop strings in `generate` (and `lmforge generate --stop`): the text ends before the first one,
streamed or not, one prompt or a batch; the stream never shows the start of a stop string that
may still come; the server cuts its rows with the same functions (tests/test_serve.py)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.inference.generate import generate
from lmforge.inference.text_stream import TextStream, check_stops, cut_at_stop, held_back
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

GREEDY = {"temperature": 0.0, "max_new_tokens": 40, "dtype": "fp32", "compile": False}


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tok = Tokenizer.train_char(["abcdefgh ."])
    torch.manual_seed(0)  # greedy: abbbbbbbbbbbb and cccccdddddaa
    net = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size))
    out = tmp_path_factory.mktemp("gpt") / "gpt"
    write_model_dir(out, net.config, net.state_dict(), tok)
    return out


def _stop_in(text: str) -> str:
    """A two-character string of `text` that first occurs past its start (so something is kept)."""
    return next(text[i : i + 2] for i in range(3, len(text) - 1) if text.find(text[i : i + 2]) == i)


def test_the_text_ends_before_the_first_stop_string(gpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = generate(gpt, "ab", **GREEDY)[0][2:]
    stop = _stop_in(whole)
    cut = whole[: whole.index(stop)]
    assert generate(gpt, "ab", stop=stop, **GREEDY) == ["ab" + cut]
    assert generate(gpt, "ab", stop=["zz", stop], **GREEDY) == ["ab" + cut]  # any of several
    assert generate(gpt, "ab", stop="zz", **GREEDY) == ["ab" + whole]  # never met: the whole text
    capsys.readouterr()
    assert generate(gpt, "ab", stop=stop, stream=True, **GREEDY) == ["ab" + cut]
    assert capsys.readouterr().out == "ab" + cut + "\n"  # streamed: the same text, nothing after


def test_a_batch_cuts_each_row_as_alone(gpt: Path) -> None:
    prompts = ["ab", "h. c"]
    alone = [generate(gpt, p, **GREEDY)[0][len(p) :] for p in prompts]
    stops = [_stop_in(a) for a in alone]
    expected = [p + cut_at_stop(a, stops)[0] for p, a in zip(prompts, alone, strict=True)]
    assert all(len(e) < len(p + a) for e, p, a in zip(expected, prompts, alone, strict=True))
    assert generate(gpt, prompts, stop=stops, **GREEDY) == expected


def test_the_command_line_takes_several(gpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = generate(gpt, "ab", **GREEDY)[0][2:]
    stop = _stop_in(whole)
    capsys.readouterr()
    args = ["generate", str(gpt), "--prompt", "ab", "--temperature", "0", "--max-new-tokens", "40"]
    assert main([*args, "--stop", "zz", "--stop", stop, "--dtype", "fp32", "--no-compile"]) == 0
    assert capsys.readouterr().out == "ab" + whole[: whole.index(stop)] + "\n"


def test_the_stream_holds_back_what_may_start_a_stop_string() -> None:
    tok = Tokenizer.train_char(["hello world!"])
    written: list[str] = []
    out = io.StringIO()
    stream = TextStream(tok, out=out, stops=["wo", "lo!"])
    ends = []
    for token in tok.encode("hello world"):
        ends.append(stream(0, token))
        written.append(out.getvalue())
    # "l" and "lo" may start "lo!", "w" may start "wo": held until the next character says
    assert written[:8] == ["h", "he", "he", "hel", "hel", "hello ", "hello ", "hello "]
    assert ends.index(True) == 7 and stream.finish() == "hello "  # "wo" ended it
    out = io.StringIO()
    stream = TextStream(tok, out=out, stops=["lo!"])
    for token in tok.encode("hello"):
        assert not stream(0, token)
    assert out.getvalue() == "hel" and stream.finish() == "hello" and out.getvalue() == "hello"


def test_cut_and_hold() -> None:
    assert cut_at_stop("a.b.c", [".", "b"]) == ("a", True)
    assert cut_at_stop("abc", []) == ("abc", False)
    assert held_back("the end\n", ["\n\n"]) == 1 and held_back("the end", ["\n\n"]) == 0


def test_held_back_is_the_longest_prefix_of_a_stop_that_ends_the_text() -> None:
    """Knuth-Morris-Pratt (linear; trying every prefix was quadratic in a stop's length, on every
    token) gives what the definition gives: on small alphabets, where prefixes overlap most."""
    rng = random.Random(0)
    for n in range(20_000):
        letters = "ab" if n % 2 else "abc"
        text = "".join(rng.choices(letters, k=rng.randint(0, 14)))
        stops = ["".join(rng.choices(letters, k=rng.randint(1, 12))) for _ in range(rng.randint(0, 3))]
        defined = max((k for s in stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        assert held_back(text, stops) == defined, (text, stops)
    long = "x" * 1_000_000
    assert held_back("x" * 3000 + "y" + "x" * 3000, [long]) == 3000 and held_back(" Paris.", [long]) == 0


def test_a_stop_that_is_no_text_is_one_line(tmp_path: Path) -> None:
    """5 raised a TypeError; b"x" was refused as 120, its first byte."""
    for bad, said in ((5, "5"), (b"x", "b'x'")):
        with pytest.raises(LmforgeError, match=rf"^stop: {said} is not a stop string or a list of them$"):
            generate(tmp_path / "missing", "a", stop=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", [""], ["a", 3]])
def test_an_empty_stop_string_is_refused_before_the_model_loads(tmp_path: Path, bad: object) -> None:
    with pytest.raises(LmforgeError, match=r"^stop: .* is not a stop string \(a non-empty text\)$"):
        generate(tmp_path / "missing", "a", stop=bad)  # type: ignore[arg-type]
    assert check_stops(None) == [] and check_stops("x") == ["x"]


def test_a_stop_string_never_matches_half_a_character() -> None:
    """' na' + the first byte of 'ï' decodes to ' na\\ufffd' until the next token brings the rest:
    a stop string ending in U+FFFD matched it and ended 'naïve' mid-word, in a stream, a batch and
    the server's rows; a real U+FFFD ending the reply still stops it."""
    from lmforge.inference.text_stream import StopWatch
    from lmforge.server.decoding import Row

    tok = Tokenizer.train_bpe(["caf\u00e9 na\u00efve the cat " * 20], vocab_size=300)
    ids = [tok.hf.token_to_id(t) for t in ("\u0120the", "\u0120na\u00c3", "\u00afve")]
    assert tok.decode(ids[:2]) == " the na\ufffd" and tok.decode(ids) == " the na\u00efve"
    stops = ["na\ufffd"]
    stream, watch, row = TextStream(tok, out=io.StringIO(), stops=stops), StopWatch(tok, 1, stops), Row()
    for token in ids:
        row.ids.append(token)
        assert not stream(0, token) and not watch(0, token)
        row.pending(tok, stops)
        assert row.finish is None
    assert stream.finish() == " the na\u00efve"
    assert cut_at_stop(tok.decode(ids[:2]), stops) == (" the ", True)  # the whole reply, as it ended
