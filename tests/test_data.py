"""Tokenizers round-trip; shards and the loader are exact, resumable and rank-aware."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.data.labelled import LabelledLoader
from lmforge.data.loader import BatchLoader, eval_batches
from lmforge.data.shards import open_split, prepare_corpus
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import Tokenizer

TEXTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "Héllo — ünïcödé ✓ 日本語\ttabs\n\n",
]


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_tokenizer_round_trip(tmp_path: Path, kind: str) -> None:
    corpus = TEXTS * 50
    tok = Tokenizer.train_char(corpus) if kind == "char" else Tokenizer.train_bpe(corpus, vocab_size=300)
    tok.save(tmp_path / "tokenizer.json")
    loaded = Tokenizer.load(tmp_path / "tokenizer.json")
    sizes = loaded.token_bytes()
    for text in TEXTS:
        ids = loaded.encode(text)
        assert loaded.decode(ids) == text
        assert sum(sizes[i] for i in ids) == len(text.encode("utf-8"))
    assert loaded.eos_id is not None and sizes[loaded.eos_id] == 0


def test_an_imported_tokenizers_special_tokens_have_no_bytes() -> None:
    """SmolLM2's <|im_end|> or Llama 3's <|end_of_text|> stand for no text: training's val_bpb
    counted their names' characters as bytes (about 10-15 a document)."""
    tok = Tokenizer.train_bpe(TEXTS * 50, vocab_size=300)
    tok.hf.add_special_tokens(["<|im_end|>"])
    tok.hf.add_tokens(["<think>"])  # an added token that is not special: its text is text
    sizes = Tokenizer(tok.hf).token_bytes()
    assert sizes[tok.hf.token_to_id("<|im_end|>")] == 0 and sizes[tok.hf.token_to_id("<think>")] > 0


def test_char_tokenizer_ids_follow_sorted_characters() -> None:
    tok = Tokenizer.train_char(["cab"])
    assert tok.encode("abc") == [0, 1, 2]
    assert tok.vocab_size == 3 + 3  # a b c + EOS, PAD, UNK
    assert tok.decode(tok.encode("abz")) == "ab"  # unknown characters become UNK, dropped on decode


def test_long_char_text_encodes_in_pieces_exactly() -> None:
    text = "abc\n" * 50_000
    tok = Tokenizer.train_char([text])
    assert tok.decode(tok.encode(text)) == text


