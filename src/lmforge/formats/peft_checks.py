"""What a PEFT adapter says of the model it was made on, checked against the base it is merged
into (formats/peft_import.py), so that an adapter on the wrong model is refused in one line
rather than merged into something else with exit 0:

- `task_type`: the model peft wrapped. The import must make the same kind of model: SEQ_CLS an
  lmforge classifier (a ...ForSequenceClassification base whose head lmforge reads: BERT,
  DistilBERT, RoBERTa, and since 2026-12-06 the decoders GPT-2, Llama, Mistral, Qwen2, whose
  `score` head peft saves whole in modules_to_save), QUESTION_ANS a span model (an encoder's
  ...ForQuestionAnswering), CAUSAL_LM a decoder, SEQ_2_SEQ_LM an encoder-decoder. TOKEN_CLS is
  refused (lmforge has no token classifier), and so is a task type peft does not have. None and
  FEATURE_EXTRACTION take any base. Until 2026-12-06 a GPT2ForSequenceClassification adapter
  came in as a language model, its trained head dropped with a note; then it was refused; now it
  merges into a classifier.
- Layers: each adapter must land on a layer the base has (names and shapes: peft_import.merge),
  and each base module peft would have adapted must have one: target_modules' short names
  (peft's suffix match), and, for full names (peft saves "all-linear" so), the first k layers
  adapted of a deeper base are an adapter made on a k-layer model. A regex target_modules or
  layers_to_transform picks layers itself: then only the first check applies.
- `base_model_name_or_path`: where it is a model folder here other than --base, the two must
  agree in architecture, depth, width and vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import read_json, resolve_model_dir
from lmforge.formats.hf_heads import CLASSIFIER_HEADS, SCORE_HEADS, architecture_of, unread_head
from lmforge.formats.hf_qa import wants_span_head

# PEFT's task types -> (the family kind the base must be, what lmforge imports it as)
TASKS = {
    "CAUSAL_LM": ("gpt", "a decoder language model"),
    "SEQ_2_SEQ_LM": ("seq2seq", "an encoder-decoder"),
    "SEQ_CLS": ("encoder", "a sequence classifier"),
    "QUESTION_ANS": ("encoder", "a question-answering (span) model"),
}
KINDS = {"gpt": "a decoder language model", "encoder": "an encoder", "seq2seq": "an encoder-decoder"}


def check_task(config: dict[str, Any], raw: dict[str, Any], file: Path) -> None:
    """Refuse an adapter whose task_type is not what importing the base `raw` (its HF config.json)
    makes (see the module doc)."""
    from lmforge.formats.hf import family_for

    task = config.get("task_type")
    if task in (None, "FEATURE_EXTRACTION"):  # peft's plain PeftModel, a body: any base
        return
    arch = architecture_of(raw) or str(raw.get("model_type"))
    if task == "TOKEN_CLS":
        raise LmforgeError(
            f"{file}: task_type 'TOKEN_CLS' (a label per token, on {arch}): lmforge has no token"
            " classifier, and merged, the adapter's head would be dropped: use it with peft"
        )
    if task not in TASKS:
        raise LmforgeError(
            f"{file}: task_type {task!r} is not a PEFT task type lmforge imports ({', '.join(TASKS)})"
        )
    kind, what = TASKS[task]
    family = family_for(raw.get("model_type"), str(file))
    problem = ""
    if task == "SEQ_CLS" and raw.get("model_type") in SCORE_HEADS:  # a decoder's classifier
        kind = "gpt"
    if family.kind != kind:
        reads = (
            f" (it reads the classification heads of {', '.join((*CLASSIFIER_HEADS, *SCORE_HEADS))})"
            if task == "SEQ_CLS"
            else ""
        )
        problem = f"lmforge imports the base, {arch}, as {KINDS[family.kind]}{reads}, so the merge is not one"
    elif task == "QUESTION_ANS" and not wants_span_head(raw):
        problem = f"the base is {arch}: give the ...ForQuestionAnswering it was made on"
    elif task == "SEQ_CLS":
        problem = _classifier_problem(raw, arch)
    if problem:
        raise LmforgeError(f"{file}: task_type {task!r}: the adapter is for {what}, but {problem}")


def _classifier_problem(raw: dict[str, Any], arch: str) -> str:
    """Why importing the base `raw` makes no lmforge Classifier ("" when it does)."""
    why = unread_head(raw)
    if why:
        return f"its head is {why}, which lmforge does not read, so the merge is no classifier"
    if not arch.endswith("ForSequenceClassification"):
        return f"the base is {arch}, the bare body: give the ...ForSequenceClassification it was made on"
    return ""  # every problem_type and a head of one output are read (formats/hf_heads.py)


def _split(name: str) -> tuple[str, int, str] | None:
    """(stack, layer, rest) of a module name with a layer index: model.layers.3.mlp.up_proj ->
    ("model.layers", 3, "mlp.up_proj"); None without one."""
    parts = name.split(".")
    for i, part in enumerate(parts[1:], 1):
        if part.isdigit():
            return ".".join(parts[:i]), int(part), ".".join(parts[i + 1 :])
    return None


def _same(a: str, b: str) -> bool:
    """Names of one module in the adapter's and the base's naming (GPT-2 with or without `transformer.`)."""
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def _depths(names: Any) -> dict[str, int]:
    """Layers of each stack of the base: its tensor names' highest index + 1."""
    depths: dict[str, int] = {}
    for name in names:
        found = _split(name)
        if found:
            depths[found[0]] = max(depths.get(found[0], 0), found[1] + 1)
    return depths


