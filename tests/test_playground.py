"""The web playground at `/` in a real headless browser (Debian's chromium driven by Playwright;
the server and models: tests/playground_helpers.py). Chat tokens appear in the page as they
stream and the final text equals the API's temperature-0 answer; history is sent and Clear
forgets it; the model picker offers only the models that can do the selected task; the
completion, translation, classification and question-answering tabs show the API's answers; only
the tabs a served model can do are offered; each reply names its model; a reload keeps the
conversation, drafts, tab, models and settings, and ignores a stored state that no longer fits; a
bad setting and a missing API key show the server's error in the page; model and user text are
never parsed as HTML. What depends on the moment a token arrives: tests/test_playground_chat.py.

Also a tool: `python tests/test_playground.py URL OUT.png MESSAGE...` sends each message in the
playground of a running `lmforge serve` (temperature 0) and takes a screenshot of the page."""

# ruff: noqa: F811 - the shared fixtures are imported by name and requested as parameters
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from playground_helpers import (  # noqa: F401 (fixtures are found by name)
    KEY,
    STATIC,
    TOKEN_DELAY,
    api,
    browser,
    chat_answer,
    chromium_path,
    connected,
    dirs,
    expect,
    keyed_url,
    models,
    open_page,
    options,
    page,
    reload,
    send,
    serve_only,
    set_sampling,
    sync_api,
    two_chats_url,
    url,
    watch_reply,
)

TABS = ["Chat", "Completion", "Translation", "Classification", "Question answering"]


def test_chat_streams_tokens_and_equals_the_api(page: Any, url: str) -> None:
    system = "You are a terse assistant."
    set_sampling(page, system=system)
    first = [{"role": "system", "content": system}, {"role": "user", "content": "Who is the king?"}]
    want = chat_answer(url, first)
    assert want["usage"]["completion_tokens"] >= 8, want  # long enough to stream in pieces

    watch_reply(page)
    started = time.monotonic()
    reply = send(page, "Who is the king?")
    assert reply == want["choices"][0]["message"]["content"]
    assert time.monotonic() - started >= 8 * TOKEN_DELAY

    # the reply grew in the page while it streamed: several growing prefixes, spread over time
    snapshots = page.evaluate("window.snapshots")
    texts = [text for _, text in snapshots if text]
    distinct = [t for i, t in enumerate(texts) if i == 0 or t != texts[i - 1]]
    assert len(distinct) >= 4, distinct
    assert all(b.startswith(a) for a, b in zip(distinct, distinct[1:], strict=False)), distinct
    assert distinct[-1] == reply
    first_seen = next(t for t, text in snapshots if text)
    last_change = max(t for t, text in snapshots if text == reply and text)
    assert last_change - first_seen >= 4 * TOKEN_DELAY * 1000, snapshots  # ms: not one block at the end
    stats = page.get_by_label("Chat statistics").text_content()
    assert f"{want['usage']['completion_tokens']} tokens" in stats
    assert f"finish: {want['choices'][0]['finish_reason']}" in stats

    # the second turn carries the history
    second = [*first, {"role": "assistant", "content": reply}, {"role": "user", "content": "And the queen?"}]
    assert send(page, "And the queen?") == chat_answer(url, second)["choices"][0]["message"]["content"]
    assert page.get_by_role("article").count() == 4

    # Clear forgets it: the same message again gives the first answer
    page.get_by_role("button", name="Clear conversation").click()
    assert page.get_by_role("article").count() == 0
    assert send(page, "Who is the king?") == reply


def test_model_picker_offers_the_models_of_the_task(page: Any) -> None:
    assert options(page) == ["llama"]  # the char GPT has no chat template
    tabs = [("Completion", ["gpt", "llama"]), ("Translation", ["s2s"]), ("Classification", ["clf"])]
    for tab, ids in [*tabs, ("Question answering", ["bert-qa"])]:
        page.get_by_role("tab", name=tab).click()
        expect(page.get_by_role("tab", name=tab)).to_have_attribute("aria-selected", "true")
        assert options(page) == ids, tab
    expect(page.get_by_label("Temperature")).to_be_hidden()  # no sampling settings for a classifier


