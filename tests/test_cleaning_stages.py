"""The cleaning stages on text a corpus really holds: code and Markdown through `markup`, Chinese
and Japanese through `normalize` and `near_dedup`, numeric tables through `pii`, indented text
through `stopwords`; what each must leave alone as much as what it must change."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from lmforge.data.clean import Markup, Normalize, Stopwords
from lmforge.data.dedup import NearDedup
from lmforge.data.input_files import input_notes, list_files
from lmforge.data.pii import PII
from lmforge.data.report import StageStats

CODE = """Docs at <https://mylib.example.org/docs>. Write to <maintainers@mylib.example.org>.
#include <vector>
template <typename T>
T sum(const std::vector<T>& xs) { for (i=0;i<n;i++) if (x>y) z; }
fn first<T: Clone>(v: &[T]) -> Option<T>
if (a<b && c>d) return;
List<String> xs; Option<Box<Node>> n; Map<A, B> m; Vec<A> v;
"""


def test_markup_leaves_code_and_autolinks_alone() -> None:
    stats = StageStats()
    assert Markup().apply(CODE, stats) == CODE
    assert not stats.edits


def test_markup_strips_html_in_markdown_but_not_its_code() -> None:
    text = (
        'Use `<br>` for breaks, <b>bold</b> and <a href="x.html" data-id=3>a link</a> &amp; more<br/>end\n'
        '```html\n<div class="x">kept &amp; shown</div>\n```\n'
        "<!-- a comment --><script>steal()</script>Vec<A> and <T> stay\n"
    )
    stats = StageStats()
    out = Markup().apply(text, stats)
    assert out == (
        "Use `<br>` for breaks, bold and a link & more\nend\n"
        '```html\n<div class="x">kept &amp; shown</div>\n```\n'
        "Vec<A> and <T> stay\n"
    )
    assert stats.edits == {"html": 1}
    assert Markup().apply("Tom &amp; Jerry, no tags", stats) == "Tom & Jerry, no tags"  # entities alone too


def test_markup_decodes_only_entities_that_end_in_a_semicolon() -> None:
    """html.unescape read HTML's legacy names without a `;` too: code's `&copy` and a URL's `&para=`
    became `©` and `¶`, once anything in the document looked like HTML."""
    stats = StageStats()
    code = "int *p = &count;\nmemcpy(&copy, &reg, n); if (!x &not_found) y;\n"
    assert Markup().apply(code, stats) == code
    url = "See <b>docs</b>: https://x.com/?a=1&copy=2&para=3&lang=en &amp; &#233;&#xE9; &copy; &nope;"
    assert Markup().apply(url, stats) == "See docs: https://x.com/?a=1&copy=2&para=3&lang=en & éé © &nope;"


def test_normalize_leaves_escaped_tags_for_markup_to_decode() -> None:
    """ftfy decoded `&lt;br&gt;` on the lines it repairs (the non-ASCII ones) and markup then
    stripped the tag it made: a French line lost what the English one kept."""
    stats = StageStats()
    for line in ("In HTML, write &lt;br&gt; for a break.", "En HTML, écrivez &lt;br&gt; pour un saut."):
        out = Markup().apply(Normalize().apply(line, stats), stats)
        assert "<br> for a break" in out or "<br> pour un saut" in out, out


def test_markup_keeps_comparisons_in_code_and_scripts_shown_in_markdown_code() -> None:
    """`a<b and c>d` read <b and c> as a tag (a one-letter element with bare attributes) and lost
    the code between; a <script> or comment inside Markdown code was dropped before the code was
    protected. A page's own script goes, backtick template literal and all."""
    stats = StageStats()
    code = "x = a<b or c>d\nwhile i<s and j>0: pass\ny = a<p and q>d\n"
    assert Markup().apply(code + "<b>bold</b> <a href='u'>link</a>\n", stats) == code + "bold link\n"
    fenced = '```html\n<!-- keep -->\n<script src="w.js"></script>\n```\n'
    assert Markup().apply(fenced + "<p>after</p>", stats) == fenced + "\nafter\n"
    assert Markup().apply("Use `<script>x</script>` inline<br>", stats) == "Use `<script>x</script>` inline\n"
    assert Markup().apply("<html><script>var a = `x`;</script><p>text</p></html>", stats) == "\ntext\n"


