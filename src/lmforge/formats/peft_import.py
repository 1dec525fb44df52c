"""PEFT LoRA adapters in: `lmforge import ADAPTER --base BASE --out DIR` merges an adapter trained
with peft (adapter_config.json + adapter_model.safetensors or .bin) into its base model and writes
the result as any import does.

Each adapted weight becomes W + scale * B A (transposed for GPT-2's Conv1D layers and for
embeddings, as PEFT's get_delta_weight), scale = lora_alpha / r, or lora_alpha / sqrt(r) with
`use_rslora`; r is the adapter's own (its A's rows: `rank_pattern` included) and alpha follows
`alpha_pattern` by PEFT's match rule. Tensors saved whole (`modules_to_save`, `bias="all"`)
replace the base's. The merge runs in Hugging Face's tensor names, where PEFT's keys live, so it
serves every family `import` reads; a base given as an lmforge model directory is exported to
them first. It is done by hand, not with peft's merge_and_unload: that builds the base in
transformers (a second copy of the model in memory, transformers at run time) for what is one
matrix product per module. What PEFT can hold and a plain merge cannot reproduce (DoRA, lora_bias,
other adapter types, trainable tokens) is refused in one line.
"""

from __future__ import annotations

import math
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import PEFT_ADAPTER, read_json, resolve_model_dir, write_safetensors
from lmforge.formats.peft import LORA_FILE, base_places, read_lora_file
from lmforge.formats.peft_checks import check_layers, check_named_base, check_task

PEFT_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
CONV1D = {"gpt2": ("c_attn", "c_proj", "c_fc")}  # transformers' Conv1D layers, by model type
_PREFIX = "base_model.model."
_LORA = re.compile(r"(?P<module>.+)\.(?P<part>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(\.weight)?")
# what an HF model folder holds beside its weights: copied into the merged folder
_NOT_COPIED = re.compile(
    r"(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?|adapter_.*|\.lmforge.*"
)


def is_peft_adapter(directory: Path) -> bool:
    return (directory / PEFT_ADAPTER).is_file()


