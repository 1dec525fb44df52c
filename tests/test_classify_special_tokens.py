"""Classification reads a text as transformers' `tokenizer(text)` gives it, with the special tokens
of the tokenizer's post-processor: a Llama-3-style BOS (tests/hf_helpers.py's add_bos) first.
Checked against transformers on tiny random models built here: an imported Llama or Mistral
...ForSequenceClassification gives, through `lmforge.classify` (a padded batch), the
text-classification pipeline and the HF folder itself, transformers' logits (1e-4); a classifier
`finetune-classify` trains on such a base exports to a folder whose AutoTokenizer +
AutoModelForSequenceClassification give lmforge's logits on a padded batch; a long text is cut
inside, its special tokens kept, as transformers' truncation cuts it; `lmforge inspect` shows
those ids. lmforge used to encode a decoder's texts bare (no BOS), which transformers never
does. A decoder classifier written before (config.json without add_special_tokens) still reads
texts bare, as it was trained, and exports so that transformers reads them bare too; an
encoder's always had [CLS] ... [SEP].
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hf_helpers import add_bos, make_hf_model
from test_hf_decoder_classifiers import TEXTS, save_hf

import lmforge
from lmforge.data.labelled import encode_batch, token_counts
from lmforge.errors import LmforgeError
from lmforge.train.classify import finetune_classify

transformers = pytest.importorskip("transformers")

TOL = 1e-4
BOS = 5  # an ordinary token of the tiny vocabulary, made the post-processor's BOS by add_bos
LABELS = ["negative", "positive"]
WORDS = ["the", "king", "good", "crown", "night", "grim", "lady", "fair", "sword", "day", "queen"]


def _logits(run: Path, texts: list[str]) -> torch.Tensor:
    """lmforge.classify's raw outputs for `texts`, one padded batch, in the model's label order."""
    model, _ = lmforge.load(run)
    rows = lmforge.classify(run, texts, top_k=0, function_to_apply="none", batch_size=len(texts))
    return torch.tensor([[{s["label"]: s["score"] for s in row["labels"]}[name] for name in model.labels]
                         for row in rows])  # fmt: skip


def _transformers_logits(directory: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, input_ids) of AutoTokenizer's padded batch through AutoModelForSequenceClassification."""
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    tok.pad_token = tok.pad_token or "<|endoftext|>"
    batch = tok(texts, padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # padding is exercised
    model = transformers.AutoModelForSequenceClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(**batch).logits, batch["input_ids"]


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_an_imported_classifier_with_a_bos_gives_transformers_logits(family: str, tmp_path: Path) -> None:
    save_hf(family, tmp_path / "hf")
    add_bos(tmp_path / "hf", BOS)
    expected, ids = _transformers_logits(tmp_path / "hf", TEXTS)
    assert (ids[:, 0] == BOS).all()  # transformers reads the BOS first
    imported = lmforge.import_hf(tmp_path / "hf", tmp_path / "imported")
    assert json.loads((imported / "config.json").read_text())["add_special_tokens"] is True
    for source in (tmp_path / "hf", imported):
        got = _logits(source, TEXTS)
        assert float((got - expected).abs().max()) < TOL, source
    ours = lmforge.pipeline("text-classification", model=str(imported))(TEXTS, top_k=None)
    theirs = transformers.pipeline("text-classification", model=str(tmp_path / "hf"))(TEXTS, top_k=None)
    for a, b in zip(ours, theirs, strict=True):
        assert [r["label"] for r in a] == [r["label"] for r in b]
        assert max(abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)) < TOL


def test_a_long_text_is_cut_inside_its_special_tokens(tmp_path: Path) -> None:
    """<s> text </s> (a GGUF's add_eos_token): cut to the context, the EOS stays last, as
    transformers' truncation keeps it; plan counts what the batch holds."""
    save_hf("llama", tmp_path / "hf")
    add_bos(tmp_path / "hf", BOS, eos_id=6)
    _, tokenizer = lmforge.load(tmp_path / "hf")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = " ".join(WORDS * 4)
    ids, mask = encode_batch(tokenizer, [text, "king"], 12)
    assert ids[0].tolist() == tok(text, truncation=True, max_length=12)["input_ids"]
    assert ids[1, :3].tolist() == tok("king")["input_ids"] and mask.sum(1).tolist() == [12, 3]
    assert token_counts(tokenizer, [text, "king"], 12) == [12, 3]


