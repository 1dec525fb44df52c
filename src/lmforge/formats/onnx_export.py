"""`lmforge export DIR --out OUT --format onnx`: a model as ONNX graphs that ONNX Runtime runs.

OUT holds the graphs (formats/onnx_graphs.py), the tokenizer's files and `onnx.json`, the manifest
the runner (inference/onnx_runner.py) reads: the kind of model, each graph's file, inputs and
outputs, the cache's shape, the token ids decoding needs. What each kind exports:

- a GPT (lmforge's, or an imported GPT-2 / Llama-family model, sliding-window layers included):
  model.onnx, the decoder with past keys/values;
- an encoder (BERT), a classifier, a question-answering span model: model.onnx, the hidden states,
  class logits, or answer start/end logits;
- an encoder-decoder (lmforge's translation model, Marian): encoder_model.onnx (the memory and the
  cross-attention keys/values) and decoder_model.onnx (the decoder with past keys/values).

Graphs come from torch.onnx's exporter (torch.export, `dynamo=True`) with the batch and sequence
axes dynamic; every graph is then run once in ONNX Runtime on inputs of another batch and length
than it was traced with, and the export fails unless its outputs agree with PyTorch's within 1e-4
(fp32). The figure is kept in onnx.json. Weights are exported in fp32. OUT is written as `export`
writes an HF directory: atomically, into a new or empty folder or over an earlier ONNX export.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import stop_ids
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.formats.onnx_graphs import (
    ClassifierGraph,
    DecoderGraph,
    EncoderGraph,
    GraphIO,
    Seq2SeqDecoderGraph,
    Seq2SeqEncoderGraph,
    SpanGraph,
)
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.kinds import describe
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.outputs import describe_foreign, foreign_entries, staged_folder

FORMAT = "lmforge-onnx"
MANIFEST = "onnx.json"
# |ONNX - PyTorch| accepted on an output, fp32: TOLERANCE x (1 + the output's largest |value|).
# Rounding differences grow with the activations' scale, not with each element's value: a real
# model's logits reach ~30 and differ by up to ~1.3e-3, near-zero ones included (SmolLM2-135M); a
# random model's reach ~1 and differ by ~1e-6
TOLERANCE = 1e-4
_TOKENIZER_FILES = {"tokenizer.json", "source.spm", "target.spm", "vocab.json", "tokenizer_config.json"}


def export_onnx(model_path: str | Path, out: str | Path) -> Path:
    """`lmforge export --format onnx`: write a run, checkpoint or model directory (lmforge's, or an
    imported Hugging Face one) as ONNX graphs + tokenizer + onnx.json, checked in ONNX Runtime
    against PyTorch before anything is written (see docs/onnx.md)."""
    _require_onnx()
    source = resolve_model_dir(model_path)
    model, tokenizer = load_model(model_path)
    kind = model_kind(model, model_path)
    model = model.float().eval()
    for p in model.parameters():  # traced with autograd on: nn.Linear's own forward (layers.linear)
        p.requires_grad_(False)
    with staged_folder(out, inputs=[source], owner=_earlier_export, overwrite=None, verb="export") as tmp:
        graphs = _export_graphs(model, kind, tmp)
        tokenizer.save_dir(tmp)
        manifest = {
            "format": FORMAT,
            "kind": kind,
            "source": str(Path(source).resolve()),
            **graphs,
            **_ids(model, tokenizer, source),
        }
        manifest["versions"] = {"torch": torch.__version__, **_onnx_versions()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return Path(out)


def model_kind(model: nn.Module, where: str | Path) -> str:
    """The manifest's kind for a model, or a one-line error for one that has no ONNX graph."""
    kinds = [
        (SpanModel, "question-answering"),
        (Classifier, "classifier"),
        (Encoder, "encoder"),
        (Seq2Seq, "seq2seq"),
        (GPT, "decoder"),
    ]
    rope = getattr(getattr(model, "config", None), "rope_type", "")
    if rope in ("longrope", "dynamic"):  # traced on one table
        raise LmforgeError(
            f"{where}: the ONNX export does not cover model.rope_type={rope!r} (its rotary angles"
            " change past the original context); run the model in PyTorch (generate, serve) instead"
        )
    for cls, kind in kinds:
        if isinstance(model, cls):
            return kind
    names = "decoder (GPT), encoder, classifier, question-answering and encoder-decoder"
    raise LmforgeError(f"{where}: {describe(model)} has no ONNX export (covered: {names} models)")