def test_only_the_tabs_a_served_model_can_do_are_offered(page: Any) -> None:
    """A tab that could do nothing is not offered; a note says which tasks are left out and what
    model each needs. A server of one char GPT (no chat template) opens on Completion."""
    assert page.get_by_role("tab").all_text_contents() == TABS
    missing = page.get_by_role("note", name="Tasks not offered")
    expect(missing).to_be_hidden()

    serve_only(page, ["gpt"])
    reload(page, 1)
    assert page.get_by_role("tab").all_text_contents() == ["Completion"]
    expect(page.get_by_role("tab", name="Completion")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    assert options(page) == ["gpt"]
    expect(missing).to_have_text(
        "Not offered, as no served model can do them: Chat needs a text-generation model with a chat"
        " template; Translation needs a translation (encoder-decoder) model; Classification needs a"
        " text-classification model; Question answering needs a question-answering (span) model."
        " Give lmforge serve such a model's directory to get the tab."
    )

    serve_only(page, ["llama", "s2s"])  # the arrow keys go round the tabs offered
    reload(page, 2)
    assert page.get_by_role("tab").all_text_contents() == ["Chat", "Completion", "Translation"]
    page.get_by_role("tab", name="Chat").focus()
    page.keyboard.press("ArrowLeft")  # from the first tab round to the last one offered
    translation = page.get_by_role("tab", name="Translation")
    expect(translation).to_be_focused()
    expect(translation).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Chat")).to_be_focused()
    expect(missing).to_have_text(re.compile(r"^Not offered, as no served model can do them: Classification"))


def test_completion_tab_streams_the_api_answer(page: Any, url: str) -> None:
    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Model", exact=True).select_option("gpt")
    expect(page.get_by_label("System prompt")).to_be_hidden()
    set_sampling(page, max_tokens="12", system=None)
    page.get_by_label("Prompt", exact=True).fill("ROMEO:")
    page.get_by_role("button", name="Complete").click()
    expect(page.get_by_label("Completion statistics")).to_contain_text("finish:")
    body = {"model": "gpt", "prompt": "ROMEO:", "max_tokens": 12, "temperature": 0, "top_p": 1}
    want = api(url, "completions", body)["choices"][0]["text"]
    output = page.get_by_label("Completion output")
    assert output.locator(".generated").text_content() == want
    assert output.text_content() == "ROMEO:" + want


def test_a_completion_the_context_ended_says_so(page: Any, url: str) -> None:
    """`finish: length` alone read as Max tokens; here the reply fills the char GPT's 32 positions
    (more than the prompt leaves is a 400 since 2026-12-07: OpenAI's and vLLM's rule)."""
    prompt = "KING: the queen is dead, and th"  # 31 characters: room for 1 token
    body = {"model": "gpt", "prompt": prompt, "max_tokens": 1, "temperature": 0, "top_p": 1}
    answer = api(url, "completions", body)
    assert answer["choices"][0]["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 1
    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Model", exact=True).select_option("gpt")
    set_sampling(page, max_tokens="1", system=None)
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_role("button", name="Complete").click()
    stats = page.get_by_label("Completion statistics")
    expect(stats).to_contain_text("finish: length (the model's context of 32 tokens is full)")
    page.get_by_label("Prompt", exact=True).fill("KING:")  # Max tokens ended it: no word of the context
    page.get_by_role("button", name="Complete").click()
    expect(stats).to_contain_text("prompt 5 tokens")
    assert stats.text_content().endswith("finish: length")
    # an empty Max tokens (the default) sends null: the reply may fill the room the prompt leaves
    page.get_by_label("Max tokens").fill("")
    page.get_by_label("Prompt", exact=True).fill(prompt)
    with page.expect_request("**/v1/completions") as request:
        page.get_by_role("button", name="Complete").click()
    assert request.value.post_data_json["max_tokens"] is None
    expect(stats).to_contain_text("finish: length (the model's context of 32 tokens is full)")


def test_translation_tab_gives_the_translations(page: Any, url: str) -> None:
    page.get_by_role("tab", name="Translation").click()
    page.get_by_label("Text to translate (one sentence a line)").fill("the king\n\nthe queen is fair")
    page.get_by_role("button", name="Translate").click()
    items = page.get_by_role("list", name="Translations").get_by_role("listitem")
    expect(items).to_have_count(2)
    want = api(url, "translations", {"model": "s2s", "input": ["the king", "the queen is fair"]})["results"]
    assert items.all_text_contents() == [r["translation_text"] for r in want]
    assert any(r["translation_text"] for r in want)  # something to see


def test_classification_tab_shows_every_label_with_its_score(page: Any, url: str) -> None:
    page.get_by_role("tab", name="Classification").click()
    evil = "<img src=x onerror=\"document.title='pwned'\">"
    page.get_by_label("Text to classify (one text a line)").fill(f"the king is good\n{evil}")
    page.get_by_role("button", name="Classify").click()
    texts = page.get_by_role("list", name="Labels", exact=True).locator(":scope > li")
    expect(texts).to_have_count(2)
    body = {"model": "clf", "input": ["the king is good", evil], "top_k": None}
    want = api(url, "classifications", body)["results"]
    for item, ranked in zip(texts.all(), want, strict=True):
        rows = item.locator(".labels li")
        assert rows.locator(".label").all_text_contents() == [r["label"] for r in ranked]
        assert rows.locator(".score").all_text_contents() == [f"{r['score']:.3f}" for r in ranked]
    # the user's text is shown as text, never parsed as HTML
    assert texts.nth(1).locator("q").text_content() == evil
    assert page.locator("main img").count() == 0 and page.title() == "lmforge playground"

    page.get_by_label("Labels shown").fill("1")
    page.get_by_role("button", name="Classify").click()
    expect(texts.first.locator(".labels li")).to_have_count(1)
    assert texts.first.locator(".label").text_content() == want[0][0]["label"]


def test_question_answering_tab_shows_the_answers_in_the_context(page: Any, url: str) -> None:
    page.get_by_role("tab", name="Question answering").click()
    question, context = "Who kept the crown?", "The old king kept his <b>crown</b> in a tower by the sea."
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_label("Context (the text that holds the answer)").fill(context)
    page.get_by_label("Answers shown").fill("3")
    page.get_by_role("button", name="Answer", exact=True).click()
    items = page.get_by_role("list", name="Answers").get_by_role("listitem")
    expect(items).to_have_count(3)
    body = {"model": "bert-qa", "question": question, "context": context, "top_k": 3}
    want = api(url, "answers", {**body, "handle_impossible_answer": False})["results"]
    assert items.locator(".answer").all_text_contents() == [w["answer"] or "(no answer)" for w in want]
    assert items.locator(".score").all_text_contents() == [f"{w['score']:.3f}" for w in want]
    view = page.get_by_label("Answer in the context")
    assert view.text_content() == context  # the context as text, its <b> never parsed
    assert view.locator("mark").text_content() == context[want[0]["start"] : want[0]["end"]]
    assert page.locator("main b").count() == 0

    page.get_by_label("Answers shown").fill("")  # the server's default: the best answer alone
    page.get_by_label("may have no answer").check()
    page.get_by_role("button", name="Answer", exact=True).click()
    best = api(url, "answers", {**body, "top_k": 1, "handle_impossible_answer": True})["results"]
    expect(items).to_have_count(1)
    expect(items.locator(".answer")).to_have_text(best["answer"] or "(no answer)")


def test_a_bad_setting_shows_the_servers_error(page: Any) -> None:
    error = page.get_by_role("alert", name="Error")
    expect(error).to_be_hidden()
    set_sampling(page, temperature="5")
    page.get_by_label("Message", exact=True).fill("Who is the king?")
    page.get_by_role("button", name="Send").click()
    expect(error).to_be_visible()
    expect(error).to_contain_text("400: temperature: Input should be less than or equal to 2")
    assert page.get_by_role("article").count() == 0  # the failed turn is undone
    expect(page.get_by_label("Message", exact=True)).to_have_value("Who is the king?")  # and the text kept

    set_sampling(page, max_tokens="100000")
    page.get_by_role("button", name="Send").click()
    expect(error).to_contain_text("above this server's limit of 200")
    set_sampling(page)  # fixed: the error goes, the reply comes
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Chat statistics")).to_contain_text("finish:")
    expect(error).to_be_hidden()


def test_a_server_with_an_api_key_asks_for_it(browser: Any, keyed_url: str) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(keyed_url)
    status = page.get_by_role("status", name="Connection")
    expect(status).to_have_text("this server needs an API key")
    key = page.get_by_label("API key", exact=True)
    expect(key).to_be_visible()
    assert options(page) == []
    expect(page.get_by_role("tab")).to_have_count(0)  # no tab before the server says what it serves
    key.fill("wrong")
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert", name="Error")).to_contain_text("missing or wrong API key")
    key.fill(KEY + "\u200b")  # a pasted zero-width space: fetch cannot send it, the page says why
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert", name="Error")).to_have_text(
        f"the API key cannot be sent: it holds U+200B (character {len(KEY) + 1}), and a key is printable"
        " ASCII; type it again"
    )
    expect(status).to_have_text("this server needs an API key")  # not "cannot reach the server"
    key.fill(KEY)
    page.get_by_role("button", name="Connect").click()
    expect(status).to_have_text("connected: 5 models")
    assert options(page) == ["llama"]
    set_sampling(page, max_tokens="8")
    hi = [{"role": "user", "content": "Hi"}]
    body = {"model": "llama", "messages": hi, "max_tokens": 8, "temperature": 0, "top_p": 1}
    want = api(keyed_url, "chat/completions", body, key=KEY)
    assert send(page, "Hi") == want["choices"][0]["message"]["content"]
    page.reload()  # the key is kept in the page only, never stored: a reload asks for it again
    expect(status).to_have_text("this server needs an API key")
    assert KEY not in page.evaluate("JSON.stringify(sessionStorage)")
    key.fill(KEY)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("article", name="Assistant")).to_have_count(1)  # the conversation is back
    context.close()