def _labelled(path: Path) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(48):
            label = rng.choice(LABELS)
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
            words.append("good" if label == "positive" else "grim")
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def _finetune(family: str, tmp_path: Path) -> Path:
    make_hf_model(family, tmp_path / "base")
    add_bos(tmp_path / "base", BOS)
    run = tmp_path / "clf"
    finetune_classify(tmp_path / "base", _labelled(tmp_path / "train.jsonl"), ",".join(LABELS), run, epochs=1,
                      batch_size=16, lr=1e-3, dtype="fp32", max_len=32, quiet=True)  # fmt: skip
    return run


EXPORT_TEXTS = ["the king good crown night day", "grim", "lady fair sword good", "queen"]


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_a_classifier_trained_on_a_bos_base_exports_with_its_logits(family: str, tmp_path: Path) -> None:
    run = _finetune(family, tmp_path)
    assert json.loads((run / "model" / "config.json").read_text())["add_special_tokens"] is True
    out = lmforge.export_hf(run, tmp_path / "hf")
    theirs, ids = _transformers_logits(out, EXPORT_TEXTS)
    assert (ids[:, 0] == BOS).all()
    assert float((_logits(run, EXPORT_TEXTS) - theirs).abs().max()) < TOL


def test_a_decoder_classifier_written_before_still_reads_texts_bare(tmp_path: Path) -> None:
    """config.json without add_special_tokens (as lmforge wrote it before): classify reads each
    text without the BOS, as that classifier was trained, and its export makes transformers'
    tokenizer read it so too."""
    run = _finetune("llama", tmp_path)
    config = json.loads((run / "model" / "config.json").read_text())
    del config["add_special_tokens"]
    (run / "model" / "config.json").write_text(json.dumps(config))
    model, tokenizer = lmforge.load(run)
    assert tokenizer.encode_prompt("grim") == tokenizer.encode("grim")  # no BOS
    with torch.no_grad():  # each text alone, its ids bare: the old reading
        bare = torch.cat([model(torch.tensor([tokenizer.encode(t)])) for t in EXPORT_TEXTS])
    assert float((_logits(run, EXPORT_TEXTS) - bare).abs().max()) < TOL
    out = lmforge.export_hf(run, tmp_path / "hf")
    theirs, ids = _transformers_logits(out, EXPORT_TEXTS)
    assert BOS not in ids[:, 0].tolist()
    assert float((theirs - bare).abs().max()) < TOL
    config["add_special_tokens"] = "yes"
    (run / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmforgeError, match=r"config.json: add_special_tokens='yes' must be true or false$"):
        lmforge.load(run)


def test_an_encoder_classifier_written_before_keeps_its_special_tokens(tmp_path: Path) -> None:
    """Encoders always read [CLS] ... [SEP]: one without the key is read so still."""
    from test_hf_classifiers import save_hf as save_encoder_hf

    directory = tmp_path / "bert"
    save_encoder_hf("bert", "BertForSequenceClassification", directory, seed=1, names={0: "no", 1: "yes"})
    imported = lmforge.import_hf(directory, tmp_path / "imported")
    config = json.loads((imported / "config.json").read_text())
    del config["add_special_tokens"]
    (imported / "config.json").write_text(json.dumps(config))
    texts = ["the old king", "a crown in a tower kept by the queen"]
    expected, ids = _transformers_logits(directory, texts)
    assert float((_logits(imported, texts) - expected).abs().max()) < TOL


def test_inspect_reads_a_decoder_classifier_s_text_as_it_classifies_it(tmp_path: Path) -> None:
    """`lmforge inspect` on a decoder classifier shows the ids it classifies: the BOS first (it
    showed the text bare)."""
    from lmforge.tools.inspect import inspect

    save_hf("llama", tmp_path / "hf")
    add_bos(tmp_path / "hf", BOS)
    text = TEXTS[0]
    got = inspect(tmp_path / "hf", text, out=None)
    assert got.ids == transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"]
    assert got.ids[0] == BOS