def check_layers(
    config: dict[str, Any], modules: list[str], state: dict[str, torch.Tensor], weights: Path
) -> None:
    """Refuse adapters (`modules`: the adapted modules' names) made on a model of another depth
    than the base (`state`: its tensors), naming both depths; and a module of the base peft would
    have adapted that has no adapter (see the module doc)."""
    depths = _depths(state)
    layers: dict[str, set[int]] = {}
    for module in modules:
        found = _split(module)
        stack = found and next((s for s in depths if _same(found[0], s)), None)
        if found and stack:
            layers.setdefault(stack, set()).add(found[1])
    for stack, seen in sorted(layers.items()):
        if max(seen) >= depths[stack]:
            raise LmforgeError(
                f"{weights}: the adapter reaches layer {max(seen)} of {stack} (a model of at least"
                f" {max(seen) + 1} layers), the base has {depths[stack]}: it was made on another base model"
            )
    targets = config.get("target_modules")
    if config.get("layers_to_transform") is not None or not isinstance(targets, list):
        return  # peft chose the layers by the user's list or regex
    if config.get("exclude_modules"):  # a list or a regex: which modules it left out is its own
        return
    for stack, seen in sorted(layers.items()):
        if (
            seen == set(range(len(seen)))
            and len(seen) < depths[stack]
            and _whole_layers(stack, seen, modules, state)
        ):
            raise LmforgeError(
                f"{weights}: the adapter has LoRA on every linear layer of layers 0-{len(seen) - 1} of"
                f" {stack} (peft's all-linear on a {len(seen)}-layer model), the base has"
                f" {depths[stack]} layers: it was made on another base model (if it is meant for those"
                " layers alone, say so with layers_to_transform in adapter_config.json)"
            )
    skipped = [*(config.get("modules_to_save") or [])]
    for name, tensor in sorted(state.items()):
        module = name.removesuffix(".weight")
        if module == name or tensor.dim() < 2 or any(_matches(module, s) for s in skipped):
            continue
        key = next((str(t) for t in targets if "." not in str(t) and _matches(module, str(t))), None)
        if key is not None and not any(_same(m, module) for m in modules):
            raise LmforgeError(
                f"{weights}: no adapter for the base's {module!r}, which target_modules names"
                f" ({key!r}): the adapter was made on another base model"
            )


def _whole_layers(stack: str, seen: set[int], modules: list[str], state: dict[str, torch.Tensor]) -> bool:
    """Whether the adapted modules of each layer in `seen` are all of the base's matrices in that
    layer: what peft's all-linear saves (full names), not a hand-picked list of a few."""
    base: dict[int, set[str]] = {}
    for name, tensor in state.items():
        found = _split(name.removesuffix(".weight"))
        if found and found[0] == stack and name.endswith(".weight") and tensor.dim() == 2:
            base.setdefault(found[1], set()).add(found[2])
    adapted: dict[int, set[str]] = {}
    for module in modules:
        found = _split(module)
        if found and _same(found[0], stack):
            adapted.setdefault(found[1], set()).add(found[2])
    return all(adapted.get(layer) == base.get(layer) for layer in seen)


def _matches(module: str, key: str) -> bool:
    """peft's target_modules match of a name in a list: the module's name or a dotted suffix of it."""
    return module == key or module.endswith("." + key)


def _size(folder: Path) -> tuple[str | None, dict[str, int]]:
    """(HF model_type or None for an lmforge folder, {layers, width, vocabulary}) of a model folder."""
    from lmforge.formats.hf import family_for
    from lmforge.formats.hf_files import is_hf_type

    if not (folder / "config.json").is_file():  # a run: its model/ or newest checkpoint
        folder = resolve_model_dir(folder)
    file = folder / "config.json"
    raw = read_json(file, "model config")
    model_type = raw.get("model_type")
    if is_hf_type(model_type):
        model = family_for(model_type, str(file)).config_in(raw, str(file))
        body = {"n_layer": model.n_layer, "n_embd": model.n_embd, "vocab_size": model.vocab_size}
    else:  # lmforge's config.json: a classifier's body under `backbone`
        body = raw.get("backbone", raw) if isinstance(raw.get("backbone"), dict) else raw
    keys = {"layers": "n_layer", "width": "n_embd", "vocabulary": "vocab_size"}
    sizes = {
        what: body[key] for what, key in keys.items() if isinstance(body.get(key), int) and body[key] > 0
    }
    return (model_type if is_hf_type(model_type) else None), sizes


def check_named_base(config: dict[str, Any], source: Path, hf: Path, file: Path) -> str:
    """Refuse a base `source` (`hf`: it in HF's layout) that plainly differs from the adapter's
    base_model_name_or_path, where that is a model folder here. Returns a note for the merge's
    line where the name is not checked ("" where it is the base or agrees with it)."""
    named = config.get("base_model_name_or_path")
    if not isinstance(named, str) or not named or Path(named).resolve() == source.resolve():
        return ""
    if not Path(named).is_dir():
        return f"; its base_model_name_or_path {named!r} is no folder here, so not compared"
    try:
        theirs, their_sizes = _size(Path(named))
    except LmforgeError:
        return f"; its base_model_name_or_path {named} holds no model config, so not compared"
    ours, our_sizes = _size(hf)
    differ = [
        f"{what} {their_sizes[what]} vs {our_sizes[what]}"
        for what in their_sizes
        if what in our_sizes and their_sizes[what] != our_sizes[what]
    ]
    if theirs and ours and theirs != ours:
        differ.insert(0, f"model_type {theirs!r} vs {ours!r}")
    if differ:
        raise LmforgeError(
            f"{file}: base_model_name_or_path {named} is another model than --base {source}"
            f" ({', '.join(differ)}): give --base {named}, the model the adapter was made on"
        )
    return ""
