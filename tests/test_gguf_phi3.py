"""Phi-3's GGUF files (`phi3`, formats/gguf_arch.py), written as llama.cpp's convert_hf_to_gguf.py
(its Phi3MiniModel) writes them from tiny random Phi3ForCausalLM models: fused `attn_qkv` and
`ffn_up` as they are, `rope.dimension_count` for partial rotary, LongRoPE's `rope_factors_long` /
`rope_factors_short` tensors with `rope.scaling.original_context_length` and `attn_factor`, the
window as `attention.sliding_window` (0 for none). Imported, they give the transformers model's
logits (within 1e-4, and transformers' own GGUF load's where it reads the file) and greedy tokens
across LongRoPE's original context."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from hf_helpers import hf_greedy, load_whole  # noqa: E402
from test_gguf_gemma_smollm3 import TOKENS, _meta, difference, write_like_llama_cpp  # noqa: E402

# LongRoPE's original context of 16: 30-token sequences and the greedy runs cross it
from test_phi3 import LONGROPE, PROMPTS  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.gguf import config_from_metadata  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402
from lmforge.inference.generate import generate_ids  # noqa: E402

LONG_SHORT = ("long", "short")
KINDS: dict[str, dict[str, Any]] = {
    "plain": {},  # what transformers' GGUF loader reads whole
    "mini": {"sliding_window": 5},  # Phi-3-mini-4k's shape: every layer slides
    "phi4": {"partial_rotary_factor": 0.75, "tie_word_embeddings": True},  # GQA, tied, no window
    "longrope": LONGROPE,
}


def phi3(**changes: Any) -> torch.nn.Module:
    config = transformers.Phi3Config(
        vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2, **changes,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = transformers.Phi3ForCausalLM(config)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return hf.eval()


def converter_output(hf: torch.nn.Module) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(keys, extra tensors) as Phi3MiniModel's set_gguf_parameters and generate_extra_tensors
    write them (its attn_factor formula for longrope, whatever config.json's attention_factor)."""
    c = hf.config
    rope = c.rope_parameters
    share = rope.get("partial_rotary_factor") or getattr(c, "partial_rotary_factor", None) or 1.0
    original = c.original_max_position_embeddings
    keys = {
        "rope.scaling.original_context_length": original,
        "rope.dimension_count": int(share * c.hidden_size) // c.num_attention_heads,
        "rope.freq_base": float(rope["rope_theta"]),
        "attention.sliding_window": c.sliding_window or 0,
    }
    if rope.get("rope_type") != "longrope":
        return keys, {}
    scale = c.max_position_embeddings / original
    keys["rope.scaling.attn_factor"] = math.sqrt(1 + math.log(scale) / math.log(original))
    return keys, {f"rope_factors_{k}.weight": np.array(rope[f"{k}_factor"], np.float32) for k in LONG_SHORT}


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_phi3_gguf_file_as_llama_cpps_converter_writes_it(kind: str, tmp_path: Path) -> None:
    hf = phi3(**KINDS[kind])
    keys, factors = converter_output(hf)
    write_like_llama_cpp(hf, tmp_path / "p.gguf", "phi3", keys, tensors=factors)
    import_hf(tmp_path / "p.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    c = model.config
    assert (c.sliding_window, c.rope_partial_factor, c.rope_type, c.tie_embeddings) == {
        "plain": (0, 1.0, "default", False),
        "mini": (5, 1.0, "default", False),
        "phi4": (0, 0.75, "default", True),
        "longrope": (0, 1.0, "longrope", False),
    }[kind]
    assert model.blocks[0].attn.qkv.weight.shape == ((4 + 2 * 2) * 16, 64)
    ids = torch.randint(0, len(TOKENS), (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # 12 tokens within the original context, 30 past it
        for length in (12, 30):
            assert (model(ids[:, :length]) - hf(input_ids=ids[:, :length]).logits).abs().max() < 1e-4
    theirs = [hf_greedy(hf, p, 14) for p in PROMPTS]  # both cross position 16
    assert generate_ids(model, PROMPTS, 14, temperature=0.0, eos_id=None) == theirs
    assert generate_ids(model, PROMPTS[:1], 14, temperature=0.0, use_cache=False, eos_id=None) == theirs[:1]
    if kind == "plain":  # transformers' GGUF load reads no window, partial rotary or LongRoPE
        loaded = transformers.AutoModelForCausalLM.from_pretrained(  # Phi3Config's pad id is 32000
            tmp_path, gguf_file="p.gguf", dtype=torch.float32, pad_token_id=0
        )
        assert type(loaded) is transformers.Phi3ForCausalLM and difference(model, loaded.eval()) < 1e-4
    if kind in ("phi4", "longrope"):  # and on to transformers as phi3
        export_hf(tmp_path / "out", tmp_path / "back")
        back = load_whole(transformers.AutoModelForCausalLM, tmp_path / "back")
        assert type(back) is transformers.Phi3ForCausalLM and difference(back, hf) < 1e-4


def test_a_fused_tensor_out_of_order_changes_the_logits(tmp_path: Path) -> None:
    """The check above can fail: up before gate in `ffn_up` (the halves swapped) is another model."""
    hf = phi3()
    keys, _ = converter_output(hf)
    swapped = phi3()
    with torch.no_grad():
        for layer in swapped.model.layers:
            gate, up = layer.mlp.gate_up_proj.weight.chunk(2)
            layer.mlp.gate_up_proj.weight.copy_(torch.cat([up, gate]))
    write_like_llama_cpp(swapped, tmp_path / "p.gguf", "phi3", keys)
    import_hf(tmp_path / "p.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    assert difference(model, swapped) < 1e-4 and difference(model, hf) > 1e-2


def test_phi3_metadata_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    """rope.dimension_count sets the partial rotary; without a sliding_window key, llama.cpp's old
    default (2047 for 32- and 40-layer 4k models), 0 is none; what lmforge cannot follow is one line."""
    file = tmp_path / "p.gguf"  # _meta: 64 wide, 2 heads of 32
    c = config_from_metadata(_meta("phi3", **{"rope.dimension_count": 24}), set(), file)
    assert (c.rope_partial_factor, c.sliding_window, c.rope_type) == (0.75, 0, "default")
    old = {"block_count": 32, "context_length": 4096}
    assert config_from_metadata(_meta("phi3", **old), set(), file).sliding_window == 2047
    none = _meta("phi3", **old, **{"attention.sliding_window": 0})
    assert config_from_metadata(none, set(), file).sliding_window == 0
    odd = _meta("phi3", **{"embedding_length": 88, "rope.dimension_count": 30})
    odd = config_from_metadata(odd, set(), file)
    assert int(odd.head_size() * odd.rope_partial_factor) == 30  # 30 / 44 x 44 rounds below 30
    factors = {"rope_factors_long.weight": np.full(12, 2.0, np.float32),
               "rope_factors_short.weight": np.ones(12, np.float32)}  # fmt: skip
    long = _meta("phi3", **{"rope.dimension_count": 24, "rope.scaling.original_context_length": 16,
                            "rope.scaling.attn_factor": 1.25})  # fmt: skip
    c = config_from_metadata(long, set(), file, factors)
    assert (c.rope_type, c.rope_original_context, c.rope_attention_factor, c.rope_factor) == (
        "longrope", 16, 1.25, 4.0)  # fmt: skip
    assert list(c.rope_long_factor) == [2.0] * 12

    def refused(meta: dict[str, Any], message: str, tensors: dict[str, np.ndarray] | None = None) -> None:
        with pytest.raises(LmforgeError, match=rf"^{re_file}: {message}"):
            config_from_metadata(meta, set(), file, tensors)

    re_file = str(file).replace(".", r"\.")
    refused(_meta("phi3", **{"rope.dimension_count": 23}),
            r"GGUF key 'phi3\.rope\.dimension_count' is 23, expected an even count from 2 to 32")  # fmt: skip
    refused(_meta("phi3", **{"rope.scaling.attn_factor": 1.2}),
            r"GGUF key 'phi3\.rope\.scaling\.attn_factor' is 1\.2 without LongRoPE's tensors")  # fmt: skip
    refused(long, r"tensor 'rope_factors_long\.weight' without 'rope_factors_short\.weight'",
            {"rope_factors_long.weight": factors["rope_factors_long.weight"]})  # fmt: skip
    refused(long, r"tensor 'rope_factors_short\.weight' must hold 12 numbers > 0 .*it has shape \(16,\)$",
            factors | {"rope_factors_short.weight": np.ones(16, np.float32)})  # fmt: skip
    refused(long, r"tensor 'rope_factors_long\.weight' must hold 12 numbers > 0 .*it holds 0\.0$",
            factors | {"rope_factors_long.weight": np.zeros(12, np.float32)})  # fmt: skip
    refused(_meta("phi3", **{"rope.scaling.type": "linear", "rope.scaling.factor": 2.0}),
            r"rope scaling 'linear' in a phi3 file \(Phi-3 scales by LongRoPE's tensors\)$")  # fmt: skip
    refused(_meta("phi3", **{"attention.sliding_window": -1}),
            r"GGUF key 'phi3\.attention\.sliding_window' is -1, expected a count$")  # fmt: skip


def test_a_phi3_file_with_split_attention_tensors_is_one_line(tmp_path: Path) -> None:
    """llama.cpp's loader also takes attn_q, attn_k, attn_v; its converter writes none: refused."""
    torch.manual_seed(0)
    shape = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                 num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    write_like_llama_cpp(llama, tmp_path / "p.gguf", "phi3", {"attention.sliding_window": 0})
    with pytest.raises(LmforgeError, match=r"p\.gguf: a phi3 file with separate attn_q, attn_k and attn_v"):
        import_hf(tmp_path / "p.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()
