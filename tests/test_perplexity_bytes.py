"""`lmforge eval`'s bytes: a --max-tokens cut inside a character counts the bytes its kept tokens
stand for, and a character vocabulary's `<|unk|>` is left out of bits per byte as training's
val_bpb leaves it out."""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.data.encode import ordinary_hf
from lmforge.formats.directory import write_model_dir
from lmforge.inference.perplexity import evaluate
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.train.engines.local import LocalEngine
from lmforge.train.evaluate import evaluate as validate

FAMILY = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # one grapheme, 5 code points, 18 bytes


def _gpt(tokenizer: Tokenizer) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tokenizer.vocab_size))


def _model_dir(directory: Path, tokenizer: Tokenizer) -> Path:
    net = _gpt(tokenizer)
    write_model_dir(directory, net.config, net.state_dict(), tokenizer)
    return directory


def test_a_cut_inside_a_character_counts_the_bytes_of_the_kept_tokens(tmp_path: Path) -> None:
    tokenizer = Tokenizer.train_bpe(["the cat sat on the mat. " * 20], vocab_size=300)
    model = _model_dir(tmp_path / "bpe", tokenizer)
    text = f"{FAMILY} 中文 ok"
    (tmp_path / "emo.txt").write_text(text, encoding="utf-8")
    ids = tokenizer.encode(text)
    offsets = ordinary_hf(tokenizer).encode(text, add_special_tokens=False).offsets
    assert offsets[0] == offsets[1] == (0, 1)  # the emoji's first bytes are tokens of one character
    sizes = tokenizer.token_bytes()
    counted = []
    for cap in range(1, len(ids) + 1):
        result = evaluate(model, tmp_path / "emo.txt", max_tokens=cap, quiet=True)
        assert result["tokens"] == cap
        counted.append(result["bytes"])
    assert counted == [sum(sizes[i] for i in ids[:cap]) for cap in range(1, len(ids) + 1)]
    assert counted[:3] == [1, 2, 3] and counted[-1] == len(text.encode("utf-8"))


def test_unknown_characters_are_left_out_of_bits_per_byte_as_in_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokenizer = Tokenizer.train_char(["elo word"])
    model = _model_dir(tmp_path / "char", tokenizer)
    text = "hello, world. hello!"  # h , . ! are not in the vocabulary: 5 <|unk|>
    (tmp_path / "unk.txt").write_text(text)
    capsys.readouterr()
    result = evaluate(model, tmp_path / "unk.txt", context=64, quiet=True)
    warning = capsys.readouterr().err
    assert "5 character(s) not in the character vocabulary became <|unk|>" in warning
    assert "bits per byte leaves out each <|unk|>'s loss and bytes" in warning
    ids = [tokenizer.eos_id, *tokenizer.encode(text)]
    sizes = torch.tensor(tokenizer.token_bytes())
    assert result["unknown_tokens"] == 5 and result["tokens"] == len(ids) - 1
    assert result["bytes"] == len(text) - 5 == int(sizes[ids[1:]].sum())
    # training's validation on the same stream, one window: the same bits per byte
    stream = torch.tensor([ids])
    engine = LocalEngine(EngineConfig(), TrainConfig())
    loss, bpb = validate(_gpt(tokenizer), [(stream[:, :-1], stream[:, 1:])], sizes, engine, nullcontext)
    assert result["nll_per_token"] == pytest.approx(loss, rel=1e-5)  # perplexity keeps the unk
    assert result["bpb"] == pytest.approx(bpb, rel=1e-5)
    # a cut after the first unknown character counts the known characters' bytes before it
    part = evaluate(model, tmp_path / "unk.txt", max_tokens=6, quiet=True)  # "hello," less h and ,
    assert (part["bytes"], part["unknown_tokens"]) == (4, 2)
    assert math.isfinite(part["bpb"])


def test_a_cut_between_byte_fallback_tokens_counts_one_byte_each(tmp_path: Path) -> None:
    """A SentencePiece-style tokenizer (Llama 2, Gemma): its pieces are not their text's bytes, so
    eval reads offsets; a character's <0xNN> tokens share its offsets, and each kept one is a byte."""
    vocab = {"<unk>": 0, **{f"<0x{b:02X}>": 1 + b for b in range(256)}}
    for piece in ["▁", "a", "b", "o", "k", "ab"]:
        vocab[piece] = len(vocab)
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>", byte_fallback=True))
    hf.pre_tokenizer = pre_tokenizers.Metaspace()
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer = Tokenizer(hf)
    assert tokenizer.kind == "other" and tokenizer.eos_id is None  # no EOS: the first token is context
    model = _model_dir(tmp_path / "sp", tokenizer)
    text = "ab 中 ok"
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    pieces = hf.encode(text, add_special_tokens=False).tokens
    assert pieces == ["▁", "ab", "▁", "<0xE4>", "<0xB8>", "<0xAD>", "▁", "o", "k"]
    counted = [
        evaluate(model, tmp_path / "t.txt", max_tokens=cap, quiet=True)["bytes"] for cap in range(1, 9)
    ]
    # the first ▁ (put before the text) is context; then ab, a space, 中 byte by byte, a space, o, k
    assert counted == [2, 3, 4, 5, 6, 7, 8, 9] and counted[-1] == len(text.encode("utf-8"))
