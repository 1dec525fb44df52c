"""What a run starts from: its prepared data (data.input itself, or raw input prepared into
RUN/data once, by one rank) and train.init_from's model, whose architecture replaces [model]."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.config import Config, ModelConfig, model_config_from
from lmforge.config.init_from import adopted_model
from lmforge.data.shards import is_prepared, prepare_corpus
from lmforge.errors import LmforgeError, counted
from lmforge.model.gpt import GPT
from lmforge.outputs import write_file

# the keys that name a file or folder the run reads (a resume may read them again)
INPUT_PATHS = (
    ("data", "input"),
    ("train", "init_from"),
    ("engine", "deepspeed_config"),
    ("prep", "stopwords_file"),
)


def found(path: str) -> bool:
    """Whether an input path names a file or folder, or a glob matches something, from here."""
    return Path(path).exists() or bool(glob.glob(path, recursive=True))


def make_inputs_absolute(cfg: Config) -> None:
    """Input paths as the run's config.toml records them: absolute, so that a resume from another
    working directory reads the same files (a relative one would be read from there)."""
    for section, key in INPUT_PATHS:
        value = getattr(getattr(cfg, section), key)
        if value and not Path(value).is_absolute():
            setattr(getattr(cfg, section), key, os.path.abspath(value))


def check_resumed_inputs(cfg: Config, run_dir: Path) -> None:
    """A resumed run's relative input paths (runs from before make_inputs_absolute) that are not
    found from this working directory: said as such, not read as missing data or raw text."""
    for section, key in INPUT_PATHS:
        value = getattr(getattr(cfg, section), key)
        if not value or Path(value).is_absolute() or found(value):
            continue
        if section in ("data", "prep") and is_prepared(run_dir / "data"):
            continue  # raw text the run prepared into RUN/data (with prep's stop words): not read again
        raise LmforgeError(
            f"{run_dir}: {section}.{key}={value!r}: no such file, folder or glob match in the working"
            f" directory, {Path.cwd()}; the run's config.toml names it relative to the directory the run"
            " started in: resume from there"
        )
    json_file = cfg.engine.deepspeed_config
    if cfg.engine.name == "deepspeed" and json_file and not Path(json_file).exists():
        raise LmforgeError(
            f"{run_dir}: engine.deepspeed_config={json_file!r}: no such file; the run's config.toml names"
            " it: put it back, or give its new place with --engine.deepspeed_config=FILE"
        )


def prep_options(cfg: Config) -> dict[str, Any]:
    """The recipe's [prep] cleaning settings (its inputs/out keys belong to `lmforge prep X.toml`)."""
    return {k: v for k, v in dataclasses.asdict(cfg.prep).items() if k not in ("inputs", "out")}


def init_model(cfg: Config, say: Callable[[str], None] | None = None) -> tuple[Any, Any]:
    """train.init_from: the starting model (an lmforge or HF decoder directory; for translation an
    encoder-decoder: lmforge's or Marian's); its architecture replaces cfg.model, keeping the
    model's dropout unless the recipe sets one."""
    from lmforge.formats.directory import load_model
    from lmforge.model.seq2seq import Seq2Seq

    model, tokenizer = load_model(cfg.train.init_from)
    if cfg.data.task == "translation" and not isinstance(model, Seq2Seq):
        raise LmforgeError(f"train.init_from={cfg.train.init_from!r} is not an encoder-decoder (translation)")
    if cfg.data.task != "translation" and not isinstance(model, GPT):
        raise LmforgeError(f"train.init_from={cfg.train.init_from!r} is not a decoder language model")
    adopt_model_config(cfg, model.config, say)
    return model, tokenizer


def check_lora_targets(cfg: Config) -> None:
    """lora.targets and lora.rank against train.init_from's modules, on its architecture built
    without weights (the meta device): a wrong target was refused only after the data was
    prepared. A directory whose kind this does not know is left to loading, which names it."""
    import torch

    from lmforge.formats.directory import MODEL_TYPE, SEQ2SEQ_MODEL_TYPE, read_config_json, resolve_model_dir
    from lmforge.formats.hf import FAMILIES
    from lmforge.model import lora
    from lmforge.model.seq2seq import Seq2Seq

    if not (cfg.lora.enabled and cfg.train.init_from) or cfg.data.task not in ("lm", "chat", "translation"):
        return  # a task model (a head on a body) is checked as it is built
    directory = resolve_model_dir(cfg.train.init_from)
    if (directory / "lora.json").is_file():
        return  # a LoRA run's base: checked as it loads
    raw = read_config_json(directory)
    kind, file = raw.get("model_type"), str(directory / "config.json")
    if kind in (MODEL_TYPE, SEQ2SEQ_MODEL_TYPE):
        config = model_config_from(raw, file)
    elif kind in FAMILIES and FAMILIES[kind].kind in ("gpt", "seq2seq"):
        config = FAMILIES[kind].config_in(raw, file)
    else:
        return
    with torch.device("meta"):
        lora.inject(Seq2Seq(config, 0) if config.arch == "seq2seq" else GPT(config), cfg.lora)


