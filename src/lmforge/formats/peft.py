"""LoRA adapter directories: lmforge's own (what a LoRA run's checkpoints and model/ hold), PEFT's
export, and the merged model.

A LoRA run's checkpoint (and RUN/model) is a model directory of the task's model whose
model.safetensors holds only the trained tensors (the adapters, lora.also_train's modules), plus
`lora.json`: the [lora] settings and the base model it sits on (train.init_from's directory, as an
absolute path and relative to the adapter directory, and the sha256 of its config and weight
files). Both paths are the ones the user gave, made absolute without resolving symlinks (since
2026-12-07), so a base reached through a link (models -> ../store) is found wherever the link
points now, as `ls models/base` would find it. Everything that reads one finds that base
(`find_base`: the relative path, else the absolute one, so a project folder holding both runs can
be moved or copied) and checks its sha256 first, so adapters are never put on another model.

`export_peft` writes PEFT's layout (adapter_config.json + adapter_model.safetensors, Hugging Face
module names: base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight) for
`peft.PeftModel.from_pretrained` on the base exported with `lmforge export BASE`; lmforge's fused
qkv adapters export as q_proj / k_proj / v_proj pairs. `merge_lora` writes the task's model with
the adapters folded into its weights, as an ordinary model directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from lmforge.config import LoraConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import (
    WEIGHTS,
    load_model,
    read_json,
    resolve_model_dir,
    save_weights,
    write_safetensors,
)
from lmforge.model import lora
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT
from lmforge.outputs import MARKER, describe_foreign, foreign_entries, not_written_by, staged_folder

LORA_FILE = "lora.json"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
_BASE_FILES = re.compile(
    r"config\.json|(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?"
)
# what a checkpoint holds beside the model files: not copied into a merged model
_TRAINING_FILES = {WEIGHTS, LORA_FILE, "optimizer.safetensors", "optimizer.json", "trainer.json",
                   "rng.safetensors", "manifest.json"}  # fmt: skip


def is_adapter_dir(directory: Path) -> bool:
    return (directory / LORA_FILE).is_file()


def base_identity(init_from: str | Path) -> dict[str, Any]:
    """The base model a LoRA run trains on: its directory (absolute, its links kept: the place as
    given, not where a link pointed then) and the sha256 of its config and weights."""
    directory = Path(os.path.abspath(resolve_model_dir(init_from)))
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and _BASE_FILES.fullmatch(p.name)):
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
        files[path.name] = digest.hexdigest()
    return {"path": str(directory), "sha256": files}


def write_lora_file(directory: Path, spec: LoraConfig, base: dict[str, Any]) -> None:
    """lora.json in `directory`, which must sit at the depth of the folder it ends up in (the
    run's .NAME-tmp and checkpoints/.tmp-step_N do, beside model/ and step_N): the base's relative
    path is counted from here."""
    try:  # from the adapter directory: still right after the folder holding both moves
        relative = os.path.relpath(base["path"], os.path.abspath(directory))  # links kept, as the base's
    except ValueError:  # another drive (Windows): no relative path
        relative = None
    meta = {"lora": dataclasses.asdict(spec), "base": {**base, "relative_path": relative}}
    (directory / LORA_FILE).write_text(json.dumps(meta, indent=1) + "\n")


def read_lora_file(directory: Path) -> tuple[LoraConfig, dict[str, Any]]:
    """(the [lora] settings, the base: `path` absolute, `relative_path` from `directory` or None
    (lora.json written before 2026-12-07), `sha256`)."""
    file = directory / LORA_FILE
    raw = read_json(file, "LoRA description")
    try:
        spec = LoraConfig(**raw["lora"])
        relative = raw["base"].get("relative_path")
        if relative is not None and (not isinstance(relative, str) or not relative.strip()):
            raise LmforgeError(f"{file}: base.relative_path must be a path (text), not {relative!r}")
        base = {
            "path": str(raw["base"]["path"]),
            "relative_path": None if relative is None else str(relative),
            "sha256": dict(raw["base"]["sha256"]),
        }
    except (KeyError, TypeError, AttributeError) as e:
        raise LmforgeError(f"{file}: not a LoRA description ({type(e).__name__}: {e})") from None
    return spec, base


def base_places(directory: Path, recorded: dict[str, Any]) -> list[Path]:
    """Where the base of the adapter directory may be: its relative path from the adapter
    directory (the two moved or copied together: a copy's own base, not the original's), counted
    from the directory as given, then from its real path (lora.json written before 2026-12-07
    counted it from there, links resolved), then the absolute path lora.json records (the
    adapters moved alone)."""
    return list(_places(directory, recorded))


def _places(directory: Path, recorded: dict[str, Any]) -> dict[Path, str]:
    """base_places, each with what it is, for a message."""
    places: dict[Path, str] = {}
    if recorded.get("relative_path") is not None:
        for start in (Path(os.path.abspath(directory)), directory.resolve()):
            place = Path(os.path.normpath(start / recorded["relative_path"]))
            places.setdefault(place, f"its path from {start}")
    places.setdefault(Path(recorded["path"]), "the path it records")
    return places


def find_base(directory: Path, recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The base model of the adapter directory where it is now, as `base_identity` gives it: the
    first of `base_places` that holds the model lora.json's sha256 names. A place with another
    model is passed over for the next; where none has it, the first such place is refused."""
    if recorded is None:
        _, recorded = read_lora_file(directory)
    named = _places(directory, recorded)
    places = list(named)
    # a model directory, as recorded (an emptied or half-copied folder is no base)
    found = [base_identity(p) for p in places if (p / "config.json").is_file()]
    if not found:
        where, which = f"{places[0]} is gone", ("its place", "either place", "one of them")[len(places) - 1]
        if len(places) > 1:
            tried = [f"{place} ({what})" for place, what in named.items()]
            where = f"not at {', '.join(tried[:-1])} nor at {tried[-1]}"
        raise LmforgeError(
            f"{directory / LORA_FILE}: its base model is missing ({where}): put the base back at"
            f" {which} or link it there (ln -s WHERE_IT_IS"
            f" {places[0]}); its sha256 in {LORA_FILE} checks it is the model the adapters were trained on"
        )
    same = next((base for base in found if base["sha256"] == recorded["sha256"]), None)
    return same or check_base(directory, found[0], recorded)  # another model: refused


def check_base(
    directory: Path, base: dict[str, Any] | None = None, recorded: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Refuse an adapter directory whose base model is gone or changed (`base`: the one in use
    now, default: the one lora.json names, found and re-hashed). Returns the base in use, `path`
    where it is now."""
    if recorded is None:
        _, recorded = read_lora_file(directory)
    if base is None:
        return find_base(directory, recorded)
    if base["sha256"] != recorded["sha256"]:
        changed = sorted(set(base["sha256"].items()) ^ set(recorded["sha256"].items()))
        raise LmforgeError(
            f"{directory}: trained on the base model {recorded['path']}, but {base['path']} differs"
            f" ({changed[0][0]} sha256 is not the one recorded in {LORA_FILE}): the adapters belong to"
            " the other base"
        )
    return base


def load_adapted(model_path: str | Path) -> tuple[torch.nn.Module, Any, Path]:
    """(the task's model with its LoRA adapters in place, unmerged; tokenizer; adapter directory)
    from a LoRA run, checkpoint or model directory."""
    source = resolve_model_dir(model_path)
    if not is_adapter_dir(source):
        raise LmforgeError(f"{model_path}: not a LoRA adapter directory (no {LORA_FILE})")
    spec, recorded = read_lora_file(source)
    base = check_base(source, recorded=recorded)
    base_model, _ = load_model(base["path"])
    if isinstance(base_model, Classifier):  # every task trains on a classifier's body alone (a new head)
        base_model = base_model.backbone
    trained = load_file(str(source / WEIGHTS))
    adapters = {k: v for k, v in trained.items() if ".lora_" in k}
    prefix = _prefix(adapters, base_model)
    with tempfile.TemporaryDirectory() as tmp:  # the task's model directory, base weights and all
        for path in source.iterdir():
            if path.is_file() and path.name not in _TRAINING_FILES:
                shutil.copy2(path, tmp)
        base_state = base_model.state_dict()
        whole = {prefix + k: v for k, v in base_state.items()}
        for name, value in trained.items():  # lora.also_train's, into every name its tensor has
            if ".lora_" not in name:
                whole.update({n: value for n in _tied_names(base_state, name, prefix)})
        save_weights(Path(tmp) / WEIGHTS, whole)
        model, tokenizer = load_model(tmp)
    lora.inject(model, spec, cross=lora.saved_with_cross(adapters))
    missing, unexpected = model.load_state_dict(adapters, strict=False)
    absent = [k for k in missing if ".lora_" in k]
    if absent or unexpected:
        raise LmforgeError(
            f"{source / WEIGHTS}: adapters do not fit (missing {absent[:3]}, unexpected {unexpected[:3]})"
        )
    return model.requires_grad_(False).eval(), tokenizer, source


def _tied_names(state: dict[str, torch.Tensor], name: str, prefix: str) -> list[str]:
    """`name` and the names of the base's tensors tied to it (SmolLM2's `wte.weight` is its
    `lm_head.weight`): a trained lm_head must replace both, else loading kept the base's through
    the other name (logits 12.9 apart from the model as trained)."""
    own = state.get(name.removeprefix(prefix)) if name.startswith(prefix) else None
    if own is None:
        return [name]
    return [name, *(prefix + n for n, t in state.items() if t is not own and t.data_ptr() == own.data_ptr())]


def _prefix(adapters: dict[str, torch.Tensor], base: torch.nn.Module) -> str:
    """Where the base sits in the task's model: "" (a language model), `backbone.` (a classifier)."""
    modules = {name for name, _ in base.named_modules() if name}
    for name in adapters:
        path = name.split(".lora_")[0]
        for i in range(len(path.split("."))):
            tail = ".".join(path.split(".")[i:])
            if tail in modules:
                return path[: len(path) - len(tail)]
    raise LmforgeError("the adapters name no module of their base model")


def _owner(verb: str, files: set[str]) -> Any:
    def check(folder: Path) -> str | None:
        foreign = foreign_entries(folder, lambda n: n in files or n == MARKER)
        return describe_foreign(foreign, verb, folder) if foreign else not_written_by(folder, verb)

    return check


def merge_lora(model_path: str | Path, out: str | Path) -> Path:
    """`lmforge merge-lora`: a LoRA run's model with its adapters merged into the weights, written
    as an ordinary model directory (loads, generates and exports as any other)."""
    model, _, source = load_adapted(model_path)
    lora.strip(model)  # merged into the base weights, then plain Linears
    files = {p.name for p in source.iterdir() if p.is_file() and p.name not in _TRAINING_FILES}
    owner = _owner("merge-lora", files | {WEIGHTS})
    # the base is an input too: an earlier merge's folder, trained on again, must not be merged over
    bases = [p for p in base_places(source, read_lora_file(source)[1]) if p.exists()]
    staged = staged_folder(
        out, inputs=[source, *bases], owner=owner, overwrite=None, verb="merge-lora", mark=True
    )
    with staged as tmp:
        for name in files:
            shutil.copy2(source / name, tmp)
        save_weights(tmp / WEIGHTS, model.state_dict())
    return Path(out)


def export_peft(source: Path, out: str | Path) -> Path:
    """`lmforge export` of a LoRA run: PEFT's adapter_config.json + adapter_model.safetensors."""
    from lmforge.formats.hf import export_family
    from lmforge.formats.hf_convert import lmforge_to_hf

    spec, recorded = read_lora_file(source)
    base = check_base(source, recorded=recorded)  # where it is now: base_model_name_or_path
    if is_adapter_dir(Path(base["path"])):  # an adapter on a model that PEFT sees as another adapter
        raise LmforgeError(
            f"{source}: trained on {base['path']}, itself a LoRA run's model (its base with its own"
            " adapters merged in), which no PEFT adapter can name as its base: export the whole model"
            f" (lmforge merge-lora {source} --out MERGED, then lmforge export MERGED --out HF)"
        )
    if spec.also_train.strip():
        raise LmforgeError(f"{source}: lora.also_train={spec.also_train!r}: PEFT export covers adapters only")
    model, _, _ = load_adapted(source)
    if not isinstance(model, GPT):
        raise LmforgeError(f"{source}: PEFT export is for decoder language models ({type(model).__name__})")
    _, family = export_family(model.config, "gpt")
    try:  # the adapters sit on the base: without a transformers equivalent of it PEFT cannot load them
        family.config_out(model.config)
    except LmforgeError as e:
        raise LmforgeError(f"{source}: no PEFT export, as its base has no transformers model: {e}") from None
    tensors: dict[str, torch.Tensor] = {}
    targets: list[str] = []
    for path, module in lora.lora_modules(model).items():
        rows = torch.empty(module.out_features, 1)
        names = [
            n.removesuffix(".weight") for n in lmforge_to_hf(family, model.config, {path + ".weight": rows})
        ]
        if len(names) != len(module.slices):
            raise LmforgeError(
                f"{source}: {path} is one fused module in {family.architecture} ({names[0]}): its q, k, v"
                " adapters have no exact PEFT equivalent"
            )
        for s, name in zip(module.slices, names, strict=True):
            if s.name in module.lora_A:
                targets.append(name)
                tensors[f"base_model.model.{name}.lora_A.weight"] = module.lora_A[s.name].detach().float()
                tensors[f"base_model.model.{name}.lora_B.weight"] = module.lora_B[s.name].detach().float()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base["path"],
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "lora_dropout": spec.dropout,
        "target_modules": sorted(targets),  # full module names: PEFT matches them exactly
        "bias": "none",
        "fan_in_fan_out": bool(family.transposed),  # GPT-2's Conv1D stores weights (in, out)
        "inference_mode": True,
        "init_lora_weights": True,
        "modules_to_save": None,
        "use_rslora": False,
        "use_dora": False,
    }
    owner = _owner("export", {PEFT_CONFIG, PEFT_WEIGHTS})
    with staged_folder(out, inputs=[source], owner=owner, overwrite=None, verb="export", mark=True) as tmp:
        write_safetensors(
            {k: v.contiguous() for k, v in tensors.items()}, tmp / PEFT_WEIGHTS, {"format": "pt"}
        )
        (tmp / PEFT_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return Path(out)