def test_normalize_keeps_full_width_forms_and_repairs_mojibake() -> None:
    stats = StageStats()
    text = "床前明月光，疑是地上霜。\n日本語：「こんにちは」！？ ｶﾀｶﾅ ﬁ\n"
    assert Normalize().apply(text, stats) == text
    assert not stats.edits  # clean text is not counted as repaired
    assert Normalize().apply("cafÃ© au lait\n", stats) == "café au lait\n"
    assert stats.edits == {"lines repaired": 1}


def _hanzi(rng: random.Random, n: int) -> str:
    return "".join(chr(rng.randrange(0x4E00, 0x4E00 + 3000)) for _ in range(n))


def test_near_dedup_reads_chinese_by_characters() -> None:
    """Text without spaces had shingles only after line breaks: distinct chats with the same
    speaker labels were dropped, and copies differing by one character kept."""
    rng = random.Random(0)
    dedup, stats = NearDedup(), StageStats()
    chats = [
        "\n".join(f"用户:{_hanzi(rng, 30)}\n助手:{_hanzi(rng, 30)}" for _ in range(4)) for _ in range(30)
    ]
    assert all(dedup.keep(dedup.key(chat), stats) for chat in chats)
    text = _hanzi(rng, 400)
    near = text[:200] + "的" + text[201:]
    assert dedup.keep(dedup.key(text), stats) and not dedup.keep(dedup.key(near), stats)
    assert stats.dropped == {"near duplicate": 1}


def test_near_dedup_keeps_short_documents_that_differ_in_their_first_or_last_words() -> None:
    """The first word and the words of the last 8 bytes made no shingle: 6 of 20 one-line facts
    ("Paris is the capital of France.") were dropped as near duplicates of each other."""
    pairs = ("Paris France, Rome Italy, Berlin Germany, Madrid Spain, Lisbon Portugal, Vienna Austria,"
             " Prague Czechia, Warsaw Poland, Oslo Norway, Helsinki Finland, Dublin Ireland, Athens Greece,"
             " Cairo Egypt, Tokyo Japan, Lima Peru, Ottawa Canada, Canberra Australia, Nairobi Kenya,"
             " Hanoi Vietnam, Seoul Korea")  # fmt: skip
    capitals = [pair.split() for pair in pairs.split(", ")]
    dedup, stats = NearDedup(), StageStats()
    assert all(dedup.keep(dedup.key(f"{a} is the capital of {b}."), stats) for a, b in capitals)
    assert not dedup.keep(dedup.key("Paris is the capital of France."), stats)  # a copy still goes


def test_near_dedup_drops_short_documents_only_at_the_jaccard_threshold() -> None:
    """One shared LSH band was a drop: short documents around a template's words (Jaccard 0.33 to
    0.6 on 4-8 shingles) share one often, and 241 of these 841 sums and 30 of 119 "X likes Y."
    went. Short copies with a changed mark or letter (Jaccard 0.78-0.82) still go."""
    sums = [f"Question: what is {a} plus {b}? Answer: {a + b}." for a in range(1, 30) for b in range(1, 30)]
    names = "Alice Bob Carol David Emma Frank Grace Henry Irene Jack Karen Liam Mia Noah Olivia Paul Quinn"
    fruits = ["apples", "pears", "plums", "grapes", "lemons", "melons", "cherries"]
    likes = [f"{name} likes {fruit}." for name in names.split() for fruit in fruits]
    dedup, stats = NearDedup(), StageStats()
    assert [doc for doc in sums + likes if not dedup.keep(dedup.key(doc), stats)] == []
    pairs = [
        ("The meeting starts at ten in the main hall.", "The meeting starts at ten in the main hall!"),
        (
            "Please remember to bring your own lunch on the trip.",
            "Please remember to bring your own lunch on the trip",
        ),
        (
            "Turn left at the bakery and walk past the church.",
            "Turn left at the bakery, and walk past the church.",
        ),
    ]
    assert all(dedup.keep(dedup.key(a), stats) and not dedup.keep(dedup.key(b), stats) for a, b in pairs)
    assert stats.dropped == {"near duplicate": 3}


