"""Checks on a run configuration: each wrong value or impossible combination raises LmforgeError
with a one-line message naming the key. `Config.validate` runs `check_config`; every model's
constructor runs `check_buildable` (model_checks.py, with the [model] section's checks).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lmforge.config.model_checks import check_model, check_supported
from lmforge.config.run_config import Config
from lmforge.config.sections import LORA_TARGETS, PROBLEM_TYPES, TASKS
from lmforge.errors import LmforgeError


def _positive(section: object, name: str, *keys: str) -> None:
    """Each of `keys` of the [name] section > 0, else a line naming the first that is not."""
    for key in keys:
        value = getattr(section, key)
        _check(value > 0, f"{name}.{key}={value} must be > 0")


# why train.keep_best is only for tasks whose export is otherwise the last step's
_NO_BEST = {
    "translation": "translation always exports its best val_bleu step",
    "qa": "qa always exports its best val_f1 step",
    "classification": "classification reports its validation split's accuracy, which picking a step"
    " on would flatter; train a fixed number of steps",
}


def check_config(c: Config) -> None:
    """Raise LmforgeError, naming the key, at the first value that is wrong or impossible."""
    _finite(c)
    check_model(c.model)
    m, t = c.model, c.train
    _check(
        c.data.tokenizer in ("char", "bpe"),
        f"data.tokenizer={c.data.tokenizer!r} must be 'char' or 'bpe'",
    )
    _check(
        c.data.problem_type in PROBLEM_TYPES,
        f"data.problem_type={c.data.problem_type!r} must be one of {', '.join(map(repr, PROBLEM_TYPES))}",
    )
    _check(0.0 < c.data.val_fraction < 1.0, f"data.val_fraction={c.data.val_fraction:g} must be in (0, 1)")
    _positive(t, "train", "max_steps", "batch_size")
    _check(t.micro_batch_size >= 0, f"train.micro_batch_size={t.micro_batch_size} must be >= 0")
    _check(
        t.micro_batch_size == 0 or t.batch_size % t.micro_batch_size == 0,
        f"train.batch_size={t.batch_size} is not divisible by train.micro_batch_size={t.micro_batch_size}",
    )
    _check(t.warmup_steps >= 0, "train.warmup_steps must be >= 0")
    _check(
        t.schedule in ("cosine", "linear", "constant"),
        f"train.schedule={t.schedule!r} must be cosine, linear or constant",
    )
    _check(t.dtype in ("auto", "fp32", "bf16"), f"train.dtype={t.dtype!r} must be auto, fp32 or bf16")
    _check(t.compile in ("auto", "on", "off"), f"train.compile={t.compile!r} must be auto, on or off")
    _check(  # DeepSpeed's engine has its own hooks, and ZeRO-3 partitions the parameters (docs/speed.md)
        t.compile != "on" or c.engine.name in ("local", "ddp", "fsdp"),
        f"train.compile='on' runs on engine.name=local, ddp or fsdp, not {c.engine.name!r}",
    )
    _check(  # DP-SGD's per-example gradients (torch.func) run the model itself, not a compiled one
        t.compile != "on" or not c.privacy.enabled, "train.compile='on' does not combine with privacy.enabled"
    )
    _check(t.lr > 0, f"train.lr={t.lr:g} must be > 0")
    _check(t.min_lr >= 0, f"train.min_lr={t.min_lr:g} must be >= 0")
    _check(  # only the cosine ends at min_lr; linear ends at 0 and constant stays at lr
        t.schedule != "cosine" or t.min_lr <= t.lr,
        f"train.min_lr={t.min_lr:g} is above train.lr={t.lr:g}, where the cosine would end:"
        f" set train.min_lr too (say lr/10), or train.schedule=linear",
    )
    _positive(t, "train", "eval_interval", "log_interval", "checkpoint_interval")
    _check(  # 0 aborted at the first non-finite step, not "no limit" as 0 means elsewhere
        t.max_bad_steps >= 1,
        f"train.max_bad_steps={t.max_bad_steps} must be >= 1 (non-finite steps in a row before the"
        " run stops)",
    )
    _check(t.eval_batches >= 0, f"train.eval_batches={t.eval_batches} must be >= 0")
    _check(
        not t.keep_best or c.data.task in ("lm", "chat"),
        f"train.keep_best=true: {_NO_BEST.get(c.data.task, 'only lm and chat runs keep a lowest val_loss')}",
    )
    for key in ("beta1", "beta2"):  # AdamW raises a bare ValueError only once the run has started
        _check(0 <= getattr(t, key) < 1, f"train.{key}={getattr(t, key)} must be in [0, 1)")
    _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    _check(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0 (0 disables clipping)")
    _check(0 <= t.seed < 2**63, f"train.seed={t.seed} must be in [0, 2**63)")
    _check(t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
    e = c.engine
    _check(
        e.name in ("local", "ddp", "fsdp", "deepspeed"),
        f"engine.name={e.name!r} must be local, ddp, fsdp or deepspeed",
    )
    _check(
        e.zero_stage in (1, 2, 3),
        f"engine.zero_stage={e.zero_stage} must be 1, 2 or 3 (stage 0 is engine.name=ddp)",
    )
    _check(e.offload in ("none", "optimizer", "all"), f"engine.offload={e.offload!r}: none|optimizer|all")
    _check(e.backend in ("auto", "gloo", "nccl"), f"engine.backend={e.backend!r}: auto|gloo|nccl")
    _check(e.timeout_s > 0, f"engine.timeout_s={e.timeout_s}: must be > 0")
    _check(  # DeepSpeed's keys do nothing on the other engines (said at start), so neither does this
        e.name != "deepspeed" or e.offload != "all" or e.zero_stage == 3,
        "engine.offload='all' offloads parameters too, which needs engine.zero_stage=3",
    )
    _check(c.prep.split in ("hash", "tail"), f"prep.split={c.prep.split!r}: 'hash' or 'tail'")
    _positive(c.prep, "prep", "shard_tokens")
    _check(c.prep.pii_ip in ("all", "public"), f"prep.pii_ip={c.prep.pii_ip!r}: 'all' or 'public'")
    _check(
        c.prep.html_extractor in ("tags", "trafilatura"),
        f"prep.html_extractor={c.prep.html_extractor!r}: 'tags' or 'trafilatura'",
    )
    p = c.prep
    _check(
        p.html_extractor == "trafilatura" or not changed_keys(p, ("trafilatura_timeout",)),
        f"prep.trafilatura_timeout={p.trafilatura_timeout!r} is for prep.html_extractor='trafilatura'"
        f" (it is {p.html_extractor!r})",
    )
    for key in ("workers", "min_chars", "max_chars", "tokenizer_train_mb", "quality_min_words",
                "canaries", "trafilatura_timeout"):  # fmt: skip
        _check(getattr(p, key) >= 0, f"prep.{key}={getattr(p, key)} must be >= 0")
    for key in ("near_dup_bands", "near_dup_rows", "max_line_bytes", "canary_length"):
        _check(getattr(p, key) > 0, f"prep.{key}={getattr(p, key)} must be > 0")
    _check(  # over 1, no line is in that many documents: the stage removed nothing, unsaid
        0 <= p.boilerplate_fraction <= 1,
        f"prep.boilerplate_fraction={p.boilerplate_fraction:g} must be in [0, 1] (a share of the documents)",
    )
    _check(  # a line in one document is in "at least 1": every long line was removed as boilerplate
        p.boilerplate_min_docs >= 2,
        f"prep.boilerplate_min_docs={p.boilerplate_min_docs} must be >= 2 (a line repeated across"
        " documents; in one, every line would count)",
    )
    _check(  # 0 made blank lines boilerplate (they are in every document): paragraphs ran together
        p.boilerplate_min_chars >= 1,
        f"prep.boilerplate_min_chars={p.boilerplate_min_chars} must be >= 1 (blank lines are in every"
        " document)",
    )
    _check(  # every document was dropped, said only after the whole corpus was read
        not p.max_chars or p.max_chars >= p.min_chars,
        f"prep.max_chars={p.max_chars} is below prep.min_chars={p.min_chars}: no document could be kept",
    )
    _check(  # every record was then skipped as having "no string field"
        bool(c.data.text_field.strip()),
        f"data.text_field={c.data.text_field!r} is empty: name the field (or column) holding the text",
    )
    pair = c.data.text_pair_field
    other = "data.text_field" if pair == c.data.text_field else "data.label_field"
    _check(  # one field read as both texts: the pair would be a text twice
        not pair or pair not in (c.data.text_field, c.data.label_field),
        f"data.text_pair_field={pair!r} is also {other}: name the field holding each record's second text",
    )
    _check(  # read by classification alone: elsewhere it would be ignored, unsaid
        not pair or c.data.task == "classification",
        f"data.text_pair_field={pair!r} is for data.task='classification' (text pairs for a"
        f" cross-encoder), not {c.data.task!r}",
    )
    for key, value in changed_keys(p, ("canary_repeats", "canary_seed", "canary_length")):
        _check(  # read only when canaries are planted
            p.canaries > 0,
            f"prep.{key}={value!r} is set but prep.canaries is 0, so no canary is planted:"
            " give prep.canaries (--canaries N), or leave the key out",
        )
    _check(c.data.task in TASKS, f"data.task={c.data.task!r} must be one of {', '.join(TASKS)}")
    _check(
        c.data.task != "classification" or bool(t.init_from),
        "data.task='classification' needs train.init_from (the model to put a head on)",
    )
    _check(
        c.data.task != "qa" or bool(t.init_from),
        "data.task='qa' needs train.init_from (the encoder to put a span head on)",
    )
    _check(
        c.data.doc_stride >= -1,
        f"data.doc_stride={c.data.doc_stride} must be >= 0 (or -1: min(data.max_len // 2, 128))",
    )
    _check(
        c.data.task != "chat" or bool(t.init_from),
        "data.task='chat' needs train.init_from (a chat model: its weights and its chat template)",
    )
    _check(t.max_minutes >= 0 and t.epochs >= 0, "train.max_minutes and train.epochs must be >= 0")
    _check(c.data.max_len > 0, f"data.max_len={c.data.max_len} must be > 0")
    _check(c.data.seq_len >= 0, f"data.seq_len={c.data.seq_len} must be >= 0 (0: the model's context)")
    _check(
        c.data.seq_len == 0 or c.data.task == "lm",
        f"data.seq_len is for data.task='lm', not {c.data.task!r} (data.max_len sets the others' lengths)",
    )
    _check(
        0.0 <= t.classifier_dropout < 1.0 or t.classifier_dropout == -1,
        f"train.classifier_dropout={t.classifier_dropout} must be in [0, 1), or -1 (the model's)",
    )
    _check(t.pooling in ("", "mean", "cls", "last"), f"train.pooling={t.pooling!r} must be mean, cls or last")
    _check(
        t.classifier_dense in ("", "tanh", "relu"),
        f"train.classifier_dense={t.classifier_dense!r} must be tanh, relu or '' (none)",
    )
    _check(  # train.init_from replaces [model] with the model's own (checked when it loads)
        bool(t.init_from) or (c.data.task == "translation") == (m.arch == "seq2seq"),
        f"data.task={c.data.task!r} does not fit model.arch={m.arch!r}"
        " (translation needs seq2seq, lm needs gpt)",
    )
    if not t.init_from:  # train.init_from's model replaces [model]
        check_supported(m, m.arch)
    _check(0.0 <= t.label_smoothing < 1.0, f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")
    _check(t.eval_bleu_sentences >= 0, "train.eval_bleu_sentences must be >= 0")
    _check_task_keys(c)
    _check_lora(c)
    _check_privacy(c)


# Keys only some tasks read (train/tasks/): set for another task, they would change nothing.
_TASK_KEYS = {
    "data.labels": ("classification",),
    "data.problem_type": ("classification",),
    "data.max_len": ("classification", "chat", "qa"),
    "data.doc_stride": ("qa",),
    "train.head_only": ("classification",),
    "train.from_scratch": ("classification", "qa"),
    "train.pooling": ("classification",),
    "train.classifier_dropout": ("classification",),
    "train.classifier_dense": ("classification",),
    "train.label_smoothing": ("translation",),
    "train.eval_bleu_sentences": ("translation",),
}


def _check_task_keys(c: Config) -> None:
    task = c.data.task
    for dotted, tasks in _TASK_KEYS.items():
        section, key = dotted.split(".")
        for _, value in changed_keys(getattr(c, section), (key,)):
            _check(
                task in tasks,
                f"{dotted}={value!r} is read only by data.task={' or '.join(map(repr, tasks))};"
                f" this run's data.task={task!r} would ignore it: leave it out",
            )


def _check_switched_off(c: Config, name: str, why: str) -> None:
    """A [section] key given another value than its default while section.enabled is false would
    change nothing, silently (a run meant to be private, or low-rank, that is neither): refused.
    So is one given at its default value where nothing names section.enabled (a recipe's
    `[privacy] max_grad_norm = 1.0` that forgot the switch; a run's config.toml, which writes
    `enabled = false` with every key, passes)."""
    section = getattr(c, name)
    changed = [] if section.enabled else changed_keys(section)  # `enabled` is at its default, false
    if not section.enabled and not changed and f"{name}.enabled" not in c.given:
        keys = [f.name for f in dataclasses.fields(section) if f.name != "enabled"]
        changed = [(k, getattr(section, k)) for k in keys if f"{name}.{k}" in c.given]
    if changed:
        key, value = changed[0]
        raise LmforgeError(
            f"{name}.{key}={value!r} is set but {name}.enabled is false, so it would change"
            f" nothing ({why}): add --{name}.enabled=true, or leave the key out"
        )


def _check_lora(c: Config) -> None:
    lo = c.lora
    _check(lo.rank >= 1, f"lora.rank={lo.rank} must be >= 1")
    _check(lo.alpha > 0, f"lora.alpha={lo.alpha} must be > 0")
    _check(0.0 <= lo.dropout < 1.0, f"lora.dropout={lo.dropout} must be in [0, 1)")
    targets = [n.strip() for n in lo.targets.split(",") if n.strip()]
    _check(bool(targets), "lora.targets is empty: name the modules to adapt (e.g. q_proj,v_proj)")
    for name in targets:
        _check(
            name in LORA_TARGETS, f"lora.targets: unknown module {name!r} (known: {', '.join(LORA_TARGETS)})"
        )
    twice = next((n for n in targets if targets.count(n) > 1), None)
    _check(twice is None, f"lora.targets: {twice!r} is named twice")
    _check_switched_off(c, "lora", "the run would fine-tune every weight")
    if lo.enabled:
        _check(
            bool(c.train.init_from), "lora.enabled needs train.init_from (the base model the adapters sit on)"
        )
        _check(
            c.engine.name != "deepspeed" or c.engine.zero_stage != 3,
            "lora.enabled does not run on DeepSpeed ZeRO-3 (its frozen base is partitioned);"
            " use engine.zero_stage=1 or 2",
        )


def _check_privacy(c: Config) -> None:
    p = c.privacy
    inf = float("inf")
    _check(0 <= p.noise_multiplier < inf, f"privacy.noise_multiplier={p.noise_multiplier} must be >= 0")
    _check(0 < p.max_grad_norm < inf, f"privacy.max_grad_norm={p.max_grad_norm} must be > 0")
    _check(0 <= p.target_epsilon < inf, f"privacy.target_epsilon={p.target_epsilon} must be >= 0")
    _check(0 <= p.delta < 1, f"privacy.delta={p.delta} must be in [0, 1) (0: min(1e-5, 1/N))")
    _check(p.accountant in ("rdp", "prv"), f"privacy.accountant={p.accountant!r} must be 'rdp' or 'prv'")
    _check_switched_off(c, "privacy", "the run would train without differential privacy")
    if p.enabled:
        _check(
            c.engine.name == "local",
            f"privacy.enabled runs on engine.name=local only, not {c.engine.name!r}"
            " (per-sample gradients and noise are not implemented across ranks)",
        )
        _check(
            p.noise_multiplier == 0 or p.target_epsilon == 0,
            f"privacy.noise_multiplier={p.noise_multiplier} and privacy.target_epsilon={p.target_epsilon}"
            " are both set: give one (the noise, or the epsilon to reach, which sets the noise)",
        )
        _check(
            p.noise_multiplier > 0 or p.target_epsilon > 0,
            "privacy.enabled needs privacy.noise_multiplier or privacy.target_epsilon (one of them, > 0)",
        )
        _check(
            c.data.task == "lm",
            f"privacy.enabled is implemented for data.task='lm' only, not {c.data.task!r}",
        )
        _check(  # torch.func raises on the saved-tensor hooks checkpointing is built on
            not c.train.activation_checkpointing,
            "train.activation_checkpointing does not combine with privacy.enabled (DP-SGD's"
            " per-example gradients come from torch.func, which cannot recompute blocks)",
        )


def _finite(c: Config) -> None:
    """No key takes inf or nan (train.lr=inf trained to NaN and exited 0; train.max_minutes=inf
    crashed ten steps in): 0 means "no limit" where a key has one."""
    for section in dataclasses.fields(c):
        values = getattr(c, section.name)
        for key in dataclasses.fields(values) if dataclasses.is_dataclass(values) else ():
            value = getattr(values, key.name)
            _check(
                not isinstance(value, float) or math.isfinite(value),
                f"{section.name}.{key.name}={value}: must be a finite number",
            )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmforgeError(message)


def changed_keys(section: Any, keys: tuple[str, ...] | None = None) -> list[tuple[str, Any]]:
    """(key, value) of each of `keys` (default: every field) that holds another value than the
    section's default: what a feature that is off would silently ignore."""
    defaults = type(section)()
    names = keys if keys is not None else tuple(f.name for f in dataclasses.fields(section))
    return [(k, getattr(section, k)) for k in names if getattr(section, k) != getattr(defaults, k)]


def yield_note(cfg: Config, by: str, why: str, section: str, keys: list[str]) -> str:
    """The note of a recipe's keys giving way to `by` from the command line (Config.outranked):
    `keys` ("name=value") of the recipe's [section] do not apply, `why` says what `by` brings."""
    value = getattr(getattr(cfg, by.partition(".")[0]), by.partition(".")[2])
    verb = "does" if len(keys) == 1 else "do"
    return (
        f"lmforge: note: {by}={value!r} (on the command line) {why}, so {cfg.recipe}'s [{section}]"
        f" {', '.join(keys)} {verb} not apply"
    )
