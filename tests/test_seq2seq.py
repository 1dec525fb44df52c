"""The encoder-decoder and its decoding: padding invariance, beam 1 = greedy, cache = no cache,
gradient accumulation with padded pairs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lmforge.config import EngineConfig, ModelConfig, TrainConfig
from lmforge.data.pair_loader import collate, encode_sources
from lmforge.inference.seq2seq_decode import beam_decode, greedy_decode, length_limits
from lmforge.model.seq2seq import Seq2Seq
from lmforge.train.engines.local import LocalEngine
from lmforge.train.loop import forward_backward
from lmforge.train.tasks.translation import seq2seq_loss

EOS, PAD, V = 0, 1, 40
STEPS = 60


@pytest.fixture(scope="module")
def model() -> Seq2Seq:
    """Half-trained on reversing sequences: it ends outputs with EOS at varied lengths but is
    still unsure enough that beam search and greedy can differ."""
    torch.manual_seed(0)
    m = Seq2Seq(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=24, vocab_size=V, arch="seq2seq"), PAD)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        src = [
            torch.randint(2, V, (int(n),), generator=g).numpy()
            for n in torch.randint(1, 12, (32,), generator=g)
        ]
        loss = seq2seq_loss(m, *collate(src, [s[::-1].copy() for s in src], EOS, PAD)) / 32
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m.eval()


def _sources(seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, V, (n,), generator=g).tolist() for n in (3, 9, 5, 12, 1)]


def _decode(model: Seq2Seq, sources: list[list[int]], beam: int, use_cache: bool = True) -> list[list[int]]:
    src = encode_sources(sources, EOS, PAD)
    limits = length_limits([len(s) + 1 for s in sources], model.config.block_size, 1.5, 4)
    if beam == 1:
        return greedy_decode(model, src, limits, EOS, use_cache)
    return beam_decode(model, src, limits, EOS, beam, 1.0, use_cache)


def test_padding_never_changes_the_encoding(model: Seq2Seq) -> None:
    sources = _sources()
    batch = encode_sources(sources, EOS, PAD)
    together = model.encode(batch)
    for i, s in enumerate(sources):
        alone = model.encode(encode_sources([s], EOS, PAD))
        torch.testing.assert_close(together[i, : len(s) + 1], alone[0, : len(s) + 1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("beam", [1, 3])
def test_a_sentence_translates_the_same_alone_and_in_a_padded_batch(model: Seq2Seq, beam: int) -> None:
    sources = _sources()
    together = _decode(model, sources, beam)
    alone = [_decode(model, [s], beam)[0] for s in sources]
    assert together == alone
    assert len({len(t) for t in together}) > 1  # non-trivial: outputs of different lengths


def test_beam_size_one_is_greedy(model: Seq2Seq) -> None:
    for seed in range(3):
        sources = _sources(seed)
        assert _decode(model, sources, 1) == beam_decode(
            model,
            encode_sources(sources, EOS, PAD),
            length_limits([len(s) + 1 for s in sources], model.config.block_size, 1.5, 4),
            EOS,
            beam=1,
        )


@pytest.mark.parametrize("beam", [1, 4])
def test_cached_and_uncached_decoding_agree(model: Seq2Seq, beam: int) -> None:
    sources = _sources(2)
    assert _decode(model, sources, beam, use_cache=True) == _decode(model, sources, beam, use_cache=False)


def test_beam_search_finds_a_better_scoring_hypothesis_than_greedy(model: Seq2Seq) -> None:
    """Beam search maximises the (length-normalised) log-probability; greedy may not."""

    def logprob(src: list[int], hyp: list[int]) -> float:
        s = encode_sources([src], EOS, PAD)
        tgt_in = torch.tensor([[EOS, *hyp]])
        logp = torch.log_softmax(model(s, tgt_in).float(), -1)[0]
        return float(sum(logp[i, t] for i, t in enumerate([*hyp, EOS]))) / (len(hyp) + 1)

    sources = _sources(3)
    greedy, beam = _decode(model, sources, 1), _decode(model, sources, 6)
    limits = length_limits([len(s) + 1 for s in sources], model.config.block_size, 1.5, 4)
    for src, g, b, n in zip(sources, greedy, beam, limits, strict=True):
        if len(g) < n and len(b) < n:  # both ended with EOS, so both scores are complete
            assert logprob(src, b) >= logprob(src, g) - 1e-5


@pytest.mark.parametrize("k", [2, 4])
def test_accumulation_over_padded_pairs_gives_the_same_gradient(k: int) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=V, arch="seq2seq")
    model = Seq2Seq(cfg, PAD)
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    src = [torch.randint(2, V, (n,), generator=g).numpy() for n in (2, 7, 3, 9, 4, 5, 1, 8)]
    tgt = [torch.randint(2, V, (n,), generator=g).numpy() for n in (5, 1, 8, 3, 6, 2, 7, 4)]
    fn = lambda m, *b: seq2seq_loss(m, *b, label_smoothing=0.1)  # noqa: E731
    full = forward_backward(
        model, LocalEngine(EngineConfig(), TrainConfig()), [collate(src, tgt, EOS, PAD)], loss_fn=fn
    )
    m = 8 // k
    micro = [collate(src[i : i + m], tgt[i : i + m], EOS, PAD) for i in range(0, 8, m)]
    accum = forward_backward(other, LocalEngine(EngineConfig(), TrainConfig()), micro, loss_fn=fn)
    assert accum == pytest.approx(full, rel=1e-6)
    for a, b in zip(model.parameters(), other.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


def test_embeddings_are_shared_and_tied(model: Seq2Seq) -> None:
    assert model.lm_head.weight is model.wte.weight
    names = {n for n, _ in model.named_parameters()}
    assert "wte.weight" in names and not any(n.startswith(("encoder.wte", "decoder.wte")) for n in names)


def test_fresh_model_learns_to_copy_its_source() -> None:
    """Regression for the initialisation: with GPT-2's N(0, 0.02) weights the decoder ignored its
    source (this copy task ended at 2.04 nats after 200 steps); with Vaswani's it copies (0.09)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = ModelConfig(arch="seq2seq", n_layer=2, n_head=4, n_embd=64, block_size=32, vocab_size=50)
    model = Seq2Seq(config, pad_id=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(200):
        src = [rng.integers(2, 50, size=int(rng.integers(10, 30))) for _ in range(32)]
        s, tgt_in, tgt_out = collate(src, src, 0, 1)
        loss = seq2seq_loss(model, s, tgt_in, tgt_out) / (tgt_out != -100).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5
