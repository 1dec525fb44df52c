"""Per-document cleaning stages: each takes a text and returns it (possibly changed) or None to
drop it, counting what it did in a `StageStats`.

normalize   Unicode NFC + mojibake repair (ftfy), documents mostly U+FFFD dropped
markup      control characters removed; HTML/XML tags, comments, scripts stripped, entities decoded;
            with prep.html_extractor=trafilatura, a whole web page's main content kept (main_content.py)
whitespace  \\r\\n -> \\n, odd spaces -> ' ', no trailing spaces, at most 2 blank lines in a row
length      drop documents outside [min_chars, max_chars]
quality     Gopher quality rules (datatrove's GopherQualityFilter): word count, mean word length,
            symbol ratio, bullet/ellipsis lines, alphabetic words, stop words
repetition  Gopher repetition rules (datatrove's GopherRepetitionFilter): duplicate lines,
            paragraphs and n-grams
stopwords   remove stop words of a language (off by default: see README)

PII scrubbing is in pii.py; the corpus-level stages (boilerplate lines, exact and near
duplicates) are in dedup.py.
"""

from __future__ import annotations

import bisect
import html
import html.entities
import math
import re
from typing import Any

import ftfy
import regex

from lmforge.data.html_blocks import BLOCK_TAGS, CELL_TAGS
from lmforge.data.main_content import is_page
from lmforge.data.markdown_code import code_spans
from lmforge.data.report import StageStats

Stage = Any  # anything with `name` and `apply(text, stats) -> str | None`


class Normalize:
    name = "normalize"

    def __init__(self, max_replacement_ratio: float = 0.1) -> None:
        # Curly quotes, full-width forms (CJK's ，。：！) and ligatures are real text, not damage.
        # unescape_html: ftfy decodes `&lt;br&gt;` on lines it fixes (the non-ASCII ones), and markup
        # then took the tag it made for a real one: entities are markup's to decode, in every line
        self.config = ftfy.TextFixerConfig(
            uncurl_quotes=False,
            fix_character_width=False,
            fix_latin_ligatures=False,
            unescape_html=False,
            explain=False,
        )
        self.max_replacement_ratio = max_replacement_ratio

    def apply(self, text: str, stats: StageStats) -> str | None:
        if text.isascii():  # ASCII has nothing for ftfy or NFC to fix (and this is 1000x faster)
            return text
        bad = text.count("\ufffd")
        if bad and bad > self.max_replacement_ratio * len(text):
            stats.dropped["mostly undecodable"] += 1
            return None
        # ftfy works line by line anyway; only non-ASCII lines can hold mojibake.
        lines = text.split("\n")
        fixed = [line if line.isascii() else ftfy.fix_text(line, self.config) for line in lines]
        changed = sum(a != b for a, b in zip(lines, fixed, strict=True))
        if changed:
            stats.edits["lines repaired"] += changed
        return "\n".join(fixed)


