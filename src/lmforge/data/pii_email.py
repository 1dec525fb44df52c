"""E-mail addresses for the PII stage (data/pii.py): plain and percent-escaped ones, and the rules
for what has an address's shape but is none.

An address's top-level domain must be one the Public Suffix List names (as Presidio's e-mail
recognizer checks with tldextract; here the `tld` package's copy of the list, read from disk, never
fetched), or a special-use name a network's own addresses use (`.test`, `.local`, `.internal`...):
a retina asset `icon@2x.png`, Python's matrix product `x@self.proj` and a pinned package
`pkg@1.2.3` have none. An scp-style remote (`git@github.com:org/repo.git`) is a URL without its
scheme: its user is a login (pii.py's `login` kind), not an address. In Chinese, Japanese and
Korean text, written without spaces, an ASCII address is cut out of the words around it
(`请联系ann@example.com获取更多信息` keeps `请联系` and `获取更多信息`); an address written in those
scripts whole (`用户@例子.广告`) stays whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from urllib.parse import unquote

from tld import is_tld

# RFC 5322 allows "/" and "?" in the local part, but addresses have none and URLs are full of
# them: `https://x.com/a?u=ann@b.com` keeps its path (a bounce address's "=" stays in).
# Each starts where a run of a local part's characters starts (the look-behind holds them all):
# else every "%" or "=" of a long run was a start scanning to its end, quadratic (7.5 s for 32 KB).
EMAIL = re.compile(
    r"(?<![\w.!#$%&'*+=^`{|}~-])[\w!#$%&'*+=^`{|}~-]+(?:\.[\w!#$%&'*+=^`{|}~-]+)*"
    r"@(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,}\b"
)
# An address percent-escaped in a URL (`mailto:ann%40example.com`, `?to=ann%2540example.com` escaped
# twice): the local part may hold escapes; `escaped_email` keeps those that decode to its characters.
EMAIL_ESCAPED = re.compile(
    r"(?<![\w.!#$%&'*+=^`{|}~-])(?:[\w!#$&'*+=^`{|}~-]|%[0-9A-Fa-f]{2})+(?:\.(?:[\w!#$&'*+=^`{|}~-]|%[0-9A-Fa-f]{2})+)*"
    r"%(?:25)?40(?:[^\W_](?:[\w-]{0,61}[^\W_])?\.)+[^\W\d_]{2,}\b"
)
ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}|.", re.DOTALL)
LOCAL_CHARS = set("!#$%&'*+=^_`{|}~-.")  # EMAIL's local part: these, letters and digits
# Han, kana and Hangul (with their compatibility and half-width forms): letters to `\w`, so the
# patterns take them into an address's local part and top-level domain.
CJK = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af\uf900-\ufaff\uff66-\uffdc\U00020000-\U0003ffff]"
)
# Names no registry sells that a network's own addresses use (RFC 2606, 6761, 6762, 7686; ICANN's
# `.internal`; the `.lan`, `.home` and `.corp` that routers and companies set up).
SPECIAL_USE = {"test", "example", "invalid", "localhost", "local", "internal", "onion", "lan", "home", "corp"}
# An scp-style remote: `user@host:path`, the path after the colon starting with `/` or `~` or
# holding a `/` (`git@github.com:org/repo.git`, `deploy@10.0.0.5:/srv`); a host needs no TLD.
SCP_PATH = re.compile(r":(?:[~/]|[\w.-]+/)")
SCP_REMOTE = re.compile(r"(?<![\w.!#$%&'*+=^`{|}~-])[\w][\w.-]*(?=@[\w-]+(?:\.[\w-]+)*:(?:[~/]|[\w.-]+/))")


def find_emails(text: str) -> Iterator[tuple[int, int]]:
    """The addresses in `text`, plain and percent-escaped, as spans."""
    if "@" in text:
        for m in EMAIL.finditer(text):
            span = _address(text, query_value(text, m.start(), m.end()), m.end())
            if span is not None:
                yield span
    if "40" in text and "%" in text:
        for m in EMAIL_ESCAPED.finditer(text):
            start = escaped_email(m.group())
            if start is not None:
                yield m.start() + start, m.end()


def scp_logins(text: str) -> Iterator[tuple[int, int]]:
    """The user names of scp-style remotes (`git@github.com:org/repo.git`)."""
    return (m.span() for m in SCP_REMOTE.finditer(text))


def _address(text: str, start: int, end: int) -> tuple[int, int] | None:
    """An address found at text[start:end], cut out of the CJK words around it, or None where it
    is a remote's `user@host` or its top-level domain is none (the module's docstring)."""
    at = text.index("@", start)
    cut_start, cut_end = start, end
    last = max((m.end() for m in CJK.finditer(text, start, at)), default=start)
    if start < last < at:  # CJK words, then the ASCII local part
        cut_start = last
    first = CJK.search(text, at + 1, end)
    if first and first.start() > at + 1:  # the ASCII domain, then CJK words
        cut_end = first.start()
    if EMAIL.fullmatch(text[cut_start:cut_end]):  # a slice: the look-behind would see the CJK
        start, end = cut_start, cut_end
    if SCP_PATH.match(text, end):  # `git@github.com:org/repo`: a login (scp_logins)
        return None
    return (start, end) if domain_ok(text[at + 1 : end]) else None


@lru_cache(maxsize=4096)
def domain_ok(domain: str) -> bool:
    """Whether the domain's last label is a top-level domain (the Public Suffix List's, read from
    the `tld` package's copy) or a special-use name."""
    label = domain.rsplit(".", 1)[-1].lower()
    return label in SPECIAL_USE or is_tld(label)


def query_value(text: str, start: int, end: int) -> int:
    """Where an address found at text[start:end] starts: after the last `=` or `&` of its local
    part where it follows a URL query's `?`, `&` or `;` (`?id=7&to=ann@b.com` keeps `id=7&to=`;
    both are an address's characters, so the match took the whole query), else at start."""
    if start == 0 or text[start - 1] not in "?&;":
        return start
    local = text[start : text.index("@", start)]
    cut = max(local.rfind("="), local.rfind("&")) + 1
    return start + cut if 0 < cut < len(local) and EMAIL.fullmatch(text[start + cut : end]) else start


def escaped_email(candidate: str) -> int | None:
    """Where the address starts in a match of EMAIL_ESCAPED: after the last character, escaped or
    not, that a local part has no place for (the `%2F`, `%3A` or `%3F` of an escaped URL around
    it); None when what is left, decoded, is no address."""
    at = candidate.rindex("%")  # the domain holds none: this is the escaped "@"
    start = 0
    for m in ESCAPE.finditer(candidate, 0, at):
        char = unquote(m.group())
        if (
            not (char.isalnum() or char in LOCAL_CHARS)
            or char in "=&"
            or (start == m.start() and char == ".")
        ):
            start = m.end()  # a URL query's key (`to=`) is none of it, nor a leading dot
    domain = candidate[at:].split("40", 1)[1]
    address = f"{unquote(candidate[start:at])}@{domain}"
    ok = start < at and EMAIL.fullmatch(address) and domain_ok(domain)
    return start if ok else None
