"""Which files `prep --pairs FOLDER` reads: lmforge's own output inside the folder is not a corpus."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmforge.data.pairs import prepare_pairs
from lmforge.errors import LmforgeError


def _corpus(path: Path, n: int, word: str) -> None:
    path.write_text("".join(f"{word} {i} is here.\t{word} {i} est ici.\tdoc{i % 10}\n" for i in range(n)))


def test_an_earlier_prep_output_in_the_folder_is_named_not_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An earlier prep output inside the folder (of another corpus here) was read as aligned
    train/val/test .en/.fr files: its val and test pairs went into the new training split, silently.
    `lmforge prep` (the LM corpus reader) names such a folder and reads past it; so does prep --pairs."""
    corp = tmp_path / "corp"
    corp.mkdir()
    _corpus(corp / "my.tsv", 60, "The cat")
    _corpus(tmp_path / "other.tsv", 60, "A dog")
    prepare_pairs(tmp_path / "other.tsv", corp / "old", tokenizer="char", val_fraction=0.2, test_fraction=0.2)
    capsys.readouterr()
    meta = prepare_pairs(corp, tmp_path / "new", tokenizer="char", val_fraction=0.2, test_fraction=0.2)
    assert meta["read"] == 60 and meta["sources"] == [str(corp / "my.tsv")]
    assert "dog" not in (tmp_path / "new" / "train.en").read_text()
    err = capsys.readouterr().err
    assert "not read: 1 folder in the input folders holding lmforge's own output" in err
    assert str(corp / "old") in err


def test_a_prep_output_named_as_the_input_is_refused_in_one_line(tmp_path: Path) -> None:
    """As `lmforge prep` refuses one: its meta.json's folder is no corpus (its splits would be
    pooled into one training split again)."""
    _corpus(tmp_path / "c.tsv", 60, "The cat")
    prepare_pairs(tmp_path / "c.tsv", tmp_path / "old", tokenizer="char", val_fraction=0.2, test_fraction=0.2)
    old = re.escape(str(tmp_path / "old"))
    with pytest.raises(LmforgeError, match=rf"^{old}: a prep output .*, not a pair corpus: give"):
        prepare_pairs(tmp_path / "old", tmp_path / "new", tokenizer="char")
    assert json.loads((tmp_path / "old" / "meta.json").read_text())["format"] == "lmforge-pairs-1"
