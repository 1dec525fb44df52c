"""Sentence pairs in a TSV that Python's csv.writer (or a spreadsheet) wrote: a cell holding a tab
or a line break is in quotes. `prep --pairs` split `"x<TAB>y"<TAB>z` into source `"x`, target `y"`
and document `z`, silently; now it reads such a cell as the csv module does, which is the oracle."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from lmforge.data.pairs import read_pairs
from lmforge.errors import LmforgeError

ROWS = [
    ["x\ty", "z", "d1"],  # the adversarial pass's row: a tab in the source
    ["plain", "texte", "d1"],
    ["two\nlines", 'with "quotes"\tand a tab', "d2"],
    ['He said "hi".', "Il a dit « salut ».", "d2"],
    ["last", "line\r\nbreak", "d3"],
]


def _norm(text: str) -> str:
    return " ".join(text.split())  # as read_pairs normalises whitespace


def test_cells_csv_writer_quoted_read_as_the_csv_module_reads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "q.tsv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t").writerows(ROWS)
    with path.open(newline="", encoding="utf-8") as f:
        oracle = [(_norm(s), _norm(t), d) for s, t, d in csv.reader(f, delimiter="\t")]
    got = [(p.src, p.tgt, p.doc) for p in read_pairs(path)]
    assert got == oracle
    assert got[0] == ("x y", "z", "d1") and len(got) == len(ROWS)
    assert "doubled quotes inside are read as spreadsheets write them" in capsys.readouterr().err


def test_a_two_column_file_with_a_quoted_line_break_and_errors_name_the_file_s_own_line(
    tmp_path: Path,
) -> None:
    """Line numbers stay the file's: the record after a cell spanning lines 1-3 is line 4."""
    path = tmp_path / "q.tsv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t", lineterminator="\n").writerows(
            [["a\nb\nc", "abc"], ["d", "e", "f", "g"]]
        )
    assert path.read_text().count("\n") == 4
    with pytest.raises(
        LmforgeError, match=rf"^{re.escape(str(path))}:4: expected 2 or 3 tab-separated columns, got 4$"
    ):
        list(read_pairs(path))


def test_quotes_that_are_not_csv_s_stay_text_and_lose_no_line(tmp_path: Path) -> None:
    """A sentence's own quotes (TSV corpora such as Tatoeba do not quote cells), a quote left open
    with no close after it: read as before, every line a pair."""
    lines = ['"Wait, he said\tAttends, dit-il', "she left\telle est partie",
             '"Hi," she said.\t"Salut", dit-elle.', '"Yes."\t"Oui."', 'x ""y""\tz']  # fmt: skip
    path = tmp_path / "t.tsv"
    path.write_text("".join(line + "\n" for line in lines))
    got = [(p.src, p.tgt) for p in read_pairs(path)]
    assert got == [
        ('"Wait, he said', "Attends, dit-il"),
        ("she left", "elle est partie"),
        ('"Hi," she said.', '"Salut", dit-elle.'),
        ('"Yes."', '"Oui."'),
        ('x ""y""', "z"),
    ]


def test_a_two_column_row_with_a_tab_in_quotes_is_one_pair_not_three_cells(tmp_path: Path) -> None:
    """The silent case: `"x<TAB>y"<TAB>z` has three tab-separated pieces, which read as source,
    target and document."""
    path = tmp_path / "q3.tsv"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter="\t").writerows([["x\ty", "z"], ["a", "b"]])
    assert path.read_text().startswith('"x\ty"\tz')
    got = [(p.src, p.tgt, p.doc) for p in read_pairs(path)]
    assert got == [("x y", "z", "q3.tsv"), ("a", "b", "q3.tsv")]