def read_adapter(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """(adapter_config.json, its tensors, the weights file), checked for what a merge can do."""
    from lmforge.formats.hf_files import _load_bin, _load_safetensors

    file = directory / PEFT_ADAPTER
    config = read_json(file, "PEFT adapter config")
    if not isinstance(config, dict):
        raise LmforgeError(f"{file}: not a PEFT adapter config (a JSON object)")
    kind = config.get("peft_type")
    if kind != "LORA":
        raise LmforgeError(f"{file}: peft_type {kind!r}: lmforge merges LoRA adapters only")
    for key, why in (
        ("use_dora", "DoRA rescales each merged weight by a learned magnitude"),
        ("lora_bias", "a bias on lora_B"),
        ("trainable_token_indices", "trainable tokens"),
        ("alora_invocation_tokens", "activated LoRA, applied only after its invocation tokens"),
        ("layer_replication", "layers repeated in the adapted model"),
        ("arrow_config", "Arrow routing among adapters"),
        ("target_parameters", "LoRA on parameters, not modules"),
        ("use_qalora", "QALoRA's pooled inputs"),
        ("use_bdlora", "BD-LoRA's block-diagonal factors"),
        ("kasa_config", "KaSA truncates the base weights' singular values and scales by lora_diag"),
    ):
        if config.get(key):
            raise LmforgeError(f"{file}: {key}={config[key]!r} ({why}) is not merged by lmforge")
    init = config.get("init_lora_weights")
    if isinstance(init, str) and init.lower().startswith(("pissa", "corda", "olora", "loftq", "lora_ga")):
        raise LmforgeError(
            f"{file}: init_lora_weights={init!r} changed the base weights in peft, so the adapter is"
            " relative to another base: save it with peft's path_initial_model_for_weight_conversion"
            " (a plain LoRA of the original base), then import that"
        )
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise LmforgeError(f"{file}: {key}={value!r} must be a positive number")
    for key in ("alpha_pattern", "rank_pattern"):
        _check_pattern(config.get(key), f"{file}: {key}")
    _check_selectors(config, file)
    weights = next((directory / n for n in PEFT_WEIGHTS if (directory / n).is_file()), None)
    if weights is None:
        raise LmforgeError(f"{directory}: no {' or '.join(PEFT_WEIGHTS)} beside {PEFT_ADAPTER}")
    tensors = _load_safetensors(weights) if weights.suffix == ".safetensors" else _load_bin(weights)
    return config, tensors, weights


def base_folder(adapter: Path, config: dict[str, Any], base: str | Path | None) -> Path:
    """The model the adapter is merged into: --base, else adapter_config.json's
    base_model_name_or_path where that is a folder here, else a model beside the adapter."""
    if base is not None:
        if not Path(base).is_dir():
            raise LmforgeError(f"--base {base}: no such folder (the adapter's base model: HF or lmforge)")
        return Path(base)
    named = config.get("base_model_name_or_path")
    if isinstance(named, str) and named and Path(named).is_dir():
        return Path(named)
    if (adapter / "config.json").is_file():
        return adapter
    raise LmforgeError(
        f"{adapter}: a PEFT adapter; its base_model_name_or_path {named!r} is no folder here: give the"
        " base model's folder with --base"
    )


def _find(
    name: str, names: set[str], weights: Path, tied: tuple[int, int] | None, whole: bool = False
) -> str:
    """The base tensor a PEFT name stands for: the same name, or one that differs by a leading
    module (a GPT-2 saved with or without its `transformer.`). `whole`: a tensor the adapter saved
    whole (modules_to_save: peft's classification and QA adapters save their new head so)."""
    found = [n for n in names if n == name or n.endswith("." + name) or name.endswith("." + n)]
    if len(found) != 1:
        what = "no tensor" if not found else f"{len(found)} tensors ({', '.join(sorted(found)[:3])})"
        tied_head = tied and not found and "lm_head" in name
        why = " (its output layer is the embedding: tie_word_embeddings)" if tied_head else ""
        if whole and not found and not tied_head:
            why = (": a module the adapter trains whole, such as a task head: give the base that has it"
                   " (a ...ForSequenceClassification with the same labels), not the bare body")  # fmt: skip
        raise LmforgeError(f"{weights}: {name!r} names {what} of the base model{why}")
    return found[0]


def _check_pattern(pattern: Any, where: str) -> None:
    """alpha_pattern / rank_pattern as PEFT reads them: {regex of a module's name: a positive number}
    (a list, a key that is no regex, a value of text were tracebacks at the merge)."""
    if pattern is None:
        return
    if not isinstance(pattern, dict):
        raise LmforgeError(f"{where}={pattern!r} must be an object {{module name pattern: number}}")
    for key, value in pattern.items():
        try:
            re.compile(rf"(.*\.)?({key})$")
        except re.error as e:
            raise LmforgeError(f"{where}: key {key!r} is not a regular expression ({e.msg})") from None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise LmforgeError(f"{where}: {key!r}: {value!r} must be a positive number")


def _check_selectors(config: dict[str, Any], file: Path) -> None:
    """The keys by which peft chose the adapted modules, as peft takes them: the merge follows the
    saved tensors, but a value peft would refuse means the file is not what it seems (until
    2026-12-07 a bad regex or `layers_to_transform: ["a"]` merged without a word)."""
    for key in ("target_modules", "exclude_modules"):
        value = config.get(key)
        if isinstance(value, str):  # a regex peft matches against whole module names
            try:
                re.compile(value)
            except re.error as e:
                raise LmforgeError(f"{file}: {key} {value!r} is not a regular expression ({e.msg})") from None
        elif value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise LmforgeError(f"{file}: {key}={value!r} must be a list of module names or a regex")
    layers = config.get("layers_to_transform")
    numbers = layers if isinstance(layers, list) else [layers]
    if layers is not None and not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers
    ):
        raise LmforgeError(f"{file}: layers_to_transform={layers!r} must be a layer number or a list of them")
    pattern = config.get("layers_pattern")
    names = pattern if isinstance(pattern, list) else [pattern]
    if pattern is not None and not all(isinstance(n, str) for n in names):
        raise LmforgeError(f"{file}: layers_pattern={pattern!r} must be a module name or a list of them")


def _pattern_value(pattern: Any, module: str, default: float) -> float:
    """PEFT's get_pattern_key: the first key matching the module's name as a dotted suffix."""
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return float(value)
    return default


