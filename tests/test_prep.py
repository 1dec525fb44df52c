"""`lmforge prep` on small real text with planted noise: cleaning, dedup, PII, bad input, split,
shards the trainer reads, exact tokenizer round trips."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import json
import lzma
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard
from conftest import TINY

import lmforge
from lmforge import LmforgeError
from lmforge.data.encode import make_encoder, ordinary_hf
from lmforge.data.loader import BatchLoader
from lmforge.data.prep import is_val, prep
from lmforge.data.report import Report, StageStats
from lmforge.data.shards import open_split, read_meta
from lmforge.data.sources import read_documents, strict_lines
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools.audit_extract import Documents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plays() -> list[str]:
    """Opening 4,000 characters of 12 of the shipped Shakespeare works (distinct texts)."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    return [t[2000:6000] for t in texts[:12]]


def _docs(out: Path) -> list[str]:
    """The documents in a prepared directory, decoded from both splits (EOS separates them)."""
    tok = Tokenizer.load(out)
    docs = []
    for split in ("train", "val"):
        ids = np.concatenate(open_split(out, split)).tolist()
        start = 0
        for i, t in enumerate(ids):
            if t == tok.eos_id:
                docs.append(tok.decode(ids[start:i]))
                start = i + 1
    return docs


def _write_jsonl(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


PII_DOC = (
    "Write to Juliet at juliet.capulet@verona.example.com or call +44 20 7946 0958 today.\n"
    "The server at 8.8.4.4 logged card 4111 1111 1111 1111 for the order.\n"
    "Local 127.0.0.1 and version 3.11 and the year 1597 are not personal.\n"
)
HTML_DOC = (
    "<html><head><style>p {color: red}</style></head><body><p>Now is the winter of our discontent"
    "</p><script>steal(document.cookie)</script><p>Made glorious summer &amp; sun</p></body></html>\n"
)


def test_cleaning_removes_duplicates_pii_and_markup(tmp_path: Path, plays: list[str]) -> None:
    near = plays[1].replace("the", "thee", 3)  # a near duplicate: 3 words changed
    texts = [*plays, plays[0], near, PII_DOC, HTML_DOC, "cafÃ© au lait, naÃ¯ve fiancÃ©e\n"]
    _write_jsonl(tmp_path / "corpus.jsonl", texts)
    out = tmp_path / "out"
    prep(tmp_path / "corpus.jsonl", out, "bpe", 400, 0.2, quiet=True, workers=2)
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    assert stages["exact_dedup"]["dropped"] == {"exact duplicate": 1}
    assert stages["near_dedup"]["dropped"] == {"near duplicate": 1}
    assert stages["pii"]["edits"] == {"card": 1, "email": 1, "ip": 1, "phone": 1}
    docs = _docs(out)
    assert len(docs) == len(plays) + 3
    joined = "\n".join(docs)
    for secret in ("juliet.capulet@", "7946", "8.8.4.4", "4111", "steal(", "color: red", "<p>", "&amp;"):
        assert secret not in joined
    for kept in ("<EMAIL>", "<PHONE>", "<IP>", "<CARD>", "127.0.0.1", "version 3.11", "1597"):
        assert kept in joined
    assert "Now is the winter of our discontent\n\nMade glorious summer & sun\n" in joined
    assert "café au lait, naïve fiancée" in joined  # mojibake repaired


def test_html_files_in_a_folder_are_read_and_their_markup_stripped(tmp_path: Path, plays: list[str]) -> None:
    corpus = tmp_path / "site"
    corpus.mkdir()
    (corpus / "plays.txt").write_text("\n\n".join(plays))
    (corpus / "winter.html").write_text(HTML_DOC)
    (corpus / "index.htm").write_text("<div>Good morrow, <b>cousin</b>.</div>\n")
    out = tmp_path / "out"
    prep(corpus, out, "char", val_fraction=0.2, quiet=True, stages="markup,whitespace")
    joined = "\n".join(_docs(out))
    assert "Now is the winter of our discontent\n\nMade glorious summer & sun\n" in joined
    assert "Good morrow, cousin." in joined
    assert "<" not in joined and "steal(" not in joined
    assert "input_notes" not in json.loads((out / "report.json").read_text())


def test_bad_inputs_are_skipped_counted_and_named(tmp_path: Path, plays: list[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.txt").write_text(plays[0])
    (src / "binary.txt").write_bytes(os.urandom(4000) + b"\x00" * 10)
    (src / "latin1.txt").write_bytes(plays[2][:300].encode() + b"\ncaf\xe9 cr\xe8me\n")
    (src / "empty.md").write_text("")
    (src / "blank.txt").write_text("  \n\n\t\n")
    (src / "huge_line.txt").write_bytes(b"x" * (3 << 20) + b"\n" + plays[3].encode())
    (src / "one_huge_line.txt").write_bytes(b"y" * (3 << 20))  # named once: was also "empty file"
    (src / "broken.txt").symlink_to(tmp_path / "nowhere.txt")  # unreadable
    lines = [
        json.dumps({"text": plays[4]}),
        "{not json",
        json.dumps({"body": "no text"}),
        json.dumps({"text": " "}),
    ]
    lines.append(json.dumps({"text": plays[5]}))
    (src / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    records = "".join(json.dumps({"text": f"gz {i} {plays[6][i : i + 80]}"}) + "\n" for i in range(3000))
    full = gzip.compress(records.encode())
    (src / "cut.jsonl.gz").write_bytes(full[: len(full) // 2])  # truncated gzip
    zst = zstandard.ZstdCompressor().compress(records.replace("gz ", "zst ").encode())
    (src / "cut.jsonl.zst").write_bytes(zst[: len(zst) * 4 // 5])  # zstandard's reader said nothing
    (src / "two_frames.txt.zst").write_bytes(
        b"".join(zstandard.ZstdCompressor().compress(part.encode()) for part in (plays[7], plays[8]))
    )
    out = tmp_path / "out"
    prep(src, out, "char", val_fraction=0.2, quiet=True, max_line_bytes=1 << 20, stages="exact_dedup")
    report = json.loads((out / "report.json").read_text())
    problems = "\n".join(report["problem_list"])
    assert f"{src / 'binary.txt'}: binary file" in problems
    assert f"{src / 'latin1.txt'}:" in problems and "invalid UTF-8" in problems
    assert f"{src / 'empty.md'}: empty file" in problems
    assert f"{src / 'blank.txt'}: blank file (only whitespace)" in problems
    assert f"{src / 'huge_line.txt'}:1: line too long" in problems
    assert [p for p in report["problem_list"] if "one_huge_line" in p] == [
        f"{src / 'one_huge_line.txt'}:1: line too long ({3 << 20:,} bytes > {1 << 20:,})"
    ]
    assert f"{src / 'broken.txt'}: unreadable" in problems
    assert f"{src / 'mixed.jsonl'}:2: not valid JSON" in problems
    assert f"{src / 'mixed.jsonl'}:3: no string field" in problems
    assert f"{src / 'mixed.jsonl'}:4: empty text" in problems  # not a document of nothing
    assert f"{src / 'cut.jsonl.gz'}:" in problems and "truncated or corrupt" in problems
    assert any(
        line.startswith(f"{src / 'cut.jsonl.zst'}:") and "truncated or corrupt" in line
        for line in report["problem_list"]
    )
    docs = _docs(out)
    assert "two_frames" not in problems and plays[7] + plays[8] in docs
    for good in (plays[0], plays[3], plays[4], plays[5]):
        assert good in docs  # the good documents around the bad input all survive
    assert any(d.endswith("caf\ufffd cr\ufffdme\n") for d in docs)  # repaired, not dropped
    gz_docs = [d for d in docs if d.startswith("gz ")]
    assert 500 < len(gz_docs) < 3000  # what came before the truncation is kept
    assert 500 < len([d for d in docs if d.startswith("zst ")]) < 3000


def test_byte_order_marks_and_oversized_csv_rows(tmp_path: Path) -> None:
    """A UTF-8 BOM (Excel, PowerShell) is not part of the first record; UTF-16 is named, not
    called binary; a CSV row over the size limit is skipped and the rows after it kept."""
    bom = b"\xef\xbb\xbf"
    (tmp_path / "a.jsonl").write_bytes(bom + b'{"text": "first record"}\n{"text": "second record"}\n')
    (tmp_path / "b.csv").write_bytes(bom + b"text,id\r\ncsv row\r\n")
    (tmp_path / "c.txt").write_bytes(bom + b"plain text\n")
    (tmp_path / "d.txt").write_bytes("utf-16 text\n".encode("utf-16"))
    (tmp_path / "e.csv").write_text("text\nalpha\n" + "word " * 600 + "\ngamma\n")
    (tmp_path / "f.txt").write_bytes("utf-16 text, no mark\n".encode("utf-16-le"))  # was called binary
    (tmp_path / "g.txt").write_bytes("utf-16 text, no mark\n".encode("utf-16-be"))
    report = Report()
    docs = {d.text.strip() for d in read_documents(tmp_path, report=report, max_line_bytes=1000)}
    assert docs == {"first record", "second record", "csv row", "plain text", "alpha", "gamma"}
    assert f"{tmp_path / 'd.txt'}: UTF-16 text, not UTF-8" in "\n".join(report.problems)
    assert any(p.startswith(f"{tmp_path / 'e.csv'}:3: unreadable (field larger") for p in report.problems)
    for name, order in (("f.txt", "UTF-16LE"), ("g.txt", "UTF-16BE")):
        said = f"{tmp_path / name}: UTF-16 text without a byte order mark ({order}), not UTF-8 (convert it:"
        assert said in "\n".join(report.problems)
    assert len(report.problems) == 4


def test_a_csv_quote_left_open_is_named_not_swallowing_the_rest(tmp_path: Path) -> None:
    """Python's csv, unless strict, takes the end of the file as the end of an open quote: every
    later row became one document, unreported. Text after a closing quote is named too."""
    (tmp_path / "a.csv").write_text('id,text\n1,"kept"\n2,"left open\n3,lost\n4,lost too\n')
    (tmp_path / "b.csv").write_text('id,text\n1,"quoted" then more\n2,after\n')
    report = Report()
    docs = [d.text for d in read_documents(tmp_path, report=report)]
    assert docs == ["kept", "after"]
    named = "\n".join(report.problems)
    assert f"{tmp_path / 'a.csv'}:3: unreadable (unexpected end of data" in named
    assert f"{tmp_path / 'b.csv'}:2: unreadable" in named


def test_files_not_read_and_files_read_as_plain_text_are_named(
    tmp_path: Path, plays: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Not bad input, so not in the problem list, but not silent: a `data.yaml` in a corpus folder
    is passed over, and one named is read as plain text, braces and all."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "plays.txt").write_text("\n\n".join(plays))
    (corpus / "data.yaml").write_text("- text: a YAML list\n")
    (corpus / "notes.rst").write_text("reStructuredText\n")
    (corpus / ".#plays.txt").write_text("an editor's lock file\n")
    (corpus / ".git").mkdir()
    (corpus / ".git" / "notes.txt").write_text("not a corpus file\n")
    named = tmp_path / "one.yml"
    named.write_text("text: one\n" * 50)
    prep([str(corpus), str(named)], tmp_path / "out", "char", val_fraction=0.2, stages="none")
    err = capsys.readouterr().err
    names = (".#plays.txt", ".git/notes.txt", "data.yaml", "notes.rst")
    listed = ", ".join(str(corpus / name) for name in names)
    known = (
        ".csv, .htm, .html, .json, .jsonl, .md, .ndjson, .parquet, .tsv, .txt, .warc, .wet (or compressed:"
    )
    known += " .gz, .xz, .bz2, .zst), .docx, .epub, .pdf"
    assert f"not read: 4 files in the input folders, hidden or not {known} ({listed})" in err
    assert f"read as plain text, one document a file: {named} (named, of another suffix)" in err
    assert "clean:" not in err and "tokenize (" not in err  # no progress bar into a pipe or a file
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["input_notes"]) == 2 and not report["problem_list"]


def test_a_linked_folder_is_named_and_a_file_reached_twice_read_once(
    tmp_path: Path, plays: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A link to a folder inside an input folder was skipped unsaid (rglob does not enter it), and
    a `**` glob through a link looping back read the same files dozens of times."""
    corpus, other = tmp_path / "corpus", tmp_path / "other"
    corpus.mkdir(), other.mkdir()
    (corpus / "plays.txt").write_text(plays[0])
    (other / "more.txt").write_text(plays[1])
    (corpus / "linked").symlink_to(other)
    (corpus / "loop").symlink_to(corpus)
    prep(corpus, tmp_path / "out", "char", val_fraction=0.5, stages="none", split="tail")
    err = capsys.readouterr().err
    listed = f"{corpus / 'linked'}, {corpus / 'loop'}"
    said = "not read: 2 links to folders in the input folders, not followed (name the folder itself"
    assert f"{said} to read it): {listed}" in err
    assert json.loads((tmp_path / "out" / "report.json").read_text())["documents_out"] == 1
    prep(f"{corpus}/**/*.txt", tmp_path / "glob", "char", val_fraction=0.5, stages="none", split="tail")
    assert json.loads((tmp_path / "glob" / "report.json").read_text())["documents_out"] == 2  # not dozens
    # named by its shortest path, not corpus/loop/loop/.../plays.txt (sorted first, it was kept)
    sources = json.loads((tmp_path / "glob" / "meta.json").read_text())["sources"]
    assert sorted(s["path"] for s in sources) == [
        str(corpus / "linked" / "more.txt"),
        str(corpus / "plays.txt"),
    ]


def test_a_folder_a_glob_matches_is_read_and_a_link_loop_is_named_not_a_traceback(
    tmp_path: Path, plays: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`raw/*` matching raw/sub skipped its files unsaid; a link loop among the inputs was a
    RuntimeError traceback (Path.resolve) and nothing was prepared; report.json named five of the
    files not read."""
    raw = tmp_path / "raw"
    (raw / "sub").mkdir(parents=True)
    (raw / "top.txt").write_text(plays[0])
    (raw / "sub" / "deep.txt").write_text(plays[1])
    (raw / "a.txt").symlink_to(raw / "b.txt")
    (raw / "b.txt").symlink_to(raw / "a.txt")
    for n in range(7):
        (raw / f"note{n}.rst").write_text("not read\n")
    prep(
        [f"{raw}/s*", raw / "top.txt"],
        tmp_path / "out",
        "char",
        val_fraction=0.5,
        stages="none",
        split="tail",
    )
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert {Path(s["path"]).name for s in meta["sources"]} == {"deep.txt", "top.txt"}
    prep(raw, tmp_path / "folder", "char", val_fraction=0.5, stages="none", split="tail")
    assert ", ..." in capsys.readouterr().err  # stderr names five
    report = json.loads((tmp_path / "folder" / "report.json").read_text())
    assert report["documents_out"] == 2 and report["problems"] == {"unreadable": 2}
    [note] = report["input_notes"]
    assert all(str(raw / f"note{n}.rst") in note for n in range(7)) and ", ..." not in note
    # two links looping back: Python's ** glob multiplied the paths without end (3 GB, 10 minutes)
    (raw / "loop").symlink_to(raw)
    (raw / "sub" / "up").symlink_to(raw)
    with pytest.raises(LmforgeError, match=r"the \*\* glob goes round folder links that loop back"):
        prep(f"{raw}/**", tmp_path / "loops", "char", stages="none")


def test_train_on_raw_text_counts_what_its_quiet_prep_passed_over(
    tmp_path: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    (folder / "plays.txt").write_text(corpus.read_text())
    (folder / "notes.jsonl").write_text('{"text": "a note"}\nnot json\n{"other": 1}\n')
    (folder / "data.yaml").write_text("- a list\n")
    run = tmp_path / "run"
    lmforge.train(None, [f"--data.input={folder}", *TINY, "--train.max_steps=1"], out=run)
    out = capsys.readouterr().out
    assert "; 2 bad inputs skipped or repaired; not read: 1 file in the input folders, hidden or" in out
    assert f"(see {run / 'data' / 'report.json'})" in out


def test_a_missing_relative_file_names_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run resumed from another directory reads its recipe's relative paths from there: the
    line says where it looked."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        LmforgeError, match=f"^data/x.jsonl: no such file in the working directory, {tmp_path}$"
    ):
        list(strict_lines(Path("data/x.jsonl")))


def test_all_formats_and_compressions(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [1, 2], "content": ["parquet one", "parquet two"]})
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "b.csv").write_text('id,content\n1,"csv, with comma"\n2,"multi\nline"\n')
    (tmp_path / "c.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"zstd text\n"))
    (tmp_path / "d.md.bz2").write_bytes(bz2.compress(b"# bz2 markdown\n"))
    (tmp_path / "e.jsonl.xz").write_bytes(lzma.compress(b'{"content": "xz jsonl"}\n'))
    (tmp_path / "skip.bin").write_bytes(b"not listed: unknown suffix in a folder")
    report = Report()
    texts = [d.text for d in read_documents(tmp_path, "content", report)]
    assert texts == ["parquet one", "parquet two", "csv, with comma", "multi\nline", "zstd text\n"] + [
        "# bz2 markdown\n",
        "xz jsonl",
    ]
    assert not report.problem_counts


def test_split_is_deterministic_by_document(tmp_path: Path, plays: list[str]) -> None:
    _write_jsonl(tmp_path / "a.jsonl", plays)
    _write_jsonl(tmp_path / "b.jsonl", plays[::-1])  # same documents, other order
    meta_a = prep(tmp_path / "a.jsonl", tmp_path / "A", "char", val_fraction=0.3, quiet=True)
    prep(tmp_path / "a.jsonl", tmp_path / "A2", "char", val_fraction=0.3, quiet=True)
    meta_b = prep(tmp_path / "b.jsonl", tmp_path / "B", "char", val_fraction=0.3, quiet=True)
    assert meta_a["split"] == "hash" and 0 < meta_a["tokens"]["val"] < meta_a["tokens"]["train"]
    for split in ("train", "val"):
        assert (tmp_path / "A" / f"{split}_00000.bin").read_bytes() == (
            tmp_path / "A2" / f"{split}_00000.bin"
        ).read_bytes()
    assert meta_a["tokens"] == meta_b["tokens"]  # membership depends on the text, not the order
    val_docs = {d for d in plays if is_val(d, 0.3)}
    assert meta_a["documents_per_split"]["val"] == len(val_docs) > 0


def test_shards_feed_the_trainer_and_round_trip_exactly(tmp_path: Path, plays: list[str]) -> None:
    texts = [*plays, "Héllo — ünïcödé ✓ 日本語\ttabs  and   spaces\n\n  indented 12345 'quotes' don't\n"]
    _write_jsonl(tmp_path / "c.jsonl", texts)
    out = tmp_path / "out"
    meta = prep(tmp_path / "c.jsonl", out, "bpe", 500, 0.2, quiet=True)
    assert meta["encoder"] == "tiktoken" and meta["dtype"] == "uint16"
    assert read_meta(out)["tokenizer_sha256"] == Tokenizer.load(out).sha256()
    tok = Tokenizer.load(out)
    assert {tok.eos_id, tok.bos_id, tok.pad_id} == {0, 3, 1}  # EOS, PAD, UNK, BOS are ids 0-3
    for split in ("train", "val"):
        ids = np.concatenate(open_split(out, split)).tolist()
        docs, start = [], 0
        for i, t in enumerate(ids):
            if t == tok.eos_id:
                docs.append(ids[start:i])
                start = i + 1
        for doc_ids in docs:  # the shards hold exactly tokenizer.json's ids, and they decode back
            text = tok.decode(doc_ids)
            assert tok.encode(text) == doc_ids
    loader = BatchLoader(open_split(out, "train"), block_size=32, batch_size=4, micro_batch_size=2)
    x, y = loader.next_step()[0]
    assert x.shape == (2, 32) and int(x.max()) < meta["vocab_size"]


def test_fast_encoders_equal_hf(plays: list[str]) -> None:
    tricky = ["  leading spaces", "tabs\t\tand\n\n\nnewlines  ", "ünï 日本語 ✓ 123456789 don't I'm"]
    tricky.append("<|endoftext|> inside")
    for kind in ("bpe", "char"):
        corpus = plays + tricky
        tok = Tokenizer.train_bpe(corpus, 600) if kind == "bpe" else Tokenizer.train_char(plays)
        name, encode = make_encoder(tok)
        assert name == ("tiktoken" if kind == "bpe" else "numpy char table")
        hf = ordinary_hf(tok)  # special-token strings in documents are ordinary text
        for text, ids in zip(corpus, encode(corpus), strict=True):
            assert [int(i) for i in ids] == hf.encode(text, add_special_tokens=False).ids
            assert tok.eos_id not in ids
            if "<|" not in text:
                assert [int(i) for i in ids] == tok.encode(text)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_special_token_text_in_documents_stays_text(tmp_path: Path, kind: str) -> None:
    """A literal <|endoftext|> or <|pad|> in a document is not a boundary or padding: the
    shards hold one EOS per document and no pad, and the text decodes back."""
    texts = ["hello <|endoftext|> world <|pad|> and <|unk|> more " * 3, "second document " * 5]
    _write_jsonl(tmp_path / "s.jsonl", texts)
    out = tmp_path / "out"
    vocab = {"vocab_size": 300} if kind == "bpe" else {}
    prep(tmp_path / "s.jsonl", out, kind, quiet=True, stages="none", val_fraction=0.5, **vocab)
    tok = Tokenizer.load(out)
    ids = np.concatenate([np.fromfile(f, dtype=np.uint16) for f in sorted(out.glob("*.bin"))])
    assert int((ids == tok.eos_id).sum()) == 2 and int((ids == tok.pad_id).sum()) == 0
    assert "<|endoftext|> world <|pad|>" in tok.decode([int(i) for i in ids if i != tok.eos_id])


def test_empty_result_is_a_clear_error(tmp_path: Path) -> None:
    _write_jsonl(tmp_path / "short.jsonl", ["tiny", "small"])
    with pytest.raises(LmforgeError, match=r"short.jsonl: the corpus is empty.*length: shorter than 100"):
        prep(tmp_path / "short.jsonl", tmp_path / "out", quiet=True, min_chars=100)
    assert not (tmp_path / "out").exists()


def test_boilerplate_lines_are_removed(tmp_path: Path, plays: list[str]) -> None:
    footer = "Subscribe to our newsletter for more plays like this one!"
    texts = [p + "\n" + footer + "\n" for p in plays]
    _write_jsonl(tmp_path / "b.jsonl", texts)
    out = tmp_path / "out"
    prep(tmp_path / "b.jsonl", out, "char", quiet=True, stages="boilerplate", boilerplate_min_docs=10)
    docs = _docs(tmp_path / "out")
    assert len(docs) == len(plays) and all(footer not in d for d in docs)
    assert sorted(docs) == sorted(p + "\n" for p in plays)


def test_quality_and_stopword_stages() -> None:
    from lmforge.data.pipeline import build_stage, parse_stages

    options = {"quality_min_words": 5, "stopwords_file": ""}
    quality, stopwords = (build_stage(n, options) for n in parse_stages("quality,stopwords"))
    stats = StageStats()
    prose = "The king and the queen of the land have gone to the sea with all of their men.\n"
    assert quality.apply(prose, stats) == prose
    assert quality.apply("### $$$ ### %%% ### ^^^ ### &&& ###\n", stats) is None
    assert sum(stats.dropped.values()) == 1
    assert stopwords.apply("The king and the queen of the land", StageStats()) == "king queen land"
    with pytest.raises(LmforgeError, match="unknown stage 'dedupe'"):
        parse_stages("normalize,dedupe")


def test_counts_in_messages_agree_with_their_noun(tmp_path: Path, plays: list[str]) -> None:
    """'1 document read', not '1 documents read'; larger counts get thousands separators."""
    report = Report()
    report.stage("read").docs_out = 1
    assert report.summary().startswith("1 document read;")
    report.stage("read").docs_out = 2481
    assert report.summary().startswith("2,481 documents read;")
    (tmp_path / "one.txt").write_text(plays[0])
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "prep", str(tmp_path / "one.txt"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{tmp_path / 'o'}: 1 document ->" in proc.stdout


def test_cli_runs_a_recipe(tmp_path: Path, plays: list[str]) -> None:
    _write_jsonl(tmp_path / "p.jsonl", plays)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[data]\ntokenizer = "bpe"\nvocab_size = 300\n[prep]\ninputs = "{tmp_path / "p.jsonl"}"\n'
        f'out = "{tmp_path / "shards"}"\nstages = "whitespace,length,exact_dedup"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lmforge", "prep", str(recipe), "--quiet", "--prep.min_chars=10"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    meta = read_meta(tmp_path / "shards")
    assert meta["vocab_size"] == 300 and meta["stages"] == ["whitespace", "length", "exact_dedup"]
    assert (tmp_path / "shards" / "report.json").is_file()


def test_a_recipe_among_other_inputs_is_refused(tmp_path: Path, plays: list[str]) -> None:
    """It would be read as a document and its settings ignored."""
    _write_jsonl(tmp_path / "p.jsonl", plays)
    (tmp_path / "r.toml").write_text('[prep]\nout = "x"\n')
    with pytest.raises(LmforgeError, match=r"r\.toml looks like a recipe: give it as the only input"):
        prep([tmp_path / "r.toml", tmp_path / "p.jsonl"], tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_the_tail_split_keeps_shards_of_shard_tokens(tmp_path: Path, plays: list[str]) -> None:
    """prep.split=tail re-cuts the stream a chunk at a time (never all in memory), into shards of
    at most shard_tokens, its last val_fraction the validation split."""
    _write_jsonl(tmp_path / "p.jsonl", plays)
    common = {"quiet": True, "stages": "none", "shard_tokens": 3000, "val_fraction": 0.1}
    prep(tmp_path / "p.jsonl", tmp_path / "tail", "char", split="tail", **common)
    meta = read_meta(tmp_path / "tail")
    assert meta["split"] == "tail" and max(meta["shard_tokens"].values()) <= 3000
    assert len([n for n in meta["shard_tokens"] if n.startswith("train_")]) > 2

    def stream(out: Path, splits: tuple[str, ...]) -> np.ndarray:
        files = [f for s in splits for f in sorted(out.glob(f"{s}_*.bin"))]
        return np.concatenate([np.fromfile(f, dtype=np.uint16) for f in files])

    tail = stream(tmp_path / "tail", ("train", "val"))
    assert len(stream(tmp_path / "tail", ("val",))) == max(1, int(len(tail) * 0.1))
    assert sum(meta["shard_tokens"].values()) == len(tail) == meta["tokens"]["train"] + meta["tokens"]["val"]
    assert not list((tmp_path / "tail").glob("*.old"))
    # documents per side as audit reads them (split at EOS): the document the cut runs through
    # counts on both sides (it was val = 0, while audit found the tail's pieces)
    per_split = meta["documents_per_split"]
    eos = meta["eos_id"]
    for split in ("train", "val"):
        assert per_split[split] == len(Documents.from_stream(stream(tmp_path / "tail", (split,)), eos)) > 0
    assert per_split["train"] + per_split["val"] in (meta["documents"], meta["documents"] + 1)


def test_cleaning_step_runs_in_a_datatrove_executor(tmp_path: Path, plays: list[str]) -> None:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from lmforge.data.datatrove_steps import CleaningStep

    (tmp_path / "raw").mkdir()
    _write_jsonl(tmp_path / "raw" / "a.jsonl", [plays[0], PII_DOC, HTML_DOC, "  \n"])
    pipeline = [
        JsonlReader(str(tmp_path / "raw")),
        CleaningStep("markup,whitespace,length,pii", min_chars=5),
        JsonlWriter(str(tmp_path / "clean"), compression=None),
    ]
    LocalPipelineExecutor(pipeline, tasks=1, workers=1, logging_dir=str(tmp_path / "logs")).run()
    texts = [json.loads(line)["text"] for f in (tmp_path / "clean").iterdir() for line in f.open()]
    assert len(texts) == 3 and texts[0] == plays[0]
    assert "<EMAIL>" in texts[1] and "juliet.capulet@" not in texts[1] and "<p>" not in texts[2]
    with pytest.raises(LmforgeError, match="near_dedup needs the whole corpus"):
        CleaningStep("whitespace,near_dedup")


def test_boilerplate_counts_only_documents_that_survive_dedup(tmp_path: Path, plays: list[str]) -> None:
    line = "A line shared by this play and its three exact copies."
    texts = [plays[0] + "\n" + line + "\n"] * 3 + [plays[1] + "\n" + line + "\n", plays[2]]
    _write_jsonl(tmp_path / "d.jsonl", texts)
    out = tmp_path / "out"
    stages = "exact_dedup,boilerplate"
    prep(tmp_path / "d.jsonl", out, "char", quiet=True, stages=stages, boilerplate_min_docs=3)
    docs = _docs(out)
    assert len(docs) == 3 and sum(line in d for d in docs) == 2  # in 2 distinct documents: kept


def test_a_document_given_ten_times_keeps_one_copy_through_the_default_stages(
    tmp_path: Path, plays: list[str]
) -> None:
    """boilerplate runs before exact_dedup: ten copies of one article made each of its lines appear
    in ten documents, so every copy, the first too, was dropped as "only boilerplate"."""
    texts = list(plays[:11])
    for n in range(10):
        texts.insert(2 * n, plays[11])  # a mirrored page, among the others
    _write_jsonl(tmp_path / "m.jsonl", texts)
    prep(tmp_path / "m.jsonl", tmp_path / "out", "char", quiet=True, split="tail", val_fraction=0.05)
    docs = _docs(tmp_path / "out")
    mirrored = " ".join(plays[11].split()[20:40])
    assert len(docs) == 12 and sum(mirrored in " ".join(d.split()) for d in docs) == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_prep_workers_end_when_prep_is_killed(tmp_path: Path) -> None:
    """kill -9 of prep left its cleaning workers orphaned: each finished its batch, then printed a
    BrokenPipeError traceback on the user's terminal. Now they end with prep, silently."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        works = [json.loads(line)["text"] for line in f]
    corpus = tmp_path / "big.jsonl"
    _write_jsonl(corpus, [f"{n} {w}" for n in range(4) for w in works])  # about 20 MB
    proc = _prep_cleaning(corpus, tmp_path / "o")
    proc.kill()
    _, err = proc.communicate(timeout=30)  # EOF once every process holding the pipe has ended
    assert "Traceback" not in err, err[-2000:]


def _prep_cleaning(corpus: Path, out: Path) -> subprocess.Popen:
    """`lmforge prep` in a process group of its own, once its two workers clean batches."""
    cmd = [sys.executable, "-m", "lmforge", "prep", str(corpus), "--out", str(out), "--quiet"]
    proc = subprocess.Popen(
        [*cmd, "--prep.workers=2"], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    children_file = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if children_file.exists() and len(children_file.read_text().split()) >= 2:
            break
        time.sleep(0.01)
    time.sleep(1.5)  # into the cleaning: the workers hold batches
    assert proc.poll() is None, "prep ended before it could be stopped"
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc lists the workers")
def test_ctrl_c_in_prep_is_one_line(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches prep and its workers (one process group): each worker printed
    its KeyboardInterrupt traceback, 45 lines above prep's own `lmforge: interrupted`."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        works = [json.loads(line)["text"] for line in f]
    corpus = tmp_path / "big.jsonl"
    _write_jsonl(corpus, [f"{n} {w}" for n in range(4) for w in works])
    proc = _prep_cleaning(corpus, tmp_path / "o")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert err.strip().splitlines() == ["lmforge: interrupted"], err[-2000:]
    assert proc.returncode == 130 and not (tmp_path / "o").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc lists the workers")
def test_a_sigterm_stops_prep_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    """`kill`, `timeout` and Slurm send SIGTERM to prep alone: it ended silently (exit 143) and left
    its temporary folder for the next prep to tidy. Now it stops as Ctrl-C does, saying so."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        works = [json.loads(line)["text"] for line in f]
    corpus = tmp_path / "big.jsonl"
    _write_jsonl(corpus, [f"{n} {w}" for n in range(4) for w in works])
    proc = _prep_cleaning(corpus, tmp_path / "o")
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert err.strip().splitlines() == ["lmforge: terminated"], err[-2000:]
    assert proc.returncode == 143 and sorted(p.name for p in tmp_path.iterdir()) == ["big.jsonl"]


@pytest.mark.skipif(platform.machine() != "x86_64" or sys.platform != "linux", reason="x86-64 syscalls")
@pytest.mark.parametrize("syscall", ["0", "1"], ids=["in-read", "in-write"])
@pytest.mark.parametrize("pieces", [1, 400], ids=["whole-works", "small-documents"])
def test_a_cleaning_worker_killed_is_one_line_not_a_hang(tmp_path: Path, pieces: int, syscall: str) -> None:
    """A worker killed by the system (the OOM killer) lost its batch's result: prep waited for it
    forever. Now prep stops in one line that says so, and leaves no output folder; with small
    documents the broken pool shows at the next batch's submit (a traceback, on the first fix).
    The worker is killed inside a read() (of a batch) or a write(): one killed in the middle of
    writing a result into the pool's pipe hung its result thread, until results went by file."""
    with lzma.open(ROOT / "data" / "shakespeare.jsonl.xz", "rt") as f:
        works = [json.loads(line)["text"] for line in f]
    cut = [w[i : i + len(w) // pieces] for w in works for i in range(0, len(w), len(w) // pieces)]
    corpus = tmp_path / "big.jsonl"
    _write_jsonl(corpus, [f"{n} {w}" for n in range(8) for w in cut])
    proc = _prep_cleaning(corpus, tmp_path / "o")
    try:
        for _ in range(20):  # a worker may end its task and leave before it is caught: the next
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                _kill_inside(_forked_worker(proc.pid), syscall)
                break
        _, err = proc.communicate(timeout=60)
    finally:  # a hang must not outlive the test
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert err.strip().splitlines()[-1].startswith("lmforge: error: prep: a cleaning worker died")
    assert "Traceback" not in err, err[-2000:]
    assert proc.returncode == 2 and not (tmp_path / "o").exists()


def _forked_worker(parent: int) -> int:
    """A child of `parent` forked from it (its command line), not a short-lived program it ran."""
    own = Path(f"/proc/{parent}/cmdline").read_bytes()
    for _ in range(2000):
        for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                if Path(f"/proc/{child}/cmdline").read_bytes() == own:
                    return int(child)
        time.sleep(0.005)
    raise AssertionError(f"no forked worker of {parent}")


def _kill_inside(pid: int, syscall: str) -> None:
    """SIGKILL `pid` once it is stopped inside the system call numbered `syscall` (x86-64's: 0 is
    read, 1 is write)."""
    for _ in range(5000):
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.001)
        if Path(f"/proc/{pid}/syscall").read_text().split()[0] == syscall:
            break
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.002)
    os.kill(pid, signal.SIGKILL)


def test_a_bpe_vocabulary_smaller_than_asked_is_said(
    tmp_path: Path, plays: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "small.txt").write_text(plays[0][:3000])
    meta = prep(tmp_path / "small.txt", tmp_path / "out", "bpe", 100_000, 0.2)
    said = capsys.readouterr().err
    assert meta["vocab_size"] < 100_000 and meta["vocab_target"] == 100_000
    assert f"the BPE vocabulary has {meta['vocab_size']:,} tokens, fewer than the 100,000 asked" in said
