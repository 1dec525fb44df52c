"""Scaled rotary positions (model/rope_scaling.py): Llama 3.1-3.3's `llama3` frequencies and the
`linear` ones give transformers' logits and greedy tokens, through import, export and back. They
were refused in one line before (Llama 3.2 1B/3B and Llama 3.1 8B could not be imported). YaRN's
are tests/test_rope_yarn.py's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from hf_helpers import VOCAB, save_randomised

import lmforge
from lmforge.config import ModelConfig, load_config
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT

LLAMA = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
    "rms_norm_eps": 1e-6,
    "initializer_range": 0.2,
    "eos_token_id": 0,
    "bos_token_id": 0,
}
# head size 16, base 500: wavelengths 6.3 to 1,054 positions, so with an original context of 16
# the llama3 scaling keeps none (under 16 / 4), interpolates two and divides the rest
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}  # fmt: skip
SCALINGS = {"llama3": LLAMA3, "linear": {"rope_type": "linear", "factor": 2.0}}


def _ids(t: int = 100) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, t), generator=torch.Generator().manual_seed(1))


def _hf(directory: Path, rope: dict, old_style: bool = False) -> torch.nn.Module:
    """A random Llama with that rope scaling saved to directory; old_style writes config.json as
    transformers 4 did (and Llama 3.2's files on the Hub are): rope_theta and rope_scaling."""
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMA, rope_parameters={"rope_theta": 500.0, **rope})
    model = save_randomised(transformers.LlamaForCausalLM(config).eval(), directory)
    if old_style:
        raw = json.loads((directory / "config.json").read_text())
        params = raw.pop("rope_parameters")
        raw |= {"rope_theta": params.pop("rope_theta"), "rope_scaling": params}
        (directory / "config.json").write_text(json.dumps(raw))
    return model


def _same_as(hf: torch.nn.Module, ours: torch.nn.Module) -> float:
    """Max abs difference of the logits over 100 positions; asserts the same 12 greedy tokens."""
    ids = _ids()
    with torch.no_grad():
        diff = (hf(input_ids=ids).logits - ours(ids)).abs().max().item()
        hf.generation_config.eos_token_id = None
        hf.generation_config.pad_token_id = 0
        theirs = hf.generate(ids[:1, :60], max_new_tokens=12, do_sample=False)[0, 60:].tolist()
    assert generate_ids(ours, [ids[0, :60].tolist()], 12, temperature=0.0, eos_id=None)[0] == theirs
    return diff


@pytest.mark.parametrize("kind", sorted(SCALINGS))
def test_scaled_rope_imports_and_exports_as_transformers_computes_it(kind: str, tmp_path: Path) -> None:
    hf = _hf(tmp_path / "hf", SCALINGS[kind])
    model, _ = lmforge.load(tmp_path / "hf")
    assert model.config.rope_type == kind
    assert _same_as(hf, model) <= 1e-4
    plain = GPT(ModelConfig(**{**model.config.__dict__, "rope_type": "default", "rope_factor": 1.0,
                               "rope_original_context": 8192})).eval()  # fmt: skip
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():  # the scaling matters to these logits: plain rotary is far off
        assert (hf(input_ids=_ids()).logits - plain(_ids())).abs().max().item() > 1e-2

    import_hf(tmp_path / "hf", tmp_path / "ours")
    export_hf(tmp_path / "ours", tmp_path / "back")
    back = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
    written = json.loads((tmp_path / "back" / "config.json").read_text())
    assert written["rope_parameters"] == {"rope_theta": 500.0, **SCALINGS[kind]}
    assert written["rope_scaling"] == SCALINGS[kind]  # as transformers 4 and llama.cpp read it
    assert _same_as(back, lmforge.load(tmp_path / "ours")[0]) <= 1e-4