def merge(
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    weights: Path,
    tied: tuple[int, int] | None = None,
    conv1d: tuple[str, ...] = (),
) -> int:
    """Fold the adapter into `state` (the base's HF tensors), in place. Returns modules merged.
    `tied`: the (vocab, width) of an embedding the output layer shares, where the base ties them;
    `conv1d`: the base's module names that are Conv1D (stored (in, out): their change transposed)."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    names = set(state)

    def check_untied(target: str) -> None:  # merged, one change would act on both layers
        if tied is not None and tuple(state[target].shape) == tied:
            raise LmforgeError(
                f"{weights}: the adapter changes {target!r}, which the base ties to its output layer"
                " (tie_word_embeddings): merged, it would change both, where peft changed one"
            )

    whole: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        name = key.removeprefix(_PREFIX)
        match = _LORA.fullmatch(name)
        if match:
            pairs.setdefault(match["module"], {})[match["part"]] = value
        elif "lora_" in name:  # DoRA magnitudes and other adapter parts a plain merge cannot fold in
            raise LmforgeError(f"{weights}: {key!r} is not a LoRA A or B matrix; lmforge cannot merge it")
        else:  # modules_to_save, bias="all", an adapted embedding's own (save_embedding_layers): whole
            whole[key] = value
    check_layers(config, list(pairs), state, weights)  # made on a model of another depth: refused
    for key, value in whole.items():
        name = key.removeprefix(_PREFIX)
        target = _find(name.replace(".base_layer.", "."), names, weights, tied, whole=True)
        if state[target].shape != value.shape:
            raise LmforgeError(
                f"{weights}: {key!r} is {tuple(value.shape)}, the base's {target!r}"
                f" {tuple(state[target].shape)}: the adapter belongs to another base model"
            )
        if not torch.equal(state[target], value.to(state[target].dtype)):
            check_untied(target)
            state[target] = value.to(state[target].dtype)
    for module, parts in sorted(pairs.items()):
        embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
        a, b = (parts.get("lora_embedding_A"), parts.get("lora_embedding_B")) if embedding else (
            parts.get("lora_A"), parts.get("lora_B"))  # fmt: skip
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or b.shape[1] != a.shape[0]:
            raise LmforgeError(f"{weights}: {module}'s LoRA A and B do not make a pair of matrices")
        rank = a.shape[0]
        alpha = _pattern_value(config.get("alpha_pattern"), module, float(config["lora_alpha"]))
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        delta = b.float() @ a.float() * scale  # (out, in); an embedding's (dim, vocab)
        # by the layer, not the config's fan_in_fan_out: peft sets that per layer as it meets them
        # (Conv1D on, Linear off), and the saved value is the last one's
        if embedding or module.rsplit(".", 1)[-1] in conv1d:
            delta = delta.T
        target = _find(f"{module}.weight", names, weights, tied)
        check_untied(target)
        if state[target].shape != delta.shape:
            raise LmforgeError(
                f"{weights}: {module}'s adapter makes {tuple(delta.shape)}, the base's {target!r} is"
                f" {tuple(state[target].shape)}: the adapter belongs to another base model"
            )
        state[target] = (state[target].float() + delta).to(state[target].dtype)
    return len(pairs)


def _tied(raw: dict[str, Any], file: Path) -> tuple[int, int] | None:
    """(vocab, width) of the embedding where the base ties its output layer to it, as import reads
    its config.json `raw` (formats/hf.py: each family's default where the file says nothing)."""
    from lmforge.formats.hf import family_for

    model = family_for(raw.get("model_type"), str(file)).config_in(raw, str(file))
    return (model.vocab_size, model.n_embd) if getattr(model, "tie_embeddings", False) else None


def merged_folder(adapter: Path, base: str | Path | None, tmp: Path) -> tuple[Path, Path]:
    """Write the base with the adapter merged, as an HF model folder under `tmp`.
    Returns (that folder, the base folder used)."""
    from lmforge.formats.hf_export import export_into
    from lmforge.formats.hf_files import is_hf_type, read_hf_weights

    config, tensors, weights = read_adapter(adapter)
    source = base_folder(adapter, config, base)
    if not (source / "config.json").is_file():  # a run: its model/ or newest checkpoint
        source = resolve_model_dir(source)
    if (source / LORA_FILE).is_file():  # its model is its base with its own adapters merged in
        _, trained_on = read_lora_file(source)
        here = [p for p in base_places(source, trained_on) if p.is_dir()]  # where it is now, if moved
        raise LmforgeError(
            f"{source}: a LoRA run, whose model holds its own adapters merged in (merged again, an"
            f" adapter exported from it would count twice): give the base it trained on,"
            f" {here[0] if here else trained_on['path']}"
        )
    if is_hf_type(read_json(source / "config.json", "model config").get("model_type")):
        hf = source
    else:  # an lmforge model directory: its tensors under HF's names
        hf = tmp / "base"
        hf.mkdir()
        export_into(hf, source)
    state, _ = read_hf_weights(hf)
    raw = read_json(hf / "config.json", "model config")
    check_task(config, raw, adapter / PEFT_ADAPTER)  # the import makes the model peft adapted
    unchecked = check_named_base(config, source, hf, adapter / PEFT_ADAPTER)
    conv1d = CONV1D.get(raw.get("model_type"), ())
    merged_modules = merge(state, config, tensors, weights, _tied(raw, hf / "config.json"), conv1d)
    out = tmp / "merged"
    out.mkdir()
    for path in hf.iterdir():
        if path.is_file() and not _NOT_COPIED.fullmatch(path.name):
            shutil.copy2(path, out / path.name)
    write_safetensors(
        {k: v.contiguous() for k, v in state.items()}, out / "model.safetensors", {"format": "pt"}
    )
    scale = "alpha/sqrt(r)" if config.get("use_rslora") else "alpha/r"
    print(
        f"lmforge: {adapter}: {merged_modules} LoRA modules merged into {source}"
        f" (r={config['r']}, lora_alpha={config['lora_alpha']}, scale {scale}){unchecked}",
        file=sys.stderr,
    )
    return out, source
