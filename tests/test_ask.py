"""`lmforge ask`: passages, the saved BM25 index (reused, updated, never pickled), bad files
skipped with one line, and answers equal to transformers' greedy decoding of the same chat prompt
(a tiny random Llama with SmolLM2's template)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.inference.ask import ask, cited, open_book_message, prompt_ids
from lmforge.inference.chat import ChatSpec
from lmforge.inference.retrieval import Passage, PassageIndex, default_index_dir, split_passages

transformers = pytest.importorskip("transformers")

DOCS = {
    "whales.txt": "The Pequod sailed from Nantucket in winter.\n\nCaptain Ahab hunted the white whale.",
    "notes/austen.md": "Elizabeth Bennet lived at Longbourn with her sisters.\n\nMr. Darcy owned Pemberley.",
    "facts.jsonl": json.dumps({"text": "The harpooneer Queequeg came from Kokovoko."})
    + "\n"
    + json.dumps({"text": "Ishmael signed on to the Pequod."})
    + "\n",
}


def write_docs(folder: Path) -> Path:
    """DOCS as files in `folder`."""
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_chat import make_chat_llama

    directory = tmp_path_factory.mktemp("ask-llama")
    make_chat_llama(directory)
    config = json.loads((directory / "config.json").read_text())
    config["max_position_embeddings"] = 1024  # a prompt with passages: ~1 token a character here
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_split_passages_packs_paragraphs_and_cuts_long_ones() -> None:
    text = "one two three\n\nfour five\n\n  six seven eight nine ten eleven twelve  \n"
    spans = split_passages(text, max_words=5)
    assert [text[a:b] for a, b in spans] == [
        "one two three\n\nfour five",  # two paragraphs packed: 5 words
        "six seven eight nine ten",  # a 7-word paragraph cut into windows
        "eleven twelve",
    ]
    assert split_passages("", 5) == []


def test_index_searches_is_saved_without_pickle_and_reused(docs: Path, tmp_path: Path) -> None:
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert index.directory == tmp_path / "docs.lmforge-index" == default_index_dir(docs)
    assert index.stats == {"files": 3, "reused": 0, "read": 3, "skipped": [], "problems": [],
                           "input_notes": [], "removed": 0, "rebuilt": True}  # fmt: skip
    best, score = index.search("Where did Queequeg come from?", k=2)[0]
    assert (
        best.source == f"{docs / 'facts.jsonl'}:1"
        and best.text == "The harpooneer Queequeg came from Kokovoko."
    )
    assert score > 0
    whale = index.search("the white whale", k=1)[0][0]
    assert (
        (docs / "whales.txt").read_text()[whale.start : whale.end]
        == whale.text
        == ("Captain Ahab hunted the white whale.")
    )
    assert index.search("zebra xylophone", k=3) == []  # no shared word: nothing
    for f in (index.directory / "bm25").glob("*.npy"):
        np.load(f, allow_pickle=False)  # plain arrays
    assert {p.name for p in index.directory.iterdir()} == {"manifest.json", "passages.jsonl", "bm25"}
    again = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert again.stats["reused"] == 3 and again.stats["read"] == 0 and not again.stats["rebuilt"]
    assert again.search("Where did Queequeg come from?", k=1)[0][0] == best


def test_a_changed_new_or_removed_document_is_reindexed(docs: Path) -> None:
    PassageIndex.build(docs, passage_words=8, quiet=True)
    whales = docs / "whales.txt"
    whales.write_text("Starbuck was the chief mate of the Pequod.", encoding="utf-8")
    os.utime(whales, ns=(1, 1))  # a new mtime: the sha256 decides
    (docs / "new.txt").write_text("Stubb was the second mate.", encoding="utf-8")
    (docs / "facts.jsonl").unlink()
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert (index.stats["read"], index.stats["reused"], index.stats["removed"]) == (2, 1, 1)
    assert index.search("chief mate", k=1)[0][0].text == "Starbuck was the chief mate of the Pequod."
    assert index.search("Queequeg", k=3) == []
    # a file touched but not changed is not re-read
    os.utime(docs / "new.txt", ns=(2, 2))
    assert PassageIndex.build(docs, passage_words=8, quiet=True).stats["read"] == 0
    # other settings: every file is read again
    assert PassageIndex.build(docs, passage_words=4, quiet=True).stats["read"] == 3


def test_the_same_folder_named_another_way_reuses_its_index(
    docs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--docs docs` and `--docs /abs/docs` are one folder and one index: every file was read
    again at each switch (the manifest kept paths as typed), and with hybrid every passage embedded
    again. Passages are cited as the folder is named this time."""
    (docs / "notes.jsonl").write_text('{"text": "Freedonia exports cheese."}\nnot json\n')
    monkeypatch.chdir(docs.parent)
    relative = PassageIndex.build(Path("docs"), passage_words=8, quiet=True)
    absolute = PassageIndex.build(docs.resolve(), passage_words=8, quiet=True)
    assert absolute.directory.resolve() == relative.directory.resolve()
    assert absolute.stats["read"] == 0 and absolute.stats["reused"] == relative.stats["files"]
    assert all(p.source.startswith(str(docs.resolve())) for p in absolute.passages)
    assert any(
        line.startswith(str(docs.resolve() / "notes.jsonl") + ":2") for line in absolute.stats["problems"]
    )
    (docs.parent / "link").symlink_to(docs, target_is_directory=True)  # a link to the folder: one index too
    linked = PassageIndex.build(Path("link"), passage_words=8, quiet=True)
    assert linked.stats["read"] == 0 and linked.stats["removed"] == 0
    assert all(p.source.startswith("link/") for p in linked.passages)
    again = PassageIndex.build(Path("docs"), passage_words=8, quiet=True)
    assert again.stats["read"] == 0 and [p.source for p in again.passages] == [
        p.source for p in relative.passages
    ]
    assert again.search("cheese", k=1)[0][0].source == "docs/notes.jsonl:1"


