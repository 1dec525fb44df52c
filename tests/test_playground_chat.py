"""The playground's chat where the moment a token arrives matters: Stop or Clear before or after
the first token, a lost connection or a server's error event mid-reply, following a growing reply,
keys (IME composition, Escape, Ctrl+Enter), a draft typed meanwhile, tokens/s from the first
token, a reload while a reply streams. The page's fetch of the streaming routes is replaced by a
stream the test writes (FAKE_STREAM), so timing is the test's, not the CPU's. Server and models:
playground_helpers.py."""

# ruff: noqa: F811 - the shared fixtures are imported by name and requested as parameters
from __future__ import annotations

import json
import re
from typing import Any

from playground_helpers import (  # noqa: F401 (fixtures are found by name)
    browser,
    dirs,
    expect,
    models,
    page,
    reload,
    send,
    set_sampling,
    url,
)

# window.fetch for the two streaming routes, replaced by a stream the test writes: feed(text) adds
# SSE text, end() closes it, fail() breaks it as a lost connection does in Chromium, and Stop's
# abort ends it as a real fetch's does; the request bodies are kept in window.sent. For what
# depends on when tokens arrive (Stop or Clear before or after the first, scrolling, timing).
FAKE_STREAM = """() => {
    window.sent = [];
    const real = window.fetch;
    window.fetch = (path, init) => {
        if (!/v1\\/(chat\\/)?completions$/.test(path)) return real(path, init);
        window.sent.push(JSON.parse(init.body));
        const encoder = new TextEncoder();
        const body = new ReadableStream({start(stream) {
            window.feed = (text) => stream.enqueue(encoder.encode(text));
            window.end = () => stream.close();
            window.fail = () => stream.error(new TypeError("network error"));
            const aborted = () => stream.error(new DOMException("aborted", "AbortError"));
            init.signal.addEventListener("abort", aborted);
        }});
        return Promise.resolve(new Response(body, {headers: {"Content-Type": "text/event-stream"}}));
    };
}"""


def fake_stream(page: Any) -> None:
    page.evaluate(FAKE_STREAM)