def test_a_raw_tsv_quote_closed_lines_later_keeps_every_line_a_pair(tmp_path: Path) -> None:
    """Dialogue over verses in a raw TSV: a quote opened in a source and closed at a later line's
    cell end was read as one csv cell running over the lines, merging the first line's source,
    target and document with the next source (593 pairs from 600 lines of the shipped corpus)."""
    lines = ['"Go forth from the ark, you and your wife.\tSors de l\'arche, toi et ta femme.\tgen8',
             'Bring forth every living thing with you."\tFais sortir tous les animaux avec toi.\tgen8',
             "The dog runs.\tLe chien court.\tgen8"]  # fmt: skip
    path = tmp_path / "raw.tsv"
    path.write_text("".join(line + "\n" for line in lines))
    got = [(p.src, p.tgt) for p in read_pairs(path)]
    assert got == [
        ('"Go forth from the ark, you and your wife.', "Sors de l'arche, toi et ta femme."),
        ('Bring forth every living thing with you."', "Fais sortir tous les animaux avec toi."),
        ("The dog runs.", "Le chien court."),
    ]


def test_a_lone_cr_in_a_cell_is_text_and_errors_name_the_file_s_own_line(tmp_path: Path) -> None:
    """A stray CR in a scraped cell ended the line (the file was read with newline=""): the pair
    lost its target's end and its document, and a fragment -> "doc0" pair was made, silently; in a
    two-column file it was an error naming a line `sed -n Np` does not show. Only an LF ends one,
    as for aligned files; a CRLF's CR goes with it."""
    path = tmp_path / "cr.tsv"
    lines = ["The dog runs.\tLe chien court.\tdoc0", "God said.\tDieu dit:\rQu'il y ait.\tdoc0",
             "Go.\tVa.\tdoc1"]  # fmt: skip
    path.write_bytes("".join(line + "\r\n" for line in lines).encode())
    got = [(p.src, p.tgt, p.doc) for p in read_pairs(path)]
    assert got == [("The dog runs.", "Le chien court.", "doc0"),
                   ("God said.", "Dieu dit: Qu'il y ait.", "doc0"), ("Go.", "Va.", "doc1")]  # fmt: skip
    bad = tmp_path / "t2.tsv"  # line 1 is fine with its CR; line 2 (as sed -n 2p shows it) is not
    bad.write_text("The cat sleeps.\tLe chat\rdort.\nGo.\tVa.\tx\ty\n", newline="")
    with pytest.raises(LmforgeError, match=rf"^{re.escape(str(bad))}:2: expected 2 or 3 tab-separated"):
        list(read_pairs(bad))


def test_cells_with_a_cr_or_crlf_read_as_csv_writer_wrote_them(tmp_path: Path) -> None:
    """csv.writer quotes a cell holding a CR where its line end is CRLF (the csv module reads that
    back, the oracle); with LF line ends it leaves a lone CR unquoted, which the csv module then
    reads as a line end, and lmforge reads as the cell's text it was written as."""
    rows = [["a\rb", "c\r\nd", "d1"], ["e", "f\rg\nh", "d2"], ["i", "j", "d3"]]
    written = [(_norm(s), _norm(t), d) for s, t, d in rows]
    for ending in ("\r\n", "\n"):
        path = tmp_path / "q.tsv"
        with path.open("w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t", lineterminator=ending).writerows(rows)
        with path.open(newline="", encoding="utf-8") as f:
            oracle = list(csv.reader(f, delimiter="\t"))
        assert [(p.src, p.tgt, p.doc) for p in read_pairs(path)] == written
        assert (oracle == rows) == (ending == "\r\n")


def test_a_file_with_only_cr_line_ends_reads_a_cr_a_line(tmp_path: Path) -> None:
    """An old Mac export (no LF anywhere, each line ended by a lone CR) is read a line a CR, as
    open() and the csv module read it: aligned files read as one line each (one long pair)."""
    tsv = tmp_path / "mac.tsv"
    tsv.write_text("a\tb\rc\td\r", newline="")
    assert [(p.src, p.tgt) for p in read_pairs(tsv)] == [("a", "b"), ("c", "d")]
    (tmp_path / "m.en").write_text("one\rtwo\rthree", newline="")
    (tmp_path / "m.fr").write_text("un\rdeux\rtrois\r", newline="")
    got = [(p.src, p.tgt) for p in read_pairs(tmp_path / "m.en")]
    assert got == [("one", "un"), ("two", "deux"), ("three", "trois")]