def test_a_reload_keeps_the_conversation_drafts_tab_and_settings(page: Any) -> None:
    """F5 brings back the conversation, the message and prompt drafts, the tab, each tab's model
    and the settings; the next turn carries the conversation. Clear forgets the stored conversation
    (the settings stay); Reset settings puts the defaults back, for good."""
    system = "You are a terse assistant."
    set_sampling(page, system=system)
    page.get_by_label("Top p").fill("0.9")
    page.get_by_label("Repetition penalty").fill("1.2")
    page.get_by_label("Seed").fill("7")
    reply = send(page, "Who is the king?")
    stats = page.get_by_label("Chat statistics").text_content()
    message = page.get_by_label("Message", exact=True)
    message.fill("And the queen?")
    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Model", exact=True).select_option("gpt")
    page.get_by_label("Prompt", exact=True).fill("ROMEO:")

    reload(page)
    expect(page.get_by_role("tab", name="Completion")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_label("Model", exact=True)).to_have_value("gpt")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("ROMEO:")
    settings = {
        "Temperature": "0",
        "Top p": "0.9",
        "Repetition penalty": "1.2",
        "Max tokens": "24",
        "Seed": "7",
    }
    for label, value in settings.items():
        expect(page.get_by_label(label)).to_have_value(value)
    page.get_by_role("tab", name="Chat").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value("llama")
    expect(page.get_by_label("System prompt")).to_have_value(system)
    expect(message).to_have_value("And the queen?")
    assert page.get_by_role("article").locator(".content").all_text_contents() == ["Who is the king?", reply]
    expect(page.get_by_label("Chat statistics")).to_have_text(stats)

    with page.expect_request("**/v1/chat/completions") as request:
        send(page, "And the queen?")
    sent = request.value.post_data_json
    assert sent["messages"] == [
        {"role": "system", "content": system},
        {"role": "user", "content": "Who is the king?"},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And the queen?"},
    ]
    assert (sent["top_p"], sent["repetition_penalty"], sent["seed"]) == (0.9, 1.2, 7)

    page.get_by_role("button", name="Clear conversation").click()
    reload(page)
    expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true")
    assert page.get_by_role("article").count() == 0
    expect(page.get_by_label("Chat statistics")).to_have_text("")
    expect(page.get_by_label("System prompt")).to_have_value(system)

    page.get_by_role("button", name="Reset settings").click()
    reload(page)
    defaults = {"Temperature": "0.7", "Top p": "1", "Repetition penalty": "1", "Max tokens": "",
                "Seed": "", "System prompt": ""}  # fmt: skip
    for label, value in defaults.items():
        expect(page.get_by_label(label)).to_have_value(value)


