"""The fused attention path computes the formula softmax(QK^T/sqrt(d_k))V, causally."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.model.attention import attention, causal_mask, reference_attention
from lmforge.model.gpt import GPT


@pytest.mark.parametrize("impl", ["sdpa", "bmm"])
def test_fast_paths_match_formula_causal(impl: str) -> None:
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    expected = reference_attention(q, k, v, causal=True)
    torch.testing.assert_close(attention(q, k, v, causal=True, impl=impl), expected)


@pytest.mark.parametrize("impl", ["sdpa", "bmm"])
def test_fast_paths_match_formula_with_cached_prefix_and_mask(impl: str) -> None:
    q = torch.randn(2, 3, 4, 8)  # the last 4 queries of a 10-token sequence
    k, v = torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8)
    mask = torch.ones(2, 1, 4, 10, dtype=torch.bool)
    mask[0, :, :, :2] = False  # e.g. padding in the first sequence
    expected = reference_attention(q, k, v, causal=True, mask=mask)
    torch.testing.assert_close(attention(q, k, v, causal=True, mask=mask, impl=impl), expected)
    one = q[:, :, -1:]  # a single decoding query sees every cached key
    expected = reference_attention(one, k, v, causal=True)
    torch.testing.assert_close(attention(one, k, v, causal=True, impl=impl), expected)


def test_bmm_path_in_bf16_stays_close() -> None:
    q, k, v = (torch.randn(2, 3, 16, 8) for _ in range(3))
    expected = reference_attention(q, k, v, causal=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = attention(q, k, v, causal=True, impl="bmm")
    torch.testing.assert_close(got.float(), expected, atol=3e-2, rtol=3e-2)
    bf16 = attention(*(t.bfloat16() for t in (q, k, v)), causal=True, impl="bmm")  # bf16 weights, no autocast
    torch.testing.assert_close(bf16.float(), expected, atol=3e-2, rtol=3e-2)


def test_a_bf16_softmax_is_the_fp32_softmax_rounded_once() -> None:
    # what lets the bmm route take its softmax in bf16: the probabilities it multiplies V by are the
    # same bits as a softmax in fp32 rounded to bf16 (the CPU kernel sums in fp32)
    future = ~causal_mask(64, 64, torch.device("cpu"))
    scores = (torch.randn(48, 64, 64) * 4).bfloat16().masked_fill(future, float("-inf"))
    torch.testing.assert_close(
        torch.softmax(scores, -1), torch.softmax(scores, -1, dtype=torch.float32).bfloat16(), atol=0, rtol=0
    )


def test_reference_formula_by_hand() -> None:
    q, k, v = torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4)
    scores = (q[0, 0] @ k[0, 0].T) / 2.0  # sqrt(d_k) = 2
    scores = scores.masked_fill(torch.triu(torch.ones(3, 3, dtype=torch.bool), 1), float("-inf"))
    torch.testing.assert_close(reference_attention(q, k, v, causal=True)[0, 0], scores.softmax(-1) @ v[0, 0])


def test_causal_mask_offsets() -> None:
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]


def assert_every_route_gives_the_reference(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The model's logits on every attention route equal the reference route's; returns those."""
    model.set_attention("reference")
    expected = model(idx)
    for impl in ("sdpa", "bmm", "auto"):
        model.set_attention(impl)
        torch.testing.assert_close(model(idx), expected)
    return expected


def test_model_outputs_same_with_reference_attention() -> None:
    for pos in ("learned", "rope"):
        model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=20, pos=pos)).eval()
        assert_every_route_gives_the_reference(model, torch.randint(0, 20, (2, 12)))


def test_a_token_never_sees_the_future() -> None:
    for mlp in ("gelu", "gelu_tanh", "swiglu"):
        model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=20, mlp=mlp)).eval()
        idx = torch.randint(0, 20, (1, 12))
        changed = idx.clone()
        changed[0, 7:] = (changed[0, 7:] + 1) % 20  # rewrite the future from position 7 on
        a, b = model(idx), model(changed)
        torch.testing.assert_close(a[:, :7], b[:, :7])
        assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("impl", ["sdpa", "bmm", "reference"])
def test_grouped_key_value_heads_match_the_repeated_heads(impl: str) -> None:
    """Grouped-query attention: 6 query heads over 2 key/value heads (query heads 0-2 read head 0,
    3-5 head 1) equal ordinary attention over the heads repeated, whole sequences, a cached
    prefix with a padding mask, and one decoding query over a strided slice of a cache."""
    q, k, v = torch.randn(2, 6, 10, 8), torch.randn(2, 2, 10, 8), torch.randn(2, 2, 10, 8)
    k6, v6 = k.repeat_interleave(3, dim=1), v.repeat_interleave(3, dim=1)
    assert not torch.allclose(k6[:, 0], k6[:, 3])  # the two groups differ: a wrong pairing would show
    expected = reference_attention(q, k6, v6, causal=True)
    torch.testing.assert_close(attention(q, k, v, causal=True, impl=impl), expected)
    mask = torch.ones(2, 1, 4, 10, dtype=torch.bool)
    mask[0, :, :, :3] = False
    expected = reference_attention(q[:, :, -4:], k6, v6, causal=True, mask=mask)
    torch.testing.assert_close(attention(q[:, :, -4:], k, v, causal=True, mask=mask, impl=impl), expected)
    cache = torch.zeros(2, 2, 16, 8)  # a preallocated cache holding 10 positions
    cache[:, :, :10] = k
    one = q[:, :, -1:]
    expected = reference_attention(one, k6, v6, causal=True, mask=mask[:, :, -1:])
    got = attention(one, cache[:, :, :10], v, causal=True, mask=mask[:, :, -1:], impl=impl)
    torch.testing.assert_close(got, expected)


def test_a_grouped_query_model_gives_the_same_logits_on_every_route() -> None:
    config = ModelConfig(n_layer=2, n_head=6, n_kv_head=2, n_embd=48, block_size=12, vocab_size=20)
    model = GPT(dataclasses.replace(config, pos="rope", mlp="swiglu", norm="rmsnorm")).eval()
    idx = torch.randint(0, 20, (2, 12))
    expected = assert_every_route_gives_the_reference(model, idx)
    with torch.no_grad():  # decoding through the cache, one token at a time, on the default route
        model.set_attention("auto")
        cache = model.new_cache(2)
        steps = [model(idx[:, :5], cache)] + [model(idx[:, t : t + 1], cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(steps, dim=1), expected)
