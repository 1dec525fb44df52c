"""Model directories: config.json + model.safetensors + tokenizer.json (the HF file layout).

Every checkpoint and every export is such a directory, so `load_model` takes either, or a run
directory (its exported `model/`, else, or when it trained on past that export, its latest
checkpoint).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lmforge.config import ModelConfig, model_config_from
from lmforge.errors import CannotWrite, LmforgeError
from lmforge.outputs import follow_umask
from lmforge.tokenization.tokenizer import Tokenizer

MODEL_TYPE = "lmforge-gpt"
SEQ2SEQ_MODEL_TYPE = "lmforge-seq2seq"
WEIGHTS = "model.safetensors"


def write_safetensors(
    tensors: dict[str, torch.Tensor], file: Path, metadata: dict[str, str] | None = None
) -> None:
    """safetensors' save_file, a failed write (a full disk) one line naming the file: safetensors
    raises its own error, not an OSError, for the I/O error under it."""
    try:
        save_file(tensors, str(file), metadata=metadata)
    except SafetensorError as e:
        if "I/O error" not in str(e):  # not the disk's: a real bug
            raise
        raise CannotWrite(f"{file}: cannot write: {str(e).split('I/O error: ')[-1]}") from None


def save_weights(file: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save a state dict; a tensor shared under several names (tied embeddings) is stored once,
    under its first name, since safetensors refuses aliases. The file gets the umask's mode, as
    the directory's other files do (safetensors makes it 0600). `metadata`: strings kept in the
    file's header (written with the weights, so never out of step with them)."""
    seen: set[tuple[int, int]] = set()
    unique = {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if key not in seen:
            seen.add(key)
            unique[name] = tensor.detach().cpu().contiguous()
    write_safetensors(unique, file, metadata)
    follow_umask(file)


def load_weights(model: torch.nn.Module, file: Path) -> None:
    """Load weights saved by `save_weights`; a missing name is fine only if it aliases a loaded one."""
    if not file.is_file():
        raise LmforgeError(f"{file}: missing (a model directory needs its weights)")
    try:
        state = load_file(str(file))
    except Exception as e:  # safetensors' SafetensorError: a truncated or foreign file
        raise LmforgeError(f"{file}: unreadable safetensors file ({str(e).splitlines()[0]})") from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that do not fit config.json (a hand-edited vocab_size, ...)
        detail = next((line.strip() for line in str(e).splitlines() if "size mismatch" in line), str(e))
        raise LmforgeError(f"{file}: does not fit {file.parent / 'config.json'} ({detail})") from None
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in state if k in params}
    missing = [k for k in missing if k not in params or params[k].data_ptr() not in loaded]
    if missing or unexpected:
        raise LmforgeError(f"{file}: does not fit the model (missing {missing}, unexpected {unexpected})")


