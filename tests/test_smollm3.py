"""SmolLM3 (`model_type: smollm3`, SmolLM3ForCausalLM) checked against transformers on tiny random
models it writes: Llama's shape with NoPE layers (model.nope_interval: every Nth layer without rotary
positions), plain and with a YaRN rope_scaling; logits over 64 positions, greedy tokens (cached,
uncached, a left-padded batch, compiled, ONNX), export back, full and LoRA fine-tuning, how
config.json is read, and the settings refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from hf_helpers import VOCAB, assert_same_weights, hf_greedy, load_whole, save_randomised

import lmforge
from lmforge.config import ModelConfig
from lmforge.config.model_checks import check_model
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference import compiled_decode
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT

transformers = pytest.importorskip("transformers")

LAYERS = 4
PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3, 71, 18], [40, 41, 17]]  # different lengths: a left-padded batch
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 1000.0}


def make_smollm3(directory: Path, seed: int = 0, **changes: Any) -> torch.nn.Module:
    """A random SmolLM3ForCausalLM, every 2nd layer NoPE (SmolLM3-3B: every 4th), norms moved off 1,
    saved with a tiny tokenizer; in eval."""
    shape = {
        "vocab_size": VOCAB,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "no_rope_layer_interval": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000.0},
        "initializer_range": 0.2,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    torch.manual_seed(seed)
    hf = transformers.SmolLM3ForCausalLM(transformers.SmolLM3Config(**(shape | changes))).eval()
    return save_randomised(hf, directory)


def _max_difference(ours: torch.nn.Module, hf: torch.nn.Module, length: int = 64) -> float:
    ids = torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids) - hf(input_ids=ids).logits).abs().max().item()


def _check_parity(hf: torch.nn.Module, ours: GPT) -> None:
    """Logits within 1e-4 over 64 positions; 40 greedy tokens (past the YaRN's original 32) as a
    left-padded batch, and cached and uncached alone."""
    assert _max_difference(ours, hf) <= 1e-4
    theirs = [hf_greedy(hf, p, 40) for p in PROMPTS]
    assert len(set(theirs[0])) > 3  # not one token repeated: the test can tell models apart
    assert generate_ids(ours, PROMPTS, 40, temperature=0.0, eos_id=None) == theirs
    assert generate_ids(ours, PROMPTS[:1], 40, temperature=0.0, eos_id=None) == theirs[:1]
    assert generate_ids(ours, PROMPTS[1:], 40, temperature=0.0, eos_id=None, use_cache=False) == theirs[1:]


@pytest.mark.parametrize("rope", [None, YARN], ids=["rotary", "yarn"])
def test_parity_import_export_roundtrip(rope: dict | None, tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_smollm3(hf_dir, **({"rope_parameters": rope} if rope else {}))
    assert hf.config.no_rope_layers == [1, 0, 1, 0]
    model, _ = lmforge.load(hf_dir)
    c = model.config
    assert (c.nope_interval, c.n_kv_head, c.tie_embeddings, c.rope_theta) == (2, 2, True, 1000)
    assert (c.rope_type, c.rope_factor) == (("yarn", 4.0) if rope else ("default", 1.0))
    assert [b.attn.rotary is None for b in model.blocks] == [False, True, False, True]
    _check_parity(hf, model)
    # the NoPE layers matter: rotating in every layer parts from transformers' logits
    rotating = GPT(dataclasses.replace(c, nope_interval=0))
    rotating.load_state_dict(model.state_dict())
    assert _max_difference(rotating.eval(), hf) > 1e-2

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    assert imported.config == c
    export_hf(ours_dir, back_dir)
    raw = json.loads((back_dir / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"]) == ("smollm3", ["SmolLM3ForCausalLM"])
    assert (raw["no_rope_layers"], raw["no_rope_layer_interval"]) == ([1, 0, 1, 0], 2)
    back = load_whole(transformers.AutoModelForCausalLM, back_dir)
    assert type(back) is transformers.SmolLM3ForCausalLM
    assert back.config.no_rope_layers == [1, 0, 1, 0]
    assert back.config.rope_parameters.items() >= hf.config.rope_parameters.items()  # + yarn's betas
    _check_parity(back, imported)
    assert_same_weights(hf_dir, back_dir)


def test_a_config_json_reads_as_transformers_does(tmp_path: Path) -> None:
    """no_rope_layers wins over the interval (SmolLM3-3B's file has both); without either, every 4th
    layer is NoPE; without a rope_theta SmolLM3's base is 2e6, without tie_word_embeddings tied."""
    hf_dir = tmp_path / "hf"
    make_smollm3(hf_dir, tie_word_embeddings=False)
    good = json.loads((hf_dir / "config.json").read_text())
    listed = good | {"no_rope_layers": [1, 1, 1, 0, 1, 1], "no_rope_layer_interval": 2}  # longer: cut
    bare = {k: v for k, v in good.items() if k not in ("no_rope_layers", "no_rope_layer_interval")}
    bare = {k: v for k, v in bare.items() if k not in ("rope_parameters", "tie_word_embeddings")}
    for raw, nope, theta, tied in ((listed, 4, 1000, False), (bare, 4, 2e6, True)):
        (hf_dir / "config.json").write_text(json.dumps(raw))
        config = transformers.AutoConfig.from_pretrained(hf_dir)
        assert config.no_rope_layers[:LAYERS] == [1, 1, 1, 0] and config.tie_word_embeddings == tied
        assert config.rope_parameters["rope_theta"] == theta
        c = lmforge.load(hf_dir)[0].config
        assert (c.nope_interval, c.rope_theta, c.tie_embeddings) == (nope, theta, tied)
    (hf_dir / "config.json").write_text(json.dumps(listed))
    model = lmforge.load(hf_dir)[0]
    theirs = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    assert _max_difference(model, theirs) <= 1e-4
    every = good | {"no_rope_layers": [1] * LAYERS}  # no NoPE layer: a Llama
    (hf_dir / "config.json").write_text(json.dumps(every))
    assert lmforge.load(hf_dir)[0].config.nope_interval == 0


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"no_rope_layers": [1, 0, 0, 1]}, r"unsupported no_rope_layers \[1, 0, 0, 1\]"),
        ({"no_rope_layers": [1, 0]}, r"'no_rope_layers' must list at least 4 entries \(num_hidden_layers\)"),
        ({"no_rope_layers": [1, 0, True, 0]}, r"'no_rope_layers' must list at least 4 entries"),
        ({"no_rope_layers": None, "no_rope_layer_interval": 0}, r"unsupported no_rope_layer_interval=0"),
        ({"use_sliding_window": True, "sliding_window": 8, "layer_types": None},
         r"unsupported sliding-window layers \(layer_types / use_sliding_window\)"),
        ({"layer_types": ["full_attention", "sliding_attention"] * 2}, r"unsupported sliding-window layers"),
        ({"attention_bias": True}, r"unsupported attention_bias/mlp_bias"),
        ({"mlp_bias": True}, r"unsupported attention_bias/mlp_bias"),
    ],
)  # fmt: skip
def test_what_lmforge_does_not_compute_is_refused(change: dict, error: str, tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    make_smollm3(hf_dir)
    raw = {k: v for k, v in json.loads((hf_dir / "config.json").read_text()).items() if k != "layer_types"}
    (hf_dir / "config.json").write_text(json.dumps({**raw, **change}))
    with pytest.raises(LmforgeError, match=r"^" + str(hf_dir / "config.json") + ": .*" + error):
        lmforge.load(hf_dir)


def test_compiled_decoding_and_onnx_give_transformers_tokens(tmp_path: Path) -> None:
    """Both run the model's own forward, NoPE layers and all: the same greedy tokens."""
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx

    hf = make_smollm3(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    greedy = hf_greedy(hf, PROMPTS[0], 20)
    assert generate_ids(model, PROMPTS[:1], 20, temperature=0, compile=True) == [greedy]
    assert compiled_decode.holds(model)  # the compiled step ran, not eager decoding
    out = export_onnx(tmp_path / "hf", tmp_path / "onnx")  # checks logits within 1e-4 itself
    onnx = OnnxModel(out)
    assert onnx.meta["graphs"]["model"]["max_abs_diff"] <= 1e-4
    theirs = [hf_greedy(hf, p, 20) for p in PROMPTS]
    assert generate_ids_onnx(onnx, PROMPTS, 20, temperature=0, stop_at_eos=False) == theirs


def test_full_and_lora_fine_tunes_run_and_export(tmp_path: Path) -> None:
    """A few steps from the SmolLM3 directory (with YaRN), the whole model and LoRA adapters: both
    train; the full run exports as a SmolLM3ForCausalLM, the adapters as PEFT's on it, each with
    lmforge's logits."""
    hf_dir = tmp_path / "hf"
    make_smollm3(hf_dir, rope_parameters=YARN)
    (tmp_path / "text.txt").write_text(make_text(lines=200))
    common = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={hf_dir}", "--train.max_steps=3"]
    common += ["--train.batch_size=2", "--train.eval_batches=1", "--train.dtype=fp32", "--data.seq_len=48"]
    lmforge.train(None, [*common, "--train.lr=1e-3"], out=tmp_path / "full", quiet=True)
    tuned, _ = lmforge.load(tmp_path / "full")
    start, _ = lmforge.load(hf_dir)
    assert tuned.config == start.config and tuned.config.nope_interval == 2
    assert not torch.equal(tuned.blocks[1].attn.qkv.weight, start.blocks[1].attn.qkv.weight)
    export_hf(tmp_path / "full", tmp_path / "back")
    back = load_whole(transformers.AutoModelForCausalLM, tmp_path / "back")
    assert type(back) is transformers.SmolLM3ForCausalLM
    assert _max_difference(tuned, back) <= 1e-4
    lora = [*common, "--lora.enabled=true", "--lora.targets=q_proj,v_proj,o_proj,gate_proj,down_proj"]
    lmforge.train(
        None, [*lora, "--train.lr=5e-2", "--train.warmup_steps=0"], out=tmp_path / "lora", quiet=True
    )
    adapted, _ = lmforge.load(tmp_path / "lora")
    assert _max_difference(adapted, load_whole(transformers.AutoModelForCausalLM, hf_dir)) > 1e-2  # trained
    peft = pytest.importorskip("peft")
    export_hf(tmp_path / "lora", tmp_path / "adapter")  # PEFT's layout, on SmolLM3's module names
    base = load_whole(transformers.AutoModelForCausalLM, hf_dir)
    assert _max_difference(adapted, peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()) <= 1e-4


LLAMA_LIKE = dict(pos="rope", mlp="swiglu", bias=False, norm="rmsnorm", n_kv_head=2, tie_embeddings=False)


def test_a_recipe_with_nope_interval_trains_and_exports_as_smollm3(tmp_path: Path, corpus: Path) -> None:
    argv = [f"--data.input={corpus}", "--model.n_layer=3", "--model.n_head=4", "--model.n_embd=32"]
    argv += ["--model.block_size=32", "--train.max_steps=2", "--train.batch_size=4", "--train.eval_batches=1"]
    argv += [f"--model.{k}={str(v).lower()}" for k, v in LLAMA_LIKE.items()] + ["--model.nope_interval=3"]
    lmforge.train(None, argv, out=tmp_path / "run", quiet=True)
    ours, _ = lmforge.load(tmp_path / "run")
    assert [b.attn.rotary is None for b in ours.blocks] == [False, False, True]
    export_hf(tmp_path / "run", tmp_path / "hf")
    hf = load_whole(transformers.AutoModelForCausalLM, tmp_path / "hf")
    assert type(hf) is transformers.SmolLM3ForCausalLM and hf.config.no_rope_layers == [1, 1, 0]
    ids = torch.randint(0, ours.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"qk_norm": True}, r"NoPE layers \(model.nope_interval=2\) make it SmolLM3, which has no q/k norms"),
        ({"qkv_bias": True}, r"make it SmolLM3, which has no q/k/v biases \(Qwen2's\)$"),
        ({"sliding_window": 4}, r"make it Gemma 2 \(gemma2\), which also needs .*model.nope_interval=0"),
    ],
)
def test_an_export_smollm3_cannot_hold_is_one_line(change: dict, error: str, tmp_path: Path) -> None:
    from lmforge.formats.directory import write_model_dir
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char(["abcdefgh"])
    c = ModelConfig(n_layer=2, vocab_size=tok.vocab_size, nope_interval=2, **LLAMA_LIKE | change)
    write_model_dir(tmp_path / "run", c, GPT(c).state_dict(), tok)
    with pytest.raises(LmforgeError, match=error):
        export_hf(tmp_path / "run", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"nope_interval": -1, "pos": "rope"}, r"^model.nope_interval=-1 must be >= 0 \(0: every layer"),
        ({"nope_interval": 4}, r"^model.nope_interval=4 changes nothing without model.pos='rope'$"),
    ],
)  # fmt: skip
def test_bad_nope_intervals_are_one_line(change: dict, error: str) -> None:
    with pytest.raises(LmforgeError, match=error):
        check_model(ModelConfig(vocab_size=97, **change))


def test_the_encoder_models_refuse_nope_layers() -> None:
    from lmforge.model.encoder import Encoder
    from lmforge.model.seq2seq import Seq2Seq

    with pytest.raises(LmforgeError, match=r"^model.nope_interval=2 is not supported by the seq2seq model"):
        Seq2Seq(ModelConfig(vocab_size=97, arch="seq2seq", pos="rope", nope_interval=2), pad_id=0)
    with pytest.raises(LmforgeError, match=r"^model.nope_interval=2 is not supported by the encoder model"):
        Encoder(ModelConfig(vocab_size=97, nope_interval=2))
    every = ModelConfig(vocab_size=97, n_layer=3, nope_interval=1, **LLAMA_LIKE)  # 1: no layer rotates
    assert all(b.attn.rotary is None for b in GPT(every).blocks)
