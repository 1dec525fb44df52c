"""tokenizer_config.json's options over an HF folder's tokenizer.json, as transformers applies them
(formats/hf_tokenizer_options.py), and an encoder's BOS through import and export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hf_helpers import make_hf_model, tiny_bpe
from tokenizers import Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

import lmforge
from lmforge.formats.directory import load_model
from lmforge.formats.hf_tokenizers import load_hf_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
TEXT = " Hugo Élodie sells WINE at the Ünïcode market's stall 1234."
PAIR = ("Who sells wine?", "  Ada sells wine at the market. Hugo lives in Fenwick.")


def set_config(directory: Path, **values: Any) -> None:
    file = directory / "tokenizer_config.json"
    config = json.loads(file.read_text()) if file.is_file() else {}
    file.write_text(json.dumps({**config, **values}))


def encodings(tokenizer: Any, hf: HFTokenizer) -> list[tuple[Any, Any]]:
    """transformers' and lmforge's ids, offsets and type ids of a text and of a question + context pair."""
    out = []
    for args in ((TEXT,), PAIR):
        a = tokenizer(*args, return_offsets_mapping=True, return_token_type_ids=True)
        b = hf.encode(*args)
        theirs = (a["input_ids"], [tuple(o) for o in a["offset_mapping"]], a["token_type_ids"])
        out.append((theirs, (b.ids, b.offsets, b.type_ids)))
    return out


@pytest.mark.parametrize(
    ("fixture", "options"),
    [
        ("bert-qa", {"do_lower_case": False, "strip_accents": False}),
        ("bert-qa", {"do_lower_case": False}),  # strip_accents null: as lowercase
        ("distilbert-qa", {"do_lower_case": False}),
        ("roberta-qa", {"add_prefix_space": True, "trim_offsets": False}),
        ("roberta-qa", {"trim_offsets": False}),
        ("roberta-qa", {"add_prefix_space": True}),
    ],
)
def test_tokenizer_config_options_over_tokenizer_json_as_transformers(
    tmp_path: Path, fixture: str, options: dict[str, bool]
) -> None:
    from transformers import AutoTokenizer

    folder = tmp_path / fixture
    shutil.copytree(FIXTURES / fixture, folder)
    set_config(folder, **options)
    expected = AutoTokenizer.from_pretrained(folder)
    for theirs, ours in encodings(expected, load_model(folder)[1].hf):
        assert ours == theirs
    # `lmforge import` writes the options into its tokenizer.json, so its copy reads as the source,
    # and so does transformers' reading of its export
    imported = lmforge.import_hf(folder, tmp_path / "imported")
    for theirs, ours in encodings(expected, load_model(imported)[1].hf):
        assert ours == theirs
    exported = AutoTokenizer.from_pretrained(lmforge.export_hf(imported, tmp_path / "hf"))
    for theirs, ours in encodings(expected, exported.backend_tokenizer):
        assert ours == theirs


@pytest.mark.parametrize("case", ["class-in-config-json", "sequence-normalizer"])
def test_a_bert_folder_reads_as_transformers_builds_it(tmp_path: Path, case: str) -> None:
    """A class named only in config.json (PreTrainedTokenizerFast: tokenizer.json as it is, so
    do_lower_case false changes nothing) was taken for BertTokenizer; a normalizer other than a
    BertNormalizer, which BertTokenizer replaces, kept lower-casing a do_lower_case false folder."""
    from transformers import AutoTokenizer

    folder = tmp_path / "bert"
    shutil.copytree(FIXTURES / "bert-qa", folder)
    set_config(folder, do_lower_case=False, tokenizer_class=None)
    if case == "class-in-config-json":
        raw = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**raw, "tokenizer_class": "PreTrainedTokenizerFast"}))
    else:
        hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        hf.normalizer = normalizers.Sequence(
            [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
        )
        hf.save(str(folder / "tokenizer.json"))
    expected = AutoTokenizer.from_pretrained(folder)
    for theirs, ours in encodings(expected, load_model(folder)[1].hf):
        assert ours[:2] == theirs[:2]


def test_a_phi3_folder_naming_gpt2s_class_reads_its_tokenizer_json_as_it_is(tmp_path: Path) -> None:
    """transformers 5 reads a phi3 (or mistral) folder's tokenizer.json as it is, whatever class it
    names; lmforge applied GPT2Tokenizer's add_prefix_space default (false) over a ByteLevel's true."""
    from transformers import AutoTokenizer

    tiny_bpe(tmp_path)
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    hf.save(str(tmp_path / "tokenizer.json"))
    for model_type in ("phi3", "mistral"):
        raw = {"model_type": model_type}
        (tmp_path / "config.json").write_text(json.dumps(raw))
        set_config(tmp_path, tokenizer_class="GPT2Tokenizer")
        expected = AutoTokenizer.from_pretrained(tmp_path)
        for theirs, ours in encodings(expected, load_hf_tokenizer(tmp_path, raw).hf):
            assert ours[:2] == theirs[:2]


def qwen_pipeline(directory: Path) -> None:
    """Qwen2's normalizer and pre-tokenizer (its Split, then ByteLevel without a regex) on tiny_bpe."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    hf = HFTokenizer.from_file(str(directory / "tokenizer.json"))
    hf.normalizer = normalizers.NFC()
    split = pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated")
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    hf.save(str(directory / "tokenizer.json"))


