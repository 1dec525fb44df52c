"""Hugging Face model directories: read one as an lmforge model (`load_hf_dir`, `import_hf`); writing
one is formats/hf_export.py's (`export_hf`), with this module's owner check of `--out`.

Weights come from model.safetensors (sharded or not), or pytorch_model.bin through
torch.load(weights_only=True): nothing is ever unpickled, and a shard index may only name files
inside the model folder. A damaged file is a one-line error naming it. The tokenizer comes from
tokenizer.json, or GPT-2's vocab.json + merges.txt, or BERT's vocab.txt, or Marian's source.spm +
target.spm + vocab.json (formats/hf_tokenizers.py). Task heads on an encoder (a sequence
classifier, a span model) are formats/hf_heads.py's, a decoder's sequence classifier
formats/hf_decoder_heads.py's. A Marian model is a Seq2Seq that starts decoding from the
pad token and never generates it (HF: decoder_start_token_id = pad, bad_words_ids = [[pad]]).

`export_hf` and `import_hf` write their `--out` atomically (lmforge/outputs.py) into a new or empty
folder, or over an earlier output of the same verb: a folder holding nothing but a model's files
(config.json, weights, shard indexes, tokenizer, chat template and generation files, an
additional_chat_templates/ folder of .jinja files) whose config.json names a
model type that verb writes (export: an HF type; import: an lmforge type) and whose marker
(outputs.MARKER) names the verb. The whole folder is replaced, so no stale shard or index of the
old model survives; anything else is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from lmforge.config import model_config_from
from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import (
    TOKENIZER_CONFIG,
    copy_chat_files,
    is_templates_folder,
    named_special_tokens,
)
from lmforge.formats.directory import (
    LOADERS,
    PEFT_ADAPTER,
    check_named,
    read_config_json,
    read_json,
    resolve_model_dir,
    write_model_dir,
)
from lmforge.formats.hf import FAMILIES, family_for
from lmforge.formats.hf_convert import hf_to_lmforge
from lmforge.formats.hf_decoder_heads import wants_score_head, with_score_head
from lmforge.formats.hf_heads import with_head
from lmforge.formats.hf_qa import QA_TYPE
from lmforge.formats.hf_tokenizers import load_hf_tokenizer, tokenizer_sides
from lmforge.formats.lmforge_dirs import (
    ENCODER_TYPE,
    checked_early_stopping,
    checked_length_penalty,
    checked_num_beams,
    checked_repeats,
    save_classifier,
)
from lmforge.formats.seq2seq_generation import decoding_source, note_unapplied
from lmforge.model.classifier import Classifier
from lmforge.model.empty import empty
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.outputs import MARKER, describe_foreign, foreign_entries, not_written_by, staged_folder
from lmforge.tokenization.marian import MarianTokenizer
from lmforge.tokenization.tokenizer import Tokenizer


def read_config(directory: Path) -> dict[str, Any]:
    return read_config_json(directory)


def _shard_path(directory: Path, index: Path, name: Any) -> Path:
    """A shard named by an index, which must be a relative path inside the model folder (checked
    by name: HF's cache links files to blobs elsewhere, so links are followed)."""
    if not isinstance(name, str) or not name or os.path.isabs(name) or ".." in Path(name).parts:
        raise LmforgeError(f"{index}: shard name {name!r} lies outside the model folder {directory}")
    file = directory / name
    if not file.is_file():
        raise LmforgeError(f"{file}: shard listed in {index.name} is missing")
    return file


def _load_safetensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors' SafetensorError and OSError: truncated or not safetensors
        raise _unreadable(file, e) from None


def _unreadable(file: Path, e: Exception) -> LmforgeError:
    return LmforgeError(f"{file}: unreadable safetensors file ({str(e).splitlines()[0]})")


def _load_bin(file: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise LmforgeError(
            f"{file}: not a plain state dict of tensors ({type(e).__name__}); lmforge never unpickles"
            " other objects"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LmforgeError(f"{file}: not a state dict of tensors")
    return state


def weight_files(directory: Path) -> tuple[list[Path], Callable[[Path], dict[str, torch.Tensor]], str]:
    """(the files holding a model directory's weights, their reader, the label errors name): an
    index's shards, else model.safetensors (lmforge's own directories too), else pytorch_model.bin."""
    readers: tuple[tuple[str, Callable[[Path], dict[str, torch.Tensor]]], ...] = (
        ("model.safetensors.index.json", _load_safetensors),
        ("pytorch_model.bin.index.json", _load_bin),
    )
    for index_name, reader in readers:
        index = directory / index_name
        if index.is_file():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise LmforgeError(f"{index}: 'weight_map' must map tensor names to shard file names")
            shards = [_shard_path(directory, index, shard) for shard in sorted(set(weight_map.values()))]
            return shards, reader, str(index)
    for name, reader in (("model.safetensors", _load_safetensors), ("pytorch_model.bin", _load_bin)):
        if (directory / name).is_file():
            return [directory / name], reader, str(directory / name)
    raise LmforgeError(f"{directory}: no weights (model.safetensors, an index's shards or pytorch_model.bin)")


def read_hf_weights(directory: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(HF name -> tensor, file label) from safetensors (single or sharded) or a .bin state dict."""
    files, reader, label = weight_files(directory)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        state.update(reader(file))
    return state, label


def check_weight_files(directory: Path) -> None:
    """Refuse a model directory whose weights are missing or cut short, as loading it would, but
    reading only each safetensors file's header, which safetensors checks against the file's
    length (`plan`, which needs only config.json, then refuses what train would)."""
    files, reader, _ = weight_files(directory)
    if reader is _load_safetensors:
        for file in files:
            try:
                with safe_open(str(file), "pt"):
                    pass
            except Exception as e:  # safetensors' SafetensorError: a truncated or foreign file
                raise _unreadable(file, e) from None


Model = GPT | Encoder | Seq2Seq | SpanModel | Classifier


def _seq2seq(directory: Path, raw: dict[str, Any], config: Any, file: str) -> Seq2Seq:
    """Marian's token ids: pad (source masks; also the start token), and the tokens never generated:
    pad, and any one-token bad_words_ids; and its default beam size, early_stopping,
    repetition_penalty, no_repeat_ngram_size and length_penalty (transformers' defaults, 1, False,
    1, 0 and 1, where not given): generation_config.json's, or config.json's in older uploads
    without one (formats/seq2seq_generation.py)."""
    pad = raw.get("pad_token_id")
    if not isinstance(pad, int):
        raise LmforgeError(f"{file}: missing config key 'pad_token_id'")
    start = raw.get("decoder_start_token_id", pad)
    source, named = decoding_source(directory, raw, file)
    bad = source.get("bad_words_ids")
    suppress = [pad] + [w[0] for w in bad or [] if isinstance(w, list) and len(w) == 1 and w[0] != pad]
    beams = checked_num_beams(source.get("num_beams", 1), named)
    stopping = checked_early_stopping(source.get("early_stopping", False), named)
    decoding = (*checked_repeats(source, named), checked_length_penalty(source, named))
    start = start if isinstance(start, int) else pad
    return empty(lambda: Seq2Seq(config, pad, start, suppress, beams, stopping, *decoding))


def convert_hf(directory: str | Path) -> tuple[Model, Tokenizer | MarianTokenizer]:
    """An HF directory as an lmforge model (eval mode, fp32) and tokenizer."""
    directory = Path(directory)
    raw = read_config(directory)
    file = str(directory / "config.json")
    family = family_for(raw.get("model_type"), file)
    # type-checked and validated as lmforge's own config.json is (a string n_layer, 0 heads, ...)
    config = model_config_from(dataclasses.asdict(family.config_in(raw, file)), file)
    model: Model
    if family.kind == "seq2seq":
        model = _seq2seq(directory, raw, config, file)
    else:
        model = empty(lambda: GPT(config) if family.kind == "gpt" else Encoder(config))
    hf, weights_file = read_hf_weights(directory)
    wanted = model.state_dict()
    scored = isinstance(model, GPT) and wants_score_head(raw)
    if scored and "lm_head.weight" not in hf:  # a decoder classifier has no language-model head
        wanted = {k: v for k, v in wanted.items() if not k.startswith("lm_head.")}
    state, unused = hf_to_lmforge(family, config, hf, wanted, weights_file)
    model.load_state_dict(state, strict=False)  # only tied lm_head / absent optional modules remain
    with torch.no_grad():  # an absent optional module (DistilBERT's, RoBERTa's pooler): zeros, not a
        for name, tensor in model.state_dict().items():  # random init, so an import's bytes are the same
            untied_head = scored and name.startswith("lm_head.") and not config.tie_embeddings
            if name not in state and (name.split(".")[0] in family.optional or untied_head):
                tensor.zero_()  # (a decoder classifier's untied lm_head: never read)
    if isinstance(model, Encoder):  # ...ForSequenceClassification, ...ForQuestionAnswering
        model, unused = with_head(model, raw, hf, unused, (file, weights_file))
    elif scored:  # GPT2/Llama/Mistral/Qwen2ForSequenceClassification
        model, unused = with_score_head(model, raw, hf, unused, (file, weights_file))
    if unused:
        print(
            f"lmforge: note: {weights_file}: {len(unused)} tensors outside the {family.architecture} body"
            f" not loaded (e.g. {unused[0]!r})",
            file=sys.stderr,
        )
    tokenizer = load_hf_tokenizer(directory, raw, config.vocab_size)
    if isinstance(model, Seq2Seq):  # the decoding keys transformers applies and lmforge does not
        note_unapplied(directory, raw, file, model, tokenizer.eos_id)
    return model.float().eval(), tokenizer


def load_hf_dir(directory: Path) -> tuple[Model, Tokenizer | MarianTokenizer]:
    """The LOADERS entry for HF model types (see model/directory.py)."""
    return convert_hf(directory)


# The files of a model directory, HF's or lmforge's: what export and import may replace.
MODEL_FILES = {
    "config.json",
    "chat_template.jinja",
    "generation_config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "source.spm",
    "target.spm",
}
_WEIGHT_SHARD = re.compile(r"(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)")


def earlier_output(verb: str, hf: bool) -> Callable[[Path], str | None]:
    """The owner check of export (`hf`: HF model types) or import (lmforge's): see the module doc."""

    def check(folder: Path) -> str | None:
        foreign = foreign_entries(
            folder, lambda n: n in MODEL_FILES or n == MARKER or bool(_WEIGHT_SHARD.fullmatch(n))
        )
        foreign = [n for n in foreign if not is_templates_folder(folder / n)]  # named chat templates
        if foreign and hf:  # an earlier `export --format onnx` is named as such, not file by file
            from lmforge.formats.onnx_export import held_onnx_export

            held = held_onnx_export(folder)
            if held:
                return held
        if foreign:
            return describe_foreign(foreign, verb, folder)
        try:
            model_type = json.loads((folder / "config.json").read_text()).get("model_type")
        except (OSError, ValueError, AttributeError):
            return f"holds model files without a readable config.json, so not an earlier {verb}"
        if model_type not in LOADERS or is_hf_type(model_type) != hf:
            return f"holds a model (model_type {model_type!r}) that {verb} did not write"
        return not_written_by(folder, verb)

    return check


def import_hf(hf_dir: str | Path, out: str | Path, base: str | Path | None = None) -> Path:
    """`lmforge import`: convert an HF directory, or a GGUF file (formats/gguf.py), into an lmforge
    model directory, with its chat template and generation defaults (see the module doc for what
    may already be at `out`). A PEFT LoRA adapter folder is merged into `base` (default: the
    adapter's base_model_name_or_path where that is a folder here) first (formats/peft_import.py)."""
    check_named(hf_dir)
    owner = earlier_output("import", hf=False)
    if not Path(hf_dir).exists() and Path(hf_dir).suffix != ".gguf":  # gguf.py names a missing .gguf
        raise LmforgeError(f"{hf_dir}: no such file or folder (an HF model folder or a .gguf file)")
    from lmforge.formats.peft_import import is_peft_adapter, merged_folder

    folder = Path(hf_dir)
    named = [] if (folder / "config.json").exists() else sorted(folder.glob(f"*/{PEFT_ADAPTER}"))
    if named and not is_peft_adapter(folder):  # peft saves an adapter named other than default there
        raise LmforgeError(
            f"{hf_dir}: holds named PEFT adapters in folders of their own"
            f" ({', '.join(sorted(d.parent.name for d in named))}): give one, e.g. {named[0].parent}"
        )
    if is_peft_adapter(folder):
        with tempfile.TemporaryDirectory(prefix="lmforge-peft-") as tmp:
            merged, used = merged_folder(folder, base, Path(tmp))
            return _import_folder(merged, out, owner, [hf_dir, used])
    if base is not None:
        raise LmforgeError(
            f"--base {base}: is for a PEFT adapter folder, and {hf_dir} holds none ({PEFT_ADAPTER})"
        )
    if Path(hf_dir).is_file() or Path(hf_dir).suffix == ".gguf":  # llama.cpp's single-file model
        from lmforge.formats.gguf import import_gguf

        return import_gguf(hf_dir, out, owner)
    return _import_folder(Path(hf_dir), out, owner, [hf_dir])


def _import_folder(
    hf_dir: Path, out: str | Path, owner: Callable[[Path], str | None], inputs: list[Any]
) -> Path:
    model, tokenizer = convert_hf(hf_dir)
    model_type = (
        QA_TYPE if isinstance(model, SpanModel) else ENCODER_TYPE if isinstance(model, Encoder) else None
    )
    extra = model.decoding_extra() if isinstance(model, Seq2Seq) else None
    ids = {} if isinstance(model, Seq2Seq) else source_special_ids(Path(hf_dir), tokenizer)
    bos = ids.get("bos_token_id")
    if isinstance(model, GPT):  # its own BOS and padding (a chat template's bos_token), kept for export
        extra = ids
    elif isinstance(model, Encoder | SpanModel) and bos is not None:
        extra = {"bos_token_id": bos}  # RoBERTa's <s> (until 2026-12-07 the export named its EOS, </s>)
    with staged_folder(out, inputs=inputs, owner=owner, overwrite=None, verb="import", mark=True) as tmp:
        if isinstance(model, Classifier):  # an HF ...ForSequenceClassification (formats/hf_heads.py)
            save_classifier(model, tmp, tokenizer, bos)
        else:
            write_model_dir(tmp, model.config, model.state_dict(), tokenizer, model_type, extra)
        copy_chat_files(Path(hf_dir), tmp)
        sides = tokenizer_sides(Path(hf_dir))  # checked before anything is written
        if sides and not (tmp / TOKENIZER_CONFIG).exists():  # Marian's own copy holds them already
            (tmp / TOKENIZER_CONFIG).write_text(json.dumps(sides, indent=2) + "\n")
        if isinstance(model, Encoder):
            copy_sentence_files(Path(hf_dir), tmp)
    return Path(out)


def copy_sentence_files(source: Path, out: Path) -> None:
    """A sentence-transformers folder's own files, which say how its embeddings are made (the
    length texts are cut to, the pooling): all-MiniLM-L6-v2 imported without them cut texts at
    512 tokens, not its 256, and embedded long texts otherwise (inference/embeddings.py)."""
    names = ["sentence_bert_config.json", "modules.json"]
    try:
        modules = json.loads((source / "modules.json").read_text())
    except (OSError, ValueError):
        modules = []
    for module in modules if isinstance(modules, list) else []:
        folder = module.get("path") if isinstance(module, dict) else None
        if isinstance(folder, str) and folder and "/" not in folder and ".." not in folder:
            names.append(f"{folder}/config.json")
    for name in names:
        if (source / name).is_file():
            (out / name).parent.mkdir(exist_ok=True)
            shutil.copy2(source / name, out / name)


def source_special_ids(directory: Path, tokenizer: Tokenizer) -> dict[str, int]:
    """An HF decoder's BOS and padding ids: config.json's, else the tokens tokenizer_config.json or
    special_tokens_map.json names (a Llama 3's pad_token with pad_token_id null)."""
    raw = read_json(directory / "config.json", "model config")
    named = named_special_tokens(directory)
    ids = {}
    for key in ("bos", "pad"):
        value = raw.get(f"{key}_token_id")
        token = named.get(f"{key}_token")
        if not isinstance(value, int) and token is not None:
            value = tokenizer.hf.token_to_id(token)
        if isinstance(value, int) and not isinstance(value, bool):
            ids[f"{key}_token_id"] = value
    return ids


def model_special_ids(path: str | Path, tokenizer: Tokenizer) -> dict[str, int]:
    """The BOS and padding ids of a model (run, checkpoint, lmforge or HF directory): an HF
    directory's (source_special_ids), else those its config.json keeps (an import keeps its
    source's; lmforge's own models keep none)."""
    directory = resolve_model_dir(path)
    raw = read_config_json(directory)
    if is_hf_type(raw.get("model_type")):
        return source_special_ids(directory, tokenizer)
    keys = ("bos_token_id", "pad_token_id")
    return {k: v for k in keys if isinstance(v := raw.get(k), int) and not isinstance(v, bool)}


def is_hf_type(model_type: Any) -> bool:
    return model_type in FAMILIES