def test_a_reload_keeps_each_tabs_last_result(page: Any, url: str) -> None:
    """The completion, the translations, the labels and the answers in their context come back
    after F5, as they were shown; a stored result of the wrong shape is passed over."""
    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Model", exact=True).select_option("gpt")
    set_sampling(page, max_tokens="6", system=None)
    page.get_by_label("Prompt", exact=True).fill("ROMEO:")
    page.get_by_role("button", name="Complete").click()
    completion_stats = page.get_by_label("Completion statistics")
    expect(completion_stats).to_contain_text("finish:")
    completion = page.get_by_label("Completion output").text_content()
    page.get_by_role("tab", name="Translation").click()
    page.get_by_label("Text to translate (one sentence a line)").fill("the king\nthe queen is fair")
    page.get_by_role("button", name="Translate").click()
    translations = page.get_by_role("list", name="Translations").get_by_role("listitem")
    expect(translations).to_have_count(2)
    page.get_by_role("tab", name="Classification").click()
    page.get_by_label("Text to classify (one text a line)").fill("the king is good")
    page.get_by_role("button", name="Classify").click()
    labels = page.get_by_role("list", name="Labels", exact=True).locator(".labels li")
    expect(labels).not_to_have_count(0)
    page.get_by_role("tab", name="Question answering").click()
    page.get_by_label("Question", exact=True).fill("Who kept the crown?")
    page.get_by_label("Context (the text that holds the answer)").fill("The old king kept his crown.")
    page.get_by_role("button", name="Answer", exact=True).click()
    answers = page.get_by_role("list", name="Answers").get_by_role("listitem")
    expect(answers).to_have_count(1)
    seen = {
        "completion": (completion, completion_stats.text_content()),
        "translations": translations.all_text_contents(),
        "labels": (
            labels.locator(".label").all_text_contents(),
            labels.locator(".score").all_text_contents(),
        ),
        "answers": (answers.all_text_contents(), page.get_by_label("Answer in the context").inner_html()),
    }

    reload(page)
    expect(page.get_by_role("tab", name="Question answering")).to_have_attribute("aria-selected", "true")
    assert seen == {
        "completion": (
            page.get_by_label("Completion output").text_content(),
            completion_stats.text_content(),
        ),
        "translations": translations.all_text_contents(),
        "labels": (
            labels.locator(".label").all_text_contents(),
            labels.locator(".score").all_text_contents(),
        ),
        "answers": (answers.all_text_contents(), page.get_by_label("Answer in the context").inner_html()),
    }

    # a result of the wrong shape (a score that is text) is passed over; the others come back
    stored = json.loads(page.evaluate("sessionStorage.getItem('lmforge-playground')"))
    stored["shown"]["qa"]["answers"][0]["score"] = "high"
    page.goto(f"{url}/health")  # away first: the playground writes its own state as it leaves
    page.evaluate("s => sessionStorage.setItem('lmforge-playground', s)", json.dumps(stored))
    page.goto(url)
    connected(page)
    expect(answers).to_have_count(0)
    expect(page.get_by_role("alert", name="Error")).to_be_hidden()
    assert translations.all_text_contents() == seen["translations"]