_LINE_BREAKS = re.compile(r"[\x0b\x0c\x1c-\x1e\x85]")  # str.splitlines' line ends among controls
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2060\ufeff]")
# HTML's elements (and SVG/MathML roots): a tag must name one, so code's `<vector>`, `List<String>`,
# `<T: Clone>`, `<typename T>` and Markdown's autolinks `<https://...>` are not tags. One-letter
# names only in lower case: `<A>`, `<B>` are type parameters far more often than 1990s HTML.
_ELEMENTS = (
    "abbr|acronym|address|area|article|aside|audio|base|bdi|bdo|big|blink|blockquote|body|br|button"
    "|canvas|caption|center|cite|code|col|colgroup|data|datalist|dd|del|details|dfn|dialog|dir|div|dl|dt"
    "|em|embed|fieldset|figcaption|figure|font|footer|form|frame|frameset|h[1-6]|head|header|hgroup|hr"
    "|html|iframe|img|input|ins|kbd|label|legend|li|link|main|map|mark|marquee|math|menu|meta|meter"
    "|nav|nobr|noframes|noscript|object|ol|optgroup|option|output|param|picture|pre|progress|rp|rt"
    "|ruby|samp|script|search|section|select|slot|small|source|span|strike|strong|style|sub|summary"
    "|sup|svg|table|tbody|td|template|textarea|tfoot|th|thead|time|title|tr|track|tt|ul|var|video|wbr"
)
# Attributes as HTML writes them (name, name=value, name="value"): `if (a<b && c>d)` is no tag.
_VALUE = r"""\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'=<>`]+)"""
_ATTRS = rf"(?:\s+[a-z_:@][\w:.@-]*(?:{_VALUE})?)*\s*/?"
# A one-letter element takes only name=value attributes: `x = a<b or c>d` and `while i<s and j>0`
# read <b or c> and <s and j> as tags with two bare attributes, and lost the code between them.
_VALUED = rf"(?:\s+[a-z_:@][\w:.@-]*{_VALUE})*\s*/?"
_NAME_ATTRS = rf"(?:(?-i:[abiqsup])(?![\w:-]){_VALUED}|(?:{_ELEMENTS})(?![\w:-]){_ATTRS})"
_TAG = re.compile(rf"</?{_NAME_ATTRS}>|<!doctype\b[^<>]*>", re.I)
# In a whole page (main_content.is_page) every tag is markup, whatever it names: inline SVG's
# `<path/>`, MathML's `<mi>`, Word's `<o:p>` and `<st1:City>`, custom elements (`<my-widget>`).
_ANY_TAG = re.compile(rf"</?[a-z][\w:.-]*(?![\w:.-]){_ATTRS}>|<!doctype\b[^<>]*>", re.I)
_HTML_HINT = re.compile(rf"{_TAG.pattern}|<!--|&(?:[a-z]+|#\d+|#x[0-9a-f]+);", re.I)  # or an entity
_DROP_BLOCKS = re.compile(rf"<(script|style|noscript|template)\b{_ATTRS}>.*?</\1\s*>|<!--.*?-->", re.I | re.S)
# A block's tags (html_blocks.py, the EPUB reader's list too) end a line: the one-letter `p` as
# `_NAME_ATTRS` takes one-letter tags (lower case, name=value attributes), the rest as the others.
_BLOCKS = "|".join(sorted((t for t in BLOCK_TAGS if len(t) > 1), key=lambda t: (-len(t), t)))
_BREAK_TAGS = re.compile(
    rf"<(?:/?(?-i:p)(?![\w:-]){_VALUED}|(?:br|/?(?:{_BLOCKS}))(?![\w:-]){_ATTRS})>",
    re.I,
)
# A row's cells: each opening tag (with the closing tag and white space before it) becomes CELL,
# a tab where it follows text on its line, nothing at a line's start, as the EPUB reader writes
# them; taken before the blocks' line breaks, which the white space would swallow (`</td></tr>`).
# CELL is a control character, which markup removed from the text before.
_CELLS = "|".join(sorted(CELL_TAGS))
_CELL_TAGS = re.compile(rf"(?:</(?:{_CELLS})\s*>\s*)?<(?:{_CELLS})(?![\w:-]){_ATTRS}>", re.I)
CELL = "\x00"
_ROW_START_CELL = re.compile(rf"^([ \t]*){CELL}", re.M)


_ENTITY = re.compile(r"&(?:#\d{1,8}|#[xX][0-9a-fA-F]{1,7}|([A-Za-z][A-Za-z0-9]{1,31}));")


