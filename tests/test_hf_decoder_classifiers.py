"""Hugging Face decoder classifiers (GPT2/Llama/Mistral/Qwen2/Qwen3/SmolLM3/Gemma2 ForSequenceClassification)
read as lmforge Classifiers and written back (formats/hf_decoder_heads.py), checked against transformers on
tiny random models built here (fixed seed): logits of a right-padded batch within 1e-5, directly and
after `lmforge import`, a text ending in the pad token included (transformers skips it);
`pipeline("text-classification")` against transformers' pipeline; the export loaded by
`AutoModelForSequenceClassification` with no missing or unexpected tensor; the one-line refusals.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_helpers import VOCAB, load_whole, save_randomised

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.lmforge_dirs import save_classifier
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
# the last ends in the pad token (<|endoftext|>, id 0, as GPT-2's pad is its EOS): transformers
# pools the token before it
TEXTS = ["the old king kept his crown in a tower", "river", "a merchant sold salt<|endoftext|>"]
TOL = 1e-5
FAMILIES = ["gpt2", "llama", "mistral", "qwen2", "qwen3", "smollm3", "gemma2"]
NAMES = {
    "gpt2": "GPT2",
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "smollm3": "SmolLM3",
    "gemma2": "Gemma2",
}
EXPORTED_AS = NAMES | {"mistral": "Llama"}


def save_hf(family: str, directory: Path, names: dict[int, str] = LABELS, **extra: Any) -> torch.nn.Module:
    """A random transformers `family` ...ForSequenceClassification (+ tokenizer.json) in `directory`."""
    ids = {"vocab_size": VOCAB, "eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 0}
    labels = {"id2label": names, "label2id": {v: k for k, v in names.items()}}
    common = {**ids, **labels, "initializer_range": 0.2, **extra}
    shape = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 64}  # fmt: skip
    config = {
        "gpt2": lambda: transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, **common),
        "llama": lambda: transformers.LlamaConfig(**shape, **common),
        "mistral": lambda: transformers.MistralConfig(**shape, sliding_window=None, **common),
        "qwen2": lambda: transformers.Qwen2Config(**shape, tie_word_embeddings=True, **common),
        "qwen3": lambda: transformers.Qwen3Config(**shape, head_dim=32, tie_word_embeddings=True, **common),
        # layer 2 of 2 without rotary positions (NoPE)
        "smollm3": lambda: transformers.SmolLM3Config(**shape, no_rope_layer_interval=2, **common),
        # capped attention scores (the logit cap is the LM head's, which a classifier has not)
        "gemma2": lambda: transformers.Gemma2Config(
            **shape, head_dim=16, attn_logit_softcapping=1.0, attn_implementation="eager", **common
        ),  # fmt: skip
    }[family]()
    cls = NAMES[family]
    torch.manual_seed(0)
    return save_randomised(getattr(transformers, f"{cls}ForSequenceClassification")(config).eval(), directory)


def _batch(directory: Path, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), pad_token="<|endoftext|>"
    )
    batch = tokenizer(texts, padding=True, return_tensors="pt")  # right padding, as lmforge's
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # padding is exercised
    return batch


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_decoder_classifier_logits_equal_transformers(family: str, tmp_path: Path) -> None:
    hf = save_hf(family, tmp_path / "hf")
    batch = _batch(tmp_path / "hf")
    assert batch["input_ids"][2, batch["attention_mask"][2].sum() - 1] == 0  # the text's own pad token
    with torch.no_grad():
        expected = hf(**batch).logits
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    raw = json.loads((imported / "config.json").read_text())
    assert raw["model_type"] == "lmforge-classifier" and raw["pooling"] == "last"
    assert raw["head_bias"] is False and raw["pad_token_id"] == 0
    for source in (tmp_path / "hf", imported):
        model, _ = lmforge.load(source)
        assert isinstance(model, Classifier) and model.labels == list(LABELS.values())
        with torch.no_grad():
            got = model(batch["input_ids"], batch["attention_mask"])
        assert _max_diff(got, expected) < TOL, (source, _max_diff(got, expected))


def test_without_a_pad_token_one_text_equals_transformers(tmp_path: Path) -> None:
    """transformers then reads the last position and refuses batches; lmforge reads each text's last token."""
    hf = save_hf("llama", tmp_path / "hf", pad_token_id=None)
    model, _ = lmforge.load(tmp_path / "hf")
    assert isinstance(model, Classifier) and model.pad_id is None
    ids = _batch(tmp_path / "hf", TEXTS[:2])["input_ids"][:1]
    with torch.no_grad():
        assert _max_diff(model(ids), hf(input_ids=ids).logits) < TOL


@pytest.mark.parametrize("family", ["gpt2", "qwen2"])
def test_pipeline_equals_transformers_pipeline(family: str, tmp_path: Path) -> None:
    save_hf(family, tmp_path / "hf")
    ours = lmforge.pipeline("text-classification", model=str(tmp_path / "hf"))
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))
    for kwargs in ({}, {"top_k": None}, {"top_k": 2}):
        a, b = ours(TEXTS, **kwargs), theirs(TEXTS, **kwargs)
        flat_a = [r for row in a for r in (row if isinstance(row, list) else [row])]
        flat_b = [r for row in b for r in (row if isinstance(row, list) else [row])]
        assert [r["label"] for r in flat_a] == [r["label"] for r in flat_b], kwargs
        assert max(abs(x["score"] - y["score"]) for x, y in zip(flat_a, flat_b, strict=True)) < TOL