def test_a_stored_state_that_no_longer_fits_is_ignored(page: Any, url: str) -> None:
    """Corrupt JSON, another version or a wrong shape in storage: the page starts fresh and works.
    A stored tab no served model can do now, a stored model no longer served: passed over."""
    store = "s => sessionStorage.setItem('lmforge-playground', s)"  # from /health: the page leaving
    # the playground would write its own state over it
    fits = {"version": 1, "task": "chat", "models": {}, "fields": {}, "stats": "", "history": []}
    wrong = [json.dumps({**fits, "version": 2}), json.dumps({**fits, "history": [{"role": "robot"}]})]
    for broken in ["{not json", *wrong]:
        page.goto(f"{url}/health")
        page.evaluate(store, broken)
        page.goto(url)
        connected(page)
        expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true")
        expect(page.get_by_role("alert", name="Error")).to_be_hidden()
        assert page.get_by_role("article").count() == 0
        assert page.evaluate("sessionStorage.getItem('lmforge-playground')") is None  # dropped
    set_sampling(page, max_tokens="4")
    reply = send(page, "Hi")  # the page works

    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Model", exact=True).select_option("gpt")
    page.get_by_role("tab", name="Translation").click()
    serve_only(page, ["llama", "clf", "bert-qa"])  # restarted without the GPT and the translator
    reload(page, 3)
    expect(page.get_by_role("tab", name="Chat")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("article", name="Assistant").locator(".content")).to_have_text(reply)
    page.get_by_role("tab", name="Completion").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value("llama")
    expect(page.get_by_role("alert", name="Error")).to_be_hidden()


