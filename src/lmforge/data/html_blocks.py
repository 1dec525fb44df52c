"""HTML's block-level elements, the one list of them for the `markup` stage (clean.py) and the EPUB
reader (epub.py): text after one starts on a new line, and a table's cells on one row are
separated by a tab. The markup stage glued words across the blocks its own shorter list lacked
(`<td>Paris</td><td>France</td>` -> `ParisFrance`, `<dt>Term</dt><dd>...`, `<title>` and the
body's first line), which the EPUB reader's list already separated.

HTML's block and table-row elements (the HTML standard's rendering section: `display: block`,
`list-item`, `table`, `table-row`, `table-caption`), with `<title>` and `<option>`, which a
page shows on a line of their own (the tab, a list box); `<html>` and `<head>` hold no text of
their own before or after them.
"""

from __future__ import annotations

BLOCK_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog",
        "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
        "h4", "h5", "h6", "header", "hgroup", "hr", "legend", "li", "main", "menu",
        "nav", "ol", "optgroup", "option", "p", "pre", "search", "section", "summary", "table",
        "title", "tr", "ul",
    }
)  # fmt: skip
CELL_TAGS = frozenset({"td", "th"})  # a tab before each but a row's first
