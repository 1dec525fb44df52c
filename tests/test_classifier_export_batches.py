"""A decoder classifier fine-tuned here (`finetune-classify` on GPT-2, Llama, Mistral, Qwen2, a
Qwen3 with Qwen's special tokens, and lmforge's own GPT) exports with a pad_token_id, so
transformers' ...ForSequenceClassification takes padded batches: AutoTokenizer's padded batch
through AutoModelForSequenceClassification gives, per text, the logits `lmforge.classify` gives
that text alone (1e-4), texts that end in, start with, contain or are the pad token or the EOS
included; tokenizer_config.json's bos/eos/pad tokens are config.json's ids, and the source's own
(Qwen3's BOS is <|endoftext|>, not its EOS <|im_end|>). The export used to name no pad token
(transformers then refused any batch over one text) and Qwen3's EOS as its BOS.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from hf_helpers import VOCAB, make_hf_model, save_randomised, tiny_bpe
from tokenizers import Tokenizer as HFTokenizer

import lmforge
from lmforge.config import ModelConfig
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.classify import finetune_classify

transformers = pytest.importorskip("transformers")

LABELS = ["negative", "positive"]
WORDS = ["the", "king", "good", "crown", "night", "grim", "lady", "fair", "sword", "day", "queen"]
TOL = 1e-4


def _qwen3(directory: Path) -> None:
    """A random Qwen3ForCausalLM laid out as Qwen's: BOS and pad <|endoftext|> (id 0, named by
    tokenizer_config.json only), EOS <|im_end|> (generation_config.json's first)."""
    directory.mkdir()
    tiny_bpe(directory)
    tok = HFTokenizer.from_file(str(directory / "tokenizer.json"))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    im_end = tok.token_to_id("<|im_end|>")
    config = transformers.Qwen3Config(
        vocab_size=VOCAB + 2, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=64,
        tie_word_embeddings=True, initializer_range=0.2, bos_token_id=0, eos_token_id=im_end,
    )  # fmt: skip
    torch.manual_seed(0)
    save_randomised(transformers.Qwen3ForCausalLM(config).eval(), directory)
    tok.save(str(directory / "tokenizer.json"))  # save_randomised wrote the tiny one over it
    named = {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (directory / "tokenizer_config.json").write_text(json.dumps(named))
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": [im_end, 0]})
    )


def _lmforge_gpt(directory: Path) -> None:
    """lmforge's own GPT and byte-level BPE (<|endoftext|> 0, <|pad|> 1)."""
    tok = Tokenizer.train_bpe([" ".join(WORDS)] * 50, vocab_size=300)
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(directory, config, GPT(config).state_dict(), tok)


def _base(family: str, directory: Path) -> None:
    if family == "qwen3":
        _qwen3(directory)
    elif family == "lmforge":
        _lmforge_gpt(directory)
    else:
        make_hf_model(family, directory)


def _labelled(path: Path) -> Path:
    rng = random.Random(0)
    with path.open("w") as f:
        for _ in range(48):
            label = rng.choice(LABELS)
            words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))] + [
                "good" if label == "positive" else "grim"
            ]
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


# the pad token lmforge picks: the model's own (Qwen's <|endoftext|>), else the tokenizer's
# <|pad|> (lmforge's), else the EOS (GPT-2's, as the tiny HF vocabularies here have no other)
PAD = {"qwen3": "<|endoftext|>", "lmforge": "<|pad|>"}


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral", "qwen2", "qwen3", "lmforge"])
def test_an_exported_decoder_classifier_batches_in_transformers(family: str, tmp_path: Path) -> None:
    _base(family, tmp_path / "base")
    run = tmp_path / "clf"
    finetune_classify(tmp_path / "base", _labelled(tmp_path / "train.jsonl"), ",".join(LABELS), run, epochs=1,
                      batch_size=16, lr=1e-3, dtype="fp32", max_len=32, quiet=True)  # fmt: skip
    out = lmforge.export_hf(run, tmp_path / "hf")
    back = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    config = back.config
    pad, eos = tok.pad_token, tok.eos_token
    assert pad == PAD.get(family, "<|endoftext|>") and tok.padding_side == "right"
    # tokenizer_config.json names the tokens of config.json's ids
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        config.bos_token_id, config.eos_token_id, config.pad_token_id,
    )  # fmt: skip
    if family == "qwen3":  # the source's own: BOS <|endoftext|>, EOS <|im_end|>
        assert (tok.bos_token, eos) == ("<|endoftext|>", "<|im_end|>")
    model, tokenizer = lmforge.load(run)
    assert model.pad_id == config.pad_token_id  # the token lmforge's pooling skips
    texts = ["the king good crown night day", "grim", f"lady fair{pad}", f"{pad}sword good",
             f"night{eos} day", f"queen good{eos}", pad, f"good{pad}{pad}"]  # fmt: skip
    batch = tok(texts, padding=True, return_tensors="pt")
    assert int(batch["attention_mask"].sum()) < batch["attention_mask"].numel()  # padding is exercised
    for row, text in zip(batch["input_ids"], texts, strict=True):  # the ids lmforge classifies
        assert row[: len(tokenizer.encode(text))].tolist() == tokenizer.encode(text)
    with torch.no_grad():
        theirs = back(**batch).logits
    for text, logits in zip(texts, theirs, strict=True):
        scores = lmforge.classify(run, text, top_k=0, function_to_apply="none")[0]["labels"]
        ours = torch.tensor([next(s["score"] for s in scores if s["label"] == label) for label in LABELS])
        assert float((ours - logits).abs().max()) < TOL, (text, ours, logits)
