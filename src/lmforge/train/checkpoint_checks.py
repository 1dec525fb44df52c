"""What a resume checks in a checkpoint's contents before it uses them: trainer.json's keys and their
types, optimizer.json's scheduler, the RNG states' sizes, the weights' and moments' shapes against
the model. A checkpoint a hand edit or another version damaged (its manifest re-made, or one
without a manifest) is refused in one line naming the file and key, rather than a traceback, or a
run that loads a moment of the wrong shape and then aborts on non-finite steps."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError

# trainer.json's counters (loop.Run.state) and the type each must have
_COUNTERS: dict[str, tuple[type, ...]] = {
    "bad_streak": (int,),
    "skipped": (int,),
    "tokens": (int,),
    "first_steps_tokens": (int,),
    "best_step": (int,),
    "train_s": (int, float),
    "wall_s": (int, float),
    "first_steps_s": (int, float),
    "best_score": (int, float),
    "best_tie_loss": (int, float),
}
_LOADER_KEYS = ("seed", "epoch", "cursor")


def _is(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def _bad(file: Path, key: str, value: Any, want: str) -> LmforgeError:
    shown = repr(value) if len(repr(value)) <= 40 else f"a {type(value).__name__}"
    return LmforgeError(f"{file}: {key} is {shown}, not {want}: the checkpoint is damaged")


def check_trainer_state(file: Path, state: Any) -> dict[str, Any]:
    """trainer.json as the loop reads it (step, the loader's position, Python's RNG, the counters),
    or a one-line LmforgeError naming the key that is missing or of the wrong type."""
    if not isinstance(state, dict):
        raise LmforgeError(f"{file}: holds a JSON {type(state).__name__}, not the trainer state's object")
    for key in ("step", "loader", "python_rng"):
        if key not in state:
            raise LmforgeError(f"{file}: has no {key!r}: the checkpoint is damaged")
    if not _is(state["step"], (int,)) or state["step"] < 0:
        raise _bad(file, "step", state["step"], "a step number")
    loader = state["loader"]
    if not isinstance(loader, dict):
        raise _bad(file, "loader", loader, "the data loader's position (an object)")
    for key in _LOADER_KEYS:
        if not _is(loader.get(key), (int,)) or (key != "seed" and loader[key] < 0):
            raise _bad(file, f"loader.{key}", loader.get(key), "a whole number")
    rng = state["python_rng"]
    if not (
        isinstance(rng, list)
        and len(rng) == 3
        and _is(rng[0], (int,))
        and isinstance(rng[1], list)
        and all(_is(x, (int,)) for x in rng[1])
        and (rng[2] is None or _is(rng[2], (int, float)))
    ):
        raise _bad(file, "python_rng", rng, "Python's random state ([version, [ints], gauss])")
    for key, types in _COUNTERS.items():
        if key in state and not (_is(state[key], types)):
            raise _bad(file, key, state[key], "a number")
    window = state.get("log_window")  # the steps since the last log line: summed numbers
    if window is not None and not (
        isinstance(window, dict)
        and all(_is(window.get(k, 0), (int, float)) for k in ("loss", "steps", "s", "tokens"))
    ):
        raise _bad(file, "log_window", window, "the log window's sums ({loss, steps, s, tokens}: numbers)")
    planned = state.get("planned")
    if planned is not None and not (
        isinstance(planned, list) and len(planned) == 2 and all(_is(x, (int,)) for x in planned)
    ):
        raise _bad(file, "planned", planned, "[max_steps, warmup_steps]")
    return state


def check_scheduler(file: Path, raw: Any, groups: int) -> dict[str, Any]:
    """optimizer.json's "scheduler" (a LambdaLR's state_dict) for an optimizer of `groups` groups."""
    state = raw.get("scheduler") if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise LmforgeError(
            f"{file}: has no 'scheduler' object (the LR schedule's state): the checkpoint is damaged"
        )
    if not _is(state.get("last_epoch"), (int,)):
        raise _bad(file, "scheduler.last_epoch", state.get("last_epoch"), "a step number")
    for key in ("base_lrs", "_last_lr"):
        lrs = state.get(key)
        if (key in state or key == "base_lrs") and not (
            isinstance(lrs, list) and len(lrs) == groups and all(_is(x, (int, float)) for x in lrs)
        ):
            raise _bad(file, f"scheduler.{key}", lrs, f"{groups} learning rates")
    return state


def check_rng(file: Path, tensors: dict[str, torch.Tensor]) -> None:
    """rng.safetensors: torch's CPU state of the size this torch uses (and the CUDA one's, if any)."""
    if "torch_cpu" not in tensors:
        raise LmforgeError(f"{file}: has no 'torch_cpu' state: the checkpoint is damaged")
    wants = {"torch_cpu": torch.get_rng_state()}
    if "torch_cuda" in tensors and torch.cuda.is_available():
        wants["torch_cuda"] = torch.cuda.get_rng_state()
    n = len(tensors["torch_cpu_ranks"]) if "torch_cpu_ranks" in tensors else 0  # every rank's (rng_state.py)
    for key in ("torch_cpu_ranks", "torch_cuda_ranks"):
        if key in tensors and key.removesuffix("_ranks") in wants:
            wants[key] = wants[key.removesuffix("_ranks")].expand(n, -1)
    if "torch_cpu_ranks" in tensors:
        wants["python_ranks"] = torch.zeros(n, 627, dtype=torch.float64)  # version, 625 words, gauss
    for key, want in wants.items():
        if key not in tensors:
            raise LmforgeError(f"{file}: has no {key!r} state: the checkpoint is damaged")
        got = tensors[key]
        if got.dtype != want.dtype or got.shape != want.shape:
            raise LmforgeError(
                f"{file}: {key} is a {got.dtype} tensor of shape {tuple(got.shape)}, not the"
                f" {want.dtype} {tuple(want.shape)} this torch keeps: the checkpoint is damaged"
            )


def check_shapes(
    directory: Path,
    weights: dict[str, torch.Tensor],
    moments: dict[str, dict[str, torch.Tensor]],
    shapes: dict[str, tuple[int, ...]],
) -> None:
    """Each saved weight and AdamW moment has its parameter's shape (`shapes`, by the names the
    checkpoint uses); a moment of another shape would load and turn the first steps non-finite."""
    for name, tensor in weights.items():
        want = shapes.get(name)
        if want is not None and tuple(tensor.shape) != want:
            raise LmforgeError(
                f"{directory / 'model.safetensors'}: {name} has shape {tuple(tensor.shape)}, the"
                f" model's is {want}: the checkpoint is of another model, or damaged"
            )
    for name, saved in moments.items():
        want = shapes.get(name)  # a name the model lacks: the engine's load names it
        for key, tensor in saved.items():
            if want is not None and tuple(tensor.shape) != want:
                raise LmforgeError(
                    f"{directory / 'optimizer.safetensors'}: {name}.{key} has shape {tuple(tensor.shape)},"
                    f" the parameter's is {want}: the checkpoint is damaged"
                )


_SHA256 = re.compile(r"[0-9a-f]{64}")


def manifest_entry_problem(name: str, size: Any, digest: Any) -> str:
    """Why one manifest.json entry is malformed ("" when it is not), judged before any file is
    opened: write_manifest writes a relative POSIX path below the checkpoint (never absolute, no
    '..', '.' or empty parts), a size in bytes and a sha256 in hex."""
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        return f"names {name!r}, which is not a file inside the checkpoint (refused unopened)"
    if not _is(size, (int,)) or size < 0:
        return f"{name}'s size is {size!r}, not a number of bytes"
    if not (isinstance(digest, str) and _SHA256.fullmatch(digest)):
        return f"{name}'s sha256 is {str(digest)[:20]!r}, not 64 hex digits"
    return ""
