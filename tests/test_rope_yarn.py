"""YaRN rotary positions (`rope_type = "yarn"`, model/rope_scaling.py): Qwen2.5's, Qwen3's and
Llama-family long-context configs give transformers' frequencies, attention factor, logits and
greedy tokens, through import, export and back, ONNX and compiled decoding. They were refused
in one line before (`unsupported rope type 'yarn'`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from hf_helpers import VOCAB, load_whole, save_randomised
from transformers.modeling_rope_utils import _compute_yarn_parameters

import lmforge
from lmforge.config import ModelConfig, load_config
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.formats.hf_rope import rope_in
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.model.layers import Rotary
from lmforge.model.rope_scaling import RopeScaling
from lmforge.tokenization.tokenizer import Tokenizer

SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.2,
    "eos_token_id": 0,
    "bos_token_id": 0,
}
FAMILIES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
}
# head size 16, base 500, an original context of 16: YaRN's ramp (beta 32/1) keeps the fastest
# dimension, blends the next and divides the other six by the factor
QWEN25 = {"type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16}  # as on the Hub
YARNS = {
    "defaults": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16},
    "explicit": {
        "rope_type": "yarn",
        "factor": 4.0,
        "original_max_position_embeddings": 32,
        "attention_factor": 1.5,
        "beta_fast": 8.0,
        "beta_slow": 2.0,
    },
    "mscale": {
        "rope_type": "yarn",
        "factor": 8.0,
        "original_max_position_embeddings": 16,
        "mscale": 0.7,
        "mscale_all_dim": 1.3,
        "truncate": False,
    },
}


def _ids(t: int) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(1))


def _hf(directory: Path, family: str, rope: dict[str, Any], positions: int = 128) -> torch.nn.Module:
    """A random `family` model saved to directory with `rope` as its config.json's rotary keys
    (in place of rope_parameters), loaded back as transformers reads that file."""
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    config = config_class(**SHAPE, max_position_embeddings=positions, tie_word_embeddings=False)
    save_randomised(model_class(config).eval(), directory)
    raw = json.loads((directory / "config.json").read_text())
    raw.pop("rope_parameters", None)
    (directory / "config.json").write_text(json.dumps(raw | rope))
    return load_whole(model_class, directory)


def _same_as(hf: torch.nn.Module, ours: torch.nn.Module, t: int = 128) -> float:
    """Max abs difference of the logits over t positions; asserts the same 12 greedy tokens from
    a prompt of t - 20 (all past the original context of 16 or 32)."""
    ids = _ids(t)
    with torch.no_grad():
        diff = (hf(input_ids=ids).logits - ours(ids)).abs().max().item()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        theirs = hf.generate(ids[:1, : t - 20], max_new_tokens=12, do_sample=False)[0, t - 20 :].tolist()
    assert generate_ids(ours, [ids[0, : t - 20].tolist()], 12, temperature=0.0, eos_id=None)[0] == theirs
    return diff


CASES = [
    (128, 1e4, {**YARNS["defaults"]}),
    (16, 500.0, {**YARNS["explicit"]}),
    (16, 500.0, {**YARNS["mscale"]}),
    (16, 500.0, {**YARNS["defaults"], "truncate": False}),
    (64, 1e4, {**YARNS["defaults"], "factor": 3.0}),  # not a power of two: 1 / (3 f) is not (1 / f) / 3
    (16, 500.0, {**YARNS["defaults"], "beta_fast": 0, "beta_slow": None}),  # transformers' 32/1
    (128, 1e6, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),  # Qwen2.5
    (
        64,
        1e6,
        {
            "rope_type": "yarn",
            "factor": 4,
            "original_max_position_embeddings": 32768,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
        },
    ),
    (32, 500.0, {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 16}),
]


@pytest.mark.parametrize(("head", "theta", "rope"), CASES)
def test_yarn_tables_are_transformers_own(head: int, theta: float, rope: dict[str, Any]) -> None:
    """The frequencies, attention factor and cos/sin tables bit for bit: read from config.json
    as lmforge imports it, computed as Rotary computes them."""
    hf = transformers.LlamaConfig(
        hidden_size=4 * head, num_attention_heads=4, head_dim=head, max_position_embeddings=2048,
        rope_parameters={"rope_theta": theta, **rope},
    )  # fmt: skip
    inv_freq, attention = _compute_yarn_parameters(hf)
    raw = {"max_position_embeddings": 2048, "rope_parameters": {"rope_theta": theta, **rope}}
    config = ModelConfig(pos="rope", n_embd=4 * head, n_head=4, **rope_in(raw, "config.json", 2048))
    scaling = RopeScaling.of(config)
    assert scaling is not None and scaling.attention() == attention
    rotary = Rotary(head, 2048, theta, scaling)
    embedding = transformers.models.llama.modeling_llama.LlamaRotaryEmbedding(hf)
    assert torch.equal(embedding.inv_freq, inv_freq)
    cos, sin = embedding(torch.zeros(1), torch.arange(2048)[None])
    assert torch.equal(rotary.cos, cos[0]) and torch.equal(rotary.sin, sin[0])


def test_qwen25_long_context_config_gives_transformers_logits(tmp_path: Path) -> None:
    """Qwen2.5's YaRN as its model cards say to add it: a transformers 4 `rope_scaling` with `type`,
    max_position_embeddings the original context. The context becomes the original stretched
    `factor` times (vLLM's max_model_len), as transformers has no cap."""
    hf = _hf(tmp_path / "hf", "qwen2", {"rope_theta": 500.0, "rope_scaling": QWEN25}, positions=16)
    model, _ = lmforge.load(tmp_path / "hf")
    c = model.config
    assert (c.rope_type, c.rope_factor, c.rope_original_context, c.block_size) == ("yarn", 8.0, 16, 128)
    assert _same_as(hf, model) <= 1e-4
    # the attention factor (1.21 here) matters to these logits: without it they are far off
    flat = GPT(ModelConfig(**{**c.__dict__, "rope_attention_factor": 1.0})).eval()
    flat.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (hf(input_ids=_ids(128)).logits - flat(_ids(128))).abs().max().item() > 1e-2


@pytest.mark.parametrize("kind", sorted(YARNS))
def test_llama_yarn_imports_and_exports_as_transformers_computes_it(kind: str, tmp_path: Path) -> None:
    rope = {"rope_parameters": {"rope_theta": 500.0, **YARNS[kind]}}
    hf = _hf(tmp_path / "hf", "llama", rope)
    assert _same_as(hf, lmforge.load(tmp_path / "hf")[0]) <= 1e-4

    import_hf(tmp_path / "hf", tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "back")
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["rope_parameters"]["rope_type"] == written["rope_scaling"]["rope_type"] == "yarn"
    ours = lmforge.load(tmp_path / "ours")[0]
    assert lmforge.load(tmp_path / "back")[0].config == ours.config  # the round trip changes nothing
    assert _same_as(load_whole(transformers.LlamaForCausalLM, tmp_path / "back"), ours) <= 1e-4


def test_qwen3_yarn_gives_transformers_logits(tmp_path: Path) -> None:
    """Qwen3's YaRN as its model cards give it: rope_type, factor, original context; a
    max_position_embeddings above the original is kept where it is the longer."""
    rope = {"rope_theta": 500.0, "rope_scaling": {**YARNS["defaults"], "factor": 4.0}}
    hf = _hf(tmp_path / "hf", "qwen3", rope, positions=96)
    model, _ = lmforge.load(tmp_path / "hf")
    assert model.config.block_size == 96 and model.config.qk_norm
    assert _same_as(hf, model, t=96) <= 1e-4
    import_hf(tmp_path / "hf", tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "back")
    assert _same_as(load_whole(transformers.Qwen3ForCausalLM, tmp_path / "back"), model, t=96) <= 1e-4


def test_a_yarn_value_transformers_would_misread_is_one_line(tmp_path: Path) -> None:
    _hf(tmp_path / "hf", "llama", {})
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    yarn = YARNS["defaults"]
    cases = [
        ({**yarn, "attention_factor": 0.0}, r"unsupported rope_parameters.attention_factor=0.0 \(must be"),
        ({**yarn, "truncate": "no"}, r"'rope_parameters.truncate' must be true or false, not 'no'"),
        ({**yarn, "beta_fast": "32"}, r"'rope_parameters.beta_fast' must be a number, not '32'"),
        ({**yarn, "beta_fast": 1.0, "beta_slow": 4.0}, r"rope_beta_slow=4.0 must be > 0 and at most"),
        ({"rope_type": "longrope", "factor": 4.0}, r"unsupported rope type 'longrope'"),
    ]
    for rope, error in cases:
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**raw, "rope_parameters": rope}))
        with pytest.raises(LmforgeError, match=error):
            lmforge.load(tmp_path / "hf")