def test_each_reply_names_its_model(browser: Any, two_chats_url: str) -> None:
    """A conversation that changes model between turns says which model wrote which reply, on the
    page and in each reply's accessible name, and still does after a reload."""
    page = open_page(browser, two_chats_url, 2)
    set_sampling(page, max_tokens="6")
    send(page, "Hi")
    page.get_by_label("Model", exact=True).select_option("tutor")
    with page.expect_request("**/v1/chat/completions") as request:
        send(page, "Again")
    assert request.value.post_data_json["model"] == "tutor"
    for reloaded in (False, True):
        if reloaded:
            reload(page, 2)
        replies = page.get_by_role("article", name="Assistant")
        assert replies.locator(".model").all_text_contents() == ["llama", "tutor"]
        expect(replies.first).to_have_accessible_name("Assistant, llama")
        expect(replies.last).to_have_accessible_name("Assistant, tutor")
        expect(page.get_by_role("article", name="You").first).to_have_accessible_name("You")
    expect(page.get_by_label("Model", exact=True)).to_have_value("tutor")
    size = "e => parseFloat(getComputedStyle(e).fontSize)"  # small beside the reply's text
    assert replies.first.locator(".model").evaluate(size) < replies.first.locator(".content").evaluate(size)
    page.context.close()


def test_the_page_never_writes_html() -> None:
    """Model and user text go into the page with textContent only."""
    scripts = sorted(STATIC.glob("*.js"))
    assert [p.name for p in scripts] == ["api.js", "chat.js", "playground.js", "store.js", "tasks.js"]
    for path in scripts:
        script = path.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in script, (path.name, sink)


def screenshot(url: str, out: Path, messages: list[str], max_tokens: int = 120) -> None:
    """Chat with a running server's playground at temperature 0 and save a screenshot."""
    path = chromium_path()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path)
        page = browser.new_page(viewport={"width": 1100, "height": 680}, device_scale_factor=1)
        page.set_default_timeout(300_000)
        page.goto(url)
        expect(page.get_by_role("status", name="Connection")).to_contain_text("connected")
        set_sampling(page, max_tokens=str(max_tokens), system="You are a helpful assistant. Answer briefly.")
        for message in messages:
            send(page, message)
        page.screenshot(path=str(out), full_page=False)
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit("usage: python tests/test_playground.py URL OUT.png MESSAGE [MESSAGE ...]")
    screenshot(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])
