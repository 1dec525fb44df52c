"""What a recipe or a file names as prep's input: a TOML list of inputs (a name with a comma in
it), and a .json whose records sit under a key (`{"data": [...]}`, prep.json_field), checked
against the standard library's json.load."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lmforge import LmforgeError
from lmforge.config import config_to_toml, load_config
from lmforge.data import json_array
from lmforge.data.prep import prep
from lmforge.data.report import Report
from lmforge.data.shards import open_split
from lmforge.data.sources import read_documents
from lmforge.tokenization.tokenizer import Tokenizer


def _documents(out: Path) -> list[str]:
    """The documents prep wrote, in order: the train then the val stream, split at EOS (a split
    by the tail cuts a document in two, whose pieces this joins)."""
    tok = Tokenizer.load(out)
    ids = np.concatenate([*open_split(out, "train"), *open_split(out, "val")]).tolist()
    docs, start = [], 0
    for i, t in enumerate(ids):
        if t == tok.eos_id:
            docs.append(tok.decode(ids[start:i]))
            start = i + 1
    return docs


def test_a_recipe_may_list_its_inputs_each_name_whole(tmp_path: Path) -> None:
    """`inputs = ["a,b.txt", "dir/"]`: a comma is part of a name; the string form still splits."""
    (tmp_path / "a,b.txt").write_text("the file with a comma in its name\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "c.txt").write_text("a file in a folder\n")
    (tmp_path / "d.txt").write_text("a file named in the string form\n")
    listed = f'inputs = ["{tmp_path / "a,b.txt"}", "{tmp_path / "dir"}"]'
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[prep]\n{listed}\nout = "{tmp_path / "o"}"\nstages = "none"\n')
    prep(recipe, quiet=True)
    assert _documents(tmp_path / "o") == ["the file with a comma in its name\n", "a file in a folder\n"]
    joined = f'inputs = "{tmp_path / "dir"}, {tmp_path / "d.txt"}"'  # as before
    recipe.write_text(f'[prep]\n{joined}\nout = "{tmp_path / "o2"}"\nstages = "none"\n')
    prep(recipe, quiet=True)
    assert _documents(tmp_path / "o2") == ["a file in a folder\n", "a file named in the string form\n"]


def test_a_list_of_inputs_round_trips_and_a_bad_one_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[prep]\ninputs = ["a,b.txt", "raw/", "q\\"uote.txt"]\n')
    cfg = load_config(recipe)
    assert cfg.prep.inputs == ["a,b.txt", "raw/", 'q"uote.txt']
    again = tmp_path / "again.toml"
    again.write_text(config_to_toml(cfg, chosen_only=True))
    assert load_config(again).prep.inputs == cfg.prep.inputs
    assert load_config(None, ["--prep.inputs=a,b"]).prep.inputs == "a,b"  # the command line's text
    recipe.write_text('[prep]\ninputs = ["a.txt", 3]\n')
    with pytest.raises(LmforgeError, match=r"r\.toml: prep\.inputs\[1\]=3 must be a string, not int$"):
        load_config(recipe)
    recipe.write_text("[prep]\ninputs = 3\n")
    with pytest.raises(LmforgeError, match=r"prep\.inputs=3 must be a string or a list of strings, not int$"):
        load_config(recipe)
    recipe.write_text('[data]\ninput = ["a.txt"]\n')  # only prep.inputs takes a list
    with pytest.raises(LmforgeError, match=r"data\.input=\['a\.txt'\] must be a string, not list$"):
        load_config(recipe)


def _read(path: Path, json_field: str, field: str = "text") -> tuple[list[str], list[str]]:
    report = Report()
    texts = [d.text for d in read_documents(path, field, report, json_field=json_field)]
    return texts, report.problems


SQUAD_LIKE = {
    "version": "v2.0",
    "meta": {"source": "a dump", "splits": ["train"]},
    "other": [{"text": "not this array"}, [1, [2]], "x"],
    "data": [{"text": "first \u00e9t\u00e9 record", "id": 1}, {"text": "second"}, "third, a string"],
    "after": 1,
}


@pytest.mark.parametrize("chunk", [7, 1 << 16])  # elements and names across the window's refills
def test_records_under_a_key_are_read_streamed(
    tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(json_array, "CHUNK", chunk)
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(SQUAD_LIKE, indent=2))
    (tmp_path / "dump.json.gz").write_bytes(gzip.compress(json.dumps(SQUAD_LIKE).encode()))
    expected = [r["text"] if isinstance(r, dict) else r for r in json.load(path.open())["data"]]
    for name in ("dump.json", "dump.json.gz"):
        assert _read(tmp_path / name, "data") == (expected, [])
    # another key's array: its element 1 is no record, named under the key
    texts, problems = _read(path, "other")
    assert texts == ["not this array", "x"]
    assert problems == [
        f"{path}:other[1]: no string field ('text'; the element is a JSON list, not an object or a string)"
    ]
    (tmp_path / "top.json").write_text(json.dumps(["an array file", "read as before"]))
    assert _read(tmp_path / "top.json", "data") == (["an array file", "read as before"], [])


def test_a_missing_key_names_the_file_and_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(SQUAD_LIKE, indent=2))
    assert _read(path, "rows") == (
        [],
        [
            f"{path}: no such key (prep.json_field='rows'; the object has 'version', 'meta', 'other',"
            " 'data', 'after')"
        ],
    )
    assert _read(path, "version") == (
        [],
        [f"{path}: not a JSON array (prep.json_field='version' holds a string)"],
    )
    (tmp_path / "cut.json").write_text('{"version": 1, "data": [{"text": "kept"}, {"text": "cu')
    assert _read(tmp_path / "cut.json", "data") == (
        ["kept"],
        [f"{tmp_path}/cut.json:data[1]: truncated or corrupt (the file ends inside the element)"],
    )
    (tmp_path / "bad.json").write_text('{"version": 1 "data": []}')
    assert _read(tmp_path / "bad.json", "data") == (
        [],
        [f"{tmp_path}/bad.json: not valid JSON ('\"' after a member, not ',' or '}}', line 1)"],
    )


def test_without_json_field_the_refusal_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(SQUAD_LIKE, indent=2))
    assert _read(path, "") == (
        [],
        [
            f"{path}: not a JSON array (a JSON object whose first line is not one whole record: give"
            " --json-field other (prep.json_field) to read its array under 'other', an array of"
            " records ([{...}, {...}]) or one record a line)"
        ],
    )


def test_prep_reads_records_under_json_field(tmp_path: Path) -> None:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(SQUAD_LIKE, indent=2))
    prep(path, tmp_path / "o", quiet=True, stages="none", json_field="data")
    assert _documents(tmp_path / "o") == ["first \u00e9t\u00e9 record", "second", "third, a string"]


@pytest.mark.parametrize("number", ["12.5", "1e5", "1E+5", "-0.25e-3", "7"])
def test_a_number_cut_by_a_read_is_read_whole(tmp_path: Path, number: str) -> None:
    """The decoder stops a number before a `.` or `e` with nothing after it: `12.|5` read as 12
    then `.` as broken JSON, which ended the file (a member before json_field's key: all of it)."""
    path = tmp_path / "cut.json"
    for shift in range(-6, 6):  # the 64 KiB read boundary at every place in and around the number
        pad = "y" * (json_array.CHUNK - 16 + shift)
        for text, key in (
            ('{"pad": "' + pad + '", "ver": ' + number + ', "data": [{"text": "kept"}]}', "data"),
            ('[{"text": "' + pad + '"}, {"text": "a", "n": ' + number + '}, {"text": "after"}]', ""),
        ):
            path.write_text(text)
            report = Report()
            got = [d.text for d in json_array.read_json(path, "text", report, 1 << 20, key)]
            records = json.loads(text)[key] if key else json.loads(text)
            assert got == [r["text"] for r in records] and not report.problems, (shift, report.problems)


def test_an_earlier_output_inside_an_input_folder_is_named_not_read(tmp_path: Path) -> None:
    """`prep raw/a.txt --out raw/prepared`, then `prep raw/`: its meta.json, report.json and
    tokenizer.json were read as corpus files ("not a JSON array"); named on its own, it is refused
    as a model directory is."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "a.txt").write_text("the only document of the corpus, long enough to keep\n" * 20)
    prep([raw / "a.txt"], raw / "prepared", stages="none", quiet=True)
    prep([raw], tmp_path / "out", stages="none", quiet=True)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert not report["problem_list"] and report["stages"]["read"]["docs_out"] == 1
    assert report["input_notes"] == [
        f"not read: 1 folder in the input folders holding lmforge's own output (a prep output, a model"
        f" or run directory): {raw / 'prepared'}"
    ]
    with pytest.raises(LmforgeError, match=rf"^{raw / 'prepared'}: a prep output \(meta\.json, its shards"):
        read_documents(raw / "prepared").__next__()
