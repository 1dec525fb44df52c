"""GGUF files (llama.cpp's single-file models) as lmforge models: `lmforge import FILE.gguf --out DIR`.

The file is read with the `gguf` package (memory-mapped, never executed). Its metadata becomes the
config (`{arch}.block_count`, `embedding_length`, `feed_forward_length`, `attention.head_count`,
`head_count_kv`, `rope.freq_base`, `attention.layer_norm_rms_epsilon`, `context_length`,
`vocab_size`; tied embeddings when there is no `output.weight`; linear rope scaling, and Llama 3's
`rope_freqs.weight` read back as its llama3 scaling), its tensors are dequantized to
fp32 by `gguf.quants.dequantize` (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, the K- and
I-quants; any other type is an error naming the tensor), renamed to Hugging Face's Llama layout
and converted by the Llama family (Qwen3's for qwen3; formats/hf.py), so a GGUF model is exactly the model
transformers' own GGUF loader builds. llama.cpp stores Llama's q and k projections with the rows
of each head permuted for its rotary layout; they are permuted back as transformers does
(modeling_gguf_pytorch_utils.LlamaTensorProcessor). Qwen2 and Qwen3 files are not permuted; Qwen3's
per-head q/k norms (`attn_q_norm`, `attn_k_norm`) and its head size (`attention.key_length`, larger
than embedding_length / head_count) map onto the Qwen3 family.
Gemma 2 (`gemma2`), Gemma 3 (`gemma3`) and SmolLM3 (`smollm3`, permuted as Llama's) map onto their
families with what llama.cpp's loader hard-codes for them, Phi-3 (`phi3`: fused tensors, partial
rotary, LongRoPE's factor tensors) onto its family (formats/gguf_arch.py).

The tokenizer comes from the metadata (formats/gguf_tokenizer.py); the chat template
(`tokenizer.chat_template`) is written as chat_template.jinja, llama.cpp's named ones
(`tokenizer.chat_template.NAME`: tool_use) as additional_chat_templates/NAME.jinja, and the special ids as
generation_config.json, as transformers lays out a chat model.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Container
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.config import ModelConfig, model_config_from
from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import write_chat_files
from lmforge.formats.directory import write_model_dir
from lmforge.formats.gguf_arch import MODEL_TYPES, ROPE_FACTORS, arch_config, layer_names, stored_weight
from lmforge.formats.gguf_tokenizer import chat_templates, gguf_tokenizer, stop_ids
from lmforge.formats.hf import FAMILIES
from lmforge.formats.hf_convert import hf_to_lmforge
from lmforge.model.empty import empty
from lmforge.model.gpt import GPT
from lmforge.model.rope_scaling import RopeScaling, frequencies, scaled
from lmforge.outputs import staged_folder
from lmforge.tokenization.tokenizer import Tokenizer

ARCHITECTURES = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "smollm3", "phi3")  # Mistral's say "llama"
PERMUTED = ("llama", "smollm3")  # llama.cpp permutes q/k rows of these for its rotary layout
ROPE_FREQS = "rope_freqs.weight"  # Llama 3's scaled rotary frequencies, one factor per frequency
LLAMA3_PARAMETERS = (1.0, 4.0, 8192)  # Llama 3.1-3.3's low_freq_factor, high_freq_factor, context
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3's per-head norms
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_LAYER_TENSOR = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)")
MAGIC = b"GGUF"
HEADER_BYTES = 24  # the magic, the version (uint32), the tensor and metadata counts (uint64 each)


def read_gguf(file: Path) -> Any:
    """A GGUFReader over the file; anything that is not a whole GGUF file is one line naming it.
    The magic, version and header length are checked here first, so that a short or foreign file
    is named in plain words rather than by numpy's complaint from inside the reader."""
    from gguf import GGUFReader
    from gguf.gguf_reader import READER_SUPPORTED_VERSIONS

    if not file.is_file():
        raise LmforgeError(f"{file}: no such GGUF file")
    try:
        with file.open("rb") as f:
            head = f.read(HEADER_BYTES)
        size = file.stat().st_size
    except OSError as e:
        raise LmforgeError(f"{file}: cannot read: {e.strerror}") from None
    if len(head) < len(MAGIC):
        why = f"{_bytes(size)}, too short for a GGUF header" if head else "an empty file"
    elif not head.startswith(MAGIC):
        why = "no GGUF magic"
    elif len(head) < HEADER_BYTES:
        why = f"truncated or damaged: {_bytes(size)}, too short for a GGUF header of {HEADER_BYTES}"
    else:
        why = None
    if why and not head.startswith(MAGIC) and file.suffix.lower() != ".gguf":  # a text file, ...
        raise LmforgeError(f"{file}: neither a model directory nor a GGUF file ({why})")
    if why:
        raise LmforgeError(f"{file}: not a readable GGUF file ({why})")
    version = int.from_bytes(head[4:8], "little")
    if not version & 0xFFFF and int.from_bytes(head[4:8], "big") & 0xFFFF:
        # gguf's dequantize reads every block as little-endian: a big-endian file's weights came
        # out as NaN and 1e-18 (transformers refuses such a file too)
        raise LmforgeError(
            f"{file}: a big-endian GGUF file, which lmforge does not read"
            " (gguf's `gguf-convert-endian FILE little` converts it in place: on a copy)"
        )
    if version not in READER_SUPPORTED_VERSIONS:
        known = " and ".join(map(str, READER_SUPPORTED_VERSIONS))
        raise LmforgeError(f"{file}: GGUF version {version}, which lmforge does not read (it reads {known})")
    try:
        return GGUFReader(file)
    except Exception as e:  # numpy's errors from inside the reader (short reads, bad counts), gguf's own
        raise LmforgeError(f"{file}: not a readable GGUF file ({_reader_failure(e, size)})") from None