def event(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def delta(text: str) -> str:
    """A chat chunk that adds text to the reply."""
    return event({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def feed(page: Any, *texts: str) -> None:
    for text in texts:
        page.evaluate("text => window.feed(text)", text)


def finish_stream(page: Any, completion_tokens: int = 1) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": completion_tokens}
    feed(page, event({"choices": [], "usage": usage}), event("[DONE]"))
    page.evaluate("window.end()")


def start_chat(page: Any, message: str) -> None:
    """Type and send a message, on a fake stream; wait for the page to show the turn."""
    page.get_by_label("Message", exact=True).fill(message)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()


def reply_text(page: Any) -> Any:
    return page.get_by_role("article", name="Assistant").last.locator(".content")


def test_clear_while_a_reply_streams_forgets_it(page: Any) -> None:
    """Clear must mean it: the reply cut by Clear is not put back into the history the next turn
    sends, nor the cleared message back into the box (Clear before the first token)."""
    fake_stream(page)
    start_chat(page, "one")
    feed(page, delta("Hel"))
    expect(reply_text(page)).to_have_text("Hel")
    page.get_by_role("button", name="Clear conversation").click()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.get_by_role("article").count() == 0

    start_chat(page, "two")  # cleared before its first token
    page.get_by_role("button", name="Clear conversation").click()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    expect(page.get_by_label("Message", exact=True)).to_have_value("")
    assert page.get_by_role("article").count() == 0

    start_chat(page, "three")
    feed(page, delta("ok"))
    finish_stream(page)
    expect(page.get_by_label("Chat statistics")).to_contain_text("1 tokens")
    sent = [body["messages"] for body in page.evaluate("window.sent")]
    assert sent[1:] == [[{"role": "user", "content": "two"}], [{"role": "user", "content": "three"}]]


def test_the_transcript_follows_a_growing_reply_unless_scrolled_up(page: Any) -> None:
    """A long reply stays in view as it grows while the user is at the bottom; a user who
    scrolled up to read is left there. The log is aria-busy until the reply ends."""
    fake_stream(page)
    start_chat(page, "count")
    feed(page, *(delta(f"line {i}\n") for i in range(60)))
    expect(reply_text(page)).to_contain_text("line 59")
    log = page.get_by_role("log", name="Conversation")
    distance = "log => log.scrollHeight - log.scrollTop - log.clientHeight"
    assert log.evaluate("log => log.scrollHeight > 2 * log.clientHeight")  # it did overflow
    assert log.evaluate(distance) <= 1

    log.evaluate("log => { log.scrollTop = 0; }")  # the user reads the start
    feed(page, *(delta(f"more {i}\n") for i in range(20)))
    expect(reply_text(page)).to_contain_text("more 19")
    assert log.evaluate("log => log.scrollTop") == 0

    log.evaluate("log => { log.scrollTop = log.scrollHeight; }")  # back at the bottom: followed again
    feed(page, *(delta(f"end {i}\n") for i in range(20)))
    expect(reply_text(page)).to_contain_text("end 19")
    assert log.evaluate(distance) <= 1
    expect(log).to_have_attribute("aria-busy", "true")  # a screen reader waits for the whole reply
    finish_stream(page)
    expect(log).not_to_have_attribute("aria-busy", "true")


def test_enter_that_ends_an_ime_composition_does_not_send(page: Any) -> None:
    """Enter confirms a composed word in an input method (Japanese, Chinese, ...): not a send."""
    fake_stream(page)
    message = page.get_by_label("Message", exact=True)
    message.fill("にほん")
    sent = message.evaluate(
        """box => [{isComposing: true}, {keyCode: 229}].map((extra) => {
            const init = {key: "Enter", bubbles: true, cancelable: true, ...extra};
            const event = new KeyboardEvent("keydown", init);
            if (extra.keyCode) Object.defineProperty(event, "keyCode", {value: extra.keyCode});
            box.dispatchEvent(event);
            return event.defaultPrevented || document.querySelectorAll(".message").length > 0;
        })"""
    )
    assert sent == [False, False]
    expect(message).to_have_value("にほん")
    message.press("Enter")  # a plain Enter still sends
    expect(page.get_by_role("article", name="You")).to_have_text("Youにほん")
    assert len(page.evaluate("window.sent")) == 1


def test_the_page_fits_a_phone_screen(browser: Any, url: str) -> None:
    """At 375 px wide every tab is on screen and no tab's page scrolls sideways."""
    context = browser.new_context(viewport={"width": 375, "height": 667})
    page = context.new_page()
    page.goto(url)
    expect(page.get_by_role("status", name="Connection")).to_have_text("connected: 5 models")
    for tab in page.get_by_role("tab").all():
        tab.click()
        box = tab.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 375, tab.text_content()
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, tab.text_content()
    page.get_by_role("tab", name="Chat").click()  # an error with a long unbroken word wraps
    page.get_by_label("Seed").fill("9" * 80)
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert", name="Error")).to_contain_text("Seed: 9999")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    context.close()


def test_a_server_that_cannot_be_reached_is_said_plainly(page: Any) -> None:
    """A refused connection says so (not "TypeError: Failed to fetch"), and the header stops
    claiming "connected" until a request gets through again."""
    status = page.get_by_role("status", name="Connection")
    page.route("**/v1/chat/completions", lambda route: route.abort("connectionrefused"))
    page.get_by_label("Message", exact=True).fill("Hi")
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("alert", name="Error")).to_have_text("cannot reach the server (is it running?)")
    expect(status).to_have_text("cannot reach the server")
    assert page.get_by_role("article").count() == 0
    page.unroute("**/v1/chat/completions")
    set_sampling(page, max_tokens="4")
    send(page, "Hi")
    expect(status).to_have_text("connected: 5 models")


def test_a_reply_cut_by_the_server_is_kept_as_interrupted(page: Any) -> None:
    """A connection lost mid-reply, or the server's error event (a stopping server's 503), keeps
    what came in the transcript and the history, marked, as Stop does."""
    fake_stream(page)
    start_chat(page, "one")
    feed(page, delta("Once upon"))
    expect(reply_text(page)).to_have_text("Once upon")
    page.evaluate("window.fail()")
    expect(page.get_by_role("alert", name="Error")).to_have_text("the connection to the server was lost")
    expect(page.get_by_role("status", name="Connection")).to_have_text("cannot reach the server")
    assert page.get_by_role("article", name="Assistant").locator(".cut").text_content() == "interrupted"

    start_chat(page, "two")
    feed(page, delta("A"), event({"error": {"message": "the server is stopping", "code": "server_stopping"}}))
    expect(page.get_by_role("alert", name="Error")).to_have_text("the server is stopping")
    expect(page.get_by_label("Chat statistics")).to_have_text("interrupted")
    assert page.get_by_role("article").count() == 4
    start_chat(page, "three")
    assert page.evaluate("window.sent")[2]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Once upon"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": "three"},
    ]