def test_a_transformers_4_config_with_rope_scaling_is_read(tmp_path: Path) -> None:
    """Llama 3.2's config.json on the Hub: rope_theta and rope_scaling, no rope_parameters; one
    without original_max_position_embeddings takes max_position_embeddings, as transformers does."""
    hf = _hf(tmp_path / "hf", LLAMA3, old_style=True)
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval()
    model, _ = lmforge.load(tmp_path / "hf")
    assert (model.config.rope_factor, model.config.rope_original_context) == (8.0, 16)
    assert _same_as(loaded, model) <= 1e-4
    assert _same_as(hf, model) <= 1e-4

    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    del raw["rope_scaling"]["original_max_position_embeddings"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(raw))
    model, _ = lmforge.load(tmp_path / "hf")
    assert model.config.rope_original_context == LLAMA["max_position_embeddings"]
    assert _same_as(transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf").eval(), model) <= 1e-4


def test_a_rope_scaling_lmforge_cannot_follow_is_one_line(tmp_path: Path) -> None:
    _hf(tmp_path / "hf", LLAMA3)
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    cases = [
        (
            {"rope_type": "longrope", "factor": 4.0},
            r"unsupported rope type 'longrope' \(lmforge reads default, linear, llama3, yarn, dynamic\)",
        ),
        ({"rope_type": "ntk", "factor": 2.0}, "unsupported rope type 'ntk'"),
        ({**LLAMA3, "low_freq_factor": None}, r"missing config key 'rope_parameters.low_freq_factor'"),
        ({**LLAMA3, "factor": "8"}, r"'rope_parameters.factor' must be a number, not '8'"),
    ]
    for rope, error in cases:
        (tmp_path / "hf" / "config.json").write_text(
            json.dumps({**raw, "rope_parameters": {"rope_theta": 5.0, **rope}})
        )
        with pytest.raises(LmforgeError, match=error):
            lmforge.load(tmp_path / "hf")


ROPE = ["--model.pos=rope"]
REFUSED = [
    (["--model.rope_factor=8"], r"rope_factor=8.0 changes nothing with model.pos other than 'rope'"),
    ([*ROPE, "--model.rope_factor=8"], r"8.0 changes nothing with model.rope_type='default'"),
    (
        [*ROPE, "--model.rope_type=linear", "--model.rope_original_context=4"],
        r"rope_original_context=4 changes nothing with model.rope_type='linear'",
    ),
    (
        [*ROPE, "--model.rope_type=llama3", "--model.rope_high_freq_factor=0.5"],
        r"rope_low_freq_factor=1.0 must be > 0 and below model.rope_high_freq_factor=0.5",
    ),
    ([*ROPE, "--model.rope_type=ntk"], r"rope_type='ntk' must be one of default, linear, llama3, yarn"),
]


@pytest.mark.parametrize(("args", "error"), REFUSED)
def test_scaling_keys_a_model_would_not_read_are_refused(args: list[str], error: str) -> None:
    with pytest.raises(LmforgeError, match=error):
        load_config(None, args)


@pytest.mark.slow  # an ONNX export takes ~10 s (tests/test_onnx.py)
def test_a_scaled_rope_model_exports_to_onnx_with_its_logits(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx

    _hf(tmp_path / "hf", LLAMA3)
    import_hf(tmp_path / "hf", tmp_path / "ours")
    export_onnx(tmp_path / "ours", tmp_path / "onnx")  # checks its logits against PyTorch's
    model, _ = lmforge.load(tmp_path / "ours")
    prompt = _ids()[0, :60].tolist()
    mine = generate_ids(model, [prompt], 12, temperature=0)[0]
    assert (
        generate_ids_onnx(OnnxModel(tmp_path / "onnx"), [prompt], 12, temperature=0, stop_at_eos=False)[0]
        == mine
    )


def test_rope_scaling_beside_rope_parameters_is_read_as_transformers_reads_it(tmp_path: Path) -> None:
    """A non-empty rope_scaling replaces rope_parameters whole in transformers 5 (its theta then the
    top-level rope_theta), and `rope_type` outranks `type`: lmforge read rope_parameters first."""
    _hf(tmp_path / "hf", LLAMA3)
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    linear, plain = {"rope_type": "linear", "factor": 2.0}, {"rope_type": "default"}
    cases = [
        {"rope_parameters": {**linear, "rope_theta": 500.0}, "rope_scaling": LLAMA3},
        {"rope_parameters": {**plain, "rope_theta": 10.0}, "rope_scaling": LLAMA3, "rope_theta": 700.0},
        {
            "rope_parameters": {**plain, "rope_theta": 500.0},
            "rope_scaling": {**plain, "type": "linear", "factor": 2.0},
        },
        {"rope_parameters": {**LLAMA3, "rope_theta": 500.0}, "rope_scaling": {}},
    ]
    for case in cases:
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**raw, **case}))
        theirs = transformers.AutoConfig.from_pretrained(tmp_path / "hf").rope_parameters
        ours = lmforge.load(tmp_path / "hf")[0].config
        assert (ours.rope_type, ours.rope_theta) == (theirs["rope_type"], theirs["rope_theta"]), case
        assert ours.rope_factor == (theirs["factor"] if theirs["rope_type"] != "default" else 1.0), case


def test_a_scaling_without_its_factor_is_one_line(tmp_path: Path) -> None:
    """It was a KeyError traceback."""
    _hf(tmp_path / "hf", LLAMA3)
    raw = json.loads((tmp_path / "hf" / "config.json").read_text())
    for scaling in ({"rope_type": "linear"}, {**LLAMA3, "factor": None}):
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**raw, "rope_scaling": scaling}))
        with pytest.raises(
            LmforgeError, match=r"missing config key 'rope_scaling.factor' \(rope type '(linear|llama3)'\)"
        ):
            lmforge.load(tmp_path / "hf")
