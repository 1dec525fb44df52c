"""attention.html in a real headless browser (Debian's chromium driven by Playwright): it opens with
every network request refused, and hovering a token colours the tokens by the probabilities."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools.inspect import inspect

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' (or make test)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed: apt-get install chromium (make test does it)")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path)
        yield launched
        launched.close()


def _open(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """The page, with every request other than the file itself refused and recorded."""
    page = browser.new_page()
    asked: list[str] = []

    def refuse(route: Any) -> None:
        asked.append(route.request.url)
        route.abort()

    page.route(lambda url: not url.startswith("file://"), refuse)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(page_file.as_uri())
    assert errors == []
    return page, asked


def _alphas(page: Any, box: str) -> list[float]:
    """The background alpha of each token in #box (rgba(31, 100, 220, a))."""
    styles = page.eval_on_selector_all(f"#{box} .tok", "spans => spans.map(s => s.style.background)")
    return [float(s.rsplit(",", 1)[1].rstrip(")")) if s.startswith("rgba") else 1.0 for s in styles]


def test_hover_shows_where_a_token_attends(browser: Any, tmp_path: Path) -> None:
    text = "the king doth love"
    tok = Tokenizer.train_char([text + " fair lady"])
    config = ModelConfig(n_layer=2, n_head=3, n_embd=24, block_size=32, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    result = inspect(tmp_path / "gpt", text, out=tmp_path / "out")
    page, asked = _open(browser, tmp_path / "out" / "attention.html")
    tokens = page.eval_on_selector_all("#queries .tok", "spans => spans.map(s => s.textContent)")
    assert "".join(tokens) == text
    probs = result.attention["self"]  # (L, nh, T, T)
    page.select_option("#layer", index=1)  # block 2 (its label is "2": a string would match the label "1")
    page.hover("#queries .tok >> nth=6")  # the 'n' of king: hover shows its row of layer 1
    expected = probs[1, :, 6].mean(0)  # "mean" over heads is the default
    assert _alphas(page, "queries") == pytest.approx(expected.tolist(), abs=2 / 255)
    assert all(a == 0 for a in _alphas(page, "queries")[7:])  # causal: nothing after the token
    page.select_option("#head", "2")
    assert _alphas(page, "queries") == pytest.approx(probs[1, 2, 6].tolist(), abs=1 / 255)
    assert asked == []


def test_cross_attention_page_has_source_and_target(browser: Any, tmp_path: Path) -> None:
    tok = Tokenizer.train_char(["abcdef xyz"])
    config = ModelConfig(
        n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size, arch="seq2seq"
    )
    torch.manual_seed(0)
    model = Seq2Seq(config, tok.pad_id or 0)
    write_model_dir(tmp_path / "s2s", config, model.state_dict(), tok)
    result = inspect(tmp_path / "s2s", "abc", out=tmp_path / "out", target="xyz")
    page, asked = _open(browser, tmp_path / "out" / "attention.html")
    names = page.eval_on_selector_all("#map option", "os => os.map(o => o.textContent)")
    assert sorted(names) == ["cross", "decoder", "encoder"]
    page.select_option("#map", str(names.index("cross")))
    keys = page.eval_on_selector_all("#keys .tok", "spans => spans.map(s => s.textContent)")
    assert keys == result.source_tokens and len(keys) == 4  # a, b, c, EOS
    page.hover("#queries .tok >> nth=1")  # the target's 'y'
    expected = result.attention["cross"][0, :, 1].mean(0)
    assert _alphas(page, "keys") == pytest.approx(expected.tolist(), abs=2 / 255)
    assert asked == []