def test_a_numeric_tables_rows_are_not_cards() -> None:
    table = "1280 3840 8960 14080\n2240 6720 15680 24640\n"
    assert PII(kinds="card").scrub(table)[0] == table
    for card in ("4111 1111 1111 1111", "3782 822463 10005", "4111-1111-1111-1111", "4111111111111111"):
        assert PII(kinds="card").scrub(f"Paid with {card}.")[0] == "Paid with <CARD>."


def test_stopwords_keep_indentation_and_columns() -> None:
    stats = StageStats()
    text = "The cat sat on the mat.\n    if x:\n        return the  value\nname    age    city\nsat on\n"
    out = Stopwords().apply(text, stats)
    assert out == "cat sat mat.\n    x:\n        return value\nname    age    city\nsat\n"
    assert stats.edits == {"stopwords": 6}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_in_an_input_folder_is_named_not_read(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("some text\n")
    os.mkfifo(tmp_path / "pipe.txt")  # reading it would wait forever
    passed_over: list[Path] = []
    assert list_files(tmp_path, passed_over) == [tmp_path / "a.txt"]
    said = "not read: 1 entry in the input folders that are not files (pipes, sockets, devices)"
    assert input_notes([tmp_path / "a.txt"], passed_over) == [f"{said}: {tmp_path / 'pipe.txt'}"]


def test_stopwords_keep_a_real_nul() -> None:
    """A NUL in the text (a JSON "\\u0000" with no markup stage before) was taken for the stage's
    own mark of a removed word: "nul\\x00 in text" became "nultext"."""
    stats = StageStats()
    assert Stopwords().apply("nul\x00 in text", stats) == "nul\x00 text"
    assert Stopwords().apply("the \x00\ufdd0 of it", stats) == "\x00\ufdd0"  # another mark then


def test_markup_separates_blocks_and_table_cells_as_the_epub_reader_does() -> None:
    """The markup stage knew fewer block tags than the EPUB reader: `<td>Paris</td><td>France</td>`
    became ParisFrance, `<dt>Term</dt><dd>Definition</dd>` TermDefinition, a page's title ran into
    its body's first line; a row's cells are now tab-separated, as epub.py writes them."""
    from lmforge.data.clean import Whitespace

    def cleaned(text: str) -> str:
        stats = StageStats()
        return Whitespace().apply(Markup().apply(text, stats), stats).strip()  # type: ignore[arg-type]

    table = "<table><tr><td>Paris</td><td>France</td></tr><tr><th>Rome</th><td x=1>Italy</td></tr></table>"
    assert cleaned(table) == "Paris\tFrance\n\nRome\tItaly"
    pretty = "<table>\n  <tr>\n    <td>Paris</td>\n    <td>France</td>\n  </tr>\n</table>"
    assert cleaned(pretty) == "Paris\tFrance"
    assert cleaned("<dl><dt>Term</dt><dd>Definition</dd></dl>") == "Term\n\nDefinition"
    page = "<html><head><title>My page</title></head><body><main>Hello world</main></body></html>"
    assert cleaned(page) == "My page\n\n\nHello world"
    assert cleaned("<blockquote>Quote</blockquote><footer>Foot</footer>x<hr>y") == "Quote\n\nFoot\nx\ny"
    assert cleaned("<select><option>One<option>Two</select><figcaption>Cap</figcaption>") == "One\nTwo\nCap"
    assert cleaned("a\tb and <code>x</code>") == "a\tb and x"  # a text's own tab is kept


def test_markup_and_the_epub_reader_share_one_list_of_block_tags() -> None:
    """Every block tag starts a new line in both (one list, html_blocks.py)."""
    from lmforge.data.epub import _Text
    from lmforge.data.html_blocks import BLOCK_TAGS

    for tag in sorted(BLOCK_TAGS - {"title"}):  # the EPUB reader leaves <title> out (the <head>'s)
        markup = Markup().apply(f"before<{tag}>inside</{tag}>after", StageStats())
        assert markup.split() == ["before", "inside", "after"], tag
        epub = _Text()
        epub.feed(f"<body>before<{tag}>inside</{tag}>after</body>")
        epub.close()
        assert epub.result().split("\n") == ["before", "inside", "after"], tag


def test_stopwords_leave_words_joined_by_punctuation_whole() -> None:
    """Words were runs of letters: "in" was cut out of "in-house" ("-house") and "a" out of "a.m."
    (".m."); a list's "don't" could never match."""
    stats = StageStats()
    out = Stopwords().apply("an in-house tool at 9 a.m. and the a.b test", stats)
    assert out == "in-house tool 9 a.m. a.b test" and stats.edits == {"stopwords": 4}
    assert Stopwords(["don't", "it"]).apply("I don't know it", StageStats()) == "I know"
    assert Stopwords([]).apply("the cat", StageStats()) == "the cat"  # an empty list is empty


def test_stopwords_read_combining_marks_as_part_of_a_word() -> None:
    """re's \\w has no combining marks: a Hindi list (के, की) could never match, and "a" was cut out
    of a decomposed "à", leaving its accent alone."""
    assert Stopwords(["के", "है"]).apply("राम के घर है", StageStats()) == "राम घर"
    decomposed = "the cafe\u0301 is a\u0300 la mode"
    assert Stopwords().apply(decomposed, StageStats()) == "cafe\u0301 a\u0300 la mode"


def test_a_vertical_tab_or_form_feed_ends_a_line() -> None:
    """Word's and PowerPoint's manual line break (VT) and a page break (FF) were deleted as control
    characters, gluing two words together (until 2026-12-07)."""
    stats = StageStats("markup")
    out = Markup().apply("line one\x0bline two\x0cPage two\x07 bell\x85three\x1efour", stats)
    assert out == "line one\nline two\nPage two bell\nthree\nfour"
    assert stats.edits["control line breaks"] == 4 and stats.edits["control chars"] == 1


def test_a_minified_page_with_two_backticks_loses_every_tag() -> None:
    """A whole page has no Markdown code: two backticks of its text (an apostrophe typed as one)
    were read as a code span across its tags, and the script between them stayed (V5)."""
    page = (
        "<!DOCTYPE html><html><head><title>Blog</title></head><body><p>Don`t miss it</p><script>"
        'gtag("config","G-XYZ")</script><nav><a href="/">Home</a></nav><p>It`s here</p></body></html>'
    )
    out = Markup().apply(page, StageStats("markup"))
    assert "<" not in out and "gtag" not in out and "Don`t miss it" in out and "It`s here" in out


def test_markup_strips_every_tag_of_a_whole_page_but_only_html_s_elsewhere() -> None:
    """A whole page kept the tags the stage's list of HTML elements lacks as text: inline SVG's
    `<path/>`, MathML's `<mi>`, Word's `<o:p>` and `<st1:City>`, custom elements; in text that is
    no page such a tag-like thing is text (code's `<vector>`, `<T>`), as before."""
    from lmforge.data.clean import Whitespace

    body = (
        '<p><a href="/"><svg viewBox="0 0 24"><path d="M10 20v-6z"/><circle r="3"/></svg> Home</a></p>\n'
        '<p class=MsoNormal><st1:City w:st="on">Boston</st1:City> text<o:p>&nbsp;</o:p></p>\n'
        '<my-widget data-x="1">custom element</my-widget> and <ion-icon name="heart"></ion-icon> icon\n'
        '<math><mi>x</mi><mo>=</mo><mn>2</mn></math> <image src="x.png"> <xmp>xmp text</xmp>\n'
    )
    stats = StageStats()
    page = Markup().apply(f"<!DOCTYPE html><html><body>\n{body}</body></html>", stats)
    out = Whitespace().apply(page, stats)  # type: ignore[arg-type]
    assert "<" not in out and ">" not in out, out
    assert out.split() == ["Home", "Boston", "text", "custom", "element", "and", "icon", "x=2", "xmp", "text"]
    code = "<b>Note</b>: #include <vector> and <my-widget> or <o:p> in text\n"
    assert Markup().apply(code, stats) == "Note: #include <vector> and <my-widget> or <o:p> in text\n"


def test_markup_keeps_markdown_s_indented_code_blocks_but_not_list_continuations() -> None:
    """A CommonMark indented code block (4 spaces or a tab, after a blank line) holding HTML was
    deleted, script and all; fenced blocks and spans were kept. An indented line that continues
    a paragraph or a list item is no code block: its tags are stripped as before."""
    code = '    <div class="w">\n      <script src="w.js"></script>\n\n\t<style>.w{}</style>\n    </div>\n'
    text = f"# Embed\n\nPaste this:\n\n{code}\nThen <b>save</b>.\n"
    assert Markup().apply(text, StageStats()) == f"# Embed\n\nPaste this:\n\n{code}\nThen save.\n"
    assert Markup().apply(code, StageStats()) == code  # at the document's start too
    paragraph = "A paragraph\n    <b>continued</b> here\n"
    assert Markup().apply(paragraph, StageStats()) == "A paragraph\n    continued here\n"
    listed = "- item <i>one</i>\n\n    more of <b>item</b> one\n- two\n\nText\n\n    <b>code</b>\n"
    expected = "- item one\n\n    more of item one\n- two\n\nText\n\n    <b>code</b>\n"
    assert Markup().apply(listed, StageStats()) == expected
    page = "<html><body>\n\n    <div>indented page</div>\n</body></html>"  # a page's indentation is no code
    assert Markup().apply(page, StageStats()).split() == ["indented", "page"]


def test_markup_keeps_code_nested_in_lists_and_quotes_and_a_fence_never_closed() -> None:
    """Code in a list item (fenced, or indented past the item's text) and in a block quote was
    stripped as prose, and so was a fence never closed (CommonMark: code to the document's end);
    a fence closed by a shorter one ran on. CommonMark's reading, through markdown-it-py."""
    listed = '1. Install:\n\n   - Add:\n\n     ```html\n     <script src="a.js"></script>\n     ```\n'
    indented = '- Paste <b>this</b>:\n\n      <div id="w"></div>\n\nDone <i>now</i>.\n'
    quoted = "> Tip:\n>\n> ```\n> <br>\n> ```\n"
    for text, expected in [
        (listed, listed),
        (indented, '- Paste this:\n\n      <div id="w"></div>\n\nDone now.\n'),
        (quoted, quoted),
        ("<b>Embed</b>:\n\n```html\n<div>unclosed</div>\n", "Embed:\n\n```html\n<div>unclosed</div>\n"),
        (
            "````\n<b>a</b>\n```\n<i>still code</i>\n````\n<b>out</b>",
            "````\n<b>a</b>\n```\n<i>still code</i>\n````\nout",
        ),
        ("A ```<b>s</b>``` <i>x</i>\n<b>y</b>", "A ```<b>s</b>``` x\ny"),  # a span, no fence
        ("<b>x</b>\r\n\r\n    <i>code</i>\r\n<b>y</b>", "x\r\n\r\n    <i>code</i>\r\ny"),
    ]:
        assert Markup().apply(text, StageStats()) == expected, text