def test_a_new_draft_is_not_overwritten_by_the_undone_message(page: Any) -> None:
    """A turn undone (Stop before the first token, a failure) puts its message back only into an
    empty box: a draft typed meanwhile stays."""
    fake_stream(page)
    message = page.get_by_label("Message", exact=True)
    start_chat(page, "first")
    message.fill("my draft")
    page.get_by_role("button", name="Stop").click()
    expect(page.get_by_role("button", name="Send")).to_be_enabled()
    assert page.get_by_role("article").count() == 0
    expect(message).to_have_value("my draft")

    start_chat(page, "second")  # the box is empty now: the failed message comes back
    page.evaluate("window.fail()")
    expect(message).to_have_value("second")


def test_the_keyboard_stops_and_keeps_the_focus(page: Any) -> None:
    """Send and Stop, disabled once pressed, hand the focus to the message box rather than to
    <body>; Escape stops a streaming reply."""
    fake_stream(page)
    message = page.get_by_label("Message", exact=True)
    message.fill("one")
    page.get_by_role("button", name="Send").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    expect(message).to_be_focused()
    feed(page, delta("Hi"))
    expect(reply_text(page)).to_have_text("Hi")
    page.keyboard.press("Escape")
    expect(page.get_by_label("Chat statistics")).to_have_text("stopped")

    start_chat(page, "two")
    feed(page, delta("Hi"))
    page.get_by_role("button", name="Stop").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Chat statistics")).to_have_text("stopped")
    expect(message).to_be_focused()


def test_completion_keys_and_stop(page: Any) -> None:
    """Ctrl+Enter (Cmd+Enter on a Mac) completes the prompt; a completion stopped says so and
    keeps what came. The output is aria-busy while it streams: a screen reader reads it once."""
    fake_stream(page)
    page.get_by_role("tab", name="Completion").click()
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("ROMEO:")
    stop = page.get_by_role("button", name="Stop")
    for keys in ("Control+Enter", "Meta+Enter"):
        prompt.press(keys)
        expect(stop).to_be_enabled()
        feed(page, event({"choices": [{"index": 0, "text": " O", "finish_reason": None}]}))
        expect(page.get_by_label("Completion output")).to_have_text("ROMEO: O")
        expect(page.get_by_label("Completion output")).to_have_attribute("aria-busy", "true")
        stop.click()
        expect(page.get_by_label("Completion statistics")).to_have_text("stopped")
        expect(page.get_by_label("Completion output")).not_to_have_attribute("aria-busy", "true")
        expect(prompt).to_be_focused()
    assert len(page.evaluate("window.sent")) == 2


