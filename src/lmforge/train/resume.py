"""What a resumed run may change (`--resume RUN --key=value`, or an edited config.toml), checked
before anything is written: docs/training.md "What may change on resume"."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.config import (
    Config,
    TrainConfig,
    as_overrides,
    config_from_text,
    joined_overrides,
    load_config,
)
from lmforge.config.files import SWITCHED
from lmforge.data.shards import is_prepared
from lmforge.errors import LmforgeError
from lmforge.formats.directory import resolve_model_dir
from lmforge.formats.peft import find_base, is_adapter_dir
from lmforge.tokenization.marian import load_translation_tokenizer
from lmforge.train import checkpoint as ckpt
from lmforge.train.run_inputs import check_resumed_inputs, ensure_data

# What a resumed run may change (`--resume RUN --key=value`): how long it trains, what it logs,
# evaluates and keeps, how it is distributed, and dropout. Everything else (the model's shape and
# architecture, the data, the tokenizer, the optimizer, the seed) is refused before anything is
# written: the checkpoint could not honour it. docs/training.md "What may change on resume".
RESUMABLE = (
    "train.max_steps",
    "train.epochs",
    "train.max_minutes",
    "train.min_lr",
    "train.log_interval",
    "train.eval_interval",
    "train.eval_batches",
    "train.eval_bleu_sentences",
    "train.checkpoint_interval",
    "train.keep_checkpoints",
    "train.max_bad_steps",
    "train.micro_batch_size",
    "train.compile",
    "model.dropout",
    "engine.*",
)
# A run with a time budget keeps the plan its checkpoint holds (loop._restore): these then stay.
BUDGET_PLANNED = ("train.max_steps", "train.max_minutes", "train.epochs")


def check_resume_target(
    config: str | Path | Config | None, out: str | Path | None, run_dir: Path, overwrite: bool
) -> None:
    """What a --resume is refused for before its run folder is locked: the options it excludes, and
    a folder that is no run (said as such, not as a lock file that could not be written there)."""
    if overwrite:
        raise LmforgeError(f"--resume {run_dir} and --overwrite exclude each other")
    if config is not None:
        given = "a Config" if isinstance(config, Config) else f"the recipe {config}"
        raise LmforgeError(
            f"--resume {run_dir} continues with the run's own config.toml; {given} would be ignored"
            " (give allowed changes as --section.key=value)"
        )
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise LmforgeError(
            f"--out {out} differs from --resume {run_dir}: a resumed run stays in its directory"
        )
    if not run_dir.exists():
        raise LmforgeError(f"--resume {run_dir}: no such directory")
    if not (run_dir / "config.toml").is_file():
        raise LmforgeError(f"{run_dir}: not a run directory (no config.toml){ckpt.replaced_hint(run_dir)}")


def resume_run(
    config: str | Path | Config | None,
    overrides: list[str] | None,
    out: str | Path | None,
    run_dir: Path,
    overwrite: bool,
) -> tuple[Path, Config]:
    check_resume_target(config, out, run_dir, overwrite)  # again: the folder may have changed since
    last = ckpt.latest_checkpoint(run_dir / "checkpoints")  # the loop's call replays what it skips
    state = ckpt.read_trainer_state(last)
    found: dict[str, str] = {}  # a moved base's place, looked for once
    saved, edited = _trained_with(run_dir, last, state, found)
    try:
        cfg = moved_base(load_config(run_dir / "config.toml", overrides), last, found)
    except LmforgeError:  # a refused change first: a rule across keys would blame one the run set
        _refuse_named(run_dir, saved, joined_overrides(as_overrides(overrides)), edited)
        raise
    refused = [
        f"{key}={new!r} (the run has {key}={old!r})"
        for key, old, new in config_changes(saved, cfg)
        if not resumable(key) and not _reset_by_switch(cfg, key)
    ]
    if refused:
        raise LmforgeError(
            f"{run_dir}: --resume cannot change {'; '.join(refused)}{edited}; see"
            " 'What may change on resume' in docs/training.md"
        )
    step = state.get("step", 0)
    if cfg.train.max_steps != saved.train.max_steps and cfg.train.max_steps <= step:
        raise LmforgeError(
            f"{run_dir}: --train.max_steps={cfg.train.max_steps} would train nothing: the run's last"
            f" checkpoint ({last.name}) is at step {step}"
        )
    planned = state.get("planned")  # [max_steps, warmup] a budget fixed
    new_run = f"start a new run from its weights instead (--init-from {run_dir})"
    if saved.privacy.enabled:  # a new run's accountant starts at zero: the start-up lines compose both
        new_run += ", whose epsilon counts its own steps (its start-up lines give both runs' composed)"
    length = [f"{k}={new!r}" for k, _, new in config_changes(saved, cfg) if k in BUDGET_PLANNED]
    if planned and length:
        raise LmforgeError(
            f"{run_dir}: --resume cannot change {', '.join(length)}: the run's time budget"
            f" (train.max_minutes={saved.train.max_minutes:g}) planned max_steps={planned[0]}, and a"
            f" resumed run keeps that plan; to train it further, {new_run}"
        )
    if _finished_at(run_dir) == step:  # a finished run resumes only to train longer
        t, more_epochs = cfg.train, cfg.train.epochs > saved.train.epochs  # epochs: steps come later
        if planned:  # a budget's run ended at its plan, below config.toml's max_steps
            longer = new_run
        elif t.epochs and not more_epochs:
            longer = f"resume with a larger --train.epochs (above {saved.train.epochs})"
        elif not t.epochs and step >= t.max_steps:
            longer = f"resume with a larger --train.max_steps (above {step})"
        else:
            longer = None
        if longer:
            raise LmforgeError(
                f"{run_dir}: the run finished at step {step} (its summary.json): nothing to resume;"
                f" to train it further, {longer}"
            )
    check_resumed_inputs(cfg, run_dir)
    if cfg.data.task in ("lm", "translation") and cfg.data.input:
        data_dir = ensure_data(cfg, run_dir, lambda _: None, prepare=False)
        if is_prepared(data_dir):
            ckpt.check_tokenizer(last, load_translation_tokenizer(data_dir))
    return run_dir, cfg


def _refuse_named(run_dir: Path, saved: Config, overrides: list[str], edited: str) -> None:
    """The resume refusal for overrides naming keys a resume may not change (--privacy.enabled=false
    on a DP run was refused as 'privacy.target_epsilon is set but privacy.enabled is false')."""
    named = []
    for word in overrides:
        key, _, text = word.removeprefix("--").partition("=")
        section, _, name = key.partition(".")
        if not word.startswith("--") or not name or resumable(key):
            continue
        try:  # the value as load_config reads it: 1e-3 is 0.001, 1 is true, ./x is x
            new = getattr(getattr(load_config(None, [word], validate=False), section), name)
        except LmforgeError:
            continue  # its own error is the one to give
        old = getattr(getattr(saved, section), name)
        if new != old and not _same_path(old, new):
            named.append(f"{key}={new!r} (the run has {key}={old!r})")
    if named:
        raise LmforgeError(
            f"{run_dir}: --resume cannot change {'; '.join(named)}{edited}; see 'What may change on"
            " resume' in docs/training.md"
        )


def _reset_by_switch(cfg: Config, key: str) -> bool:
    """Whether `key` changed only as --lora.enabled=false (or privacy's) reset its section's keys
    from config.toml to their defaults (config/files.py _switched_off, the same rule): the user
    changed `enabled`, not it (a LoRA run's refusal named lora.rank, lora.alpha, lora.targets
    at their defaults as changed, until 2026-12-07)."""
    section, _, name = key.partition(".")
    switch = f"{section}.enabled"
    return (
        section in SWITCHED
        and name != "enabled"
        and not getattr(cfg, section).enabled
        and cfg.outranked(key, switch)
    )


def check_epochs_train(run_dir: Path, t: TrainConfig, per_epoch: int, last: Path, step: int) -> None:
    """A resumed run's train.epochs, now in steps (t.max_steps), must go past its last checkpoint,
    as --train.max_steps must (resume_run checks that one before the data is read)."""
    if t.max_steps <= step:
        raise LmforgeError(
            f"{run_dir}: --train.epochs={t.epochs} would train nothing: it ends at step {t.max_steps}"
            f" ({per_epoch} steps an epoch), and the run's last checkpoint ({last.name}) is at step {step}"
        )


def _finished_at(run_dir: Path) -> int | None:
    """The step a finished run's summary.json records (written last, after model/), else None: a
    run killed before it finished its export resumes to finish it."""
    try:
        steps = json.loads((run_dir / "summary.json").read_text()).get("steps")
    except (OSError, ValueError, AttributeError):
        return None
    return steps if isinstance(steps, int) else None


def _trained_with(
    run_dir: Path, last: Path, state: dict[str, Any], found: dict[str, str]
) -> tuple[Config, str]:
    """(the config the checkpoint `last` was trained with, a note for refusals where config.toml
    was edited since in a key no resume changes). A checkpoint keeps its run's config
    (trainer.json's "config"): an edited config.toml must pass the same rules as an override, not
    load weights into another model. Checkpoints from before it kept one trust config.toml."""
    toml = run_dir / "config.toml"
    recorded = state.get("config")
    if not isinstance(recorded, str):
        return moved_base(load_config(toml), last, found), ""
    saved = config_from_text(recorded, f"{last / 'trainer.json'}'s config").validate()
    saved = moved_base(saved, last, found)
    # only a key no resume may change: a resume that changed one that may (--model.dropout) wrote
    # it to config.toml itself, and every later refusal blamed the user for an edit
    changed = config_changes(saved, moved_base(load_config(toml), last, found))
    if any(not resumable(key) for key, _, _ in changed):
        return saved, f" (config.toml was edited since {last.name})"
    return saved, ""


def moved_base(cfg: Config, last: Path, found: dict[str, str]) -> Config:
    """A LoRA run moved or copied with its base: train.init_from (absolute in config.toml) is gone,
    or names the original's base where a copy has its own, and the base is where the checkpoint's
    lora.json finds it (formats/peft.py `find_base`: beside the run first, sha256 checked), or a
    line names the places tried. Both the checkpoint's config and config.toml get the base's place
    now, so that they agree (`found`: it, once looked for)."""
    t = cfg.train
    if cfg.lora.enabled and t.init_from and is_adapter_dir(last):
        if "path" not in found:
            found["path"] = find_base(last)["path"]
        named = Path(t.init_from)
        if not named.exists() or resolve_model_dir(named).resolve() != Path(found["path"]).resolve():
            t.init_from = found["path"]
    return cfg


def resumable(key: str) -> bool:
    return key in RESUMABLE or f"{key.partition('.')[0]}.*" in RESUMABLE


def config_changes(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """(section.key, old value, new value) for every key that differs; paths that name the same
    file count as equal."""
    changes = []
    for section, values in old.to_dict().items():
        for key, before in values.items():
            after = getattr(getattr(new, section), key)
            if before != after and not _same_path(before, after):
                changes.append((f"{section}.{key}", before, after))
    return changes


def _same_path(a: Any, b: Any) -> bool:
    return (
        isinstance(a, str)
        and isinstance(b, str)
        and bool(a)
        and bool(b)
        and Path(a).exists()
        and Path(a).resolve() == Path(b).resolve()
    )