def test_a_web_page_is_indexed_for_its_text(docs: Path) -> None:
    page = "<html><script>track()</script><p>Starbuck was the <b>chief mate</b>.</p></html>\n"
    (docs / "crew.html").write_text(page, encoding="utf-8")
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert index.stats["files"] == 4
    best = index.search("Who was the chief mate?", k=1)[0][0]
    assert best.source == str(docs / "crew.html") and best.text == "Starbuck was the chief mate."


def test_files_of_a_folder_not_read_are_named(docs: Path, capsys: pytest.CaptureFixture) -> None:
    """As prep names them: a mayor's page in .rst was passed over unsaid, and the model, finding no
    passage, made up an answer."""
    (docs / "mayor.rst").write_text("The mayor is Elena.\n", encoding="utf-8")
    index = PassageIndex.build(docs, passage_words=8)
    known = (
        ".csv, .htm, .html, .json, .jsonl, .md, .ndjson, .parquet, .tsv, .txt, .warc, .wet (or compressed:"
    )
    known += " .gz, .xz, .bz2, .zst), .docx, .epub, .pdf"
    line = f"not read: 1 file in the input folders, hidden or not {known} ({docs / 'mayor.rst'})"
    assert index.stats["input_notes"] == [line]
    assert capsys.readouterr().err.splitlines() == [f"lmforge: {line}"]


def test_a_non_utf8_file_is_one_line_and_skipped(docs: Path, capsys: pytest.CaptureFixture) -> None:
    latin = docs / "latin1.txt"
    latin.write_bytes("Queequeg's caf\u00e9 in Kokovoko".encode("latin-1"))
    before = latin.read_bytes()
    index = PassageIndex.build(docs, passage_words=8)
    err = capsys.readouterr().err.strip().splitlines()
    why = "not valid UTF-8 (byte 14 of the file); skipped (convert it to UTF-8 to index it)"
    assert err == [f"lmforge: {latin}:1: {why}"]
    assert index.stats["files"] == 3 and all(p.source != str(latin) for p in index.passages)
    assert latin.read_bytes() == before  # nothing changed or lost
    latin.write_text("Queequeg's caf\u00e9 in Kokovoko", encoding="utf-8")  # fixed: now indexed
    assert PassageIndex.build(docs, passage_words=8, quiet=True).stats["read"] == 1