def _reader_failure(error: Exception, size: int) -> str:
    """Why GGUFReader failed, in plain words: a type newer than the installed gguf package knows, a
    fault gguf names itself (duplicates, alignment), else numpy's errors of a short file."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = f"gguf {version('gguf')}"
    except PackageNotFoundError:  # gguf-py from a llama.cpp checkout on PYTHONPATH
        installed = "the gguf package found"
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    unknown = re.search(r"(\d+)\)? is not a valid (GGUFValueType|GGMLQuantizationType)", detail)
    if unknown or "Unknown/unhandled" in detail:
        what = f"{unknown[2]} {unknown[1]}" if unknown else detail
        return f"{what}, unknown to {installed}: a newer file; pip install -U gguf"
    if any(word in detail for word in ("Duplicate", "duplicated", "alignment")):
        return f"damaged: {detail}"
    held = "do not hold the metadata and tensors its header describes"
    return f"truncated or damaged: its {_bytes(size)} {held}"


def _bytes(n: int) -> str:
    return "1 byte" if n == 1 else f"{n:,} bytes"


def read_metadata(reader: Any, file: Path) -> dict[str, Any]:
    """The key/value metadata as Python values (strings, numbers, lists)."""
    try:
        return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    except Exception as e:  # a damaged field
        raise LmforgeError(f"{file}: unreadable GGUF metadata ({type(e).__name__}: {e})") from None


def _key(meta: dict[str, Any], name: str, file: Path, default: Any = None, kind: type = int) -> Any:
    """A metadata value of `kind`: a count (int) must be >= 1, a float may be stored as an integer
    (a freq_base of 10000 written as UINT32)."""
    value = meta.get(name, default)
    if value is None:
        raise LmforgeError(f"{file}: missing GGUF key {name!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise LmforgeError(f"{file}: GGUF key {name!r} is {value!r}, expected {kind.__name__}")
    if kind is int and value < 1:
        raise LmforgeError(f"{file}: GGUF key {name!r} is {value}, expected a count >= 1")
    return value


def config_from_metadata(
    meta: dict[str, Any], names: set[str], file: Path, tensors: dict[str, np.ndarray] | None = None
) -> ModelConfig:
    """The ModelConfig the metadata describes, built as HF's config.json would be and checked by
    the Llama family (so the same limits apply: SwiGLU, RMSNorm); tensors: the file's rotary
    tensors by name (config_tensors): `rope_freqs.weight`, Llama 3.1's scaled rotary frequencies as
    llama.cpp writes them, and phi3's LongRoPE factors."""
    tensors = tensors or {}
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise LmforgeError(f"{file}: GGUF architecture {arch!r} is not supported (lmforge imports {known})")
    n_embd = _key(meta, f"{arch}.embedding_length", file)
    n_head = _key(meta, f"{arch}.attention.head_count", file)
    # key_length: the head size, which may differ from embedding_length / head_count (Qwen3's)
    head_dim = _key(meta, f"{arch}.attention.key_length", file, n_embd // n_head)
    for name in ("rope.dimension_count", "attention.value_length"):
        value = meta.get(f"{arch}.{name}")
        if arch == "phi3" and name == "rope.dimension_count":
            continue  # Phi-3's partial rotary (formats/gguf_arch.py)
        if value is not None and value != head_dim:
            raise LmforgeError(f"{file}: {arch}.{name}={value} (lmforge needs the key_length, {head_dim})")
    tokens = meta.get("tokenizer.ggml.tokens")
    vocab = meta.get(f"{arch}.vocab_size") or (len(tokens) if isinstance(tokens, list) else None)
    if vocab is None:  # most files have no vocab_size: the token list counts it, so name the list
        if tokens is None:
            raise LmforgeError(f"{file}: missing GGUF key 'tokenizer.ggml.tokens' (the token list)")
        raise LmforgeError(f"{file}: tokenizer.ggml.tokens must be a non-empty list of strings")
    raw = {
        "model_type": arch,
        "num_hidden_layers": _key(meta, f"{arch}.block_count", file),
        "hidden_size": n_embd,
        "intermediate_size": _key(meta, f"{arch}.feed_forward_length", file),
        "num_attention_heads": n_head,
        "num_key_value_heads": _key(meta, f"{arch}.attention.head_count_kv", file, n_head),
        "head_dim": head_dim,
        "max_position_embeddings": _key(meta, f"{arch}.context_length", file),
        "vocab_size": _key(meta, f"{arch}.vocab_size", file, vocab),
        "rms_norm_eps": _key(meta, f"{arch}.attention.layer_norm_rms_epsilon", file, kind=float),
        "rope_parameters": {
            "rope_theta": (theta := _key(meta, f"{arch}.rope.freq_base", file, 10000.0, kind=float)),
            **_rope_scaling(meta, arch, tensors.get(ROPE_FREQS), head_dim, theta, file),
        },
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": arch == "llama" and any(n.endswith(("attn_q.bias", "attn_k.bias")) for n in names),
    }
    raw = arch_config(meta, arch, raw, file, tensors)  # gemma's, smollm3's, phi3's own (formats/gguf_arch.py)
    family = FAMILIES[MODEL_TYPES.get(arch, arch)]
    return model_config_from(dataclasses.asdict(family.config_in(raw, str(file))), file)


def _rope_scaling(
    meta: dict[str, Any], arch: str, freqs: np.ndarray | None, head_dim: int, theta: float, file: Path
) -> dict[str, Any]:
    """config.json's rope_parameters keys for the file's scaled rotary positions: llama.cpp writes
    `linear` as metadata, and Llama 3's as one factor per frequency (`rope_freqs.weight`, each
    frequency divided by it), which is read back as the `llama3` scaling it must come from (the
    factors checked: Llama 3.1-3.3 all use the same three parameters, only `factor` differs)."""
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if arch == "phi3" and kind == "longrope":  # llama.cpp's name for what phi3's factor tensors do
        kind = "none"
    if kind == "linear" and freqs is not None:  # llama.cpp would apply both: lmforge has one
        raise LmforgeError(f"{file}: rope scaling 'linear' and tensor {ROPE_FREQS!r} together")
    if kind == "linear":
        return {"rope_type": "linear", "factor": _key(meta, f"{arch}.rope.scaling.factor", file, kind=float)}
    if kind != "none":
        raise LmforgeError(f"{file}: rope scaling {kind!r} is not supported (lmforge reads linear, llama3)")
    if freqs is None:
        return {"rope_type": "default"}
    factor = float(freqs.max())
    scaling = RopeScaling("llama3", factor, *LLAMA3_PARAMETERS)
    plain = frequencies(head_dim, theta)
    expected = (plain / scaled(plain, scaling)).numpy()
    if freqs.shape != expected.shape or not np.allclose(freqs, expected, rtol=1e-4, atol=0):
        raise LmforgeError(
            f"{file}: tensor 'rope_freqs.weight' holds frequency factors other than Llama 3's"
            f" ({scaling}), which lmforge cannot follow"
        )
    low, high, original = LLAMA3_PARAMETERS
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low, "high_freq_factor": high,
            "original_max_position_embeddings": original}  # fmt: skip