def write_model_files(
    directory: Path,
    config: ModelConfig,
    tokenizer: Tokenizer,
    model_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """config.json and tokenizer.json: what turns a directory of weights into a model directory.
    `extra` adds config.json keys (a seq2seq model's decoder_start_token_id, suppress_tokens); a
    Marian tokenizer writes its own files (source.spm, target.spm, vocab.json) instead."""
    meta = {
        "model_type": model_type or MODEL_TYPE,
        **dataclasses.asdict(config),
        "eos_token_id": tokenizer.eos_id,
    }
    if config.arch == "seq2seq":  # the encoder-decoder also needs its padding id (source masks)
        meta.update(model_type=SEQ2SEQ_MODEL_TYPE, pad_token_id=tokenizer.pad_id)
    meta.update(extra or {})
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    tokenizer.save_dir(directory)


def write_model_dir(
    directory: Path,
    config: ModelConfig,
    state: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    model_type: str | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS, state)
    write_model_files(directory, config, tokenizer, model_type, extra)


def check_named(path: str | Path) -> None:
    """An empty path is refused, not read as the working directory: it is most often a shell
    substitution, `$(...)`, that printed nothing."""
    if not str(path).strip():
        raise LmforgeError("the model path is empty (a $(...) or variable that gave nothing?)")


PEFT_ADAPTER = "adapter_config.json"


def merge_hint(directory: Path) -> str:
    return f"merge it into its base with `lmforge import {directory} --base BASE --out OUT` and give OUT"


def refuse_peft_adapter(directory: Path) -> None:
    """A folder holding a PEFT adapter is one line: transformers applies it to the model beside it,
    and lmforge loaded that model bare, unsaid (a helper's logits 1.89 apart from transformers')."""
    if (directory / PEFT_ADAPTER).is_file():
        raise LmforgeError(
            f"{directory}: holds a PEFT adapter ({PEFT_ADAPTER}), which lmforge reads only merged:"
            f" {merge_hint(directory)}"
        )


def resolve_model_dir(path: str | Path) -> Path:
    """A model directory for `path`: itself, a run's `model/`, or a run's latest checkpoint."""
    check_named(path)
    path = Path(path)
    if (path / "config.json").is_file():  # a PEFT adapter beside it: read_config_json refuses it
        return path
    # a run's checkpoints, oldest first (zero-padded steps; step_00000040.bak is not one)
    found = sorted(p for p in (path / "checkpoints").glob("step_*") if p.name[5:].isdigit() and p.is_dir())
    if (path / "model" / "config.json").is_file():
        return _past_export(path, found) or path / "model"
    if found:  # a run still training: its newest checkpoint
        return found[-1]
    why = ""
    if not path.exists():
        why = " (no such file or folder)"
    elif path.is_file() and path.suffix.lower() == ".gguf":
        why = f" (a GGUF file: `lmforge import {path} --out DIR` makes a model directory of it)"
    elif path.is_file() and (path.parent / "config.json").is_file():
        why = f" (a file of the model directory {path.parent}: give the folder)"
    elif (path / "onnx.json").is_file():
        why = f" ({_onnx_export_hint(path)})"
    elif (path / PEFT_ADAPTER).is_file():
        hint = merge_hint(path)
        why = f" (it holds a PEFT adapter ({PEFT_ADAPTER}), which lmforge reads only merged: {hint})"
    elif is_run_folder(path):
        why = " (a run that stopped before its first checkpoint: it holds no model yet)"
    raise LmforgeError(f"{path}: not a model directory, run directory or checkpoint{why}")


_SAID: set[Path] = set()  # the checkpoints _past_export has named: one note a process, not one a loader


def _past_export(run: Path, found: list[Path]) -> Path | None:
    """The newest checkpoint, where it is past the step the run's model/ was exported at (its
    summary.json's `steps`, written after model/): a finished run resumed to train longer and
    stopped before it finished again keeps that export beside newer checkpoints, and every loader
    took it unsaid. Steps, not times: a copied run's times say nothing. None: model/ is newest (or
    no summary.json says its step: a run stopped in its final export, model/ written, is finished)."""
    try:
        steps = json.loads((run / "summary.json").read_text(encoding="utf-8")).get("steps")
    except (OSError, ValueError, AttributeError):
        return None
    if not found or not isinstance(steps, int) or int(found[-1].name[5:]) <= steps:
        return None
    if found[-1].resolve() not in _SAID:  # a command may name the run as given and as resolved
        _SAID.add(found[-1].resolve())
        print(
            f"lmforge: note: {run / 'model'} is step {steps}'s export, and the run trained on past it"
            f" (resumed, not finished): loading its newest checkpoint, {found[-1]}; give"
            f" {run / 'model'} for the export",
            file=sys.stderr,
            flush=True,
        )
    return found[-1]


def is_run_folder(path: Path) -> bool:
    """A training run's folder (train writes config.toml and metrics.jsonl first)."""
    return (path / "config.toml").is_file() and (path / "metrics.jsonl").is_file()


def model_folders(path: str | Path) -> dict[Path, bool]:
    """The folders (resolved, links followed) a model argument reads, each with whether it is a
    run's folder: the one given (a run's when it names a model directory below it), the model
    directory it names (resolve_model_dir), and the run that directory is part of (RUN/model,
    RUN/best, RUN/checkpoints/step_N), and for a LoRA run the same of its base model wherever
    lora.json may find it (formats/peft.py base_places), which loading reads and sha256-checks:
    an output written into any of them can replace an input."""
    given, found = Path(path).resolve(), resolve_model_dir(path).resolve()
    runs = [up for up in (found.parent, found.parent.parent) if is_run_folder(up)]
    folders = {found: False, given: given != found, **{run: True for run in runs[:1]}}
    if (found / "lora.json").is_file():  # peft imports this module: imported here
        from lmforge.formats.peft import base_places, read_lora_file

        for place in base_places(found, read_lora_file(found)[1]):
            if (place / "config.json").is_file() and place.resolve() not in folders:
                folders = model_folders(place) | folders  # the LoRA run's own say wins
    return folders


def onnx_runs(path: Path, kind: str) -> str:
    """What runs an ONNX export of this kind (the manifest's: decoder, seq2seq, encoder, ...)."""
    if kind == "decoder":
        return f"an ONNX export, which `lmforge generate {path} --runtime onnx` or lmforge.generate_onnx runs"
    where = "lmforge.inference.onnx_runner"
    if kind == "seq2seq":
        return f"an ONNX export of a seq2seq model, which `lmforge translate {path} --runtime onnx` runs"
    article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
    return f"an ONNX export of {article} {kind} model: {where}.OnnxModel runs it"


def _onnx_export_hint(path: Path) -> str:
    """Where an ONNX export (`lmforge export --format onnx`, formats/onnx_export.py) runs instead:
    ONNX Runtime, not the PyTorch loaders; and the model it was exported from, which they take."""
    try:
        manifest = json.loads((path / "onnx.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    kind, source = manifest.get("kind"), manifest.get("source")
    runs = onnx_runs(path, kind if isinstance(kind, str) else "decoder")
    if source:
        return f"{runs}; the other verbs and pipeline() take the model it was exported from, {source}"
    return runs


# model_type in config.json -> "module:function" taking the directory, returning (model, tokenizer).
# Other families register here (lazily imported, so a GPT load never imports them).
LOADERS: dict[str, str] = {MODEL_TYPE: "lmforge.formats.lmforge_dirs:load_gpt_dir"}
# Hugging Face directories load directly (converted in memory; see model/hf.py), as do the
# encoder and classifier directories lmforge writes.
LOADERS.update(
    {
        t: "lmforge.formats.hf_files:load_hf_dir"
        for t in ("gpt2", "llama", "mistral", "qwen2", "qwen3", "bert", "distilbert", "roberta")
    }
)
LOADERS["marian"] = LOADERS["gemma3_text"] = LOADERS["smollm3"] = LOADERS["phi3"] = (
    "lmforge.formats.hf_files:load_hf_dir"
)
LOADERS["gemma2"] = "lmforge.formats.hf_files:load_hf_dir"
LOADERS["lmforge-encoder"] = "lmforge.formats.lmforge_dirs:load_encoder_dir"
LOADERS["lmforge-classifier"] = "lmforge.formats.lmforge_dirs:load_classifier_dir"
LOADERS[SEQ2SEQ_MODEL_TYPE] = "lmforge.formats.lmforge_dirs:load_seq2seq_dir"
LOADERS["lmforge-qa"] = "lmforge.formats.hf_qa:load_qa_dir"


def read_json(file: Path, what: str = "JSON file") -> dict[str, Any]:
    """A JSON object from a model directory (config, generation config, shard index), or a one-line
    error naming the file."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmforgeError(f"{file}: unreadable {what}: {e}") from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"{file}: a {what} must be a JSON object")
    return raw


def read_config_json(directory: Path) -> dict[str, Any]:
    """A model directory's config.json as a dict, or a one-line error naming the file."""
    refuse_peft_adapter(directory)
    return read_json(directory / "config.json", "model config")


def read_model_type(directory: Path) -> str:
    model_type = read_config_json(directory).get("model_type")
    if model_type is not None and not isinstance(model_type, str):  # a list is unhashable
        raise LmforgeError(
            f"{directory / 'config.json'}: config key 'model_type' must be a string, not {model_type!r}"
        )
    if model_type not in LOADERS:
        known = ", ".join(sorted(LOADERS))
        raise LmforgeError(f"{directory / 'config.json'}: unknown model_type {model_type!r} (known: {known})")
    return model_type


def read_model_config(directory: Path, model_type: str = MODEL_TYPE) -> ModelConfig:
    file = directory / "config.json"
    raw = read_config_json(directory)
    if raw.get("model_type") != model_type:
        raise LmforgeError(f"{file}: model_type {raw.get('model_type')!r} is not {model_type!r}")
    return model_config_from(raw, file)


def load_tokenizer(directory: Path, rows: int | None = None) -> Tokenizer:
    """tokenizer.json, with the EOS id config.json records (imported models name their own EOS);
    with `rows` (the model's vocab_size), every id it gives checked to have an embedding row."""
    tokenizer = Tokenizer.load(directory / "tokenizer.json")
    eos = read_config_json(directory).get("eos_token_id")
    if isinstance(eos, int):
        tokenizer.eos_id = eos
    if rows is not None:
        check_token_ids(tokenizer, rows, directory / "tokenizer.json", directory / "config.json")
    return tokenizer


def check_token_ids(tokenizer: Tokenizer, rows: int, file: Path, config_file: Path) -> None:
    """Where the tokenizer (`file`) has ids past the model's embedding rows (tokens added beyond its
    vocab_size: an IndexError traceback at the first prompt holding one), one note, and the
    tokenizer refuses a text that gives one (Tokenizer.rows). The model still loads, as in
    transformers and vLLM: such a token (a pad added without resizing) is often never fed."""
    added = tokenizer.hf.get_added_tokens_decoder()
    if tokenizer.vocab_size <= rows and all(i < rows for i in added):  # the usual case, cheaply
        return
    past = sorted((i, t) for t, i in tokenizer.hf.get_vocab(with_added_tokens=True).items() if i >= rows)
    if past:
        shown = ", ".join(f"{i} {t!r}" for i, t in past[:4]) + (
            f", ... ({len(past)} in all)" if past[4:] else ""
        )
        tokenizer.rows = rows
        tokenizer.rows_source = f"{file}"
        print(
            f"lmforge: note: {file}: token ids past the model's {rows} embedding rows (vocab_size in"
            f" {config_file}): {shown}; a text holding one is refused",
            file=sys.stderr,
            flush=True,
        )


def load_model(path: str | Path) -> tuple[torch.nn.Module, Tokenizer]:
    """Load (model in eval mode, tokenizer) from a model, checkpoint or run directory of any
    registered family (see LOADERS); a LoRA run loads as its base with the adapters merged in."""
    directory = resolve_model_dir(path)
    if (directory / "lora.json").is_file():  # a LoRA run: its base with the adapters folded in
        from lmforge.formats.peft import load_adapted
        from lmforge.model.lora import strip

        model, tokenizer, _ = load_adapted(directory)
        return strip(model), tokenizer
    module, function = LOADERS[read_model_type(directory)].split(":")
    return getattr(importlib.import_module(module), function)(directory)