def test_a_binary_file_is_named_binary_not_told_to_become_utf8(
    docs: Path, capsys: pytest.CaptureFixture
) -> None:
    """Its bytes are not UTF-8 either, and the line said "convert it to UTF-8 to index it"."""
    (docs / "blob.txt").write_bytes(bytes(range(256)) * 20)
    index = PassageIndex.build(docs, passage_words=8)
    said = [line for line in capsys.readouterr().err.splitlines() if "blob.txt" in line]
    assert len(said) == 1 and "binary file" in said[0] and "UTF-8" not in said[0], said
    assert all(p.source != str(docs / "blob.txt") for p in index.passages)


def test_a_bad_jsonl_line_is_said_again_when_the_index_is_reused(
    docs: Path, capsys: pytest.CaptureFixture
) -> None:
    """As a file that is not UTF-8 is: the index keeps each file's problems beside its passages."""
    (docs / "notes.jsonl").write_text('{"text": "Freedonia exports cheese."}\nnot json\n')
    first = PassageIndex.build(docs, passage_words=8)
    said = [line for line in capsys.readouterr().err.splitlines() if "notes.jsonl" in line]
    assert len(said) == 1 and said[0].startswith(f"lmforge: {docs / 'notes.jsonl'}:2: ")
    again = PassageIndex.build(docs, passage_words=8)
    assert again.stats["reused"] == again.stats["files"] and not again.stats["rebuilt"]
    assert [line for line in capsys.readouterr().err.splitlines() if "notes.jsonl" in line] == said
    assert again.stats["problems"] == first.stats["problems"]


def test_index_folders_are_never_read_as_documents(docs: Path, tmp_path: Path) -> None:
    """The index of a file or glob lies among the documents; a later index of the folder skips it
    (and any other index folder, whatever its name: known by its manifest), so each passage is
    there once. It was there three times: the folder's own, and each index's passages.jsonl."""
    alone = PassageIndex.build(docs, tmp_path / "elsewhere", passage_words=8, quiet=True)
    whales = PassageIndex.build(docs / "whales.txt", passage_words=8, quiet=True)
    assert whales.directory == docs / "whales.txt.lmforge-index"
    facts = PassageIndex.build(docs / "facts.jsonl", docs / "notes" / "my-index", passage_words=8, quiet=True)
    assert (facts.directory / "passages.jsonl").is_file()
    pattern = PassageIndex.build(f"{docs}/*.txt", passage_words=8, quiet=True)
    assert pattern.directory == docs / "_.txt.lmforge-index" and pattern.stats["files"] == 1
    assert not any("*" in p.name for p in docs.rglob("*"))  # no folder named after the wildcard
    again = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert again.stats["files"] == 3 and again.passages == alone.passages
    assert again.search("Ishmael Pequod", k=5) == alone.search("Ishmael Pequod", k=5)
    # a folder of nothing but index folders has no documents
    only = tmp_path / "only"
    PassageIndex.build(docs / "whales.txt", only / "idx", passage_words=8, quiet=True)
    with pytest.raises(LmforgeError, match="every file found lies in an lmforge index folder"):
        PassageIndex.build(only, passage_words=8, quiet=True)


