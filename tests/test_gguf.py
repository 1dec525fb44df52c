"""GGUF import (formats/gguf.py, formats/gguf_tokenizer.py): tiny GGUF files written with
gguf.GGUFWriter check dequantization, the q/k unpermutation, the config, the tokenizer and every
bad input against transformers' own GGUF loader; the real SmolLM2 checks parity at full size."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from gguf import GGMLQuantizationType as Q  # noqa: E402
from transformers.convert_slow_tokenizer import bytes_to_unicode  # noqa: E402

from lmforge.cli import main  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.chat_files import stop_ids  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402

TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "e r", "Ġ Ġ", "ĠĠ ĠĠ", "o n", "Ġ s"]
TEXT = "the cat in the hat\n\n  sat   on, the mat. Café 😀 <|im_start|>user\nhi<|im_end|> 12345 don't"
N_EMBD, N_HEAD, N_KV, FFN, N_LAYER = 64, 4, 2, 96, 2


def vocabulary() -> tuple[list[str], list[int]]:
    """SmolLM2-like: control tokens first, the 256 byte symbols, merged tokens, one user-defined."""
    merged = ["".join(m.split(" ")) for m in MERGES]
    tokens = [*SPECIALS, *bytes_to_unicode().values(), *merged, "<think>"]
    types = [3] * len(SPECIALS) + [1] * (256 + len(merged)) + [4]
    return tokens, types


def write_gguf(
    path: Path,
    qtype: Q = Q.Q8_0,
    *,
    arch: str = "llama",
    tied: bool = False,
    tokenizer_model: str = "gpt2",
    extra: dict[str, tuple[np.ndarray, Q | None]] | None = None,
    seed: int = 0,
    name: str = "tiny",
    head_count: int = N_HEAD,
    head_count_kv: int | None = N_KV,
    int_freq_base: bool = False,
    add_eos: bool = False,
    big_endian: bool = False,
    token_list: bool = True,
    rope_scaling: tuple[str, float] | None = None,
    chat_template: str | list[dict[str, str]] = TEMPLATE,  # a list: named ones, as gguf-py takes them
    eot: int | None = None,
    keys: dict[str, tuple[str, Any]] | None = None,  # key -> (GGUFWriter method, value), set last
) -> dict[str, np.ndarray]:
    """A tiny random model as GGUF: 2D weights stored as `qtype`, norms as F32. Returns the
    float weights before quantization, by GGUF name."""
    rng = np.random.default_rng(seed)
    tokens, types = vocabulary()
    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), arch, endianess=endian)
    writer.add_name(name)
    writer.add_block_count(N_LAYER)
    writer.add_context_length(64)
    writer.add_embedding_length(N_EMBD)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(head_count)
    if head_count_kv is not None:
        writer.add_head_count_kv(head_count_kv)
    if int_freq_base:  # a float key stored as an integer
        writer.add_uint32(f"{arch}.rope.freq_base", 50000)
    else:
        writer.add_rope_freq_base(50000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    if rope_scaling:
        writer.add_rope_scaling_type(gguf.RopeScalingType(rope_scaling[0]))
        writer.add_rope_scaling_factor(rope_scaling[1])
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    if token_list:  # without it, nothing says the vocabulary's size either (as in most files)
        writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model(tokenizer_model)
    writer.add_tokenizer_pre("smollm")
    if token_list:
        writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    if add_eos:
        writer.add_add_eos_token(True)
    if eot is not None:
        writer.add_eot_token_id(eot)
        writer.add_eom_token_id(eot)
    writer.add_chat_template(chat_template)
    kv = N_KV * N_EMBD // N_HEAD
    shapes = {"token_embd.weight": (len(tokens), N_EMBD), "output_norm.weight": (N_EMBD,)}
    if not tied:
        shapes["output.weight"] = (len(tokens), N_EMBD)
    for i in range(N_LAYER):
        for name, shape in (
            ("attn_norm", (N_EMBD,)),
            ("attn_q", (N_EMBD, N_EMBD)),
            ("attn_k", (kv, N_EMBD)),
            ("attn_v", (kv, N_EMBD)),
            ("attn_output", (N_EMBD, N_EMBD)),
            ("ffn_norm", (N_EMBD,)),
            ("ffn_gate", (FFN, N_EMBD)),
            ("ffn_up", (FFN, N_EMBD)),
            ("ffn_down", (N_EMBD, FFN)),
        ):
            shapes[f"blk.{i}.{name}.weight"] = shape
        if arch == "qwen2":
            for name, rows in (("attn_q", N_EMBD), ("attn_k", kv), ("attn_v", kv)):
                shapes[f"blk.{i}.{name}.bias"] = (rows,)
    values = {}
    extra = extra or {}
    for name, shape in shapes.items():
        if name in extra:  # stored as the caller says instead
            continue
        scale = 1.0 if len(shape) == 1 else 0.2
        value = (rng.standard_normal(shape) * scale + (1.0 if len(shape) == 1 else 0.0)).astype(np.float32)
        values[name] = value
        if len(shape) == 1 or qtype == Q.F32:
            writer.add_tensor(name, value)
        elif qtype == Q.F16:
            writer.add_tensor(name, value.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    for name, (value, raw) in extra.items():
        writer.add_tensor(name, value, raw_dtype=raw)
    for key, (method, value) in (keys or {}).items():
        writer.kv_data[0].pop(key, None)
        getattr(writer, method)(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return values


def hf_reference(path: Path) -> tuple:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


@pytest.mark.parametrize(
    "qtype", [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0], ids=lambda q: q.name
)
def test_tensor_types_dequantize_as_gguf_does(tmp_path: Path, qtype: Q) -> None:
    values = write_gguf(tmp_path / "m.gguf", qtype)
    import_hf(tmp_path / "m.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    state = model.state_dict()
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    stored = {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}
    for ours, theirs in (
        ("wte.weight", "token_embd.weight"),
        ("lm_head.weight", "output.weight"),
        ("blocks.1.mlp.down.weight", "blk.1.ffn_down.weight"),
        ("blocks.0.mlp.gate.weight", "blk.0.ffn_gate.weight"),
        ("blocks.0.ln_1.weight", "blk.0.attn_norm.weight"),
    ):
        expected = torch.from_numpy(np.array(stored[theirs], dtype=np.float32))
        assert torch.equal(state[ours], expected.reshape(state[ours].shape)), ours
        error = (state[ours] - torch.from_numpy(values[theirs])).abs().max().item()
        assert error < {Q.F32: 1e-9, Q.F16: 2e-3, Q.BF16: 8e-3, Q.Q8_0: 2e-2}.get(qtype, 0.25), ours
    # v is not permuted; q is (checked against transformers below), so compare it row-set-wise
    v = state["blocks.0.attn.qkv.weight"][N_EMBD + N_KV * N_EMBD // N_HEAD :]
    assert torch.equal(v, torch.from_numpy(np.array(stored["blk.0.attn_v.weight"])).reshape(v.shape))


@pytest.mark.parametrize("tied", [False, True])
def test_tiny_llama_matches_transformers_gguf_load(tmp_path: Path, tied: bool) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, Q.Q8_0, tied=tied)
    import_hf(path, tmp_path / "out")
    model, tokenizer = load_model(tmp_path / "out")
    reference, hf_tokenizer = hf_reference(path)
    assert model.config.tie_embeddings == tied == reference.config.tie_word_embeddings
    assert (model.config.n_head, model.config.n_kv_head, model.config.rope_theta) == (N_HEAD, N_KV, 50000.0)
    ids = hf_tokenizer(TEXT, add_special_tokens=False).input_ids
    assert tokenizer.encode(TEXT) == ids
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    batch = torch.tensor([ids[:40]])
    with torch.no_grad():
        ours, theirs = model(batch), reference(batch).logits
    # fp32 logits of up to ~5 after two layers, summed in other orders: 2e-5 apart on AVX2 kernels
    assert (ours - theirs).abs().max().item() < 5e-5


def test_add_eos_token_and_an_integer_freq_base_read_as_transformers_reads_them(tmp_path: Path) -> None:
    """tokenizer.ggml.add_eos_token puts EOS after a text (transformers' and llama.cpp's
    tokenizers do; lmforge left it out); a float key stored as an integer is its value (it was
    refused as "expected float")."""
    path = tmp_path / "m.gguf"
    write_gguf(path, Q.F32, add_eos=True, int_freq_base=True)
    import_hf(path, tmp_path / "out")
    model, tokenizer = load_model(tmp_path / "out")
    assert model.config.rope_theta == 50000.0
    _, hf_tokenizer = hf_reference(path)
    for text in (TEXT, "hello", ""):
        assert tokenizer.encode_prompt(text) == hf_tokenizer(text).input_ids
    assert tokenizer.encode_prompt("hello")[-1] == 2 and tokenizer.text_affixes() == ([], [2])


def llama_cpp_rope_factors(theta: float, dim: int, factor: float) -> np.ndarray:
    """rope_freqs.weight as llama.cpp's converter writes it for a Llama 3.1 config.json (factor,
    low_freq_factor 1, high_freq_factor 4, original context 8192): one divisor per frequency."""
    low, high, old = 1.0, 4.0, 8192
    out = []
    for freq in 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim):
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


def test_llama3_rope_freqs_import_as_transformers_scales_them(tmp_path: Path) -> None:
    """Llama 3.1-3.3 GGUFs carry their scaled rotary frequencies as rope_freqs.weight; it was
    refused. Read back as the llama3 scaling, the logits are transformers' LlamaForCausalLM's with
    that scaling (its GGUF loader leaves the tensor out) on the same weights. With a head size of
    16 and base 50,000, five frequencies keep theirs, one is interpolated, two are divided."""
    path = tmp_path / "m.gguf"
    factors = llama_cpp_rope_factors(50000.0, N_EMBD // N_HEAD, 32.0)
    assert factors[0] == 1.0 and 1.0 < factors[5] < 32.0 and factors[-1] == 32.0
    write_gguf(path, Q.F32, extra={"rope_freqs.weight": (factors, None)})
    import_hf(path, tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    c = model.config
    assert (c.rope_type, c.rope_factor, c.rope_low_freq_factor, c.rope_high_freq_factor) == (
        "llama3",
        32,
        1,
        4,
    )
    assert c.rope_original_context == 8192
    loaded, _ = hf_reference(path)
    rope = {"rope_type": "llama3", "rope_theta": 50000.0, "factor": 32.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}  # fmt: skip
    scaled = transformers.LlamaForCausalLM(dataclasses.replace(loaded.config, rope_parameters=rope)).eval()
    scaled.load_state_dict(loaded.state_dict())
    batch = torch.randint(0, c.vocab_size, (1, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs, plain = model(batch), scaled(batch).logits, loaded(batch).logits
    assert (ours - theirs).abs().max().item() < 5e-5
    assert (ours - plain).abs().max().item() > 1e-3  # the scaling changes these logits

    write_gguf(path, Q.F32, rope_scaling=("linear", 4.0))  # llama.cpp's metadata for linear
    import_hf(path, tmp_path / "linear")
    assert load_model(tmp_path / "linear")[0].config.rope_type == "linear"
    assert load_model(tmp_path / "linear")[0].config.rope_factor == 4.0


def test_qwen2_has_biases_and_no_permutation(tmp_path: Path) -> None:
    path = tmp_path / "q.gguf"
    write_gguf(path, Q.F32, arch="qwen2")
    import_hf(path, tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    assert model.config.qkv_bias
    reference, _ = hf_reference(path)
    batch = torch.tensor([[5, 70, 100, 3, 260, 9, 44]])
    with torch.no_grad():
        assert (model(batch) - reference(batch).logits).abs().max().item() < 1e-5


def test_an_end_of_turn_token_stops_generation_as_eos(tmp_path: Path) -> None:
    """tokenizer.ggml.eot_token_id / eom_token_id join EOS in generation_config.json's stop ids, as
    llama.cpp stops at each (until 2026-12-07 they were dropped: a chat ran past its turn's end)."""
    path = tmp_path / "m.gguf"
    write_gguf(path, Q.F32, eot=0)
    out = import_hf(path, tmp_path / "lm")
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 2
    assert stop_ids(out, load_model(out)[1].eos_id) == [2, 0]  # what generate, chat and serve stop at
    # no key, but the template ends turns with a control token llama.cpp knows by its text (V5)
    eos0 = {"tokenizer.ggml.eos_token_id": ("add_uint32", 0)}  # <|endoftext|>
    write_gguf(tmp_path / "chatml.gguf", Q.F32, keys=eos0)
    chatml = import_hf(tmp_path / "chatml.gguf", tmp_path / "chatml")
    assert stop_ids(chatml, load_model(chatml)[1].eos_id) == [0, 2]
    write_gguf(tmp_path / "plain.gguf", Q.F32, keys=eos0, chat_template="{{ messages[0]['content'] }}")
    plain = import_hf(tmp_path / "plain.gguf", tmp_path / "plain")  # <|im_end|> is no turn's end there
    assert stop_ids(plain, load_model(plain)[1].eos_id) == [0]
    bad = tmp_path / "bad.gguf"
    write_gguf(bad, Q.F32, eot=10**6)
    with pytest.raises(
        LmforgeError, match=r"bad.gguf: tokenizer.ggml.eot_token_id=1000000 is not a token id"
    ):
        import_hf(bad, tmp_path / "lm-bad")


def test_directory_carries_chat_files_and_exports_to_transformers(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    write_gguf(path, Q.Q4_1, tied=True)
    out = import_hf(path, tmp_path / "lm")
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert json.loads((out / "generation_config.json").read_text()) == {
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
    }
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == 2
    # export: transformers loads every tensor and sees the template, EOS and generation defaults
    hf_dir = export_hf(out, tmp_path / "hf")
    model, info = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert (tokenizer.eos_token, tokenizer.bos_token, tokenizer.pad_token) == tuple(
        SPECIALS[i] for i in (2, 1, 2)
    )
    assert tokenizer.chat_template == TEMPLATE
    assert (model.generation_config.eos_token_id, model.generation_config.bos_token_id) == (2, 1)
    lm_model, lm_tokenizer = load_model(out)
    assert tokenizer(TEXT, add_special_tokens=False).input_ids == lm_tokenizer.encode(TEXT)
    batch = torch.tensor([lm_tokenizer.encode(TEXT)[:30]])
    with torch.no_grad():
        assert (model.eval()(batch).logits - lm_model(batch)).abs().max().item() < 5e-5
    # an HF directory with a list of stop ids: import keeps it, export writes it back
    generation = {"bos_token_id": 1, "eos_token_id": [2, 0], "temperature": 0.3, "do_sample": True}
    (hf_dir / "generation_config.json").write_text(json.dumps(generation))
    (hf_dir / "chat_template.jinja").write_text(TEMPLATE + "{# v2 #}")
    again = import_hf(hf_dir, tmp_path / "lm2")
    assert json.loads((again / "generation_config.json").read_text()) == generation
    assert (again / "chat_template.jinja").read_text() == TEMPLATE + "{# v2 #}"
    back = export_hf(again, tmp_path / "hf2")
    assert json.loads((back / "generation_config.json").read_text())["eos_token_id"] == [2, 0]
    assert transformers.GenerationConfig.from_pretrained(back).eos_token_id == [2, 0]
    assert (back / "chat_template.jinja").read_text() == TEMPLATE + "{# v2 #}"
    # a second import over the first (its own earlier output, chat files included) is allowed
    import_hf(path, tmp_path / "lm")


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the error says)."""
    cases = {}
    for arch in ("bert", "mamba"):
        path = tmp_path / f"{arch}.gguf"
        writer = gguf.GGUFWriter(str(path), arch)
        writer.add_block_count(1)
        writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        cases[arch] = (path, f"GGUF architecture '{arch}' is not supported")
    whole = tmp_path / "whole.gguf"
    write_gguf(whole)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    cases["truncated"] = (truncated, "not a readable GGUF file (truncated or damaged")
    header = tmp_path / "header.gguf"
    header.write_bytes(whole.read_bytes()[:20])
    cases["header only"] = (header, "not a readable GGUF file")
    text = tmp_path / "notes.gguf"
    text.write_text("these are notes, not a model\n")
    cases["not gguf"] = (text, "not a readable GGUF file (no GGUF magic)")
    f64 = tmp_path / "f64.gguf"
    write_gguf(f64, extra={"blk.1.ffn_up.weight": (np.zeros((FFN, N_EMBD), np.float64), None)})
    cases["F64 tensor"] = (
        f64,
        "tensor 'blk.1.ffn_up.weight' has type F64, which the installed gguf package cannot dequantize",
    )
    q81 = tmp_path / "q8_1.gguf"
    q8_1 = np.zeros((FFN, N_EMBD // 32 * 40), np.uint8)  # Q8_1 blocks: 32 values in 40 bytes
    write_gguf(q81, extra={"blk.0.ffn_gate.weight": (q8_1, Q.Q8_1)})
    cases["Q8_1 tensor"] = (q81, "tensor 'blk.0.ffn_gate.weight' has type Q8_1")
    unigram = tmp_path / "unigram.gguf"
    write_gguf(unigram, tokenizer_model="t5")
    cases["unigram"] = (unigram, "unsupported tokenizer model tokenizer.ggml.model='t5'")
    stray = tmp_path / "stray.gguf"
    write_gguf(stray, extra={"rope_freqs.weight": (np.arange(1, 9, dtype=np.float32), None)})
    cases["llama3 rope"] = (stray, "tensor 'rope_freqs.weight' holds frequency factors other than Llama 3's")
    f16_freqs = tmp_path / "f16_freqs.gguf"
    write_gguf(f16_freqs, extra={"rope_freqs.weight": (np.ones(8, np.float16), None)})
    cases["F16 rope_freqs"] = (f16_freqs, "tensor 'rope_freqs.weight' has type F16, not F32")
    both = tmp_path / "both.gguf"
    write_gguf(
        both, rope_scaling=("linear", 2.0), extra={"rope_freqs.weight": (np.ones(8, np.float32), None)}
    )
    cases["linear and freqs"] = (both, "rope scaling 'linear' and tensor 'rope_freqs.weight' together")
    yarn = tmp_path / "yarn.gguf"
    write_gguf(yarn, rope_scaling=("yarn", 4.0))
    cases["yarn"] = (yarn, "rope scaling 'yarn' is not supported (lmforge reads linear, llama3)")
    untokened = tmp_path / "untokened.gguf"  # was "missing GGUF key 'llama.vocab_size'"
    write_gguf(untokened, token_list=False)
    cases["no token list"] = (untokened, "missing GGUF key 'tokenizer.ggml.tokens' (the token list)")
    cases["missing"] = (tmp_path / "absent.gguf", "no such GGUF file")
    big = tmp_path / "big.gguf"  # gguf's dequantize read it as little-endian: NaN and 1e-18 weights
    write_gguf(big, Q.F32, big_endian=True)
    cases["big-endian"] = (big, "a big-endian GGUF file, which lmforge does not read")
    no_heads = tmp_path / "no_heads.gguf"  # a ZeroDivisionError traceback
    write_gguf(no_heads, head_count=0)
    cases["0 heads"] = (no_heads, "GGUF key 'llama.attention.head_count' is 0, expected a count >= 1")
    no_kv = tmp_path / "no_kv.gguf"  # grouped-query weights, the key-value head count left out
    write_gguf(no_kv, head_count_kv=None)
    cases["no kv heads"] = (
        no_kv,
        "v_proj.weight (32, 64) make (128, 64) together, where the config's head counts",
    )
    # values that were taken unsaid until 2026-12-07
    for name, key, value, message in (
        ("theta0", "llama.rope.freq_base", 0.0, "model.rope_theta=0.0 must be > 0"),  # read as 10000
        ("eps_inf", "llama.attention.layer_norm_rms_epsilon", math.inf, "model.norm_eps=inf must be > 0"),
    ):
        write_gguf(tmp_path / f"{name}.gguf", keys={key: ("add_float32", value)})
        cases[name] = (tmp_path / f"{name}.gguf", message)
    number = tmp_path / "template_number.gguf"  # the template was left out
    write_gguf(number, keys={"tokenizer.chat_template": ("add_uint32", 7)})
    cases["template number"] = (number, "GGUF key 'tokenizer.chat_template' is int, not a chat template")
    split = tmp_path / "m-00001-of-00002.gguf"  # was "missing tensor ..."
    write_gguf(split, keys={"split.count": ("add_uint16", 2), "split.no": ("add_uint16", 0)})
    cases["split"] = (split, "one of 2 files of a split model (split.count): join them first")
    return cases


def test_bad_gguf_inputs_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for name, (path, message) in _bad_inputs(tmp_path).items():
        with pytest.raises(LmforgeError) as error:
            import_hf(path, tmp_path / "out")
        text = str(error.value)
        assert text.startswith(f"{path}: ") and message in text and "\n" not in text, (name, text)
        assert not (tmp_path / "out").exists(), name
    # through the CLI: exit 2, one line, no traceback
    capsys.readouterr()
    assert main(["import", str(tmp_path / "notes.gguf"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "notes.gguf" in err and "Traceback" not in err


def test_short_and_cut_gguf_files_are_named_in_plain_words(tmp_path: Path) -> None:
    """The magic and the header's length are checked before the reader runs: never numpy's words
    from inside it ("When changing to a larger dtype ...", "index 0 is out of bounds ...")."""
    whole = tmp_path / "whole.gguf"
    write_gguf(whole)
    data = whole.read_bytes()
    expected = {
        0: "not a readable GGUF file (an empty file)",
        3: "not a readable GGUF file (3 bytes, too short for a GGUF header)",
        20: "not a readable GGUF file (truncated or damaged: 20 bytes, too short for a GGUF header of 24)",
        100: "not a readable GGUF file (truncated or damaged: its 100 bytes do not hold the metadata and"
        " tensors its header describes)",
        len(data) - 1: f"truncated or damaged: its {len(data) - 1:,} bytes do not hold the metadata",
    }
    for size, message in expected.items():
        cut = tmp_path / f"cut{size}.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(LmforgeError) as error:
            import_hf(cut, tmp_path / "out")
        assert str(error.value).startswith(f"{cut}: ") and message in str(error.value), (size, error.value)
    for size in range(1, 64):  # every cut inside the header and the first metadata: our words only
        cut = tmp_path / "cut.gguf"
        cut.write_bytes(data[:size])
        with pytest.raises(LmforgeError, match=r"\((1 byte|\d+ bytes), too short|truncated or damaged"):
            import_hf(cut, tmp_path / "out")
    version = tmp_path / "v1.gguf"
    version.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(40))
    old = r"v1\.gguf: GGUF version 1, which lmforge does not read \(it reads 2 and 3\)$"
    with pytest.raises(LmforgeError, match=old):
        import_hf(version, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_type_the_gguf_package_does_not_know_is_not_called_truncated(tmp_path: Path) -> None:
    """A whole file with a metadata value type newer than the installed gguf knows: named as such,
    with the upgrade, not as a truncated file."""
    whole = tmp_path / "whole.gguf"
    write_gguf(whole)
    data = bytearray(whole.read_bytes())
    key_length = int.from_bytes(data[24:32], "little")  # the first key/value: its key, then its type
    data[32 + key_length : 36 + key_length] = (99).to_bytes(4, "little")
    newer = tmp_path / "newer.gguf"
    newer.write_bytes(bytes(data))
    with pytest.raises(LmforgeError) as error:
        import_hf(newer, tmp_path / "out")
    assert re.fullmatch(
        r".*newer\.gguf: not a readable GGUF file \(GGUFValueType 99, unknown to gguf [\d.]+: a newer"
        r" file; pip install -U gguf\)",
        str(error.value),
    )


# --- the real SmolLM2-135M-Instruct (Q4_1/Q8_0) ---------------------------------------------------
VARIED = (
    "def fib(n: int) -> int:\n\tif n < 2:\n\t\treturn n  # base case\n    return fib(n-1)+fib(n-2)\n\n\n"
    "Crème brûlée, naïve façade, Ærøskøbing; ¿Qué tal? 你好，世界 🤖🎉👍🏽 "
    "<|im_start|>user\nWhat's 1234+5678?<|im_end|>\n<|im_start|>assistant\n"
    "   spaced     out\r\n<repo_name>x<file_sep>y<|endoftext|> I'M SHOUTING don't they'll"
)


def test_smollm2_import_matches_transformers(smollm2_dir: Path, smollm2_reference: tuple) -> None:
    reference, hf_tokenizer = smollm2_reference
    model, tokenizer = load_model(smollm2_dir)
    ids = hf_tokenizer(VARIED, add_special_tokens=False).input_ids
    assert tokenizer.encode(VARIED) == ids
    assert tokenizer.decode(ids) == hf_tokenizer.decode(ids, skip_special_tokens=True)
    batch = torch.tensor(
        [hf_tokenizer("The capital of France is Paris, and the capital of Italy is").input_ids]
    )
    with torch.no_grad():
        diff = (model(batch) - reference(batch).logits).abs().max().item()
    assert diff < 1e-4
    assert (smollm2_dir / "chat_template.jinja").read_text() == hf_tokenizer.chat_template
    assert json.loads((smollm2_dir / "generation_config.json").read_text())["eos_token_id"] == 2
