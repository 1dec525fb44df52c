"""bf16 attention over whole sequences at inference (model/prefill_attention.py): on `sdpa` a bf16
Llama or Qwen2 gives transformers' bf16 logits bit for bit (every other op already did; `bmm`
rounds the attention scores to bf16), the route is `sdpa` unless `bmm` measured faster, and
training, autocast's evaluation and fp32 keep their routes."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
import torch
import transformers
from hf_helpers import make_hf_model

import lmforge
from lmforge.errors import LmforgeError
from lmforge.model import kernels
from lmforge.model import prefill_attention as pa
from lmforge.model.attention import attention


@pytest.fixture(autouse=True)
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """No route forced, none chosen yet in this process."""
    monkeypatch.delenv("LMFORGE_PREFILL_ATTENTION", raising=False)
    monkeypatch.setattr(pa, "_chosen", {})


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_bf16_model_gives_transformers_bf16_logits_bit_for_bit(
    family: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_hf_model(family, tmp_path)
    # loaded in bf16, not cast: .to(torch.bfloat16) would round transformers' rotary frequencies too
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    model, _ = lmforge.load(tmp_path)
    ours = kernels.for_inference(copy.deepcopy(model).to(torch.bfloat16))
    ids = torch.randint(0, 320, (2, 48), generator=torch.Generator().manual_seed(0))
    monkeypatch.setattr(pa, "_measure", lambda run, t: ("sdpa", ""))  # the probe found sdpa no slower
    with torch.inference_mode():
        theirs, got = hf(ids).logits, ours(ids)
        assert torch.equal(got, theirs)
        # and nearer fp32's than the bf16 scores' route, which transformers' eager attention matches
        reference = model(ids)
        monkeypatch.setenv("LMFORGE_PREFILL_ATTENTION", "bmm")
        bmm = ours(ids)
    assert not torch.equal(bmm, got)
    assert (got.float() - reference).abs().mean() < (bmm.float() - reference).abs().mean()


def _qkv(t: int, b: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    q = torch.randn(b, 4, t, 16, dtype=torch.bfloat16) * 4  # sharp scores: their rounding shows
    k, v = torch.randn(b, 2, t, 16, dtype=torch.bfloat16) * 4, torch.randn(b, 2, t, 16, dtype=torch.bfloat16)
    return q, k, v


def test_the_route_is_sdpa_unless_bmm_measured_faster_per_shape() -> None:
    times = {"bmm": 0.004, "sdpa": 0.008}

    def run(route: str) -> torch.Tensor:
        time.sleep(times[route])
        return torch.zeros(1)

    q, k, _ = _qkv(40)
    assert pa.route_for(q, k, None, run) == "bmm"
    times["bmm"] = 0.02
    assert pa.route_for(*_qkv(60)[:2], None, run) == "bmm"  # 33-64 positions: remembered
    assert pa.route_for(*_qkv(100)[:2], None, run) == "sdpa"  # 65-128: measured again
    times["bmm"] = 0.009  # a little slower than sdpa: the accurate route
    assert pa.route_for(*_qkv(40, b=3)[:2], None, run) == "sdpa"  # another batch, another shape
    mask = torch.ones(2, 1, 40, 40, dtype=torch.bool)
    times["bmm"] = 0.001
    assert pa.route_for(q, k, mask, run) == "bmm"  # padded batches are timed apart


def test_attention_takes_the_route_only_for_bf16_at_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    q, k, v = _qkv(24)
    sdpa, bmm = (attention(q, k, v, True, None, 0.0, impl) for impl in ("sdpa", "bmm"))
    assert not torch.equal(sdpa, bmm)
    monkeypatch.setenv("LMFORGE_PREFILL_ATTENTION", "sdpa")
    with torch.no_grad():
        assert torch.equal(attention(q, k, v, True), sdpa)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # a training run's evaluation: as trained
            assert torch.equal(attention(q, k, v, True), bmm)
    assert torch.equal(attention(q, k, v, True), bmm)  # autograd on: training's route
    assert not pa.applies(q.float(), 0.0) and not pa.applies(q[:, :, :1], 0.0)  # fp32, one query
    monkeypatch.setenv("LMFORGE_PREFILL_ATTENTION", "flash")
    with (
        torch.no_grad(),
        pytest.raises(LmforgeError, match=r"^LMFORGE_PREFILL_ATTENTION='flash': expected one of bmm, sdpa$"),
    ):
        attention(q, k, v, True)
