"""What import then export carry back to transformers besides the weights: tokenizer_config.json's
padding_side and truncation_side, and GPT-2's three dropouts (lmforge's one, applied where
transformers applies each). The oracle: transformers reading the source and the export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from hf_helpers import make_hf_model  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402

DROPS = ("attn_pdrop", "embd_pdrop", "resid_pdrop")


def set_json(file: Path, **values: object) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **values}))


def test_padding_and_truncation_sides_come_back(tmp_path: Path) -> None:
    make_hf_model("llama", tmp_path / "hf")
    named = {"eos_token": "<|endoftext|>", "padding_side": "left", "truncation_side": "left"}
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(named))
    exported = export_hf(import_hf(tmp_path / "hf", tmp_path / "imported"), tmp_path / "exported")
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert (tokenizer.padding_side, tokenizer.truncation_side) == ("left", "left")
    # only one side given: the other stays transformers' default
    set_json(tmp_path / "hf" / "tokenizer_config.json", truncation_side=None)
    exported = export_hf(import_hf(tmp_path / "hf", tmp_path / "imported"), tmp_path / "exported")
    tokenizer = transformers.AutoTokenizer.from_pretrained(exported)
    assert (tokenizer.padding_side, tokenizer.truncation_side) == ("left", "right")


def test_a_bad_padding_side_is_one_line(tmp_path: Path) -> None:
    make_hf_model("llama", tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"padding_side": "middle"}))
    with pytest.raises(LmforgeError, match=r"tokenizer_config\.json: 'padding_side' must be \"left\" or"):
        import_hf(tmp_path / "hf", tmp_path / "imported")
    assert not (tmp_path / "imported").exists()


def test_gpt2_dropouts_come_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_hf_model("gpt2", tmp_path / "hf")
    set_json(tmp_path / "hf" / "config.json", attn_pdrop=0.2, embd_pdrop=0.2, resid_pdrop=0.2)
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    assert load_model(imported)[0].config.dropout == 0.2
    config = transformers.AutoConfig.from_pretrained(export_hf(imported, tmp_path / "exported"))
    assert [getattr(config, k) for k in DROPS] == [0.2, 0.2, 0.2]
    assert "lmforge: note" not in capsys.readouterr().err
    # left out: GPT2Config's 0.1, as transformers reads them
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({k: v for k, v in raw.items() if k not in DROPS}))
    assert load_model(import_hf(tmp_path / "hf", tmp_path / "imported"))[0].config.dropout == 0.1
    # unequal: resid_pdrop's (the most widely applied), said in one note line
    set_json(tmp_path / "hf" / "config.json", attn_pdrop=0.0, resid_pdrop=0.3)
    assert load_model(import_hf(tmp_path / "hf", tmp_path / "imported"))[0].config.dropout == 0.3
    notes = [line for line in capsys.readouterr().err.splitlines() if "lmforge: note" in line]
    assert notes and all("attn_pdrop=0.0, embd_pdrop=0.1, resid_pdrop=0.3" in line for line in notes)


def test_encoder_dropouts_come_back(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """BERT's hidden_dropout_prob / attention_probs_dropout_prob (and DistilBERT's dropout /
    attention_dropout) were not read: an imported encoder fine-tuned without dropout, and its
    export wrote 0.0."""
    make_hf_model("bert", tmp_path / "hf")
    set_json(tmp_path / "hf" / "config.json", hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    assert load_model(imported)[0].config.dropout == 0.2
    config = transformers.AutoConfig.from_pretrained(export_hf(imported, tmp_path / "exported"))
    assert (config.hidden_dropout_prob, config.attention_probs_dropout_prob) == (0.2, 0.2)
    assert "lmforge: note" not in capsys.readouterr().err
    set_json(tmp_path / "hf" / "config.json", attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.3)
    assert load_model(import_hf(tmp_path / "hf", tmp_path / "imported"))[0].config.dropout == 0.3
    notes = [line for line in capsys.readouterr().err.splitlines() if "lmforge: note" in line]
    expected = "hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.0, and lmforge has one dropout"
    assert notes and all(expected in line for line in notes)
    torch.manual_seed(0)
    shape = {"dim": 32, "n_layers": 1, "n_heads": 4, "hidden_dim": 64, "max_position_embeddings": 64}
    distil = transformers.DistilBertConfig(vocab_size=260, dropout=0.25, attention_dropout=0.25, **shape)
    transformers.DistilBertModel(distil).save_pretrained(tmp_path / "distil")
    (tmp_path / "distil" / "tokenizer.json").write_bytes((tmp_path / "hf" / "tokenizer.json").read_bytes())
    assert load_model(import_hf(tmp_path / "distil", tmp_path / "distil-in"))[0].config.dropout == 0.25


def test_a_marian_dropout_comes_back(tmp_path: Path) -> None:
    """opus-mt's dropout (0.1) was not read: a translation fine-tune ran without it and the export
    wrote 0.0 (V5)."""
    from marian_helpers import make_marian_model

    make_marian_model(tmp_path / "hf")
    set_json(tmp_path / "hf" / "config.json", dropout=0.1, attention_dropout=0.0)
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    assert load_model(imported)[0].config.dropout == 0.1
    config = transformers.AutoConfig.from_pretrained(export_hf(imported, tmp_path / "exported"))
    assert (config.dropout, config.attention_dropout) == (0.1, 0.0)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3_text"])
def test_llama_shaped_attention_dropout_comes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture, family: str
) -> None:
    """Llama's (Qwen's, Gemma's) attention_dropout was not read: an lmforge model trained with
    dropout, exported (which writes its dropout there) and imported again had none."""
    if family == "gemma3_text":
        from test_gemma3 import make_gemma3

        make_gemma3(tmp_path / "hf")
    else:
        make_hf_model(family, tmp_path / "hf")
    assert load_model(import_hf(tmp_path / "hf", tmp_path / "imported"))[0].config.dropout == 0.0
    assert "lmforge: note" not in capsys.readouterr().err
    set_json(tmp_path / "hf" / "config.json", attention_dropout=0.15)
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    assert load_model(imported)[0].config.dropout == 0.15
    notes = [line for line in capsys.readouterr().err.splitlines() if "lmforge: note" in line]
    assert notes and all("attention_dropout=0.15: lmforge's one dropout" in line for line in notes)
    config = transformers.AutoConfig.from_pretrained(export_hf(imported, tmp_path / "exported"))
    assert config.attention_dropout == 0.15
    set_json(tmp_path / "hf" / "config.json", attention_dropout="0.1")
    with pytest.raises(LmforgeError, match="attention_dropout"):
        import_hf(tmp_path / "hf", tmp_path / "again")


def test_special_tokens_map_names_over_tokenizer_config_as_in_transformers(tmp_path: Path) -> None:
    """Where tokenizer_config.json and special_tokens_map.json name different special tokens,
    transformers takes the map's: lmforge took tokenizer_config.json's EOS (the stop id where
    config.json names none), padding id and the chat template's eos_token."""
    from lmforge.formats.hf_files import model_special_ids
    from lmforge.inference.chat import ChatSpec

    make_hf_model("llama", tmp_path / "hf")
    set_json(tmp_path / "hf" / "config.json", eos_token_id=None, bos_token_id=None, pad_token_id=None)
    (tmp_path / "hf" / "generation_config.json").unlink(missing_ok=True)
    hf_tokens = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").convert_ids_to_tokens([5, 6, 7])
    first = {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps(first))
    mapped = {"eos_token": hf_tokens[0], "pad_token": {"content": hf_tokens[1]}, "bos_token": hf_tokens[2]}
    (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps(mapped))
    reference = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    ids = (reference.eos_token_id, reference.pad_token_id, reference.bos_token_id)
    assert ids == (5, 6, 7)
    imported = import_hf(tmp_path / "hf", tmp_path / "imported")
    for directory in (tmp_path / "hf", imported):
        model, tokenizer = load_model(directory)
        assert tokenizer.eos_id == 5
        assert model_special_ids(directory, tokenizer) == {"bos_token_id": 7, "pad_token_id": 6}
        variables = ChatSpec.read(directory, tokenizer).variables
        assert (variables["eos_token"], variables["bos_token"]) == (hf_tokens[0], hf_tokens[2])
    assert ChatSpec.read(tmp_path / "hf", tokenizer).variables["pad_token"] == hf_tokens[1]
    # a null in special_tokens_map.json unsets tokenizer_config.json's token, as in transformers
    (tmp_path / "hf" / "special_tokens_map.json").write_text(json.dumps({"pad_token": None}))
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf").pad_token is None
    assert "pad_token" not in ChatSpec.read(tmp_path / "hf", tokenizer).variables


def test_a_fine_tune_of_an_imported_model_keeps_its_padding_sides(tmp_path: Path, corpus: Path) -> None:
    """Trained on more text (train.init_from), the run's model and its export lost the tokenizer's
    padding_side "left": transformers then padded its batches on the right."""
    from lmforge.cli import main

    make_hf_model("llama", tmp_path / "hf")
    (tmp_path / "hf" / "tokenizer_config.json").write_text(json.dumps({"padding_side": "left"}))
    argv = ["train", "--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "hf")]
    argv += [f"--data.input={corpus}"]
    argv += ["--train.max_steps=1", "--train.batch_size=2", "--train.eval_batches=1", "--quiet"]
    assert main(argv) == 0
    exported = export_hf(tmp_path / "run", tmp_path / "exported")
    assert transformers.AutoTokenizer.from_pretrained(exported).padding_side == "left"
