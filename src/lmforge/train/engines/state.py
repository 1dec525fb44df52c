"""The engine-neutral training state every engine writes and reads, so a checkpoint made by any
engine at any world size resumes on any other:

  model.safetensors      full fp32 weights by parameter name (also what a model directory holds)
  optimizer.safetensors  AdamW moments by parameter name: `<name>.exp_avg`, `<name>.exp_avg_sq`,
                         and the shared step count `step`
  optimizer.json         the LR scheduler's state

Rank 0 gathers and writes the full state, and every rank reads it whole: simple and exact, and
bounded by one host's RAM (sharded checkpoints for bigger models are future work).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from lmforge.errors import LmforgeError
from lmforge.formats.directory import WEIGHTS, save_weights, write_safetensors
from lmforge.train.checkpoint_checks import check_scheduler, check_shapes

OPTIMIZER = "optimizer.safetensors"
SCHEDULER = "optimizer.json"
MOMENTS = ("exp_avg", "exp_avg_sq")


def write_state(
    directory: Path,
    weights: dict[str, torch.Tensor],
    moments: dict[str, dict[str, torch.Tensor]],
    step: float,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """weights: name -> tensor; moments: name -> {exp_avg, exp_avg_sq}; step: AdamW's step count."""
    save_weights(directory / WEIGHTS, {k: v.float() for k, v in weights.items()})
    flat = {f"{name}.{key}": m[key].float().contiguous() for name, m in moments.items() for key in MOMENTS}
    flat["step"] = torch.tensor(float(step))
    write_safetensors(flat, directory / OPTIMIZER)
    (directory / SCHEDULER).write_text(json.dumps({"scheduler": scheduler.state_dict()}) + "\n")


def read_state(
    directory: Path, model: torch.nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]], float]:
    """(weights, moments by parameter name, step) as written by write_state; with `model`, each
    tensor's shape is checked against its parameter's (a one-line error naming the file and key)."""
    for name in (WEIGHTS, OPTIMIZER, SCHEDULER):
        if not (directory / name).is_file():
            raise LmforgeError(f"{directory}: checkpoint lacks {name}")
    weights = load_file(str(directory / WEIGHTS))
    flat = load_file(str(directory / OPTIMIZER))
    step_tensor = flat.pop("step", None)
    if step_tensor is None or step_tensor.numel() != 1:
        raise LmforgeError(
            f"{directory / OPTIMIZER}: has no scalar 'step' (AdamW's step count): the checkpoint is damaged"
        )
    step = float(step_tensor)
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in flat.items():
        name, _, moment = key.rpartition(".")
        moments.setdefault(name, {})[moment] = tensor
    if model is not None:
        shapes = {
            name: tuple(getattr(p, "ds_shape", p.shape))  # ZeRO-3 partitions keep the full shape there
            for name, p in model.named_parameters(remove_duplicate=False)
        }
        check_shapes(directory, weights, moments, shapes)
    return weights, moments, step


def restore_scheduler(directory: Path, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """Load the scheduler and put its current LR into the optimizer's groups (load_state_dict alone
    leaves the optimizer at the LR it was built with)."""
    file = directory / SCHEDULER
    try:
        raw = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LmforgeError(f"{file}: unreadable LR schedule state: {e}") from None
    state: dict[str, Any] = check_scheduler(file, raw, len(scheduler.optimizer.param_groups))
    scheduler.load_state_dict(state)
    for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr


def first_names(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A full state dict with each tied tensor under its first name only: FSDP2 gathers a tied
    parameter once per name, as two tensors that save_weights cannot tell are one, so its files
    held lm_head.weight beside wte.weight where every other engine's hold wte.weight alone."""
    aliases = alias_map(model)
    return {name: t for name, t in weights.items() if aliases.get(name, name) == name}


def alias_map(model: torch.nn.Module) -> dict[str, str]:
    """Every parameter name -> the first name of the same tensor (tied embeddings share one)."""
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        aliases[name] = first.setdefault(id(param), name)
    return aliases
