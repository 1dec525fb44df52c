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
"""

from __future__ import annotations

import re

from lmforge.data.report import StageStats
from lmforge.errors import LmforgeError

PAGE_HEAD = 4096  # characters searched for a page's opening tags
_PROLOG = r"\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*"  # white space, an XML declaration, comments
_PAGE = re.compile(_PROLOG + r"<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)


class MainContent:
    """trafilatura.extract with datatrove's settings (precision over recall, no comments), but
    its cross-document deduplication off: that cache lives in each worker process, so what it
    dropped would depend on how documents fell to workers; the boilerplate and dedup stages do
    that over the whole corpus."""

    def __init__(self) -> None:
        try:
            from trafilatura import extract
        except ImportError as e:  # not installed, or a dependency missing (justext's lxml_html_clean)
            raise LmforgeError(
                f"prep.html_extractor='trafilatura' needs trafilatura, which cannot be imported"
                f" ({str(e).splitlines()[0]}): pip install 'lmforge[html]'"
            ) from None
        self.extract = extract

    def is_page(self, text: str) -> bool:
        return _PAGE.match(text, 0, PAGE_HEAD) is not None

    def apply(self, text: str, stats: StageStats) -> str | None:
        main = self.extract(text, favor_precision=True, include_comments=False, deduplicate=False)
        if not main or not main.strip():
            stats.dropped["no main content"] += 1
            return None
        stats.edits["pages cut to main content"] += 1
        return main
