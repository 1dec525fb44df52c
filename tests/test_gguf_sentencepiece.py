"""SentencePiece vocabularies of GGUF files (`tokenizer.ggml.model` 'llama', formats/
gguf_sentencepiece.py), checked against transformers' own GGUF tokenizer load on vocabularies
sentencepiece trains here and llama.cpp's converter would write (tokens, scores, types, no
merges): Llama's (Metaspace) and Gemma 3's (spaces as `▁`, whitespace tokens stored as spaces);
then a tiny Gemma 3 GGUF generates transformers' greedy tokens."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

from test_gguf_gemma_smollm3 import gemma3, write_like_llama_cpp  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.gguf_tokenizer import gguf_tokenizer  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402

LINES = [
    "Hello world, this is a tiny corpus.",
    "  indented   text with   spaces",
    "Numbers 12345 and more 678.",
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x + 1",
    "hello hello hello world world",
] * 20
TEXTS = [
    "Hello world",
    " leading space",
    "  two leading",
    "hello  world   ",
    "a\nb\n\nc",
    "tab\there   x  ",
    "emoji 🤗 é ñ 中文 Ωmega",
    "<think>x</think> <mask> <s>hi</s>",
    "<bos><start_of_turn>user\nhi<end_of_turn>\n",
    "",
    " ",
    "The quick brown fox, 12345.",
]
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6  # llama.cpp's types


def sentencepiece_vocab(gemma: bool) -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, types) of a BPE model with byte fallback, as convert_hf_to_gguf.py writes
    them; Gemma's ids (pad 0, eos 1, bos 2, unk 3) and its whitespace pieces as real spaces."""
    if gemma:
        ids = dict(
            pad_id=0,
            eos_id=1,
            bos_id=2,
            unk_id=3,
            pad_piece="<pad>",
            eos_piece="<eos>",
            bos_piece="<bos>",
            control_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"],
        )
    else:
        ids = dict(unk_id=0, bos_id=1, eos_id=2)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(LINES), model_writer=buf, model_type="bpe", vocab_size=360,
        byte_fallback=True, character_coverage=1.0, allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False, split_digits=True, add_dummy_prefix=not gemma,
        user_defined_symbols=["<think>"], minloglevel=2, **ids,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        kind = (
            UNKNOWN
            if sp.is_unknown(i)
            else CONTROL
            if sp.is_control(i)
            else BYTE
            if sp.is_byte(i)
            else UNUSED
            if sp.is_unused(i)
            else USER_DEFINED
            if piece == "<think>"
            else NORMAL
        )
        if gemma and len(piece) > 1 and set(piece) == {"\u2581"}:
            piece = " " * len(piece)
        tokens.append(piece)
        scores.append(sp.get_score(i))
        types.append(kind)
    return tokens, scores, types


def write_vocab_only(path: Path, arch: str, add_bos: bool | None) -> None:
    """A GGUF holding the vocabulary (and one tensor): all transformers' tokenizer load reads."""
    tokens, scores, types = sentencepiece_vocab(arch == "gemma3")
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(1)
    w.add_context_length(64)
    w.add_embedding_length(8)
    w.add_feed_forward_length(8)
    w.add_head_count(2)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    bos, eos, unk = (2, 1, 3) if arch == "gemma3" else (1, 2, 0)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    if arch == "gemma3":
        w.add_pad_token_id(0)
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read_meta(path: Path) -> dict[str, Any]:
    from lmforge.formats.gguf import read_gguf, read_metadata

    return read_metadata(read_gguf(path), path)


@pytest.mark.parametrize(
    ("arch", "add_bos"), [("llama", None), ("llama", False), ("gemma3", True), ("phi3", False)]
)
def test_sentencepiece_vocabulary_encodes_and_decodes_as_transformers(
    tmp_path: Path, arch: str, add_bos: bool | None
) -> None:
    """phi3 has transformers' own builder (a `▁` before each piece of text between special tokens,
    as Phi-3's tokenizer.json): until 2026-12-07 it got Llama's, and other ids."""
    write_vocab_only(tmp_path / "t.gguf", arch, add_bos)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="t.gguf")
    ours = gguf_tokenizer(read_meta(tmp_path / "t.gguf"), "t.gguf")
    assert ours.vocab_size == len(theirs)
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        assert ours.encode_prompt(text) == ids, text
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
    # BOS first unless the file says not to (llama.cpp's default for SentencePiece is to add it)
    assert (ours.encode_prompt("hi")[0] == ours.bos_id) == (add_bos is not False)
    assert ours.decode(ours.encode("emoji 🤗 中文")) == "emoji 🤗 中文"  # byte fallback round trip


def test_merges_without_scores_are_refused_in_one_line(tmp_path: Path) -> None:
    write_vocab_only(tmp_path / "t.gguf", "llama", None)
    meta = read_meta(tmp_path / "t.gguf")
    del meta["tokenizer.ggml.scores"]
    with pytest.raises(LmforgeError, match=r"^t\.gguf: a SentencePiece vocabulary without .*scores"):
        gguf_tokenizer(meta, "t.gguf")


def test_gemma3_gguf_with_its_sentencepiece_vocabulary_generates_transformers_greedy_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lmforge.cli import main

    vocab = sentencepiece_vocab(gemma=True)
    hf = gemma3(layers=2, vocab_size=len(vocab[0]))
    keys = {"attention.key_length": 256, "rope.freq_base": 1e6, "attention.sliding_window": 4}
    write_like_llama_cpp(hf, tmp_path / "g.gguf", "gemma3", keys, sentencepiece=vocab)
    import_hf(tmp_path / "g.gguf", tmp_path / "out")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file="g.gguf")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="g.gguf", dtype=torch.float32
    )
    prompt = "Hello world, the quick"
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == 2  # <bos>
    with torch.no_grad():
        out = loaded.eval().generate(ids, max_new_tokens=8, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    assert len(set(new)) > 1
    capsys.readouterr()
    argv = [
        "generate",
        str(tmp_path / "out"),
        "--prompt",
        prompt,
        "--max-new-tokens",
        "8",
        "--temperature",
        "0",
    ]
    assert main([*argv, "--dtype", "fp32"]) == 0
    text = capsys.readouterr().out
    assert tokenizer.decode(out[0], skip_special_tokens=True) in text