def hf_name(name: str, arch: str = "llama") -> str | None:
    """The Hugging Face name of a GGUF tensor (`blk.3.attn_q.weight` ->
    `model.layers.3.self_attn.q_proj.weight`; Gemma 3's norms by its names), or None if it has no
    place there."""
    top, _, param = name.rpartition(".")
    if top in _TOP and param in ("weight", "bias"):
        return f"{_TOP[top]}.{param}"
    match = _LAYER_TENSOR.fullmatch(name)
    layer = _LAYER | layer_names(arch)
    if match and match[2] in layer:
        return f"model.layers.{match[1]}.{layer[match[2]]}.{match[3]}"
    return None


def dequantize(tensor: Any, file: Path) -> torch.Tensor:
    """One reader tensor as fp32, in PyTorch's (rows, columns) order."""
    from gguf.quants import dequantize as gguf_dequantize

    try:
        values = gguf_dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError:  # what gguf's dequantize reads is lmforge's list (docs/huggingface.md)
        raise LmforgeError(
            f"{file}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which the installed"
            " gguf package cannot dequantize (it reads F32, F16, BF16, the Q4-Q8, K- and I-quants)"
        ) from None
    shape = tuple(int(d) for d in reversed(tensor.shape))  # GGUF lists the fastest dimension first
    return torch.from_numpy(np.array(values, dtype=np.float32)).reshape(shape)


