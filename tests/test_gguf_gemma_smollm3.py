"""GGUF files of Gemma 3 (`gemma3`) and SmolLM3 (`smollm3`), formats/gguf_arch.py: tiny random
transformers models written as llama.cpp's convert_hf_to_gguf.py writes them (Gemma's norms stored
as 1 + weight, its q/k as they are; SmolLM3's q/k permuted as Llama's; neither file saying which
layers slide or skip rotary positions), imported, and their logits checked within 1e-4 of the
transformers model, and of transformers' own GGUF load where it reads the architecture (gemma3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from test_gguf import MERGES, vocabulary  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.gguf import config_from_metadata  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402

TOKENS, TYPES = vocabulary()
# Hugging Face name (after model.layers.N.) -> llama.cpp's, per architecture
LAYER = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "self_attn.qkv_proj": "attn_qkv",  # Phi-3's fused tensors, written as they are
    "mlp.gate_up_proj": "ffn_up",
}
GEMMA = {"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
         "post_feedforward_layernorm": "post_ffw_norm"}  # fmt: skip
LLAMA = {"post_attention_layernorm": "ffn_norm"}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}  # fmt: skip


def llama_cpp_permute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's LlamaModel.permute: each head's rotary halves interleaved."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_like_llama_cpp(
    hf: Any,
    path: Path,
    arch: str,
    keys: dict[str, Any],
    tokenizer: str = "gpt2",
    sentencepiece: tuple[list[str], list[float], list[int]] | None = None,
    tensors: dict[str, Any] | None = None,
) -> None:
    """`hf`'s weights (F32) and config as llama.cpp's converter writes them for `arch`, plus `keys`
    (GGUF key without the arch prefix -> value) and `tensors` (name -> array, first, as the
    converter's generate_extra_tensors); the tokenizer is test_gguf's byte-level BPE, or the
    `sentencepiece` (tokens, scores, types) with Gemma's special ids."""
    c = hf.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    for key, value in keys.items():
        full = f"{arch}.{key}"
        if isinstance(value, str):
            writer.add_string(full, value)
        elif isinstance(value, float):
            writer.add_float32(full, value)
        else:
            writer.add_uint32(full, value)
    if sentencepiece is None:
        writer.add_tokenizer_model(tokenizer)
        writer.add_token_list(TOKENS)
        writer.add_token_types(TYPES)
        writer.add_token_merges(MERGES)
        writer.add_bos_token_id(1)
        writer.add_eos_token_id(2)
    else:
        writer.add_tokenizer_model("llama")
        writer.add_token_list(sentencepiece[0])
        writer.add_token_scores(sentencepiece[1])
        writer.add_token_types(sentencepiece[2])
        writer.add_pad_token_id(0)
        writer.add_eos_token_id(1)
        writer.add_bos_token_id(2)
        writer.add_unk_token_id(3)
        writer.add_add_bos_token(True)
    layer = LAYER | (GEMMA if arch in ("gemma2", "gemma3") else LLAMA)
    for name, values in (tensors or {}).items():
        writer.add_tensor(name, values)
    for name, weight in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        w = weight.detach().float().clone()
        if name in TOP:
            out = TOP[name]
        else:
            i, rest = name.removeprefix("model.layers.").split(".", 1)
            out = f"blk.{i}.{layer[rest.removesuffix('.weight')]}.weight"
        if arch in ("gemma2", "gemma3") and name.endswith("norm.weight"):
            w = w + 1.0  # Gemma2Model.modify_tensors, Gemma3Model.norm_shift
        if arch == "smollm3" and name.endswith("q_proj.weight"):
            w = llama_cpp_permute(w, c.num_attention_heads)
        if arch == "smollm3" and name.endswith("k_proj.weight"):
            w = llama_cpp_permute(w, c.num_key_value_heads)
        writer.add_tensor(out, w.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def randomised(hf: torch.nn.Module) -> torch.nn.Module:
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return hf.eval()


def gemma3(layers: int = 7, **changes: Any) -> torch.nn.Module:
    """Layers 0-4 and 6 slide over 4 tokens, layer 5 is full (transformers' default pattern of 6);
    head_dim 256 = query_pre_attn_scalar, as Gemma 3 270M and 1B have."""
    shape = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                 num_attention_heads=2, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                 max_position_embeddings=64, sliding_window=4)  # fmt: skip
    torch.manual_seed(0)
    return randomised(transformers.Gemma3ForCausalLM(transformers.Gemma3TextConfig(**(shape | changes))))


def difference(ours: torch.nn.Module, theirs: torch.nn.Module) -> float:
    ids = torch.randint(0, len(TOKENS), (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(ids)
        return (getattr(out, "logits", out) - theirs(input_ids=ids).logits).abs().max().item()


def test_gemma3_gguf_matches_transformers_and_its_gguf_load(tmp_path: Path) -> None:
    hf = gemma3()
    keys = {"attention.key_length": 256, "attention.value_length": 256, "rope.freq_base": 1e6,
            "attention.sliding_window": 4}  # fmt: skip
    write_like_llama_cpp(hf, tmp_path / "g.gguf", "gemma3", keys)
    import_hf(tmp_path / "g.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    c = model.config
    assert (c.norm_unit_offset, c.sliding_window, c.sliding_window_pattern, c.rope_local_theta) == (
        True,
        4,
        6,
        1e4,
    )
    assert [c.layer_window(i) for i in range(7)] == [4, 4, 4, 4, 4, 0, 4]
    assert difference(model, hf) < 1e-4
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="g.gguf", dtype=torch.float32
    )
    assert difference(model, loaded.eval()) < 1e-4
    # the norms come back as transformers holds them: export is the Hugging Face model again
    export_hf(tmp_path / "out", tmp_path / "hf")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    theirs = hf.state_dict()["model.layers.0.self_attn.q_norm.weight"]
    assert (back.state_dict()["model.layers.0.self_attn.q_norm.weight"] - theirs).abs().max() < 1e-6
    assert difference(back, hf) < 1e-4


def test_gemma3_local_base_linear_scaling_and_an_untied_head(tmp_path: Path) -> None:
    """rope.freq_base_swa, where a file writes one, is the sliding layers' base; a linear
    rope.scaling is the full layers' (Gemma 3 4B+'s), as transformers applies them."""
    rope = {"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}}  # fmt: skip
    hf = gemma3(rope_parameters=rope, tie_word_embeddings=False)
    keys = {"attention.key_length": 256, "rope.freq_base": 5000.0, "rope.freq_base_swa": 100.0,
            "attention.sliding_window": 4, "rope.scaling.type": "linear",
            "rope.scaling.factor": 2.0}  # fmt: skip
    write_like_llama_cpp(hf, tmp_path / "g.gguf", "gemma3", keys)
    import_hf(tmp_path / "g.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    assert (model.config.rope_type, model.config.rope_local_theta, model.config.tie_embeddings) == (
        "linear",
        100.0,
        False,
    )
    assert difference(model, hf) < 1e-4


def _meta(arch: str, **more: Any) -> dict[str, Any]:
    base = {"general.architecture": arch, f"{arch}.block_count": 7, f"{arch}.embedding_length": 64,
            f"{arch}.feed_forward_length": 96, f"{arch}.attention.head_count": 2,
            f"{arch}.attention.head_count_kv": 1, f"{arch}.context_length": 64,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-6, "tokenizer.ggml.tokens": TOKENS}  # fmt: skip
    return base | {f"{arch}.{k}": v for k, v in more.items()}


def test_gemma3_metadata_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    """No sliding_window key: every layer full; the 62-layer 27B scales attention by
    embedding_length / head_count, the others by the head size; logit softcapping is refused."""
    file = tmp_path / "g.gguf"
    full = config_from_metadata(_meta("gemma3", **{"attention.key_length": 256}), set(), file)
    assert (full.sliding_window, full.rope_local_theta, full.attn_scale_dim, full.head_size()) == (
        0,
        0.0,
        0,
        256,
    )
    big = config_from_metadata(_meta("gemma3", block_count=62, **{"attention.key_length": 256}), set(), file)
    assert big.attn_scale_dim == 32
    capped = _meta("gemma3", final_logit_softcapping=30.0)
    with pytest.raises(LmforgeError, match=r"g\.gguf: GGUF key 'gemma3\.final_logit_softcapping' is 30\.0"):
        config_from_metadata(capped, set(), file)
    window = _meta("gemma3", **{"attention.sliding_window": -1})
    with pytest.raises(LmforgeError, match=r"'gemma3\.attention\.sliding_window' is -1, expected a count$"):
        config_from_metadata(window, set(), file)


def test_a_tokenizer_model_other_than_bpe_is_refused_after_the_weights_metadata(tmp_path: Path) -> None:
    """A 't5' (Unigram) vocabulary is not rebuilt: one line, before anything is written."""
    hf = gemma3(layers=1)
    write_like_llama_cpp(hf, tmp_path / "g.gguf", "gemma3", {"attention.key_length": 256}, tokenizer="t5")
    message = r"tokenizer\.ggml\.model='t5' \(lmforge rebuilds byte-level BPE, 'gpt2', and SentencePiece BPE"
    with pytest.raises(LmforgeError, match=message):
        import_hf(tmp_path / "g.gguf", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_smollm3_gguf_unpermutes_q_k_and_skips_rotary_every_4th_layer(tmp_path: Path) -> None:
    shape = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                 rope_parameters={"rope_type": "default", "rope_theta": 1000.0}, pad_token_id=0,
                 bos_token_id=1, eos_token_id=2)  # fmt: skip
    torch.manual_seed(0)
    hf = randomised(transformers.SmolLM3ForCausalLM(transformers.SmolLM3Config(**shape)))
    assert hf.config.no_rope_layers == [1, 1, 1, 0]  # SmolLM3-3B's pattern: layer 3 without positions
    keys = {"rope.freq_base": 1000.0, "rope.dimension_count": 16}
    write_like_llama_cpp(hf, tmp_path / "s.gguf", "smollm3", keys)
    import_hf(tmp_path / "s.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    assert (model.config.nope_interval, model.config.tie_embeddings, model.config.rope_theta) == (
        4,
        True,
        1000.0,
    )
    assert difference(model, hf) < 1e-4
    # fewer than 4 layers: none reached, every layer rotates (as llama.cpp's (il + 1) % 4)
    assert config_from_metadata(_meta("smollm3", block_count=3), set(), tmp_path / "s").nope_interval == 0
