"""A user's DeepSpeed JSON (engine.deepspeed_config) beside the config lmforge writes: lmforge's
config is the one source of truth for what it sets; the JSON may add keys lmforge does not set
(bucket sizes, overlap_comm), and setting one that lmforge owns to another value is an error,
never an override. Read here, below both `train` (which hands the result to DeepSpeed) and `plan`
(which plans its bucket sizes and refuses what train would)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lmforge.config.sections import EngineConfig, TrainConfig
from lmforge.errors import LmforgeError

# lmforge's optimizer and LR schedule drive every engine (DeepSpeed's WarmupLR starts at lr 0 for
# two steps, which would make engines disagree), so these sections may not come from the user.
FORBIDDEN = ("optimizer", "scheduler", "fp16", "amp")

# The lmforge key behind each key it writes, for the error of a JSON that sets one otherwise.
OWNER = {
    "train_batch_size": "train.batch_size",
    "train_micro_batch_size_per_gpu": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.batch_size / train.micro_batch_size",
    "gradient_clipping": "train.grad_clip",
    "bf16": "train.dtype",
    "bf16.enabled": "train.dtype",
    "zero_optimization.stage": "engine.zero_stage",
    "zero_optimization.offload_optimizer": "engine.offload",
    "zero_optimization.offload_param": "engine.offload",
}


def owned(engine: EngineConfig, train: TrainConfig, batch: tuple[int, ...], bf16: bool) -> dict[str, Any]:
    """The DeepSpeed config lmforge writes for a run: batch is (global, micro per rank, accumulation)."""
    zero: dict[str, Any] = {"stage": engine.zero_stage}
    if engine.offload in ("optimizer", "all"):
        zero["offload_optimizer"] = {"device": "cpu"}
    if engine.offload == "all":
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_batch_size": batch[0],
        "train_micro_batch_size_per_gpu": batch[1],
        "gradient_accumulation_steps": batch[2],
        "gradient_clipping": float(train.grad_clip),
        "bf16": {"enabled": bf16},
        "zero_optimization": zero,
        # lmforge hands DeepSpeed a torch AdamW; offloading it is fine (DeepSpeedCPUAdam would be
        # faster, but it JIT-compiles C++ and would step differently from the other engines)
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 2**31 - 1,
    }


def with_user_json(generated: dict[str, Any], engine: EngineConfig) -> dict[str, Any]:
    """`generated` merged with engine.deepspeed_config's JSON, when there is one."""
    if not engine.deepspeed_config:
        return generated
    file = Path(engine.deepspeed_config)
    theirs = read_user_config(file)
    check_offload(file, theirs, generated["zero_optimization"])
    try:
        merged = merge(generated, theirs)
    except LmforgeError as e:  # a conflict: name the file, as read_user_config's errors do
        raise LmforgeError(f"{file}: {e}") from None
    check_zero(file, merged["zero_optimization"])  # with lmforge's stage and offload in it
    return merged


def read_user_config(file: Path, zero_stage: int | None = None) -> dict[str, Any]:
    """The JSON, checked: lmforge's own sections refused and, given the run's ZeRO stage, its
    zero_optimization through DeepSpeed's model (with_user_json checks the merged one again)."""
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise LmforgeError(f"{file}: cannot read DeepSpeed config: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{file}: invalid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{file}: not UTF-8 text (byte {e.start}); a DeepSpeed config is JSON") from None
    if not isinstance(raw, dict):
        raise LmforgeError(f"{file}: a DeepSpeed config must be a JSON object")
    for key in FORBIDDEN:
        if key in raw:
            raise LmforgeError(
                f"{file}: key {key!r} is set by lmforge's [train] section (one optimizer and schedule"
                " for every engine); remove it"
            )
    if "bfloat16" in raw:  # DeepSpeed reads bf16 first: this older spelling would be ignored
        raise LmforgeError(f"{file}: key 'bfloat16' (DeepSpeed's older bf16) is train.dtype's; remove it")
    autocast = raw.get("torch_autocast")
    # DeepSpeed autocasts when the section's `enabled` is truthy: an fp32 run trained under bf16
    # while lmforge reported fp32; only a section that leaves it off may stay
    if "torch_autocast" in raw and (not isinstance(autocast, dict) or autocast.get("enabled", False)):
        raise LmforgeError(
            f"{file}: key 'torch_autocast' (DeepSpeed's autocast) is train.dtype's: set --train.dtype and"
            " remove it"
        )
    zero = raw.get("zero_optimization")
    if zero_stage is not None and isinstance(zero, dict):  # judged at the run's stage, not stage 0's
        check_zero(file, {**zero, "stage": zero_stage})
    return raw


