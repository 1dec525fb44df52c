"""A small random Marian (opus-mt shaped) directory built offline: tiny sentencepiece models trained
on the shipped en-fr pairs, a shared vocab.json, and a random transformers MarianMTModel."""

from __future__ import annotations

import io
import json
import lzma
from pathlib import Path

import sentencepiece as spm
import torch

PAIRS = Path(__file__).resolve().parents[1] / "data" / "en-fr.jsonl.xz"
SPM_VOCAB = 250
DROPPED = 3  # target pieces left out of vocab.json: they decode/encode through <unk>


def pairs(n: int = 400, skip: int = 0) -> list[tuple[str, str]]:
    out = []
    with lzma.open(PAIRS, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= skip:
                row = json.loads(line)
                out.append((row["en"], row["fr"]))
            if len(out) == n:
                break
    return out


def _train_spm(lines: list[str]) -> tuple[bytes, list[str]]:
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=SPM_VOCAB,
        model_type="unigram",
        character_coverage=1.0,
        minloglevel=2,
    )
    proc = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces = [proc.id_to_piece(i) for i in range(proc.get_piece_size()) if not proc.is_control(i)]
    return model.getvalue(), [p for p in pieces if p != "<unk>"]


def make_marian_tokenizer(directory: Path) -> int:
    """source.spm, target.spm, vocab.json (</s>=0, <unk>=1, pieces, <pad> last) and
    tokenizer_config.json in `directory`; returns the vocabulary size."""
    directory.mkdir(parents=True, exist_ok=True)
    data = pairs()
    source, src_pieces = _train_spm([en for en, _ in data])
    target, tgt_pieces = _train_spm([fr for _, fr in data])
    (directory / "source.spm").write_bytes(source)
    (directory / "target.spm").write_bytes(target)
    vocab = {"</s>": 0, "<unk>": 1}
    for piece in src_pieces + tgt_pieces[:-DROPPED]:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=2))
    config = {"source_lang": "en", "target_lang": "fr", "model_max_length": 64, "separate_vocabs": False}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return len(vocab)


def make_marian_model(directory: Path, seed: int = 0, eos_bias: float = 6.0) -> torch.nn.Module:
    """A random MarianMTModel (opus-mt's shape, scaled down) + tokenizer files in `directory`.
    final_logits_bias favours EOS by `eos_bias` (so outputs end at varied lengths) and the pad token
    (so decoding that failed to suppress it would generate it)."""
    import transformers as tf

    vocab = make_marian_tokenizer(directory)
    pad = vocab - 1
    config = tf.MarianConfig(
        vocab_size=vocab,
        decoder_vocab_size=vocab,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=96,
        decoder_ffn_dim=96,
        max_position_embeddings=64,
        activation_function="swish",
        scale_embedding=True,
        pad_token_id=pad,
        decoder_start_token_id=pad,
        eos_token_id=0,
        forced_eos_token_id=0,
        dropout=0.0,
        init_std=0.2,
    )
    torch.manual_seed(seed)
    model = tf.MarianMTModel(config).eval()
    with torch.no_grad():  # biases and norms start at 0/1: randomise them so the mapping is tested
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.normal_(0.0, 0.5)
        model.final_logits_bias[0, 0] += eos_bias
        model.final_logits_bias[0, pad] += 12.0
    model.generation_config.bad_words_ids = [[pad]]
    model.generation_config.renormalize_logits = True
    model.generation_config.max_length = 64
    model.save_pretrained(directory)
    return model