def _export_graphs(model: nn.Module, kind: str, out: Path) -> dict[str, Any]:
    """Export and check each graph of the model into `out`; the manifest's graph entries."""
    c = model.config
    cache = {"n_layer": c.n_layer, "n_kv_head": c.n_kv_head or c.n_head, "head_size": c.head_size()}
    info: dict[str, Any] = {"block_size": c.block_size, "vocab_size": c.vocab_size}
    if kind == "seq2seq":
        assert isinstance(model, Seq2Seq)
        cache["n_kv_head"] = c.n_head  # the decoder's cache keeps every head (model/seq2seq.py)
        enc, dec = Seq2SeqEncoderGraph(model), Seq2SeqDecoderGraph(model)
        graphs = {
            "encoder": _export_one(enc, _seq2seq_encoder_inputs, out / "encoder_model.onnx"),
            "decoder": _export_one(dec, _seq2seq_decoder_inputs, out / "decoder_model.onnx"),
        }
        return {**info, "cache": cache, "graphs": graphs}
    if kind == "decoder":
        assert isinstance(model, GPT)
        graph: dict[str, Any] = _export_one(DecoderGraph(model), _decoder_inputs, out / "model.onnx")
        return {**info, "cache": cache, "graphs": {"model": graph}}
    wrapper = {"encoder": EncoderGraph, "classifier": ClassifierGraph, "question-answering": SpanGraph}[kind]
    graph = _export_one(wrapper(model), _encoder_inputs, out / "model.onnx")  # type: ignore[arg-type]
    if isinstance(model, Classifier):
        # how the logits become scores (transformers' function_to_apply): a multi-label or reward head's
        # is a sigmoid, a regression's none, a softmax otherwise (model/classifier.py)
        info.update(labels=model.labels, pooling=model.pooling, function_to_apply=model.function)
    return {**info, "graphs": {"model": graph}}


Inputs = tuple[Any, ...]


def _fit(t: int, longest: int) -> int:
    """The example length t, or less where the model's context holds fewer positions (an imported
    Mistral with an 8-token sliding window): past and new positions must fit in it."""
    return max(1, min(t, longest))


def _decoder_inputs(graph: DecoderGraph, b: int, t: int) -> Inputs:
    """(input_ids (B, T), attention_mask (B, P+T), past) with P = t as well: a prompt after a prefix."""
    c = graph.gpt.config
    n_kv, hs = c.n_kv_head or c.n_head, c.head_size()
    t = _fit(t, c.block_size // 2)
    ids = torch.randint(0, c.vocab_size, (b, t))
    mask = torch.ones(b, 2 * t, dtype=torch.long)
    mask[0, : min(2, t)] = 0  # row 0 left-padded: the mask must reach the graph as a real input
    past = [torch.randn(b, n_kv, t, hs) for _ in range(2 * c.n_layer)]
    return ids, mask, past


def _encoder_inputs(graph: nn.Module, b: int, t: int) -> Inputs:
    c = _config_of(graph)
    t = _fit(t, c.block_size)
    ids = torch.randint(0, c.vocab_size, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, -2:] = 0  # row 0 right-padded
    n_inputs = len(graph.io().inputs)  # type: ignore[operator]
    types = (torch.arange(t)[None, :] >= t // 2).long().expand(b, t).contiguous()
    return (ids, mask, types)[:n_inputs]


def _config_of(graph: nn.Module) -> Any:
    return next(m.config for m in graph.modules() if hasattr(m, "config"))


def _seq2seq_encoder_inputs(graph: Seq2SeqEncoderGraph, b: int, t: int) -> Inputs:
    c = graph.model.config
    t = _fit(t, c.block_size)
    ids = torch.randint(0, c.vocab_size, (b, t))
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, -2:] = 0
    return ids, mask


def _seq2seq_decoder_inputs(graph: Seq2SeqDecoderGraph, b: int, t: int) -> Inputs:
    """Target ids (B, T), a source of T + 1 tokens (row 0 padded), its cross keys/values, a past of T."""
    c = graph.model.config
    t = _fit(t, c.block_size // 2)  # a source of t + 1 positions, a target of 2t
    hs, s = c.n_embd // c.n_head, t + 1
    ids = torch.randint(0, c.vocab_size, (b, t))
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, -2:] = 0
    cross = [torch.randn(b, c.n_head, s, hs) for _ in range(2 * c.n_layer)]
    past = [torch.randn(b, c.n_head, t, hs) for _ in range(2 * c.n_layer)]
    return ids, mask, cross, past


def _dynamic_shapes(io: GraphIO, args: Inputs) -> tuple[Any, ...]:
    """torch.onnx's dynamic_shapes for args (lists flattened in order): {axis: name} per tensor."""
    names = iter(io.inputs)
    shapes: list[Any] = []
    for arg in args:
        if isinstance(arg, list):
            shapes.append([io.axes[next(names)] for _ in arg])
        else:
            shapes.append(io.axes[next(names)])
    return tuple(shapes)


def _export_one(graph: nn.Module, make_inputs: Any, file: Path) -> dict[str, Any]:
    """Trace `graph` at batch 2 x length 3, write it to `file`, check it in ONNX Runtime at batch 3
    x length 5 against PyTorch (lengths capped at a small model's context: make_inputs); the
    manifest entry (file, inputs, outputs, the largest difference)."""
    io: GraphIO = graph.io()  # type: ignore[operator]
    with torch.random.fork_rng():  # the example inputs leave the caller's random state alone
        torch.manual_seed(0)
        args, check = make_inputs(graph, 2, 3), make_inputs(graph, 3, 5)
    quiet = logging.getLogger("torch.onnx")  # "torchvision is not installed. Skipping ..." lines
    level = quiet.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
        quiet.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                graph,
                args,
                dynamo=True,
                input_names=io.inputs,
                output_names=io.outputs,
                dynamic_shapes=_dynamic_shapes(io, args),
                verbose=False,
            )
        finally:
            quiet.setLevel(level)
    assert program is not None
    program.save(str(file), external_data=_too_big(graph))
    diff, beyond = max_difference(graph, check, file, io)
    if not beyond <= 0:
        raise LmforgeError(
            f"{file.name}: ONNX Runtime's outputs differ from PyTorch's by up to {diff:.3g}, more than"
            f" {TOLERANCE:g} x (1 + the output's largest |value|); not written"
        )
    return {"file": file.name, "inputs": io.inputs, "outputs": io.outputs, "max_abs_diff": diff}


