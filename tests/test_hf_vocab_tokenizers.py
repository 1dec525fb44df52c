"""Hugging Face encoder folders without tokenizer.json: BERT's vocab.txt and RoBERTa's vocab.json +
merges.txt tokenize as transformers' AutoTokenizer does with tokenizer_config.json's options
(do_lower_case, strip_accents, tokenize_chinese_chars; add_prefix_space, trim_offsets), directly
and after `lmforge import`; a value transformers would not take is one line naming the key."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import lmforge
from lmforge.errors import LmforgeError

transformers = pytest.importorskip("transformers")

FIXTURES = Path(__file__).parent / "fixtures"
TEXTS = ["Queen Élodie rode south", "東京 café naïve", "THE OLD King", "river floods"]
SHAPE = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 64}


def _folder(family: str, directory: Path, options: dict[str, Any]) -> Path:
    """A random encoder of `family` with only vocabulary files and a tokenizer_config.json."""
    torch.manual_seed(0)
    if family == "bert":
        config = transformers.BertConfig(vocab_size=260, max_position_embeddings=64, **SHAPE)
        transformers.BertModel(config).save_pretrained(directory)
        shutil.copy(FIXTURES / "bert-qa" / "vocab.txt", directory)
        options = {"tokenizer_class": "BertTokenizer"} | options
    else:
        ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "type_vocab_size": 1}
        config = transformers.RobertaConfig(vocab_size=400, max_position_embeddings=66, **SHAPE, **ids)
        transformers.RobertaModel(config).save_pretrained(directory)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(FIXTURES / "roberta-qa" / name, directory)
        options = {"tokenizer_class": "RobertaTokenizer"} | options
    (directory / "tokenizer_config.json").write_text(json.dumps(options))
    return directory


@pytest.mark.parametrize(
    ("family", "options"),
    [
        ("bert", {"do_lower_case": True, "strip_accents": False}),
        ("bert", {"do_lower_case": False, "strip_accents": True}),
        ("bert", {"do_lower_case": True, "tokenize_chinese_chars": False}),
        ("roberta", {"add_prefix_space": True}),
        ("roberta", {"add_prefix_space": True, "trim_offsets": False}),
    ],
)
def test_vocabulary_files_tokenize_as_transformers_with_each_option(
    family: str, options: dict[str, Any], tmp_path: Path
) -> None:
    directory = _folder(family, tmp_path / "hf", options)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    imported = lmforge.import_hf(directory, tmp_path / "imported")
    for source in (directory, imported):
        ours = lmforge.load(source)[1].hf
        for text in TEXTS:
            assert ours.encode(text).ids == theirs(text)["input_ids"], (source, text)
        got = ours.encode("Who?", " " + TEXTS[3])  # offsets place QA answers
        expected = theirs("Who?", " " + TEXTS[3], return_offsets_mapping=True)
        assert got.ids == expected["input_ids"]
        assert got.offsets == [tuple(o) for o in expected["offset_mapping"]], source


@pytest.mark.parametrize(
    ("family", "key", "value", "allowed"),
    [
        ("bert", "strip_accents", "yes", "true, false or null"),
        ("bert", "do_lower_case", None, "true or false"),
        ("bert", "tokenize_chinese_chars", 0, "true or false"),
        ("roberta", "add_prefix_space", "true", "true or false"),
    ],
)
def test_an_option_transformers_would_not_take_is_one_line(
    family: str, key: str, value: Any, allowed: str, tmp_path: Path
) -> None:
    directory = _folder(family, tmp_path / "hf", {key: value})
    with pytest.raises(LmforgeError) as e:
        lmforge.load(directory)
    assert str(e.value) == f"{directory / 'tokenizer_config.json'}: {key!r} must be {allowed}, not {value!r}"


def test_gpt2_vocabulary_files_take_add_prefix_space(tmp_path: Path) -> None:
    from lmforge.formats.hf_tokenizers import load_hf_tokenizer

    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "roberta-qa" / name, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    options = {"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(options))
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = load_hf_tokenizer(tmp_path, {"model_type": "gpt2"}).hf
    for text in TEXTS:
        expected = theirs(text, return_offsets_mapping=True)
        got = ours.encode(text)
        assert (got.ids, got.offsets) == (
            expected["input_ids"],
            [tuple(o) for o in expected["offset_mapping"]],
        )


def test_a_bert_vocabulary_with_its_own_special_names_tokenizes_as_transformers(tmp_path: Path) -> None:
    """unk/cls/sep/pad/mask named otherwise (special_tokens_map.json over tokenizer_config.json, as
    transformers reads them): lmforge took [UNK] ... [MASK] and split "<mask>" into pieces."""
    directory = tmp_path / "hf"
    directory.mkdir()
    vocab = ["<pad>", "<unknown>", "<cls>", "<sep>", "<mask>", "hello", "world", "##s", "!", "[UNK]",
             "[CLS]", "[SEP]", "[MASK]", "<u2>"]  # fmt: skip
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    names = {"unk_token": "<unknown>", "cls_token": "<cls>", "sep_token": "<sep>", "pad_token": "<pad>"}
    mapped = {"unk_token": "<u2>", "mask_token": "<mask>"}
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"} | names))
    (directory / "special_tokens_map.json").write_text(json.dumps(mapped))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), max_position_embeddings=64, **SHAPE)
    transformers.BertModel(config).save_pretrained(directory)
    from lmforge.formats.hf_tokenizers import load_hf_tokenizer

    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    ours = load_hf_tokenizer(directory, {"model_type": "bert"}).hf
    for text in ("hello worlds!", "hello zzz", "the <mask> world", "hello <cls> [MASK] x"):
        assert ours.encode(text).ids == theirs(text)["input_ids"], text
        assert ours.encode(text, "worlds").ids == theirs(text, text_pair="worlds")["input_ids"], text
    assert ours.encode("zzz").ids == [2, 13, 3]  # <u2>, special_tokens_map.json's unk_token
    from lmforge.data.qa_features import WindowMaker
    from lmforge.tokenization.tokenizer import Tokenizer

    assert WindowMaker(Tokenizer(ours)).cls_id == 2  # the QA pipeline's null answer: <cls>
    # and through import and export: the exported tokenizer_config.json names them too
    exported = lmforge.export_hf(lmforge.import_hf(directory, tmp_path / "imported"), tmp_path / "out")
    again = transformers.AutoTokenizer.from_pretrained(exported)
    assert (again.cls_token, again.sep_token, again.unk_token) == ("<cls>", "<sep>", "<u2>")
    pair = {"text": "hello zzz", "text_pair": "worlds"}
    assert again(**pair)["input_ids"] == theirs(**pair)["input_ids"]
    (directory / "special_tokens_map.json").write_text(json.dumps({"unk_token": "<nope>"}))
    with pytest.raises(LmforgeError, match=r"vocab.txt: not a BERT vocabulary: no unk_token '<nope>'"):
        load_hf_tokenizer(directory, {"model_type": "bert"})