@pytest.mark.parametrize(
    ("model_type", "config"),
    [
        ("gpt2", {"add_prefix_space": True}),
        ("gpt2", {"add_prefix_space": True, "tokenizer_class": "GPT2TokenizerFast"}),
        ("qwen2", {"add_prefix_space": True}),
        ("qwen3", {"add_prefix_space": True, "tokenizer_class": "Qwen2TokenizerFast"}),
        # transformers 5 builds Qwen2's class for a qwen2 model whatever class the folder names
        ("qwen2", {"add_prefix_space": True, "tokenizer_class": "PreTrainedTokenizerFast"}),
    ],
)
def test_add_prefix_space_of_byte_level_decoders_as_transformers(
    tmp_path: Path, model_type: str, config: dict[str, Any]
) -> None:
    from transformers import AutoTokenizer

    tiny_bpe(tmp_path)
    if model_type != "gpt2":
        qwen_pipeline(tmp_path)
    raw = {"model_type": model_type}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    set_config(tmp_path, **config)
    expected = AutoTokenizer.from_pretrained(tmp_path)
    for theirs, ours in encodings(expected, load_hf_tokenizer(tmp_path, raw).hf):
        assert ours[:2] == theirs[:2]


def test_a_qwen2_import_with_add_prefix_space_exports_it(tmp_path: Path) -> None:
    """transformers builds a qwen2 export's tokenizer from tokenizer_config.json's add_prefix_space."""
    from transformers import AutoTokenizer

    source = tmp_path / "qwen2"
    make_hf_model("qwen2", source)
    qwen_pipeline(source)
    set_config(source, add_prefix_space=True)
    expected = AutoTokenizer.from_pretrained(source)
    exported = lmforge.export_hf(lmforge.import_hf(source, tmp_path / "imported"), tmp_path / "hf")
    for theirs, ours in encodings(expected, AutoTokenizer.from_pretrained(exported).backend_tokenizer):
        assert ours[:2] == theirs[:2]


def test_a_bad_option_over_tokenizer_json_is_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    shutil.copytree(FIXTURES / "bert-qa", folder)
    set_config(folder, do_lower_case="no")
    with pytest.raises(
        lmforge.LmforgeError, match=r"tokenizer_config\.json: 'do_lower_case' must be true or false"
    ):
        load_model(folder)


def test_roberta_keeps_its_bos_through_import_export_and_training(tmp_path: Path) -> None:
    """RoBERTa's BOS is <s> (0); the export named its EOS, </s> (2), for an import and a trained run."""
    from transformers import AutoConfig, AutoTokenizer

    from lmforge.train.loop import train

    source = FIXTURES / "roberta-qa"
    exported = lmforge.export_hf(lmforge.import_hf(source, tmp_path / "imported"), tmp_path / "hf")
    squad = {"version": "v2.0", "data": [{"paragraphs": [
        {"context": f"Ada sells wine number {i}.", "qas": [
            {"id": str(i), "question": "Who sells wine?", "answers": [{"text": "Ada", "answer_start": 0}]}]}
        for i in range(12)]}]}  # fmt: skip
    (tmp_path / "squad.json").write_text(json.dumps(squad))
    args = ["--data.task=qa", f"--data.input={tmp_path / 'squad.json'}", f"--train.init_from={source}",
            "--train.max_steps=1", "--train.batch_size=4"]  # fmt: skip
    train(None, args, out=tmp_path / "run", quiet=True)
    trained = lmforge.export_hf(tmp_path / "run", tmp_path / "hf-run")
    for folder in (exported, trained):
        assert AutoConfig.from_pretrained(folder).bos_token_id == 0
        assert AutoTokenizer.from_pretrained(folder).bos_token == "<s>"


def test_a_roberta_classifier_keeps_its_bos_through_import_and_training(tmp_path: Path) -> None:
    import transformers
    from transformers import AutoConfig

    source = tmp_path / "clf"
    qa = FIXTURES / "roberta-qa"
    config = transformers.RobertaConfig.from_pretrained(qa, num_labels=2, architectures=None)
    transformers.RobertaForSequenceClassification(config).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(qa / name, source / name)
    exported = lmforge.export_hf(lmforge.import_hf(source, tmp_path / "imported"), tmp_path / "hf")
    data = tmp_path / "l.jsonl"
    data.write_text(
        "".join(json.dumps({"text": f"text {i}", "label": ["no", "yes"][i % 2]}) + "\n" for i in range(8))
    )
    args = [
        "--data.task=classification",
        f"--data.input={data}",
        f"--train.init_from={source}",
        "--data.labels=no,yes",
        "--train.pooling=cls",  # with BERT's tanh dense layer: a ...ForSequenceClassification export
        "--train.classifier_dense=tanh",
        "--train.max_steps=1",
        "--train.batch_size=2",
        "--data.val_fraction=0.5",
    ]
    lmforge.train(None, args, out=tmp_path / "run", quiet=True)
    trained = lmforge.export_hf(tmp_path / "run", tmp_path / "hf-run")
    for folder in (exported, trained):
        assert AutoConfig.from_pretrained(folder).bos_token_id == 0
