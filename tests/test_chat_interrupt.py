"""`lmforge chat` at a terminal: Ctrl-C during a reply stops the reply as the playground's Stop
does (what came is kept, ended with a newline and marked stopped, and the next turn is sent with
it); before the first token the message is left out; Ctrl-C at the prompt, or during a reply read
from a script's stdin, ends the session as before. Ctrl-C is the KeyboardInterrupt Python raises
where it lands: here, from inside the reply's stream, at a chosen token."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

import lmforge.inference.chat as chat_module
from lmforge.inference.chat import ChatSpec, chat
from lmforge.inference.text_stream import TextStream
from lmforge.pipelines import pipeline

SYSTEM = "Be brief."


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_chat import make_chat_llama

    directory = tmp_path_factory.mktemp("chat-llama")
    make_chat_llama(directory)
    return directory


class Terminal(io.StringIO):
    """Typed lines, as a terminal gives them; a line "^C" is Ctrl-C at the prompt."""

    def isatty(self) -> bool:
        return True

    def readline(self, size: int | None = -1) -> str:
        line = super().readline(size)
        if line == "^C\n":
            raise KeyboardInterrupt
        return line


def interrupting(monkeypatch: pytest.MonkeyPatch, at: list[int | None]) -> list[list[int]]:
    """Reply i is interrupted as its token at[i] + 1 arrives (None: not); the prompts sent."""
    replies = iter(at)
    prompts: list[list[int]] = []

    class Stream(TextStream):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.stop_at = next(replies)

        def __call__(self, row: int, token: int) -> bool:
            if len(self.ids) == self.stop_at:
                raise KeyboardInterrupt
            return super().__call__(row, token)

    real = chat_module.generate_ids

    def generate(net: Any, batch: list[list[int]], *args: Any, **kwargs: Any) -> Any:
        prompts.append(list(batch[0]))
        return real(net, batch, *args, **kwargs)

    monkeypatch.setattr(chat_module, "TextStream", Stream)
    monkeypatch.setattr(chat_module, "generate_ids", generate)
    return prompts


def test_ctrl_c_stops_the_reply_and_the_session_goes_on(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["Who is the king?", "And the queen?", "Who is she?"]
    prompts = interrupting(monkeypatch, [0, 3, None])
    monkeypatch.setattr(sys, "stdin", Terminal("\n".join(lines) + "\n"))
    try:
        chat(llama, system=SYSTEM, do_sample=False, max_new_tokens=12, dtype="fp32", compile=False)
    except KeyboardInterrupt:  # a failure of this test, not the end of the test session
        pytest.fail("Ctrl-C during a reply ended the session")
    out = capsys.readouterr()
    generate = pipeline("text-generation", llama, dtype="fp32")
    spec = ChatSpec.read(llama, generate.tokenizer)
    cut = generate([{"role": "system", "content": SYSTEM}, {"role": "user", "content": lines[1]}],
                   do_sample=False, max_new_tokens=3)[0]["generated_text"][-1]["content"]  # fmt: skip
    assert cut
    kept = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": lines[1]},
            {"role": "assistant", "content": cut}, {"role": "user", "content": lines[2]}]  # fmt: skip
    assert len(prompts) == 3  # the first stopped before its first token: the message left out
    assert prompts[2] == generate.tokenizer.encode(spec.render(kept))
    last = generate(kept, do_sample=False, max_new_tokens=12)[0]["generated_text"][-1]["content"]
    assert out.out == f"> > {cut}\n> {last}\n> "  # the cut reply ends its line; then the next prompt
    assert out.err.count("(stopped before the reply began: the message is left out)") == 1
    assert out.err.count("(stopped: the reply so far is kept in the conversation)") == 1

    # Ctrl-C at the prompt, or during a reply read from a script's stdin, ends the session as before
    interrupting(monkeypatch, [None, None])
    monkeypatch.setattr(sys, "stdin", Terminal("Who is the king?\n^C\nnever read\n"))
    with pytest.raises(KeyboardInterrupt):
        chat(llama, system=SYSTEM, do_sample=False, max_new_tokens=4, dtype="fp32", compile=False)
    prompts = interrupting(monkeypatch, [2, None])
    monkeypatch.setattr(sys, "stdin", io.StringIO("Who is the king?\nnever read\n"))  # not a terminal
    with pytest.raises(KeyboardInterrupt):
        chat(llama, system=SYSTEM, do_sample=False, max_new_tokens=4, dtype="fp32", compile=False)
    assert len(prompts) == 1


def test_a_sigterm_during_a_reply_ends_the_session(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A SIGTERM (Terminated, a KeyboardInterrupt to the CLI since every verb stops on it) during a
    reply at a terminal ends the session: it is not Ctrl-C's "stop this reply"."""
    from lmforge.processes import Terminated

    prompts = interrupting(monkeypatch, [2, None])
    original = chat_module.TextStream.__call__

    def terminated(self: Any, row: int, token: int) -> bool:
        try:
            return original(self, row, token)
        except KeyboardInterrupt:
            raise Terminated from None

    monkeypatch.setattr(chat_module.TextStream, "__call__", terminated)
    monkeypatch.setattr(sys, "stdin", Terminal("Who is the king?\nnever read\n"))
    capsys.readouterr()
    with pytest.raises(Terminated):
        chat(llama, system=SYSTEM, do_sample=False, max_new_tokens=4, dtype="fp32", compile=False)
    assert len(prompts) == 1
    assert capsys.readouterr().out.endswith("\n")  # `lmforge: terminated` is not glued to the reply


def test_a_sigterm_at_the_prompt_ends_its_line(
    llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """At the prompt no echo ends the line (a terminal echoes ^C): `lmforge: terminated` stood on the
    prompt's line, `> lmforge: terminated`."""
    from lmforge.processes import Terminated

    class Terminating(Terminal):
        def readline(self, size: int | None = -1) -> str:
            raise Terminated

    monkeypatch.setattr(sys, "stdin", Terminating(""))
    with pytest.raises(Terminated):
        chat(llama, system=SYSTEM, do_sample=False, max_new_tokens=4, dtype="fp32", compile=False)
    assert capsys.readouterr().out == "> \n"