def _unescape(text: str) -> str:
    """HTML's character references that end in `;`: html.unescape also reads HTML's legacy names
    without one (`&copy`, `&reg`, `&not`, `&para`), which turned C's `memcpy(&copy, &reg, n)` into
    `memcpy(©, ®, n)` and a URL's `?a=1&copy=2` into `?a=1©=2`; a name that is no entity stays."""

    def one(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return html.entities.html5.get(m.group(1) + ";", m.group())
        return html.unescape(m.group())  # a number: html's rules for the invalid ones

    return _ENTITY.sub(one, text)


def _inside(spans: list[tuple[int, int]], at: int) -> bool:
    """Whether `at` falls in one of `spans` (sorted, not overlapping): a binary search, since a
    large file holds thousands of both spans and blocks (a scan for each was quadratic: 2 MB of
    `<script>` blocks and code spans took 252 s until 2026-12-07)."""
    i = bisect.bisect_right(spans, (at, math.inf)) - 1
    return i >= 0 and at < spans[i][1]


class Markup:
    """Strips control characters always, and markup only from documents that contain some.

    A hand-written regex pass: datatrove's extractors (trafilatura, readability) pull the main
    content out of whole web pages and drop what is not, which is wrong for text files that
    merely contain some tags. A tag names one of HTML's elements, with HTML's attribute syntax,
    so code (`a < b`, `Option<Box<Node>>`, `#include <vector>`), Markdown's autolinks and its
    code (markdown_code.py) are left alone; in a whole page (main_content.is_page) every tag is
    markup, whatever it names, and its indentation is no Markdown code. With
    `extractor="trafilatura"` (prep.html_extractor), a whole web page keeps only its main
    content, as trafilatura finds it; the others are stripped as above.
    """

    name = "markup"

    def __init__(self, extractor: str = "tags", timeout: float = 1.0) -> None:
        self.main_content = None
        if extractor == "trafilatura":
            from lmforge.data.main_content import MainContent

            self.main_content = MainContent(timeout)

    def apply(self, text: str, stats: StageStats) -> str | None:
        # a vertical tab (a manual line break copied from Word or PowerPoint), a form feed (a page
        # break), NEL and the separators end a line, as str.splitlines reads them: deleted, they
        # glued two words together (until 2026-12-07)
        text, breaks = _LINE_BREAKS.subn("\n", text)
        if breaks:
            stats.edits["control line breaks"] += breaks
        out, controls = _CONTROL.subn("", text)
        if controls:
            stats.edits["control chars"] += controls
        if self.main_content is not None and self.main_content.is_page(out):
            return self.main_content.apply(out, stats)
        if not _HTML_HINT.search(out):
            return out
        before, page = out, is_page(out)
        tags = _ANY_TAG if page else _TAG
        # Markdown's code is kept as written ("use `<br>`" shows a tag), a script or comment in it
        # too; a whole page has none (two backticks of a minified page's text kept its tags)
        code = [] if page else code_spans(out)
        kept = _DROP_BLOCKS.sub(lambda m: m.group() if _inside(code, m.start()) else "", out)
        if kept != out and not page:  # found again: what was dropped moved the code (a parse is not cheap)
            code = code_spans(kept)
        out = kept
        pieces, at = [], 0
        for a, b in [*code, (len(out), len(out))]:  # prose between code
            prose = tags.sub("", _BREAK_TAGS.sub("\n", _CELL_TAGS.sub(CELL, out[at:a])))
            pieces += [_unescape(prose), out[a:b]]
            at = b
        stripped = _ROW_START_CELL.sub(r"\1", "".join(pieces)).replace(CELL, "\t")
        if stripped != before:
            stats.edits["html"] += 1
        return stripped


_ODD_SPACES = re.compile(r"[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_TRAILING = re.compile(r"[ \t]+$", re.M)
_BLANKS = re.compile(r"\n{4,}")


class Whitespace:
    name = "whitespace"

    def apply(self, text: str, stats: StageStats) -> str | None:
        # Each rule runs only where a cheap test says it can apply: 5x faster on clean text.
        out = text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text
        if not out.isascii():
            out = _ODD_SPACES.sub(" ", out)
        if " \n" in out or "\t\n" in out or out.endswith((" ", "\t")):
            out = _TRAILING.sub("", out)
        if "\n\n\n\n" in out:
            out = _BLANKS.sub("\n\n\n", out)  # at most two blank lines in a row
        out = out.lstrip("\n")
        if out.endswith("\n\n"):
            out = out.rstrip("\n") + "\n"
        return out


class Length:
    name = "length"

    def __init__(self, min_chars: int = 1, max_chars: int = 0) -> None:
        self.min_chars, self.max_chars = min_chars, max_chars

    def apply(self, text: str, stats: StageStats) -> str | None:
        n = len(text.strip())
        if n < self.min_chars:
            stats.dropped[f"shorter than {self.min_chars} chars"] += 1
            return None
        if self.max_chars and n > self.max_chars:
            stats.dropped[f"longer than {self.max_chars} chars"] += 1
            return None
        return text


def _whitespace_words() -> Any:
    """A datatrove WordTokenizer splitting on whitespace (Gopher's definition of a word).

    datatrove's English tokenizer is spaCy's; splitting on whitespace needs no model, no
    download, and is about 20x faster.
    """
    from datatrove.utils.word_tokenizers import WordTokenizer

    class WhitespaceWords(WordTokenizer):
        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [m.span() for m in re.finditer(r"\S.*?(?:[.!?](?=\s)|$)", text, re.S)]

    return WhitespaceWords("en")


class _DatatroveFilter:
    """Runs a datatrove filter's `filter(doc)` on one text, counting its reasons for dropping."""

    name = ""

    def __init__(self, block: Any) -> None:
        from datatrove.data import Document as DTDocument

        self.block, self._doc = block, DTDocument

    def apply(self, text: str, stats: StageStats) -> str | None:
        verdict = self.block.filter(self._doc(text=text, id=""))
        if verdict is True or (isinstance(verdict, tuple) and verdict[0]):
            return text
        reason = verdict[1] if isinstance(verdict, tuple) else "rejected"
        stats.dropped[reason] += 1
        return None


class Quality(_DatatroveFilter):
    name = "quality"

    def __init__(self, min_words: int = 50) -> None:
        from datatrove.pipeline.filters import GopherQualityFilter

        super().__init__(GopherQualityFilter(min_doc_words=min_words, language=_whitespace_words()))


class Repetition(_DatatroveFilter):
    name = "repetition"

    def __init__(self) -> None:
        from datatrove.pipeline.filters import GopherRepetitionFilter

        super().__init__(GopherRepetitionFilter(language=_whitespace_words()))


# A small English list (the most frequent function words); other languages via `stopwords_file`.
ENGLISH_STOPWORDS = [
    "a",
    "an",
    "and",
    "are",
    "as",
    "at",
    "be",
    "but",
    "by",
    "for",
    "from",
    "had",
    "has",
    "have",
    "he",
    "her",
    "his",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "of",
    "on",
    "or",
    "she",
    "so",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "to",
    "was",
    "we",
    "were",
    "what",
    "when",
    "which",
    "who",
    "will",
    "with",
    "would",
    "you",
    "your",
]
# a word: letters and digits, with ' ’ - . inside it kept ("don't", "in-house", "a.m" whole: "in"
# and "a" were cut out of them, leaving "-house" and ".m.")
_WORD = regex.compile(r"\w+(?:['’.-]\w+)*")  # regex's \w holds combining marks: Hindi "के", a decomposed "à"


# where a stop word was: NUL, else a noncharacter or private-use character the text lacks (a real
# NUL, from a JSON "\u0000" with no markup stage before, was taken for one and glued words together)
_MARKS = (0, *range(0xFDD0, 0xFDF0), *range(0xE000, 0xF900))


def _mark_for(text: str) -> str:
    return next(chr(c) for c in _MARKS if chr(c) not in text)


def unmatchable(words: list[str]) -> list[str]:
    """The entries of a stop-word list the stage can never find: not one word as it reads words
    (`c++`, `--`)."""
    return [w for w in words if not _WORD.fullmatch(w)]


class Stopwords:
    """Removes stop words (for bag-of-words features) with the spaces after them (before them, last
    on a line); other spacing (indentation, aligned columns) is kept."""

    name = "stopwords"

    def __init__(self, words: list[str] | None = None) -> None:
        self.words = frozenset(w.lower() for w in (ENGLISH_STOPWORDS if words is None else words))

    def apply(self, text: str, stats: StageStats) -> str | None:
        removed = 0
        mark = _mark_for(text)

        def drop(m: re.Match[str]) -> str:
            nonlocal removed
            if m.group(0).lower() in self.words:
                removed += 1
                return mark
            return m.group(0)

        marked = _WORD.sub(drop, text)
        m = re.escape(mark)  # removed stop words with the spaces after them (before them, last on a line)
        out = re.sub(f"(?:{m} *)+", "", re.sub(f" *(?:{m} *)+$", "", marked, flags=re.M)) if removed else text
        stats.edits["stopwords"] += removed
        return out