ROPE = ["--model.pos=rope"]
REFUSED = [
    (
        [*ROPE, "--model.rope_type=llama3", "--model.rope_beta_fast=16"],
        r"rope_beta_fast=16.0 changes nothing with model.rope_type='llama3'",
    ),
    (
        [*ROPE, "--model.rope_type=yarn", "--model.rope_low_freq_factor=2"],
        r"rope_low_freq_factor=2.0 changes nothing with model.rope_type='yarn'",
    ),
    (["--model.rope_truncate=false"], r"rope_truncate=False changes nothing with model.pos other than"),
    (
        [*ROPE, "--model.rope_type=yarn", "--model.rope_attention_factor=-1"],
        r"model.rope_attention_factor=-1.0 must be >= 0",
    ),
    (
        [*ROPE, "--model.rope_type=yarn", "--model.rope_beta_slow=0"],
        r"model.rope_beta_slow=0.0 must be > 0 and at most model.rope_beta_fast=32.0",
    ),
]


@pytest.mark.parametrize(("args", "error"), REFUSED)
def test_yarn_keys_are_checked(args: list[str], error: str) -> None:
    with pytest.raises(LmforgeError, match=error):
        load_config(None, args)
    assert load_config(None, [*ROPE, "--model.rope_type=yarn", "--model.rope_truncate=false"])