# DeepSpeed's deprecated spellings of the offload sections (deepspeed/runtime/zero/config.py): a
# true value offloads to the CPU. Its third, cpu_offload_use_pin_memory, sets nothing (a warning).
DEPRECATED_OFFLOAD = {"cpu_offload": "offload_optimizer", "cpu_offload_param": "offload_param"}
# the strings pydantic reads as false (DeepSpeed's model of the section is pydantic's, lax)
FALSE_STRINGS = ("0", "off", "f", "false", "n", "no")


def check_offload(file: Path, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
    """An offload lmforge does not set may not come from the JSON: lmforge reports and plans the
    offload engine.offload sets (the start line said `offload none` while DeepSpeed offloaded)."""
    zero = theirs.get("zero_optimization")
    zero = zero if isinstance(zero, dict) else {}
    for old, key in DEPRECATED_OFFLOAD.items():
        value = zero.get(old)
        on = value not in (None, False, 0) and not (isinstance(value, str) and value.lower() in FALSE_STRINGS)
        # beside lmforge's own section, any value is an error to DeepSpeed (an assertion)
        if old in zero and (on or key in ours):
            raise LmforgeError(
                f"{file}: key 'zero_optimization.{old}' (DeepSpeed's older {key}) is engine.offload's: set"
                f" --engine.offload={'optimizer' if key == 'offload_optimizer' else 'all'} (or none) and"
                " remove it"
            )
    for key in ("offload_optimizer", "offload_param"):
        section = zero.get(key)
        if key not in ours and isinstance(section, dict) and section.get("device", "none") != "none":
            raise LmforgeError(
                f"{file}: key 'zero_optimization.{key}' is engine.offload's: set --engine.offload="
                f"{'optimizer' if key == 'offload_optimizer' else 'all'} and remove it (its other"
                " settings, such as pin_memory, may stay)"
            )


def check_zero(file: Path, zero: Any) -> None:
    """The JSON's zero_optimization through DeepSpeed's own model of it (pydantic): a misspelt or
    mistyped key (`reduce_bucket_sise`, `"big"`) was a 40-line traceback from deepspeed.initialize,
    naming no file, and `plan` planned it. Skipped where DeepSpeed is not installed."""
    if not isinstance(zero, dict):
        return
    try:
        import torch

        # as the engine sets it before its import (train/engines/deepspeed.py), so it does not guess
        os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
        from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    except ImportError:
        return
    try:
        DeepSpeedZeroConfig(**zero)
    except ValueError as e:  # pydantic's ValidationError
        found = e.errors() if hasattr(e, "errors") else []
        where = ".".join(str(p) for p in found[0]["loc"]) if found else ""
        what = found[0]["msg"] if found else str(e).splitlines()[0]
        key = f"key 'zero_optimization.{where}'" if where else "'zero_optimization'"  # a rule across keys
        raise LmforgeError(f"{file}: {key}: {what} (DeepSpeed's own check)") from None


def merge(ours: dict[str, Any], theirs: dict[str, Any], path: str = "") -> dict[str, Any]:
    """Union of both; nested sections merge; a key set in both to different values is an error."""
    merged = dict(ours)
    for key, value in theirs.items():
        where = f"{path}{key}"
        if key not in ours:
            merged[key] = value
        elif isinstance(ours[key], dict) and isinstance(value, dict):
            merged[key] = merge(ours[key], value, where + ".")
        elif ours[key] != value:
            owner = OWNER.get(where) or OWNER.get(path.rstrip("."))
            said = f"conflicts with {ours[key]!r} from lmforge's config"
            if owner is None:  # one lmforge sets for itself, with no key of its own
                raise LmforgeError(
                    f"DeepSpeed config key {where!r}={value!r}: lmforge sets it to {ours[key]!r}; remove it"
                )
            raise LmforgeError(
                f"DeepSpeed config key {where!r}={value!r} {said}; set it through lmforge ({owner}) instead"
            )
    return merged


def user_json(engine: EngineConfig) -> dict[str, Any] | None:
    """The run's DeepSpeed JSON as read, for a DeepSpeed run that names one: each checkpoint keeps
    it, so a resume after the file was edited says which keys changed (the steps after differ)."""
    if engine.name != "deepspeed" or not engine.deepspeed_config:
        return None
    return read_user_config(Path(engine.deepspeed_config))


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two JSON objects (added and removed included)."""
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b or (key in old) != (key in new):
            keys.append(prefix + key)
    return keys
