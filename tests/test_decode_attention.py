"""bf16 decoding steps' attention: the grouped-heads and fp32 routes equal the formula, the route
is chosen by timing all three (another than sdpa only when clearly faster), and a decoding step
gives the same logits on every route."""

from __future__ import annotations

import time

import pytest
import torch

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.model import decode_attention as da
from lmforge.model.attention import attention, reference_attention, repeat_heads
from lmforge.model.gpt import GPT


def _step(b: int, h: int, kv: int, t: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    q = torch.randn(b, h, 1, 16, dtype=dtype)
    k, v = (torch.randn(b, kv, 64, 16, dtype=dtype)[:, :, :t] for _ in range(2))  # a cache's slice
    mask = torch.ones(b, 1, 1, t, dtype=torch.bool)
    mask[1:, ..., :3] = False  # left padding on every row but the first
    return q, k, v, mask


@pytest.mark.parametrize(("h", "kv"), [(6, 6), (6, 2), (6, 1)])
def test_grouped_route_equals_the_formula(h: int, kv: int) -> None:
    q, k, v, mask = _step(3, h, kv, 9, torch.float32)
    expected = reference_attention(q, repeat_heads(k, h), repeat_heads(v, h), False, mask)
    assert torch.allclose(da.grouped_attention(q, k, v, mask), expected, atol=1e-6)
    assert torch.allclose(da.grouped_attention(q, k, v, None), reference_attention(
        q, repeat_heads(k, h), repeat_heads(v, h), False), atol=1e-6)  # fmt: skip
    for route in (da.grouped_attention, da.fp32_attention):
        bf16 = route(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
        assert bf16.dtype == torch.bfloat16 and (bf16.float() - expected).abs().max() < 0.03


def test_applies_only_to_a_bf16_single_query_step() -> None:
    q, k, _, mask = _step(2, 4, 2, 5, torch.bfloat16)
    assert da.applies(q, k, mask) and da.applies(q, k, None)
    assert not da.applies(q.float(), k.float(), mask)  # fp32 stays on the fused kernel
    assert not da.applies(torch.cat([q, q], dim=2), k, None)  # several queries (prefill)
    assert not da.applies(q, k[:, :, :1], None)  # no cached keys: the causal path
    assert not da.applies(q, k, mask.expand(2, 1, 2, 5))  # a mask for several queries


def _slow(seconds: float):  # noqa: ANN202 - a stand-in kernel that takes `seconds`
    def kernel(*_: object) -> None:
        time.sleep(seconds)

    return kernel


def test_the_route_is_measured_per_shape_and_grouped_must_win_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LMFORGE_DECODE_ATTENTION", raising=False)
    monkeypatch.setattr(da, "_chosen", {})
    q, k, v, mask = _step(2, 4, 2, 5, torch.bfloat16)
    monkeypatch.setattr(da, "_sdpa", _slow(0.02))
    monkeypatch.setattr(da, "fp32_attention", _slow(0.01))
    monkeypatch.setattr(da, "grouped_attention", _slow(0.005))
    assert da.route_for(q, k, v, mask) == "grouped"  # the fastest of the three
    monkeypatch.setattr(da, "grouped_attention", _slow(0.05))
    assert da.route_for(q, k, v, mask) == "grouped"  # remembered for this shape
    q8, k8, v8, mask8 = _step(8, 4, 2, 5, torch.bfloat16)
    assert da.route_for(q8, k8, v8, mask8) == "fp32"
    q4, k4, v4, mask4 = _step(4, 4, 2, 5, torch.bfloat16)
    monkeypatch.setattr(da, "fp32_attention", _slow(0.019))  # faster, but within MARGIN
    assert da.route_for(q4, k4, v4, mask4) == "sdpa"


def test_the_route_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v, mask = _step(2, 4, 2, 5, torch.bfloat16)
    monkeypatch.setenv("LMFORGE_DECODE_ATTENTION", "grouped")
    assert da.route_for(q, k, v, mask) == "grouped"
    monkeypatch.setenv("LMFORGE_DECODE_ATTENTION", "flash")
    with pytest.raises(
        LmforgeError, match=r"^LMFORGE_DECODE_ATTENTION='flash': expected one of sdpa, fp32, grouped$"
    ):
        da.route_for(q, k, v, mask)


@torch.inference_mode()
def test_a_bf16_decoding_step_gives_the_same_logits_on_either_route(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=6, n_kv_head=2, n_embd=48, block_size=32, vocab_size=50)
    model = GPT(cfg).eval().to(torch.bfloat16)
    prompts = torch.randint(0, 50, (3, 7))
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[1:, :2] = False  # left-padded rows
    logits = {}
    for route in da.ROUTES:
        monkeypatch.setenv("LMFORGE_DECODE_ATTENTION", route)
        cache = model.new_cache(3)
        model(prompts, cache, mask=mask[:, :7])
        logits[route] = model(prompts[:, -1:], cache, mask=mask).float()
    assert (logits["grouped"] - logits["sdpa"]).abs().max() < 0.05
    assert (logits["fp32"] - logits["sdpa"]).abs().max() < 0.05
    # and the route is what attention() runs for such a step
    monkeypatch.setenv("LMFORGE_DECODE_ATTENTION", "grouped")
    q, k, v, step_mask = _step(2, 4, 2, 5, torch.bfloat16)
    assert torch.equal(attention(q, k, v, True, step_mask), da.grouped_attention(q, k, v, step_mask))
    # an explicit impl="sdpa" is the fused kernel as asked, not the measured route
    assert torch.equal(attention(q, k, v, True, step_mask, impl="sdpa"), da._sdpa(q, k, v, step_mask))