def test_chat_text_is_sent_as_typed_and_isolated(page: Any) -> None:
    """Leading spaces are code's indentation: the message goes out as typed. A right-to-left
    message is laid out in its own direction, isolated from the page."""
    set_sampling(page, max_tokens="4")
    with page.expect_request("**/v1/chat/completions") as request:
        send(page, "   def f():")
    assert request.value.post_data_json["messages"] == [{"role": "user", "content": "   def f():"}]
    assert page.get_by_role("article", name="You").locator(".content").text_content() == "   def f():"
    send(page, "\u202eשלום")
    bubble = page.get_by_role("article", name="You").last.locator(".content")
    assert bubble.evaluate("c => getComputedStyle(c).direction") == "rtl"
    assert page.evaluate("getComputedStyle(document.body).direction") == "ltr"


def test_tokens_per_second_count_from_the_first_token(page: Any) -> None:
    """The wait for the first token is prompt processing: the rate is the tokens after the first
    over the time after the first."""
    page.clock.install()
    page.clock.pause_at(page.evaluate("Date.now()") + 1000)  # time moves only when the test says
    fake_stream(page)
    start_chat(page, "hi")
    page.clock.fast_forward(2000)  # the prompt: 2 s
    feed(page, delta("a"))
    expect(reply_text(page)).to_have_text("a")
    page.clock.fast_forward(1000)  # 10 more tokens in 1 s
    feed(page, *(delta("b") for _ in range(10)))
    finish_stream(page, completion_tokens=11)
    expect(page.get_by_label("Chat statistics")).to_have_text(
        "11 tokens in 3.0 s · first after 2.0 s · 10.0 tokens/s after the first · prompt 5 tokens"
    )


def test_a_reply_streaming_at_a_reload_comes_back_interrupted(page: Any) -> None:
    """F5 while a reply streams: it comes back cut short, marked "interrupted" (not as a whole
    reply; shown at its end), and stays in the conversation sent next; a turn with no reply yet
    comes back undone, its message in the box."""
    partial = "".join(f"line {i}\n" for i in range(60))  # longer than the transcript's height
    fake_stream(page)
    start_chat(page, "one")
    feed(page, delta(partial))
    expect(reply_text(page)).to_contain_text("line 59")
    reload(page)
    reply = page.get_by_role("article", name="Assistant")
    expect(reply.locator(".cut")).to_have_text("interrupted")
    assert reply.locator(".content").text_content() == partial
    log = page.get_by_role("log", name="Conversation")
    assert log.evaluate("log => log.scrollHeight - log.scrollTop - log.clientHeight") <= 1
    expect(reply).not_to_have_class(re.compile("streaming"))
    expect(page.get_by_label("Chat statistics")).to_have_text("interrupted")
    expect(page.get_by_role("button", name="Send")).to_be_enabled()

    fake_stream(page)
    start_chat(page, "two")  # reloaded before its first token
    reload(page)
    expect(page.get_by_label("Message", exact=True)).to_have_value("two")
    assert page.get_by_role("article").count() == 2

    fake_stream(page)
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    assert page.evaluate("window.sent")[0]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": partial},
        {"role": "user", "content": "two"},
    ]


def test_a_completion_streaming_at_a_reload_comes_back_interrupted(page: Any) -> None:
    """F5 while a completion streams: what came is back, marked "interrupted"; a completion with
    nothing yet is not kept (the tab comes back empty)."""
    fake_stream(page)
    page.get_by_role("tab", name="Completion").click()
    page.get_by_label("Prompt", exact=True).fill("ROMEO:")
    page.get_by_role("button", name="Complete").click()
    feed(page, event({"choices": [{"index": 0, "text": " O Juliet", "finish_reason": None}]}))
    output = page.get_by_label("Completion output")
    expect(output).to_have_text("ROMEO: O Juliet")
    reload(page)
    expect(output).to_have_text("ROMEO: O Juliet")
    expect(page.get_by_label("Completion statistics")).to_have_text("interrupted")
    expect(output).not_to_have_attribute("aria-busy", "true")

    fake_stream(page)
    page.get_by_role("button", name="Complete").click()  # reloaded before its first token
    expect(page.get_by_role("button", name="Stop")).to_be_enabled()
    reload(page)
    expect(output.locator(".generated")).to_have_text("")
    expect(page.get_by_label("Completion statistics")).to_have_text("")