def test_the_default_index_folder(docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert default_index_dir(docs) == tmp_path / "docs.lmforge-index"  # beside the folder
    assert default_index_dir(docs / "whales.txt") == docs / "whales.txt.lmforge-index"  # beside the file
    # a glob: in its fixed folder, `_` for each wildcard
    assert default_index_dir(f"{docs}/*.txt") == docs / "_.txt.lmforge-index"
    assert default_index_dir(f"{docs}/**/note?.[mt][dx]*") == docs / "_-note_._.lmforge-index"
    monkeypatch.chdir(docs)
    assert default_index_dir("*.jsonl") == docs / "_.jsonl.lmforge-index"


def test_the_index_never_overwrites_what_it_did_not_write(
    docs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(
        LmforgeError, match=r"index folder lies inside the documents .*; give another --index$"
    ):
        PassageIndex.build(docs, docs / "index")
    with pytest.raises(LmforgeError, match="index folder contains the documents"):
        PassageIndex.build(docs / "notes", docs)
    monkeypatch.chdir(tmp_path)
    whole = "ask replaces its whole index folder, so give a new folder with --index"
    with pytest.raises(LmforgeError, match=rf"^\.: is the working directory; {whole}$"):
        PassageIndex.build(docs, ".")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    with pytest.raises(LmforgeError, match=r"holds files ask did not write \(keep.txt\)"):
        PassageIndex.build(docs, mine)
    assert (mine / "keep.txt").read_text() == "mine"
    with pytest.raises(LmforgeError, match="no such file"):
        PassageIndex.build(tmp_path / "missing")


def test_cited_marks_passages_holding_the_answer() -> None:
    passages = [Passage("a", 0, 0, "Captain Ahab hunted the white whale."), Passage("b", 0, 0, "Ahabs ship")]
    assert cited("the White Whale", passages) == [True, False]
    assert cited("Ahab", passages) == [True, False]  # whole words only
    assert cited("", passages) == [False, False]
    assert cited("The answer is: the white whale.", passages) == [True, False]  # after the colon
    assert cited("The answer is the white whale.", passages) == [False, False]
    # a passage number in the reply, as SmolLM2 writes, is no word of the answer
    assert cited(
        "[1] Ahab chased the white whale.", [Passage("a.txt", 0, 9, "Ahab chased the white whale.")]
    ) == [True]
    assert cited(
        "Ahab chased the white whale [1, 2].", [Passage("a.txt", 0, 9, "Ahab chased the white whale.")]
    ) == [True]
    # the "30" of a time, or a bare "no" after a colon, is no answer found in a passage
    times = [Passage("a.txt", 0, 10, "The meeting starts at 9:15. There were 30 people. Say no more.")]
    assert cited("The meeting starts at 12:30", times) == [False]
    assert cited("The answer is: no.", times) == [False]
    assert cited("The answer is: 9:15.", times) == [True]
    noted = [Passage("a.txt", 0, 9, "See note [1] for the captain's name.")]  # numbers in a passage too
    assert cited("See note [1] for the captain's name.", noted) == [True]


def test_ask_answers_as_transformers_decodes_the_same_prompt(llama: Path, docs: Path) -> None:
    question = "Where did Queequeg come from?"
    out = ask(llama, question, docs, k=2, passage_words=8, max_new_tokens=8, quiet=True)
    assert [p["n"] for p in out["passages"]] == [1, 2]
    assert out["passages"][0]["source"].endswith("facts.jsonl:1")
    given = [Passage(p["source"], p["start"], p["end"], p["text"]) for p in out["passages"]]
    assert out["passages"][0]["cited"] == cited(out["answer"], given)[0]
    tokenizer = transformers.AutoTokenizer.from_pretrained(llama)
    model = transformers.AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": open_book_message(question, given)}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]  # fmt: skip
    new = model.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=[2, 0])[0, ids.shape[1] :]
    assert out["answer"] == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert "Kokovoko" in tokenizer.decode(ids[0])  # the passage is in the prompt


def test_passages_that_do_not_fit_are_left_out(llama: Path, docs: Path) -> None:
    (docs / "long.txt").write_text(" ".join(["Queequeg"] + ["harpoon"] * 300), encoding="utf-8")
    out = ask(llama, "Queequeg harpoon", docs, k=3, passage_words=500, max_new_tokens=4, quiet=True)
    found = PassageIndex.build(docs, passage_words=500, quiet=True).search("Queequeg harpoon", k=3)
    assert [Path(p.source).name for p, _ in found] == ["facts.jsonl:1", "long.txt"]
    # long.txt's 2,400 characters do not fit in 1,024 tokens: it is left out, the better one given
    assert [Path(p["source"]).name for p in out["passages"]] == ["facts.jsonl:1"]


def test_a_question_without_room_is_refused_and_no_room_for_passages_is_said(llama: Path, docs: Path) -> None:
    """The context (1,024 tokens) holds the prompt and --max-new-tokens: a question that leaves no
    room is one line naming --max-new-tokens (ask has no --truncate-prompt), and when the question
    fits but no passage does, `note` says so (it said no passage shared a word with the question)."""
    question = "Where did Queequeg come from?"
    net, tokenizer = load_model(llama)
    closed = len(prompt_ids(ChatSpec.read(llama, tokenizer), tokenizer, question, [], None))
    for new, left in ((1024, "leaves none"), (1024 - closed + 1, f"leaves {closed - 1}")):
        with pytest.raises(LmforgeError, match=f"of 1024 {left} after --max-new-tokens {new}: shorten") as e:
            ask(llama, question, docs, max_new_tokens=new, quiet=True)
        assert "truncate" not in str(e.value)
    with pytest.raises(LmforgeError, match=r"the question takes \d+ tokens .* lower --max-new-tokens$"):
        ask(llama, "Queequeg? " * 200, docs, max_new_tokens=4, quiet=True)
    out = ask(llama, question, docs, passage_words=8, max_new_tokens=1024 - closed, quiet=True)
    assert out["passages"] == []
    assert out["note"] == (
        "no passage fits in the 0 tokens of the model's context left after the question and"
        f" --max-new-tokens {1024 - closed}: answered without documents"
    )
    none = ask(llama, "zebra xylophone?", docs, passage_words=8, max_new_tokens=2, quiet=True)
    assert none["note"] == "no passage shares a word with the question: answered without documents"
    assert ask(llama, question, docs, passage_words=8, max_new_tokens=2, quiet=True)["note"] is None


def test_ask_command_line(llama: Path, docs: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["ask", str(llama), "Who hunted the white whale?", "--docs", str(docs), "--k", "1",
                 "--passage-words", "8", "--max-new-tokens", "4"]) == 0  # fmt: skip
    out, err = capsys.readouterr()
    assert out.splitlines()[1].startswith(f"  [1] {docs / 'whales.txt'} chars 45-81 (bm25 ")
    index = f"{docs}.lmforge-index"
    assert err == f"lmforge: index {index}: 6 passages (3 read, 0 unchanged, 0 removed)\n"
    assert main(["ask", str(llama), "  ", "--docs", str(docs)]) == 2
    assert "the question is empty" in capsys.readouterr().err
    shutil.rmtree(docs)
    docs.mkdir()
    assert main(["ask", str(llama), "Who?", "--docs", str(docs)]) == 2
    assert "no .csv, .htm, .html, .json, .jsonl" in capsys.readouterr().err


def test_smollm2_answers_from_the_passage_it_is_given(smollm2_dir: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "ship.txt").write_text(
        "The whaling ship Pequod sailed from Nantucket in December.\n\n"
        "Her captain was Ahab, a grim old man with a leg of whale ivory.",
        encoding="utf-8",
    )
    (docs / "austen.txt").write_text(
        "Elizabeth Bennet lived at Longbourn with her four sisters.", encoding="utf-8"
    )
    # fp32: with dtype "auto" a CPU with bf16 units decodes in bf16, and there this 135M model
    # wanders off ("The Pequod was a ship named the Pequod, which was a", AMX Xeon, 2026-12-01)
    out = ask(
        smollm2_dir,
        "Who was the captain of the Pequod?",
        docs,
        k=2,
        max_new_tokens=16,
        dtype="fp32",
        quiet=True,
    )
    assert out["passages"][0]["source"] == str(docs / "ship.txt")
    assert len(out["passages"]) == 1  # the Austen file shares no word with the question
    assert "Ahab" in out["answer"] and out["passages"][0]["cited"], out["answer"]


QA_FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"  # a tiny random BertForQuestionAnswering


def test_an_extractive_model_copies_the_best_span_of_the_passages(docs: Path) -> None:
    """The answer is the span `pipeline("question-answering")` scores highest in the passages found,
    read as one context, of those within one passage, and lies in a passage it cites; it takes no
    generation option, and without a passage it gives no answer and says why."""
    from lmforge import pipeline

    question = "Who sailed on the Pequod?"
    out = ask(QA_FIXTURE, question, docs, k=3, passage_words=8, quiet=True)
    assert out["reader"] == "extractive" and len(out["passages"]) == 2 and out["note"] is None
    qa = pipeline("question-answering", model=QA_FIXTURE)
    texts = [p["text"] for p in out["passages"]]
    best = qa(question=question, context="\n\n".join(texts))
    if "\n\n" in best["answer"].strip():  # it runs across the join: the best within one passage
        spans = qa(question=question, context="\n\n".join(texts), top_k=20)
        best = next(a for a in spans if "\n\n" not in a["answer"].strip())
    assert out["score"] == pytest.approx(best["score"]) and out["answer"] == best["answer"].strip()
    assert any(p["cited"] and out["answer"] in p["text"] for p in out["passages"])
    none = ask(QA_FIXTURE, "zebra xylophone?", docs, quiet=True)
    assert (none["answer"], none["score"], none["passages"]) == ("", None, [])
    assert none["note"] == "no passage shares a word with the question: nothing to copy an answer from"
    for option in ({"max_new_tokens": 8}, {"system": "Be brief."}, {"dtype": "bf16"}):
        with pytest.raises(
            LmforgeError, match=r"copies its answer from a passage, in fp32: --max-new-tokens"
        ):
            ask(QA_FIXTURE, question, docs, quiet=True, **option)  # type: ignore[arg-type]


def test_an_extractive_model_declines_only_when_asked_and_its_null_answer_wins(
    docs: Path, llama: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """With handle_impossible_answer the null answer ([CLS]) competes as the pipeline scores it: a
    model sure that the passages hold no answer declines ("", the null's score, a note); without
    the option the same model still gives its best span, the one it gives unpatched."""
    from lmforge.model.span import SpanModel

    question = "Who sailed on the Pequod?"
    plain = ask(QA_FIXTURE, question, docs, k=3, passage_words=8, quiet=True)
    same = ask(QA_FIXTURE, question, docs, k=3, passage_words=8, quiet=True, handle_impossible_answer=True)
    assert (same["answer"], same["note"]) == (plain["answer"], None)  # the random model's null loses
    forward = SpanModel.forward

    def sure_of_no_answer(self: SpanModel, *args: object, **kwargs: object) -> torch.Tensor:
        logits = forward(self, *args, **kwargs).clone()  # (B, T, 2)
        logits[:, 0, :] += 30.0  # [CLS]: p_start and p_end near 1 in every window
        return logits

    monkeypatch.setattr(SpanModel, "forward", sure_of_no_answer)
    declined = ask(
        QA_FIXTURE, question, docs, k=3, passage_words=8, quiet=True, handle_impossible_answer=True
    )
    assert declined["answer"] == "" and declined["score"] > 0.99
    assert declined["note"].startswith("the model declined: its null answer (score 1) outscored every span")
    assert not any(p["cited"] for p in declined["passages"]) and len(declined["passages"]) == 2
    # without the option the [CLS] logits only scale every span's score down: the same best span
    assert ask(QA_FIXTURE, question, docs, k=3, passage_words=8, quiet=True)["answer"] == plain["answer"]
    assert main(["ask", str(QA_FIXTURE), question, "--docs", str(docs), "--passage-words", "8",
                 "--quiet", "--handle-impossible-answer"]) in (0, None)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "(no answer)" and lines[-1].startswith("  (the model declined: its null answer")
    with pytest.raises(LmforgeError, match="lets an extractive question-answering model decline"):
        ask(llama, question, docs, quiet=True, handle_impossible_answer=True)
    with pytest.raises(LmforgeError, match="handle_impossible_answer='yes': must be True or False"):
        ask(QA_FIXTURE, question, docs, quiet=True, handle_impossible_answer="yes")  # type: ignore[arg-type]