@pytest.mark.parametrize("family", FAMILIES)
def test_an_hf_decoder_classifier_exports_back_with_its_logits(family: str, tmp_path: Path) -> None:
    hf = save_hf(family, tmp_path / "hf")
    out = lmforge.export_hf(lmforge.import_hf(tmp_path / "hf", tmp_path / "imported"), tmp_path / "out")
    raw = json.loads((out / "config.json").read_text())
    assert raw["architectures"] == [f"{EXPORTED_AS[family]}ForSequenceClassification"]
    assert raw["pad_token_id"] == 0
    back = load_whole(transformers.AutoModelForSequenceClassification, out)
    assert back.config.id2label == LABELS
    batch = _batch(tmp_path / "hf")
    with torch.no_grad():
        assert _max_diff(back(**batch).logits, hf(**batch).logits) < TOL


def _lmforge_classifier(directory: Path, **options: Any) -> tuple[Classifier, Tokenizer]:
    tok = Tokenizer.train_bpe(["the old king kept his crown in a tower"] * 20, vocab_size=300)
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    model = Classifier(GPT(config), ["no", "yes"], **options).eval()
    save_classifier(model, directory, tok)
    return model, tok


def test_an_lmforge_decoder_classifier_without_a_head_bias_exports(tmp_path: Path) -> None:
    """A classifier without a pad id (built here; trained before finetune-classify gave them one,
    tests/test_classifier_export_batches.py) pools the attention mask's last token: the export
    names none, so transformers reads each text's last position, whatever token ends it (it wrote
    the EOS, which transformers' pooling then skipped at a text's end)."""
    model, tok = _lmforge_classifier(tmp_path / "clf", head_bias=False)
    out = lmforge.export_hf(tmp_path / "clf", tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["pad_token_id"] is None
    back = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    for text in ["the old king", "a crown in a tower kept"]:
        for ids in (tok.encode(text), [*tok.encode(text), tok.eos_id]):  # one text at a time, as transformers
            batch = torch.tensor([ids])
            with torch.no_grad():
                assert _max_diff(back(input_ids=batch).logits, model(batch)) < TOL


def test_a_classifier_without_a_pad_token_exports_without_one(tmp_path: Path) -> None:
    """Imported and exported back, a pad-less classifier gave another text's logits to transformers
    where the text ended in its EOS (export wrote the EOS as pad_token_id)."""
    hf = save_hf("llama", tmp_path / "hf", pad_token_id=None)
    out = lmforge.export_hf(lmforge.import_hf(tmp_path / "hf", tmp_path / "imported"), tmp_path / "out")
    assert json.loads((out / "config.json").read_text())["pad_token_id"] is None
    back = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    ids = _batch(tmp_path / "hf", TEXTS[:2])["input_ids"][:1]
    ids = torch.cat([ids, torch.tensor([[hf.config.eos_token_id]])], dim=1)  # ends in the EOS
    with torch.no_grad():
        assert _max_diff(back(input_ids=ids).logits, hf(input_ids=ids).logits) < TOL


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"head_bias": True}, "a head bias (its score layer has none)"),
        ({"pooling": "mean", "head_bias": False}, "'mean' pooling (it reads the last token)"),
        ({"dense": "tanh", "head_bias": False}, "a tanh dense layer"),
    ],
)
def test_a_decoder_classifier_transformers_cannot_compute_is_refused(
    options: dict[str, Any], said: str, tmp_path: Path
) -> None:
    _lmforge_classifier(tmp_path / "clf", **options)
    with pytest.raises(LmforgeError) as err:
        lmforge.export_hf(tmp_path / "clf", tmp_path / "out")
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"{tmp_path / 'clf'}: a decoder classifier exports to HF as GPT2ForSequenceClassification"
    )
    assert f"this one has {said}, which that class cannot compute" in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_a_left_padded_batch_equals_each_text_alone(family: str, tmp_path: Path) -> None:
    """A batch padded on the left (HF tokenizers with padding_side="left", Gemma's and Llama's
    default) was pooled and attended as if right-padded: 0.27 off transformers, unsaid."""
    hf = save_hf(family, tmp_path / "hf")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"), pad_token="<|endoftext|>", padding_side="left"
    )
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert int(batch["attention_mask"][:, 0].sum()) < len(TEXTS)  # left padding is exercised
    with torch.no_grad():
        expected = hf(**batch).logits
    model, _ = lmforge.load(lmforge.import_hf(tmp_path / "hf", tmp_path / "imported"))
    with torch.no_grad():
        got = model(batch["input_ids"], batch["attention_mask"])
        alone = torch.cat([model(tokenizer([t], return_tensors="pt")["input_ids"]) for t in TEXTS])
    assert _max_diff(got, expected) < TOL and _max_diff(got, alone) < TOL, (got, expected, alone)
