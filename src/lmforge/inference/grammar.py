"""Structured outputs: a row's reply held to a JSON schema (or to any JSON object), a regular
expression, a choice of strings or a Lark grammar by llguidance, Microsoft's grammar engine (vLLM's
"guidance" backend), which compiles the form and says at each step which tokens may come next.
lmforge keeps no JSON-schema or grammar code of its own: a well-kept library follows the schema's
keywords, and refuses the ones it cannot follow, better than a hand-written subset would.

A `Grammar` is one request's compiled schema, on the model's tokenizer with the request's
end-of-text ids as its EOS; each row decodes with a `GrammarState` of its own (`Grammar.start`).
Each step the row's logits keep only the tokens its state allows (the others -inf), after the
logit bias, penalties and bans and before sampling, greedy rows too, and the token chosen is
consumed by the state. A state whose grammar is complete (nothing may follow but an end-of-text
id) ends its row. llguidance is optional (the `serve` extra): without it, `compile_grammar` raises
`NoGrammarLibrary`.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

INSTALL = "pip install llguidance (in a checkout of lmforge: pip install -e '.[serve]')"
ANY_OBJECT = {"type": "object"}  # json_object: any JSON object (vLLM's grammar for it)

# LLTokenizer per tokenizer and (EOS ids, vocabulary): building one reads the whole vocabulary
# (0.25 s for SmolLM2's 49,152 tokens), so a served model builds it once per kind of request
_TOKENIZERS: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[tuple[int, ...], int], Any]] = (
    weakref.WeakKeyDictionary()
)


class NoGrammarLibrary(LmforgeError):
    """llguidance is not installed."""


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.torch  # noqa: F401  (its bitmask helpers)
    except ImportError:
        raise NoGrammarLibrary(f"needs llguidance, which is not installed: {INSTALL}") from None
    return llguidance


def _lltokenizer(tokenizer: Tokenizer, eos: tuple[int, ...], vocab: int) -> Any:
    """llguidance's view of `tokenizer` (read from its tokenizer.json) with `eos` as its EOS ids,
    covering at least the model's `vocab` logits."""
    llg = _llguidance()
    built = _TOKENIZERS.setdefault(tokenizer, {})
    key = (eos, vocab)
    if key not in built:
        try:
            built[key] = llg.LLTokenizer(
                tokenizer.hf.to_str(), n_vocab=max(vocab, tokenizer.vocab_size), eos_token=list(eos)
            )
        except (
            ValueError
        ):  # lmforge's character tokenizers: "can't determine decoder type" (Rust's debug text)
            raise LmforgeError(
                f"this model's tokenizer ({tokenizer.kind}) is not one llguidance can read (its decoder is"
                " not a byte-level or SentencePiece one)"
            ) from None
    return built[key]


class Grammar:
    """One request's compiled JSON schema, on its model's tokenizer; rows `start` states of it."""

    def __init__(self, llg: Any, tokenizer: Any, text: str, vocab: int) -> None:
        self.llg, self.tokenizer, self.text, self.vocab = llg, tokenizer, text, vocab

    def start(self) -> GrammarState:
        return GrammarState(self)


def compile_grammar(kind: str, spec: Any, tokenizer: Tokenizer, eos: Iterable[int], vocab: int) -> Grammar:
    """The grammar of replies of a `kind`: "json", valid under the schema `spec` (None: any JSON
    object), whitespace between tokens allowed, as vLLM compiles it; "regex", matching the regular
    expression `spec` whole (llguidance's syntax, Rust's); "choice", one of the strings `spec`;
    "grammar", the Lark grammar `spec` (llguidance's Lark). `eos`: the ids that end a reply, allowed
    once it is whole; `vocab`: the model's logits. One llguidance refuses (an unknown type, a
    keyword it does not implement, a bad pattern) is an LmforgeError with its reason."""
    llg = _llguidance()
    ends = tuple(sorted(set(eos)))
    if not ends:
        raise LmforgeError("the model has no end-of-text id, so no reply could end where the form does")
    lltok = _lltokenizer(tokenizer, ends, vocab)
    if kind == "json":
        text = json.dumps(ANY_OBJECT if spec is None else spec)
        grammar = llg.LLMatcher.grammar_from_json_schema(text, defaults={"whitespace_flexible": True})
    elif kind == "regex":
        grammar = llg.LLMatcher.grammar_from_regex(spec)
    elif kind == "choice":  # Lark string literals take JSON's escapes
        grammar = llg.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in spec))
    else:
        grammar = llg.LLMatcher.grammar_from_lark(spec)
    failed, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, lltok)
    if failed:
        reason = " ".join(" ".join(messages).split())  # one line: its messages can span several
        what = {"json": "JSON schema", "regex": "regular expression", "choice": "choice"}.get(kind, "grammar")
        raise LmforgeError(f"llguidance cannot follow this {what}: {reason}")
    return Grammar(llg, lltok, grammar, vocab)


class GrammarState:
    """One row's place in its grammar: which tokens may come next, and the tokens taken."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.matcher = grammar.llg.LLMatcher(grammar.tokenizer, grammar.text, log_level=0)
        self.bits = grammar.llg.torch.allocate_token_bitmask(1, grammar.tokenizer.vocab_size)
        self._check()

    def _check(self) -> None:
        if self.matcher.is_error():  # it never raises: an error is a state it stays in
            raise LmforgeError(f"llguidance: {self.matcher.get_error()}")

    def done(self) -> bool:
        """The JSON is whole: nothing may follow it but an end-of-text id."""
        return bool(self.matcher.is_stopped())

    def allowed(self) -> torch.Tensor:
        """(vocab,) bool, True on the tokens that may come next."""
        self.grammar.llg.torch.fill_next_token_bitmask(self.matcher, self.bits)
        self._check()
        # bit j of 32-bit word w is token 32 w + j: little-endian bytes, least significant bit first
        bits = np.unpackbits(self.bits.numpy().astype("<i4").view(np.uint8), bitorder="little")
        return torch.from_numpy(bits[: self.grammar.vocab].astype(bool))

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (1, vocab), in float32, with every token the grammar does not allow next at -inf;
        an LmforgeError where no token it allows is left (the bans took them all)."""
        out = logits.float().masked_fill(~self.allowed().to(logits.device), float("-inf"))
        if not bool(torch.isfinite(out).any()):
            raise LmforgeError(
                "every token the reply's form allows next is banned (min_tokens, no_repeat_ngram_size)"
            )
        return out

    def take(self, token: int) -> None:
        """The token chosen for the row (one `apply` allowed)."""
        if not self.matcher.consume_token(token):
            self._check()
            raise LmforgeError(f"token {token} does not follow the reply's form")