def _too_big(graph: nn.Module) -> bool:
    """Weights past ~1.8 GB go to an external data file (a protobuf holds 2 GB at most)."""
    return sum(p.numel() * p.element_size() for p in graph.parameters()) > 1.8e9


def _flat(args: Inputs) -> list[torch.Tensor]:
    return [t for a in args for t in (a if isinstance(a, list) else [a])]


@torch.no_grad()
def beyond_tolerance(got: np.ndarray, expected: np.ndarray) -> tuple[float, float]:
    """(largest |got - expected|, how far that passes TOLERANCE x (1 + largest |expected|): <= 0
    where the output is within it)."""
    diff = float(np.abs(got - expected).max())
    return diff, diff - TOLERANCE * (1 + float(np.abs(expected).max()))


def max_difference(graph: nn.Module, args: Inputs, file: Path, io: GraphIO) -> tuple[float, float]:
    """beyond_tolerance over every output of `graph` for `args` (ONNX Runtime's against PyTorch's)."""
    import onnxruntime as ort

    expected = graph(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    feeds = {name: t.numpy() for name, t in zip(io.inputs, _flat(args), strict=True)}
    got = session.run(io.outputs, feeds)
    pairs = [beyond_tolerance(g, e.numpy()) for g, e in zip(got, expected, strict=True)]
    return max(d for d, _ in pairs), max(b for _, b in pairs)


def _ids(model: nn.Module, tokenizer: Any, source: Path) -> dict[str, Any]:
    """The token ids decoding needs, in the manifest (the runner reads no model config): a
    decoder's stop ids are every id generate stops at (generation_config.json's eos_token_id
    list: a Llama 3's or Qwen2's two; the export kept the tokenizer's EOS alone, and the ONNX
    runtime generated past the other)."""
    ids: dict[str, Any] = {
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": getattr(tokenizer, "pad_id", None),
    }
    if isinstance(model, GPT):
        ids["stop_token_ids"] = stop_ids(source, tokenizer.eos_id)
    if isinstance(model, Seq2Seq):
        ids.update(
            pad_token_id=model.pad_id,
            decoder_start_token_id=tokenizer.eos_id if model.start_id is None else model.start_id,
            suppress_tokens=list(model.suppress_ids),
        )
    return ids


def _onnx_versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise LmforgeError(
            f"ONNX export needs onnx, onnxruntime and onnxscript ({e.name} is missing):"
            " pip install onnx onnxruntime onnxscript (in a checkout of lmforge: pip install -e '.[onnx]')"
        ) from None


def _earlier_export(folder: Path) -> str | None:
    """An earlier ONNX export may be replaced: only its own files, and its onnx.json says so. An
    earlier HF export (export's too) is named as such: --format onnx does not replace it."""
    why = _not_onnx_export(folder)
    if why is not None and _holds_hf_export(folder):
        return _other_format("HF", "config.json", "onnx")
    return why


def _not_onnx_export(folder: Path) -> str | None:
    """None when `folder` holds an ONNX export (only its files, and an onnx.json that says so),
    else why not."""
    foreign = foreign_entries(
        folder, lambda n: n == MANIFEST or n in _TOKENIZER_FILES or n.endswith((".onnx", ".onnx.data"))
    )
    if foreign:
        return describe_foreign(foreign, "export")
    try:
        fmt = json.loads((folder / MANIFEST).read_text()).get("format")
    except (OSError, ValueError, AttributeError):
        fmt = None
    return None if fmt == FORMAT else f"holds files without an {MANIFEST} of an ONNX export"


def _holds_hf_export(folder: Path) -> bool:
    """Whether `folder` holds what `export --format hf` writes: a config.json of an HF model type."""
    from lmforge.formats.hf_files import is_hf_type

    try:
        return is_hf_type(json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type"))
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def held_onnx_export(folder: Path) -> str | None:
    """For `export --format hf` (formats/hf_files.py's owner check): why it does not replace an
    earlier ONNX export at its --out, or None when `folder` holds none."""
    return _other_format("ONNX", MANIFEST, "hf") if _not_onnx_export(folder) is None else None


def _other_format(held: str, file: str, wanted: str) -> str:
    return (
        f"holds an earlier {held} export ({file}), which export --format {wanted} does not replace:"
        " give another --out, or remove that folder first"
    )
