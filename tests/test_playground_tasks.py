"""The playground's one-shot tabs and settings where the page and the server could disagree (the
server and models: tests/playground_helpers.py): the answer marked in a context with emoji (the
server's offsets count code points, JavaScript's strings UTF-16 units), also after a reload; the
translation tab's Beams placeholder says what the server applies, and a sentence over the model's
limit is named by its line in the box, with what the page can do; a seed the page cannot send
exactly (past 2^53) is refused in the page."""

# ruff: noqa: F811 - the shared fixtures are imported by name and requested as parameters
from __future__ import annotations

from typing import Any

from playground_helpers import (  # noqa: F401 (fixtures are found by name)
    api,
    browser,
    dirs,
    expect,
    httpx,
    models,
    page,
    reload,
    set_sampling,
    url,
)


def test_the_answer_is_marked_where_it_is_in_a_context_with_emoji(page: Any, url: str) -> None:
    """An emoji is one character to the server and two UTF-16 units to JavaScript: the page marked
    text one unit an emoji too early."""
    question = "Who kept the crown?"
    context = "😀😀😀😀😀😀 🎉🎉 The old king kept his crown in a tower by the sea."
    page.get_by_role("tab", name="Question answering").click()
    page.get_by_label("Question", exact=True).fill(question)
    page.get_by_label("Context (the text that holds the answer)").fill(context)
    page.get_by_role("button", name="Answer", exact=True).click()
    expect(page.get_by_role("list", name="Answers").get_by_role("listitem")).to_have_count(1)
    body = {"model": "bert-qa", "question": question, "context": context, "handle_impossible_answer": False}
    best = api(url, "answers", body)["results"]
    assert best["start"] > 9 and best["answer"], best  # after the emoji: the old page marked other text
    view = page.get_by_label("Answer in the context")
    assert view.text_content() == context
    assert view.locator("mark").text_content() == context[best["start"] : best["end"]] == best["answer"]
    reload(page)  # the kept result is drawn again from the same offsets
    assert view.text_content() == context
    assert view.locator("mark").text_content() == best["answer"]


def test_the_translation_tab_says_its_beams_and_names_a_long_line(page: Any, url: str) -> None:
    page.get_by_role("tab", name="Translation").click()
    beams = page.get_by_label("Beams")
    expect(beams).to_have_attribute("placeholder", "4")  # said "model default"; the server applies 4
    box = page.get_by_label("Text to translate (one sentence a line)")
    box.fill("the king\nthe queen is fair")
    page.get_by_role("button", name="Translate").click()
    items = page.get_by_role("list", name="Translations").get_by_role("listitem")
    expect(items).to_have_count(2)
    body = {"model": "s2s", "input": ["the king", "the queen is fair"], "num_beams": 4}
    four = api(url, "translations", body)
    assert items.all_text_contents() == [r["translation_text"] for r in four["results"]]

    long = "the king and the queen walked by the sea all day long"  # over the model's 31 tokens
    box.fill(f"the king\n\n   \nthe queen\n{long}\n")
    page.get_by_role("button", name="Translate").click()
    error = page.get_by_role("alert", name="Error")
    expect(error).to_be_visible()
    r = httpx.post(f"{url}/v1/translations", json={"model": "s2s", "input": ["the king", "the queen", long]})
    said = f"{r.status_code}: {r.json()['error']['message']}"
    assert said.startswith("400: sentence 3 is ") and '"truncation": true' in said  # the API's own field
    want = said.replace("sentence 3", "line 5").replace(
        ', or "truncation": true cuts such sentences', ", or split it over several lines"
    )
    expect(error).to_have_text(want)


def test_a_seed_the_page_cannot_send_exactly_is_refused(page: Any) -> None:
    """Past 2^53 JavaScript rounds a number: 2^64 was sent as 18446744073709552000 and
    9007199254740993 as 9007199254740992, silently."""
    sent: list[Any] = []
    page.on("request", lambda request: request.method == "POST" and sent.append(request.post_data_json))
    set_sampling(page)
    page.get_by_label("Message", exact=True).fill("Who is the king?")
    error = page.get_by_role("alert", name="Error")
    for seed in ["18446744073709551616", "9007199254740993", "-9007199254740993"]:
        page.get_by_label("Seed").fill(seed)
        page.get_by_role("button", name="Send").click()
        expect(error).to_have_text(
            f"Seed: {seed} is past what the page can send exactly (-9007199254740991 to 9007199254740991)"
        )
    assert sent == [] and page.get_by_role("article").count() == 0
    page.get_by_label("Seed").fill("9007199254740991")  # the largest it can send
    page.get_by_role("button", name="Send").click()
    expect(page.get_by_label("Chat statistics")).to_contain_text("finish:")
    expect(error).to_be_hidden()
    assert [body["seed"] for body in sent] == [9007199254740991]