def unpermute(weight: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's rotary permutation of a q or k projection (rows of each head: pairs
    interleaved -> halves), as transformers' `_reverse_permute_weights`."""
    half = weight.shape[0] // n_head // 2
    return weight.reshape(n_head, half, 2, *weight.shape[1:]).transpose(1, 2).reshape(weight.shape)


def config_tensors(reader: Any, arch: str, file: Path) -> dict[str, np.ndarray]:
    """The rotary tensors the config is made of (not weights): `rope_freqs.weight`, and phi3's
    LongRoPE factors (another architecture's are named where the weights are read); llama.cpp
    writes and reads them F32."""
    wanted = (ROPE_FREQS, *ROPE_FACTORS) if arch == "phi3" else (ROPE_FREQS,)
    out = {}
    for tensor in reader.tensors:
        if tensor.name in wanted:
            kind = tensor.tensor_type.name
            if kind != "F32":
                raise LmforgeError(f"{file}: tensor {tensor.name!r} has type {kind}, not F32")
            out[tensor.name] = dequantize(tensor, file).numpy()
    return out


def read_weights(
    reader: Any, arch: str, config: ModelConfig, file: Path, skip: Container[str] = (ROPE_FREQS,)
) -> dict[str, torch.Tensor]:
    """HF name -> fp32 tensor for every tensor of the file but those in `skip` (the config's)."""
    out: dict[str, torch.Tensor] = {}
    for tensor in reader.tensors:
        if tensor.name in skip:  # in the config (config_from_metadata)
            continue
        name = hf_name(tensor.name, arch)
        if name is None:
            raise LmforgeError(f"{file}: tensor {tensor.name!r} has no place in a {arch} model")
        weight = dequantize(tensor, file)
        if arch in PERMUTED and name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.n_head if ".q_proj." in name else config.n_kv_head or config.n_head
            if weight.ndim != 2 or weight.shape[0] % (2 * heads):
                raise LmforgeError(f"{file}: tensor {tensor.name!r} has shape {tuple(weight.shape)}")
            weight = unpermute(weight, heads)
        out[name] = stored_weight(arch, name, weight)
    return out


