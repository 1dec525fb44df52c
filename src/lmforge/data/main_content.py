"""Main-content extraction for whole web pages, the `markup` stage's `trafilatura` choice
(prep.html_extractor): a page's article is kept, its menus, footers, cookie banners and link lists
are left out, as datatrove's `Trafilatura` extractor (FineWeb's) does with the same library.

Only a document that is a whole page goes to trafilatura: one that starts with `<!doctype html`,
`<html`, `<head` or `<body` (after white space, an XML declaration and comments: an .html file,
a WARC response, a crawled page in a jsonl field). A text that merely holds some tags is no page,
and trafilatura would drop it whole or in part (a Markdown tutorial whose code block holds a page
lost every tag of it when the opening tags were looked for anywhere); the tag stripper takes it.
A page where trafilatura finds no main content is dropped, counted in the report ("no main
content").

A page gets `timeout` seconds (prep.trafilatura_timeout; 1 s, datatrove's default): a pathological
one (deep nesting, a huge table) can hold trafilatura for minutes. One that takes longer is
dropped, as datatrove drops it, and counted ("main content timed out"): its tags stripped instead,
it would be the menus and boilerplate the extractor is chosen to leave out. datatrove runs the
extractor in a child process that it kills; here, in prep's cleaning workers, which run whole
batches of pages, the limit is a timer of the process's CPU time (ITIMER_VIRTUAL, SIGVTALRM):
what is dropped does not depend on the machine's load (a wall-clock timer dropped a page on a
busy machine that it kept alone), and a SIGALRM timer of the caller's is left alone.
It interrupts trafilatura's Python code and regular expressions, but one long call into C (lxml
parsing a 100 MB page) only when that call returns. Outside a process's main thread (no signals
there) pages have no limit.
"""

from __future__ import annotations

import re
import signal
import threading
from types import FrameType

from lmforge.data.report import StageStats
from lmforge.errors import LmforgeError

PAGE_HEAD = 4096  # characters searched for a page's opening tags
_PROLOG = r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"  # white space, an XML declaration, comments
_PAGE = re.compile(_PROLOG + r"<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)
TIMEOUT = 1.0  # seconds a page may take, datatrove's Trafilatura default


def is_page(text: str) -> bool:
    """Whether `text` is a whole web page (its opening tags first), not text holding some tags."""
    return _PAGE.match(text, 0, PAGE_HEAD) is not None


class _TimedOut(BaseException):
    """Raised by the timer into trafilatura: a BaseException, which its `except Exception` blocks
    let through."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _TimedOut


class MainContent:
    """trafilatura.extract with datatrove's settings (precision over recall, no comments), but
    its cross-document deduplication off: that cache lives in each worker process, so what it
    dropped would depend on how documents fell to workers; the boilerplate and dedup stages do
    that over the whole corpus."""

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout  # seconds per page; 0: no limit
        try:
            from trafilatura import extract
        except ImportError as e:  # not installed, or a dependency missing (justext's lxml_html_clean)
            raise LmforgeError(
                f"prep.html_extractor='trafilatura' needs trafilatura, which cannot be imported"
                f" ({str(e).splitlines()[0]}): pip install 'lmforge[html]'"
            ) from None
        self.extract = extract

    def is_page(self, text: str) -> bool:
        return is_page(text)

    def apply(self, text: str, stats: StageStats) -> str | None:
        try:
            main = self._extract(text)
        except _TimedOut:
            stats.dropped["main content timed out"] += 1
            return None
        if not main or not main.strip():
            stats.dropped["no main content"] += 1
            return None
        stats.edits["pages cut to main content"] += 1
        return main

    def _extract(self, text: str) -> str | None:
        """trafilatura.extract, raising _TimedOut past `timeout` seconds where a timer can run."""
        limited = self.timeout > 0 and threading.current_thread() is threading.main_thread()
        if not limited:
            return self.extract(text, favor_precision=True, include_comments=False, deduplicate=False)
        before = signal.signal(signal.SIGVTALRM, _alarm)
        try:
            outer = signal.setitimer(signal.ITIMER_VIRTUAL, self.timeout)
            try:
                return self.extract(text, favor_precision=True, include_comments=False, deduplicate=False)
            finally:  # an alarm due just now still raises here, and is counted: the page took that long
                left = signal.setitimer(signal.ITIMER_VIRTUAL, 0)[0]
                if outer[0] > 0:  # someone else's timer of this kind: what is left of it, re-armed
                    signal.setitimer(
                        signal.ITIMER_VIRTUAL, max(outer[0] - (self.timeout - left), 1e-6), outer[1]
                    )
        finally:
            signal.signal(signal.SIGVTALRM, before)
