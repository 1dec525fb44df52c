"""The ONNX export of models with sliding-window layers, against transformers on the tiny random
models tests/test_gemma3.py, test_gemma2.py and test_phi3.py build: Gemma 3 (local layers with
their own rotary base beside full ones), Gemma 2 (every 2nd layer full, soft caps that bite) and
Phi-3-mini (a window on every layer). Logits of the prefill graph and of the graph with past keys
and values (a prompt after a prefix, one-token steps past the window, a left-padded batch) within
1e-4 of transformers'; 20 greedy tokens through ONNX Runtime past the window, alone and in a
left-padded batch of two, equal to transformers'. (The export refused these models until
2026-12-07.)"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_helpers import hf_greedy
from test_gemma2 import make_gemma2
from test_gemma3 import make_gemma3
from test_phi3 import make_phi3

import lmforge

pytest.importorskip("onnxruntime")
transformers = pytest.importorskip("transformers")

from lmforge.formats.onnx_export import export_onnx  # noqa: E402
from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx  # noqa: E402

PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3, 71, 18, 90], [40, 41, 17]]  # windows of 5-6: 20 new tokens pass them
BUILDERS: dict[str, Callable[[Path], torch.nn.Module]] = {
    "gemma3": make_gemma3,  # window 6 on layers 0, 1, 3
    "gemma2": make_gemma2,  # window 6 on layers 0, 2; caps of 2 and 5
    "phi3": lambda d: make_phi3(d, sliding_window=5),  # every layer slides
}


@pytest.fixture(scope="module", params=list(BUILDERS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    """(transformers' model, the ONNX export run in ONNX Runtime, the vocabulary size)."""
    root = tmp_path_factory.mktemp(request.param)
    hf = BUILDERS[request.param](root / "hf").eval()
    model, _ = lmforge.load(root / "hf")
    assert model.config.sliding_window  # the import kept the window: the export takes it
    return hf, OnnxModel(export_onnx(root / "hf", root / "onnx")), model.config.vocab_size


def _theirs(hf: torch.nn.Module, ids: np.ndarray, mask: np.ndarray | None = None) -> torch.Tensor:
    with torch.no_grad():
        am = None if mask is None else torch.from_numpy(mask)
        return hf(input_ids=torch.from_numpy(ids), attention_mask=am).logits


def _step(onnx: OnnxModel, ids: np.ndarray, mask: np.ndarray, past: list) -> tuple[torch.Tensor, list]:
    out = onnx.call("model", ids, mask, *past)
    return torch.from_numpy(out[0]), out[1:]


def test_logits_past_the_window_match_transformers(exported: tuple) -> None:
    """A prompt of 24 tokens (4x the window) in one pass, the same after a prefix of 8 through the
    graph with past keys and values, then one-token steps: every position's logits within 1e-4."""
    hf, onnx, vocab = exported
    ids = np.random.default_rng(1).integers(0, vocab, (2, 24), dtype=np.int64)
    theirs = _theirs(hf, ids)
    ones = np.ones_like(ids)
    whole, _ = _step(onnx, ids, ones, onnx.empty_past(2))
    assert (whole - theirs).abs().max().item() <= 1e-4
    first, past = _step(onnx, ids[:, :8], ones[:, :8], onnx.empty_past(2))
    rest, past = _step(onnx, ids[:, 8:16], ones[:, :16], past)  # 8 queries over 16 columns
    got = [first, rest]
    for i in range(16, 24):  # steps: each attends the last `window` of i + 1 columns
        logits, past = _step(onnx, ids[:, i : i + 1], ones[:, : i + 1], past)
        got.append(logits)
    assert (torch.cat(got, dim=1) - theirs).abs().max().item() <= 1e-4


def test_a_left_padded_batch_matches_each_row_alone(exported: tuple) -> None:
    """Row 1 left-padded by 10 columns: its logits, prefilled and stepped past the window, are
    transformers' for the row alone (windows count cache columns; the padding is masked)."""
    hf, onnx, vocab = exported
    ids = np.random.default_rng(2).integers(0, vocab, (2, 22), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1, :10] = 0
    long, short = _theirs(hf, ids[:1]), _theirs(hf, ids[1:, 10:])
    first, past = _step(onnx, ids[:, :16], mask[:, :16], onnx.empty_past(2))
    got = [first]
    for i in range(16, 22):
        logits, past = _step(onnx, ids[:, i : i + 1], mask[:, : i + 1], past)
        got.append(logits)
    got = torch.cat(got, dim=1)
    assert (got[0] - long[0]).abs().max().item() <= 1e-4
    assert (got[1, 10:] - short[0]).abs().max().item() <= 1e-4


def test_greedy_tokens_past_the_window_are_transformers(exported: tuple) -> None:
    """20 new tokens through ONNX Runtime (what `generate --runtime onnx` runs), a left-padded batch
    of two and the shorter prompt alone, equal to transformers' greedy generate."""
    hf, onnx, _ = exported
    theirs = [hf_greedy(hf, p, 20) for p in PROMPTS]
    assert min(len(set(t)) for t in theirs) > 3  # not one token repeated: the test tells models apart
    assert generate_ids_onnx(onnx, PROMPTS, 20, temperature=0, stop_at_eos=False) == theirs
    assert generate_ids_onnx(onnx, PROMPTS[1:], 20, temperature=0, stop_at_eos=False) == theirs[1:]