def _check_query_rows(reader: Any, arch: str, config: ModelConfig, file: Path) -> None:
    """The first layer's query rows against head_count x the head size, named by the metadata
    keys that set them (a wrong or absent key_length read as a mismatch of Hugging Face tensors)."""
    query = next((t for t in reader.tensors if t.name == "blk.0.attn_q.weight"), None)
    if arch == "phi3" and query is not None:  # llama.cpp's loader has a split form no converter writes
        raise LmforgeError(
            f"{file}: a phi3 file with separate attn_q, attn_k and attn_v tensors (lmforge reads the"
            " fused attn_qkv that llama.cpp's converter writes)"
        )
    if query is None or len(query.shape) != 2:
        return  # a missing or odd tensor is named where the weights are read
    rows, want = int(query.shape[1]), config.n_head * config.head_size()  # GGUF lists columns first
    if rows != want:
        raise LmforgeError(
            f"{file}: tensor 'blk.0.attn_q.weight' has {rows} rows, where {arch}.attention.head_count"
            f" {config.n_head} x a head size of {config.head_size()} gives {want} (the head size is"
            f" {arch}.attention.key_length, or embedding_length / head_count without it)"
        )


def convert_gguf(file: str | Path) -> tuple[GPT, Tokenizer, dict[str, Any]]:
    """(model in eval mode, fp32; tokenizer; metadata) for a GGUF file."""
    file = Path(file)
    reader = read_gguf(file)
    meta = read_metadata(reader, file)
    if isinstance(split := meta.get("split.count"), int) and split > 1:  # llama.cpp's gguf-split
        raise LmforgeError(
            f"{file}: one of {split} files of a split model (split.count): join them first with"
            f" llama.cpp's `llama-gguf-split --merge {file.name} whole.gguf`, then import whole.gguf"
        )
    names = {t.name for t in reader.tensors}
    arch = meta.get("general.architecture")
    tensors = config_tensors(reader, arch, file)
    config = config_from_metadata(meta, names, file, tensors)
    _check_query_rows(reader, arch, config, file)
    tokenizer = gguf_tokenizer(meta, str(file))
    if tokenizer.vocab_size > config.vocab_size:
        raise LmforgeError(f"{file}: {tokenizer.vocab_size} tokens but vocab_size={config.vocab_size}")
    model = empty(lambda: GPT(config))
    hf = read_weights(reader, arch, config, file, tensors)
    family = FAMILIES[MODEL_TYPES.get(arch, arch)]
    state, unused = hf_to_lmforge(family, config, hf, model.state_dict(), str(file))
    if unused:
        raise LmforgeError(f"{file}: tensor {unused[0]!r} has no place in this model")
    model.load_state_dict(state, strict=False)  # only a tied lm_head is left to the model
    return model.float().eval(), tokenizer, meta


def import_gguf(file: str | Path, out: str | Path, owner: Any) -> Path:
    """Write the GGUF model as an lmforge model directory at `out` (`owner`: import's check of
    what may already be there; see hf_files.py)."""
    with staged_folder(out, inputs=[file], owner=owner, overwrite=None, verb="import", mark=True) as tmp:
        model, tokenizer, meta = convert_gguf(file)
        ids = {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        }
        ids = {k: v for k, v in ids.items() if v is not None}
        write_model_dir(tmp, model.config, model.state_dict(), tokenizer, None, ids)
        # generation stops at the end-of-turn token too (until 2026-12-07 a chat ran past it)
        stops = stop_ids(meta, tokenizer, str(file))
        generation = ids | ({"eos_token_id": stops} if len(stops) > 1 else {})
        write_chat_files(tmp, chat_templates(meta, Path(file)), generation)
    return Path(out)
