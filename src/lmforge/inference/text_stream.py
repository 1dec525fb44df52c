"""A continuation's text as its tokens arrive: whole UTF-8 characters only, cut at a stop string.

A BPE token may be part of a character, and the start of a stop string may be the end of the text
so far: a stream shows neither until the next tokens say what they are. With a byte-fallback
tokenizer (Llama 2, Mistral, Gemma: <0xNN> tokens) a whole run of byte tokens may still change
(HF's ByteFallback decoder makes an invalid run one U+FFFD per token, "é" included), so the run
waits for the token that ends it. What is shown is then never taken back: the stream's pieces add
up to the final text, which is transformers' `tokenizer.decode` of the ids. The server's rows
(server/decoding.py) and `generate`/`chat` on a terminal use the same rules.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import CONTEXT_TOKENS, Tokenizer


def check_stops(stop: str | Sequence[str] | None, name: str = "stop") -> list[str]:
    """Stop strings as a list; an empty one would end every text before it starts."""
    if stop is not None and not isinstance(stop, str | list | tuple):  # 5 or b"x": no texts
        raise LmforgeError(f"{name}: {stop!r} is not a stop string or a list of them")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    for s in stops:
        if not isinstance(s, str) or not s:
            raise LmforgeError(f"{name}: {s!r} is not a stop string (a non-empty text)")
    return stops


def cut_at_stop(text: str, stops: Sequence[str], after: int = 0) -> tuple[str, bool]:
    """The text before the first stop string it holds (one ending past its first `after`
    characters), and whether it held one."""
    hits = [i for i in (text.find(s, max(after - len(s) + 1, 0)) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def whole_chars(text: str) -> str:
    """The text without its trailing U+FFFD: the bytes of a character whose rest is still to come,
    which no stop string may match (a real U+FFFD there waits one token, or the row's end)."""
    return text.rstrip("\ufffd")


def settled(tokenizer: Tokenizer, ids: Sequence[int], decoded: str, context: Sequence[int] = ()) -> str:
    """The start of `decoded` (the ids' text after `context`, Tokenizer.decode_after) that no later
    token can change: without a trailing partial character (byte-level BPE) and without the text
    of a byte-fallback run still open (its tokens up to the last; vLLM and transformers'
    TextStreamer hold back only the U+FFFD it shows, and so printed "\x05\x05" where the final
    text was three U+FFFD)."""
    k = len(ids)
    while k and ids[k - 1] in tokenizer.byte_run_ids:
        k -= 1
    if k < len(ids):
        return tokenizer.decode_after(context, ids[:k])  # ends at a token that closed every run before it
    return decoded if tokenizer.byte_run_ids else whole_chars(decoded)


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many of the text's last characters may be the start of a stop string: for each, the
    longest of its prefixes that the text ends with, shorter than the whole (which would have
    stopped it). Knuth-Morris-Pratt over the text's last len(stop) - 1 characters: trying every
    prefix took time growing with the square of a stop's length, on every token of every row
    (a 200,000-character stop string held a whole server's streams back seconds per token). Only
    the stop's first len(tail) characters can match, so the cost is the shorter of the two."""
    most = 0
    for stop in stops:
        tail = text[1 - len(stop) :] if len(stop) > 1 else ""
        if not tail or stop[0] not in tail:
            continue
        borders, k = _borders(stop[: len(tail)]), 0  # k: the stop's characters the tail matched
        for char in tail:
            while k and stop[k] != char:
                k = borders[k - 1]
            k += stop[k] == char
        most = max(most, k)
    return most


def _borders(stop: str) -> tuple[int, ...]:
    """KMP's table: for each prefix stop[:i + 1], the length of its longest proper border."""
    table, k = [0] * len(stop), 0
    for i in range(1, len(stop)):
        while k and stop[i] != stop[k]:
            k = table[k - 1]
        k += stop[i] == stop[k]
        table[i] = k
    return tuple(table)


class TextStream:
    """Writes a continuation's text as its tokens arrive (to `out`, or sys.stdout at the time of
    writing). It decodes the whole continuation each time and holds back what later tokens may
    change (settled) or may start a stop string; called with a token, it says whether a stop string ended the
    text (generate_ids then ends the row). `finish()` writes what is still held back. `context`: the
    prompt the text continues (its first space kept, Tokenizer.decode_after); none for a chat reply."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        out: TextIO | None = None,
        stops: Sequence[str] = (),
        context: Sequence[int] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.out = out
        self.stops = list(stops)
        self.context = list(context[-CONTEXT_TOKENS:])
        self.ids: list[int] = []
        self.text = ""  # written so far

    def __call__(self, _: int, token: int) -> bool:  # generate_ids' on_token(prompt index, token)
        self.ids.append(token)
        decoded = self.tokenizer.decode_after(self.context, self.ids)
        text, stopped = cut_at_stop(whole_chars(decoded), self.stops)
        if stopped:  # the row ends here: its text is the decode of these ids, cut
            self._write(text)
        else:
            sure = text[: len(settled(self.tokenizer, self.ids, decoded, self.context))]
            self._write(sure[: len(sure) - held_back(sure, self.stops)])
        return stopped

    def finish(self) -> str:
        """Write the rest of the text (held back at the end); the whole text."""
        text = cut_at_stop(self.tokenizer.decode_after(self.context, self.ids), self.stops)[0]
        self._write(text)
        return text

    def _write(self, text: str) -> None:
        if len(text) > len(self.text):
            out = self.out or sys.stdout
            out.write(text[len(self.text) :])
            out.flush()
            self.text = text


class StopWatch:
    """For a batch that is not streamed: ends each row at its first stop string. With the rows'
    prompts, a stop string may begin in its prompt's last characters and end in the new text, as
    transformers' stop_strings (which search the whole sequence) count it; without them (`lmforge
    generate --stop`, as vLLM's and OpenAI's stop) only the new text is searched, the text each row
    adds after its `contexts` prompt (Tokenizer.decode_after), as generate returns it."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        rows: int,
        stops: Sequence[str],
        prompts: Sequence[Sequence[int]] = (),
        contexts: Sequence[Sequence[int]] = (),
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = list(stops)
        longest = max(map(len, self.stops), default=1)
        # each prompt's last tokens (enough for a stop string's first characters) and their text's length
        self.tails = [list(p[-longest:]) for p in prompts] or [[] for _ in range(rows)]
        self.after = [len(whole_chars(tokenizer.decode(t))) for t in self.tails]
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.contexts = [list(c) for c in contexts] or [[] for _ in range(rows)]

    def __call__(self, row: int, token: int) -> bool:
        self.ids[row].append(token)
        if self.tails[row]:
            text = whole_chars(self.tokenizer.decode(self.tails[row] + self.ids[row]))
        else:
            text = whole_chars(self.tokenizer.decode_after(self.contexts[row], self.ids[row]))
        return cut_at_stop(text, self.stops, self.after[row])[1]  # a stop ending in the new text


def watcher(
    tokenizer: Tokenizer, prompts: Sequence[Sequence[int]], stops: Sequence[str], stream: bool
) -> TextStream | StopWatch | None:
    """generate's on_token: the stream of one prompt's text, else the stop strings' watch (or none);
    each row's text is what it adds after its prompt (Tokenizer.decode_after)."""
    if stream:
        return TextStream(tokenizer, stops=stops, context=prompts[0])
    return StopWatch(tokenizer, len(prompts), stops, contexts=prompts) if stops else None