def test_shards_hold_the_documents_and_eos(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()  # prep refuses an output folder inside its input folder
    (tmp_path / "src" / "a.txt").write_text("hello world\n")
    (tmp_path / "src" / "b.txt").write_text("second doc\n")
    meta = prepare_corpus(tmp_path / "src", tmp_path / "out", val_fraction=0.2)
    tok = Tokenizer.load(tmp_path / "out")
    stream = np.concatenate([*open_split(tmp_path / "out", "train"), *open_split(tmp_path / "out", "val")])
    expected = tok.encode("hello world\n") + [tok.eos_id] + tok.encode("second doc\n") + [tok.eos_id]
    assert stream.tolist() == expected
    assert meta["tokens"]["train"] + meta["tokens"]["val"] == len(expected)
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["dtype"] == "uint16"
    assert meta["bytes"]["train"] + meta["bytes"]["val"] == len("hello world\nsecond doc\n")


def _loader(shard: np.ndarray, **kw: int | bool) -> BatchLoader:
    args = {"block_size": 8, "batch_size": 6, "micro_batch_size": 2, "seed": 5} | kw
    return BatchLoader([shard], **args)


def test_loader_resumes_from_its_state() -> None:
    shard = np.arange(500, dtype=np.uint16)
    a = _loader(shard)
    for _ in range(13):  # past an epoch boundary (55 windows / 6 per step)
        a.next_step()
    b = _loader(shard)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(15):
        for (xa, ya), (xb, yb) in zip(a.next_step(), b.next_step(), strict=True):
            assert xa.equal(xb) and ya.equal(yb)


def test_a_step_can_hold_a_token_twice_across_epochs_but_not_with_whole_epochs() -> None:
    """An epoch's last windows and the next epoch's first, cut at another offset, can overlap in one
    step; a private run (whole_epochs) skips the windows that do not fill a batch, so no token is in
    two windows of a step, and every step's windows come from one epoch. It resumes exactly."""

    def most_copies(loader: BatchLoader, steps: int) -> int:
        worst = 0
        for _ in range(steps):
            tokens = torch.cat([x.flatten() for x, _ in loader.next_step()])
            worst = max(worst, int(torch.bincount(tokens).max()))
        return worst

    shard = np.arange(500, dtype=np.uint16)  # token = its position: a repeat is one text twice
    assert most_copies(_loader(shard), 40) > 1
    assert most_copies(_loader(shard, whole_epochs=True), 40) == 1
    a = _loader(shard, whole_epochs=True)
    for _ in range(13):  # past two epoch ends (55 windows: 9 steps of 6, one window skipped)
        a.next_step()
    assert a.epoch == 1 and a.steps_per_epoch == 9
    b = _loader(shard, whole_epochs=True)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(15):
        for (xa, _), (xb, _) in zip(a.next_step(), b.next_step(), strict=True):
            assert xa.equal(xb)


def test_a_batch_larger_than_an_epoch_is_refused_with_whole_epochs() -> None:
    """A private run's batch of more windows than an epoch has would hold a text several times in
    one step (4 times at batch 5,000 over 1,724 windows) while the accountant counts it once."""
    shard = np.arange(500, dtype=np.uint16)
    _loader(shard, batch_size=60)  # a plain run wraps into the next epoch
    with pytest.raises(LmforgeError, match=r"train\.batch_size=60 is more than the 54 windows of an epoch"):
        _loader(shard, batch_size=60, micro_batch_size=6, whole_epochs=True)


def test_labelled_loader_resumes_from_its_state() -> None:
    """Classification's and QA's loader (train/tasks/qa.py's FeatureLoader is one): a loader given
    another's state mid-epoch deals the same batches after it, past the next epoch's reshuffle."""

    def encode(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.tensor([[int(t)] for t in texts])
        return ids, torch.ones_like(ids)

    def dealt(loader: LabelledLoader, steps: int) -> list[list[list[list[int]]]]:
        return [[[t.tolist() for t in micro] for micro in loader.next_step()] for _ in range(steps)]

    rows = [(str(i), i % 3) for i in range(23)]
    a, b, fresh = (LabelledLoader(rows, encode, 6, 2, rank=1, world_size=2, seed=4) for _ in range(3))
    dealt(a, 5)  # 23 rows, 6 a step: into the second epoch
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    after = dealt(a, 9)
    assert dealt(b, 9) == after
    assert dealt(fresh, 9) != after  # the state decides what comes next


def test_loader_targets_are_inputs_shifted() -> None:
    x, y = _loader(np.arange(500, dtype=np.uint16)).next_step()[0]
    assert x.shape == (2, 8) and (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()


def test_ranks_split_the_same_global_batch() -> None:
    shard = np.arange(500, dtype=np.uint16)
    whole = _loader(shard, micro_batch_size=6).next_step()[0][0]
    parts = [_loader(shard, rank=r, world_size=3).next_step() for r in range(3)]
    rows = [x for part in parts for x, _ in part]
    assert np.concatenate(rows).tolist() == whole.tolist()


def test_eval_windows_are_fixed_and_cover_the_split() -> None:
    shard = np.arange(90, dtype=np.uint16)
    batches = eval_batches([shard], block_size=8, n_windows=0, micro_batch_size=4)
    assert sum(len(x) for x, _ in batches) == 10  # 90 // 9
    assert batches[0][0].equal(eval_batches([shard], 8, 0, 4)[0][0])


def test_windows_run_across_shards_as_one_stream() -> None:
    """prep cuts shards at prep.shard_tokens: windows cut inside each shard lost every shard's tail,
    and shards shorter than a window gave none (small shards trained on 0.1% of the tokens, and
    a split of many such shards was called too short). Empty shards are skipped."""
    stream = np.arange(300, dtype=np.uint16)
    cuts = [0, 5, 5, 12, 40, 41, 300]  # shards of 5, 0, 7, 28, 1 and 259 tokens
    shards = [stream[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]
    batches = eval_batches(shards, block_size=8, n_windows=0, micro_batch_size=4)
    rows = [row for x, y in batches for row in torch.cat([x, y[:, -1:]], dim=1).tolist()]
    assert rows == [stream[i * 9 : i * 9 + 9].tolist() for i in range(300 // 9)]  # all 33 windows
    loader = BatchLoader([stream[a : a + 6] for a in range(0, 300, 6)], 8, 11, 11)  # shards under a window
    steps = [loader.next_step() for _ in range(3)]
    epoch = [row for step in steps for x, y in step for row in torch.cat([x, y[:, -1:]], 1).tolist()]
    assert sorted(epoch) == rows  # one epoch: every window once
    assert loader.steps_per_epoch == 3  # 33 windows, 11 a step


def test_bpe_training_cuts_long_runs_and_encoding_keeps_them_whole() -> None:
    """The trainer's time grows with the square of a pre-token's length, so runs of 256+ characters
    without whitespace are cut for training only; the text encodes and decodes exactly."""
    from lmforge.tokenization.tokenizer import _cut_long_runs

    assert _cut_long_runs("a normal sentence, words.") == "a normal sentence, words."
    cut = _cut_long_runs("y" * 600 + " end")
    assert cut == "y" * 256 + " " + "y" * 256 + " " + "y" * 88 + " end"
    text = "Q" * 50_000 + "\nhello world\n"  # trained uncut, this took ~0.8 s; 200k: 14 s
    tok = Tokenizer.train_bpe([text], vocab_size=300)
    assert tok.decode(tok.encode(text)) == text
