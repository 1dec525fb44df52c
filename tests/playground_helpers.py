"""What the playground's browser tests share (test_playground.py, test_playground_chat.py):
Debian's chromium driven by Playwright, a real uvicorn server on a free port serving tiny random
models (a char GPT, a random Llama with a chat template, an encoder-decoder, a classifier, a QA
encoder; and a server of two chat models), a fresh page per test, and the steps a user takes (send
a message, set the sampling, reload the page)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]' (or make test)"
)
expect = sync_api.expect
from serve_helpers import QA_FIXTURE, make_model_dirs, running  # noqa: E402

STATIC = Path(__file__).resolve().parents[1] / "src" / "lmforge" / "server" / "static"
KEY = "s3cret-key"
TOKEN_DELAY = 0.015  # seconds added to each decoding step of the chat model, so a stream takes time


def chromium_path() -> str:
    """Debian's chromium (Playwright's own browser download is not used); $CHROMIUM overrides.
    Raises FileNotFoundError saying what is missing."""
    given = os.environ.get("CHROMIUM")
    if given:
        if not (os.path.isfile(given) and os.access(given, os.X_OK)):
            raise FileNotFoundError(f"CHROMIUM={given} is not an executable file")
        return given
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise FileNotFoundError("chromium is not installed: apt-get install chromium (make test does it)")
    return found


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        path = chromium_path()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random models tests/test_serve.py serves."""
    return {**make_model_dirs(tmp_path_factory.mktemp("playground")), "bert-qa": QA_FIXTURE}


@pytest.fixture(scope="module")
def models(dirs: dict[str, Path]) -> Iterator[dict[str, Any]]:
    from lmforge.server.models import load_models

    served = load_models([dirs[k] for k in ("gpt", "llama", "s2s", "clf", "bert-qa")], dtype="fp32")
    # every decoding step embeds its tokens once: a short sleep there makes a stream last long
    # enough to see it arrive piece by piece, whatever the decoder does
    hook = served["llama"].net.wte.register_forward_hook(lambda *_: time.sleep(TOKEN_DELAY))
    yield served
    hook.remove()


@pytest.fixture(scope="module")
def url(models: dict[str, Any]) -> Iterator[str]:
    from lmforge.server.app import Settings, create_app

    with running(create_app(models, Settings(max_tokens_limit=200))) as where:
        yield where


@pytest.fixture(scope="module")
def keyed_url(models: dict[str, Any]) -> Iterator[str]:
    from lmforge.server.app import Settings, create_app

    with running(create_app(models, Settings(max_tokens_limit=200, api_key=KEY))) as where:
        yield where


@pytest.fixture(scope="module")
def two_chats_url(dirs: dict[str, Path], models: dict[str, Any]) -> Iterator[str]:
    """A server of two chat models: "llama" and "tutor" (a copy of it under another name)."""
    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    tutor = dirs["llama"].parent / "tutor"
    if not tutor.exists():
        shutil.copytree(dirs["llama"], tutor)
    served = {"llama": models["llama"], **load_models([tutor], dtype="fp32")}
    with running(create_app(served, Settings(max_tokens_limit=200))) as where:
        yield where


def connected(page: Any, n: int = 5) -> None:
    """Wait until the page has the server's list of models."""
    said = f"connected: {n} model{'' if n == 1 else 's'}"
    expect(page.get_by_role("status", name="Connection")).to_have_text(said, timeout=30_000)


def open_page(browser: Any, url: str, n: int = 5) -> Any:
    """A page of the playground at url in a context of its own (its own sessionStorage)."""
    opened = browser.new_context().new_page()
    opened.set_default_timeout(30_000)  # two CPU cores shared with other work
    opened.goto(url)
    connected(opened, n)
    return opened


def reload(page: Any, n: int = 5) -> None:
    """F5, and wait until the page has the models again."""
    page.reload()
    connected(page, n)


def serve_only(page: Any, ids: list[str]) -> None:
    """The page is told the server serves only these models (its /v1/models answer filtered), as
    if the server had been restarted without the others."""

    def only(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["data"] = [m for m in body["data"] if m["id"] in ids]
        route.fulfill(response=response, json=body)

    page.route("**/v1/models", only)


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    opened = open_page(browser, url)
    yield opened
    opened.context.close()


def api(url: str, route: str, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = httpx.post(f"{url}/v1/{route}", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def set_sampling(page: Any, temperature: str = "0", max_tokens: str = "24", system: str | None = "") -> None:
    page.get_by_label("Temperature").fill(temperature)
    page.get_by_label("Max tokens").fill(max_tokens)
    if system is not None:  # chat only
        page.get_by_label("System prompt").fill(system)


def watch_reply(page: Any) -> None:
    """Record (time, text) of the newest assistant message at every change the page makes."""
    page.evaluate(
        """() => {
        window.snapshots = [];
        const log = document.getElementById("transcript");
        new MutationObserver(() => {
            const all = log.querySelectorAll(".message.assistant .content");
            if (all.length) window.snapshots.push([performance.now(), all[all.length - 1].textContent]);
        }).observe(log, {childList: true, subtree: true, characterData: true});
    }"""
    )


def send(page: Any, message: str) -> str:
    """Type a message, send it, wait for the reply to finish; the reply's text."""
    page.get_by_label("Message", exact=True).fill(message)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Chat statistics")).to_contain_text("finish:")
    return page.get_by_role("article", name="Assistant").last.locator(".content").text_content()


def chat_answer(url: str, messages: list[dict[str, str]], max_tokens: int = 24) -> dict[str, Any]:
    body = {"model": "llama", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "top_p": 1}
    return api(url, "chat/completions", body)


def options(page: Any) -> list[str]:
    return (
        page.get_by_label("Model", exact=True)
        .locator("option")
        .evaluate_all("options => options.map(o => o.value)")
    )