def adopt_model_config(cfg: Config, own: ModelConfig, say: Callable[[str], None] | None = None) -> None:
    """train.init_from's architecture (`own`) replaces [model], with its dropout unless the recipe
    sets one; a conflicting [model] key is refused, or noted to `say` (config/init_from.py, which
    plan shares)."""
    cfg.model = adopted_model(cfg, own, say)


def ensure_data(
    cfg: Config,
    run_dir: Path,
    say: Callable[[str], None],
    tokenizer: Any = None,
    prepare: bool = True,
) -> Path:
    """The prepared shard directory: data.input itself, or run_dir/data built from raw text
    (with prepare=False, only its path); `tokenizer` (train.init_from's) replaces a new one."""
    if not cfg.data.input:
        raise LmforgeError("data.input is not set (a text file, folder, glob or prepared directory)")
    if is_prepared(cfg.data.input):
        return Path(cfg.data.input)
    given = Path(cfg.data.input)
    if (given / "config.toml").is_file() and ((given / "checkpoints").is_dir() or (given / "model").is_dir()):
        raise LmforgeError(  # its metrics.jsonl and config.toml were read as a corpus
            f"data.input={cfg.data.input!r}: a run directory, not data (--resume {given} continues it,"
            f" --train.init_from={given / 'model'} starts from its model)"
        )
    target = run_dir / "data"
    source = target / "source.json"
    wanted = {
        "input": cfg.data.input,
        "tokenizer": cfg.data.tokenizer,
        "vocab_size": cfg.data.vocab_size,
        "val_fraction": cfg.data.val_fraction,
        "text_field": cfg.data.text_field,
        "prep": prep_options(cfg),
    }
    if tokenizer is not None:
        wanted["tokenizer"] = f"init_from:{tokenizer.sha256()}"
    if not prepare or (is_prepared(target) and source.is_file() and json.loads(source.read_text()) == wanted):
        return target
    kind = "train.init_from's" if tokenizer is not None else cfg.data.tokenizer  # the one it uses
    ours = source.is_file() or is_prepared(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())) and not ours:
        raise LmforgeError(f"{target}: exists and was not prepared by lmforge train; choose another --out")
    if cfg.data.task == "translation":
        from lmforge.data.pairs import prepare_pairs

        wanted.update(task=cfg.data.task, src_lang=cfg.data.src_lang, tgt_lang=cfg.data.tgt_lang)
        if is_prepared(target) and source.is_file() and json.loads(source.read_text()) == wanted:
            return target
        say(f"preparing sentence pairs {cfg.data.input} -> {target} ({kind} tokenizer)")
        d = cfg.data
        longest = min(128, cfg.model.block_size - 1)  # + EOS; an imported model's positions may be fewer
        meta = prepare_pairs(  # RUN/data is the trainer's own: replacing an older preparation is safe
            d.input, target, d.src_lang, d.tgt_lang, d.vocab_size, longest,
            val_fraction=d.val_fraction, tokenizer=tokenizer or d.tokenizer, overwrite=True,
        )  # fmt: skip
        write_file(source, json.dumps(wanted) + "\n")
        say(f"  {meta['pairs']} pairs, {sum(meta['tokens'].values()):,} tokens in {meta['seconds']}s")
        return target
    say(f"preparing {cfg.data.input} -> {target} ({kind} tokenizer)")
    meta = prepare_corpus(
        cfg.data.input,
        target,
        tokenizer or cfg.data.tokenizer,
        cfg.data.vocab_size,
        cfg.data.val_fraction,
        cfg.data.text_field,
        **prep_options(cfg),
    )
    write_file(source, json.dumps(wanted) + "\n")
    say(
        f"  {counted(meta['documents'], 'document')},"
        f" {meta['tokens']['train'] + meta['tokens']['val']:,} tokens"
        f" in {meta['seconds']}s{_passed_over(target)}"
    )
    return target


def _passed_over(target: Path) -> str:
    """What the quiet prep passed over, in brief: bad input skipped or repaired, files not read
    or read as plain text (`lmforge prep` prints each; its report.json keeps them)."""
    try:
        report = json.loads((target / "report.json").read_text())
    except (OSError, ValueError):
        return ""
    bad = sum(report.get("problems", {}).values())
    parts = [f"{counted(bad, 'bad input')} skipped or repaired"] if bad else []
    parts += report.get("input_notes", [])
    return f"; {'; '.join(parts)} (see {target / 'report.json'})" if parts else ""