def _imported(tmp_path: Path) -> Path:
    rope = {"rope_parameters": {"rope_theta": 500.0, **YARNS["explicit"]}}
    _hf(tmp_path / "hf", "llama", rope)
    import_hf(tmp_path / "hf", tmp_path / "ours")
    return tmp_path / "ours"


@pytest.mark.slow  # an ONNX export takes ~10 s (tests/test_onnx.py)
def test_a_yarn_model_exports_to_onnx_with_its_logits(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx

    ours = _imported(tmp_path)
    export_onnx(ours, tmp_path / "onnx")  # checks its logits against PyTorch's
    model, _ = lmforge.load(ours)
    prompt = _ids(128)[0, :100].tolist()
    onnx = generate_ids_onnx(OnnxModel(tmp_path / "onnx"), [prompt], 12, temperature=0, stop_at_eos=False)
    assert onnx[0] == generate_ids(model, [prompt], 12, temperature=0)[0]


@pytest.mark.slow  # compiling the step takes 15-70 s on 2 cores (inference/compiled_decode.py)
def test_compiled_decoding_of_a_yarn_model_gives_the_eager_tokens(tmp_path: Path) -> None:
    model, _ = lmforge.load(_imported(tmp_path))
    prompt = _ids(128)[0, :100].tolist()
    eager = generate_ids(model, [prompt], 20, temperature=0, eos_id=None)
    assert generate_ids(model, [prompt], 20, temperature=0, eos_id=None, compile=True) == eager


def test_a_yarn_without_a_factor_takes_positions_over_the_original(tmp_path: Path) -> None:
    """DeepSeek's files give no factor: transformers takes max_position_embeddings over the
    original context (here 128 / 16 = 8); it was refused as a missing key."""
    rope = {"rope_type": "yarn", "factor": None, "original_max_position_embeddings": 16, "mscale": 0.7,
            "mscale_all_dim": 1.3}  # fmt: skip
    hf = _hf(tmp_path / "hf", "llama", {"rope_parameters": {"rope_theta": 500.0, **rope}})
    model = lmforge.load(tmp_path / "hf")[0]
    assert (model.config.rope_factor, model.config.block_size) == (8.0, 128)
    assert _same_as(hf, model) <= 1e-4


def test_an_lmforge_yarn_model_keeps_its_context_through_export(tmp_path: Path) -> None:
    """Built at a context of 64 from an original 16 stretched 8 times: re-imported, it claimed 128
    (the widening meant for Qwen2.5's files, whose positions are the original)."""
    tok = Tokenizer.train_char(["abcdefgh ."])
    c = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size, pos="rope",
                    bias=False, norm="rmsnorm", mlp="swiglu", tie_embeddings=False, rope_type="yarn",
                    rope_factor=8.0, rope_original_context=16)  # fmt: skip
    write_model_dir(tmp_path / "ours", c, GPT(c).state_dict(), tok)
    export_hf(tmp_path / "ours", tmp_path / "hf")
    assert lmforge.load(tmp_path / "hf")[0].config.block_size == 64
