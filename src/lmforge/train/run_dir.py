"""Where a run lives and what it starts from: the run directory (new, overwritten or resumed),
the prepared data (raw input is prepared into RUN/data once, by one rank) and train.init_from."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.config import Config, load_config
from lmforge.data.shards import is_prepared, prepare_corpus
from lmforge.errors import LmforgeError
from lmforge.model.gpt import GPT


def resolve_run(
    config: str | Path | Config | None,
    overrides: list[str] | None,
    out: str | Path | None,
    resume: str | Path | None,
    overwrite: bool,
) -> tuple[Path, Config]:
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").is_file():
            raise LmforgeError(f"{run_dir}: not a run directory (no config.toml)")
        return run_dir, load_config(run_dir / "config.toml", overrides)
    if isinstance(config, Config):
        cfg = config.validate()
        name = "run"
    else:
        cfg = load_config(config, overrides)
        name = Path(config).stem if config is not None else "run"
    run_dir = Path(out) if out is not None else Path("runs") / name
    if (run_dir / "checkpoints").exists():
        if not overwrite:
            raise LmforgeError(
                f"{run_dir}: already holds a run; use --resume {run_dir}, --overwrite or another --out"
            )
        # only the first rank clears (the process group is not up yet; launchers set RANK)
        for child in ("checkpoints", "model", "best", "tb", "metrics.jsonl", "summary.json", "loss.png"):
            path = run_dir / child
            if os.environ.get("RANK", "0") == "0":
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, cfg


def prep_options(cfg: Config) -> dict[str, Any]:
    """The recipe's [prep] cleaning settings (its inputs/out keys belong to `lmforge prep X.toml`)."""
    return {k: v for k, v in dataclasses.asdict(cfg.prep).items() if k not in ("inputs", "out")}


def init_model(cfg: Config) -> tuple[Any, Any]:
    """train.init_from: the starting model (an lmforge or HF decoder directory; for translation an
    encoder-decoder: lmforge's or Marian's); its architecture replaces cfg.model, keeping the
    recipe's dropout."""
    from lmforge.formats.directory import load_model
    from lmforge.model.seq2seq import Seq2Seq

    model, tokenizer = load_model(cfg.train.init_from)
    if cfg.data.task == "translation" and not isinstance(model, Seq2Seq):
        raise LmforgeError(f"train.init_from={cfg.train.init_from!r} is not an encoder-decoder (translation)")
    if cfg.data.task != "translation" and not isinstance(model, GPT):
        raise LmforgeError(f"train.init_from={cfg.train.init_from!r} is not a decoder language model")
    cfg.model = dataclasses.replace(model.config, dropout=cfg.model.dropout)
    return model, tokenizer


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
    if cfg.data.task == "translation":
        from lmforge.data.pairs import prepare_pairs

        wanted.update(task=cfg.data.task, src_lang=cfg.data.src_lang, tgt_lang=cfg.data.tgt_lang)
        if is_prepared(target) and source.is_file() and json.loads(source.read_text()) == wanted:
            return target
        say(f"preparing sentence pairs {cfg.data.input} -> {target}")
        d = cfg.data
        longest = min(128, cfg.model.block_size - 1)  # + EOS; an imported model's positions may be fewer
        meta = prepare_pairs(
            d.input, target, d.src_lang, d.tgt_lang, d.vocab_size, longest, tokenizer=tokenizer
        )
        source.write_text(json.dumps(wanted) + "\n")
        say(f"  {meta['pairs']} pairs, {sum(meta['tokens'].values()):,} tokens in {meta['seconds']}s")
        return target
    say(f"preparing {cfg.data.input} -> {target} ({cfg.data.tokenizer} tokenizer)")
    meta = prepare_corpus(
        cfg.data.input,
        target,
        tokenizer or cfg.data.tokenizer,
        cfg.data.vocab_size,
        cfg.data.val_fraction,
        cfg.data.text_field,
        **prep_options(cfg),
    )
    source.write_text(json.dumps(wanted) + "\n")
    say(
        f"  {meta['documents']} documents, {meta['tokens']['train'] + meta['tokens']['val']:,} tokens"
        f" in {meta['seconds']}s"
    )
    return target
