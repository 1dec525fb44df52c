"""What a recipe trains, for `lmforge plan`: the model's shape, the head its task puts on it and
the tokens per example, read as `lmforge train` reads them (train/tasks/) without loading weights.

lm, translation and chat train [model] or train.init_from's decoder (for translation its
encoder-decoder: lmforge's or an imported Marian); classification puts a
linear head on train.init_from's decoder or encoder (an lmforge model, an imported GPT-2, Llama
or BERT/MiniLM, or an earlier classifier, whose head is replaced); qa puts a span head on
train.init_from's encoder (an lmforge or imported encoder, or an earlier QA model). As in
`train`, the architecture is train.init_from's, its dropout unless the recipe sets one, and
train.from_scratch changes the weights, not the shape; a [model] key that differs from
train.init_from's is refused (or, a recipe's under a command line's train.init_from, noted) by
train's own check (config/init_from.py). A LoRA run as train.init_from is read as the model its
adapters merge into (train loads it so): its config.json has that model's shape.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.config import Config, ModelConfig, model_config_from
from lmforge.config.init_from import adopted_model
from lmforge.data.input_files import split_inputs
from lmforge.data.sources import read_documents
from lmforge.errors import LmforgeError
from lmforge.tokenization.tokenizer import SPECIALS
from lmforge.tools.plan_model import LM, Head

TASKS = ("lm", "translation", "chat", "classification", "qa")


def planned(cfg: Config, say: Callable[[str], None] | None = None) -> tuple[ModelConfig, Head]:
    """The recipe's model and its task's head; `say` hears train's note of a recipe's [model] keys
    that a command line's train.init_from outranks."""
    task = cfg.data.task
    if task not in TASKS:
        raise LmforgeError(f"data.task={task!r}: lmforge plan covers {', '.join(TASKS)} recipes")
    if task in ("classification", "qa"):
        return _task_model(cfg, say)
    if cfg.train.init_from:
        return _init_from_model(cfg, say), LM
    m = dataclasses.replace(cfg.model)
    prepared = _prepared_vocab_size(cfg)
    if not m.vocab_size:
        m.vocab_size = prepared or _vocab_size(cfg)
    elif prepared and m.vocab_size < prepared:  # as train refuses it (train/tasks/lm.py)
        raise LmforgeError(f"model.vocab_size={m.vocab_size} < the data's vocabulary of {prepared}")
    return m, LM


def sequence(cfg: Config, m: ModelConfig, head: Head = LM) -> tuple[int, int]:
    """(tokens per sequence attention sees, tokens per training example): for lm data.seq_len (by
    default the context); for translation both sides padded to the context (an upper bound);
    data.max_len for chat (an upper bound) and qa (the window, question and context together);
    for classification the longest text of data.input, cut at data.max_len (longest_text)."""
    if cfg.data.task == "chat" or head.task != "lm":
        n = min(cfg.data.max_len, m.block_size)
        if head.task == "classification":
            n = longest_text(cfg, n)
        return n, n
    if m.arch == "seq2seq":
        return m.block_size, 2 * m.block_size
    n = cfg.lm_window(m)  # data.seq_len, as the lm task cuts its windows
    return n, n


def longest_text(cfg: Config, context: int) -> int:
    """Classification: the tokens of data.input's longest text, cut at `context` as the task cuts
    it. Each batch is padded to its longest text, so this is the widest batch a run can meet, what
    sets its peak, and an upper bound on its tokens; data.max_len alone can be far above it
    (rt_sentiment's longest is 79 of 128 MiniLM tokens, its median 26)."""
    from lmforge.data.labelled import labelled_records, read_labelled, token_counts
    from lmforge.formats.directory import load_tokenizer, read_config_json, resolve_model_dir
    from lmforge.formats.hf import FAMILIES
    from lmforge.formats.hf_files import load_hf_tokenizer
    from lmforge.formats.lmforge_dirs import CLASSIFIER_TYPE, classifier_tokenizer

    directory = resolve_model_dir(cfg.train.init_from)
    raw = read_config_json(directory)
    if raw.get("model_type") in FAMILIES:
        tokenizer = load_hf_tokenizer(directory, raw)
    elif raw.get("model_type") == CLASSIFIER_TYPE:  # as the classifier reads its texts
        tokenizer = classifier_tokenizer(directory, raw)
    else:
        tokenizer = load_tokenizer(directory)
    d = cfg.data
    if _labels(cfg):  # the labels checked as train checks them
        texts = [
            text
            for text, _ in read_labelled(
                d.input, _labels(cfg), d.text_field, d.label_field, d.problem_type, d.text_pair_field
            )
        ]
    else:  # a head train keeps (_kept_outputs): its labels are the model's
        texts = [
            text for _, text, _ in labelled_records(d.input, d.text_field, d.label_field, d.text_pair_field)
        ]
    return max(token_counts(tokenizer, texts, context))  # type: ignore[arg-type]


def _task_model(cfg: Config, say: Callable[[str], None] | None) -> tuple[ModelConfig, Head]:
    """classification and qa: train.init_from's body (as ClassificationTask and QATask load it)."""
    from lmforge.formats.directory import MODEL_TYPE, read_config_json, resolve_model_dir
    from lmforge.formats.hf import FAMILIES
    from lmforge.formats.hf_files import check_weight_files
    from lmforge.formats.hf_qa import QA_TYPE
    from lmforge.formats.lmforge_dirs import CLASSIFIER_TYPE, ENCODER_TYPE

    task, source = cfg.data.task, cfg.train.init_from
    if not source:
        needs = "the model to put a head on" if task == "classification" else "the encoder for a span head"
        raise LmforgeError(f"data.task={task!r} needs train.init_from ({needs}), for plan as for train")
    directory = resolve_model_dir(source)
    check_weight_files(directory)  # missing or cut short: refused, as train would
    file = directory / "config.json"
    raw: dict[str, Any] = read_config_json(directory)
    kind = raw.get("model_type")
    kept = _kept_outputs(raw, cfg) if task == "classification" and not _labels(cfg) else 0
    if kind == CLASSIFIER_TYPE and isinstance(raw.get("backbone"), dict):  # a new head on its body
        raw = raw["backbone"]
        kind = raw.get("model_type")
    if kind in (MODEL_TYPE, ENCODER_TYPE, QA_TYPE):
        m, encoder = model_config_from(raw, file), kind != MODEL_TYPE  # a span model's body: an encoder
    elif kind in FAMILIES and FAMILIES[kind].kind in ("gpt", "encoder"):
        m = FAMILIES[kind].config_in(raw, str(file))
        encoder = FAMILIES[kind].kind == "encoder"
    else:
        raise LmforgeError(f"{file}: model_type {kind!r} is not a decoder or encoder lmforge plan covers")
    if task == "qa" and not encoder:
        raise LmforgeError(f"train.init_from={source!r}: not an encoder (BERT, MiniLM) model")
    m = adopted_model(cfg, m, say)  # a conflicting [model] key refused, as by train
    if task == "qa":
        return m, Head("span", encoder=True)
    labels = _labels(cfg) or ["kept"] * kept
    least = 1 if kept or cfg.data.problem_type in ("multi_label_classification", "regression") else 2
    if len(labels) < least:
        some = "one label" if least == 1 else "two labels"
        raise LmforgeError(f"data.labels={cfg.data.labels!r}: name at least {some}, comma-separated")
    return m, Head("classification", encoder=encoder, labels=len(labels), frozen_body=cfg.train.head_only)


def _kept_outputs(raw: dict[str, Any], cfg: Config) -> int:
    """The outputs of train.init_from's head where train keeps it without data.labels: a
    multi-label, regression or one-output head (train/tasks/classification_head.py); 0 else."""
    labels = raw.get("labels") if isinstance(raw.get("labels"), list) else list(raw.get("id2label") or {})
    outputs = len(labels) or (raw["num_labels"] if isinstance(raw.get("num_labels"), int) else 0)
    trained = raw.get("problem_type") or ("regression" if outputs == 1 else "")
    kept = trained in ("multi_label_classification", "regression") and cfg.data.problem_type in ("", trained)
    return outputs if kept else 0


def _labels(cfg: Config) -> list[str]:
    """data.labels as ClassificationTask reads it (DataConfig.label_names); a regression
    without names has one output (train/tasks/classification_head.py)."""
    names = cfg.data.label_names()
    return names or (["LABEL_0"] if cfg.data.problem_type == "regression" else [])


def _init_from_model(cfg: Config, say: Callable[[str], None] | None) -> ModelConfig:
    """lm, chat and translation from train.init_from: its architecture and dropout (unless set); a
    decoder for lm and chat, an encoder-decoder (lmforge's or Marian) for translation, as
    train/run_inputs.py's init_model takes them."""
    from lmforge.formats.directory import MODEL_TYPE, SEQ2SEQ_MODEL_TYPE, read_config_json, resolve_model_dir
    from lmforge.formats.hf import FAMILIES
    from lmforge.formats.hf_files import check_weight_files

    source = cfg.train.init_from
    directory = resolve_model_dir(source)
    check_weight_files(directory)  # missing or cut short: refused, as train would
    file = directory / "config.json"
    raw = read_config_json(directory)  # read once, as _task_model does
    kind = raw.get("model_type")
    if kind in (MODEL_TYPE, SEQ2SEQ_MODEL_TYPE):
        m = model_config_from(raw, file)
    elif kind in FAMILIES and FAMILIES[kind].kind in ("gpt", "seq2seq"):
        m = FAMILIES[kind].config_in(raw, str(file))
    else:
        covers = "a decoder or encoder-decoder lmforge plan covers"
        raise LmforgeError(f"{file}: model_type {kind!r} is not {covers}")
    if cfg.data.task == "translation" and m.arch != "seq2seq":
        raise LmforgeError(f"train.init_from={source!r} is not an encoder-decoder (translation)")
    if cfg.data.task != "translation" and m.arch == "seq2seq":
        raise LmforgeError(f"train.init_from={source!r} is not a decoder language model")
    if _prepared_meta(cfg) is not None:  # shards another tokenizer wrote: refused, as by train
        from lmforge.data.shards import check_same_tokenizer
        from lmforge.formats.directory import load_tokenizer
        from lmforge.formats.hf_tokenizers import load_hf_tokenizer
        from lmforge.tokenization.marian import load_translation_tokenizer

        own = (
            load_tokenizer(directory)
            if kind in (MODEL_TYPE, SEQ2SEQ_MODEL_TYPE)
            else load_hf_tokenizer(directory, raw)
        )
        data_dir = Path(cfg.data.input)
        check_same_tokenizer(data_dir, load_translation_tokenizer(data_dir), own, source)
    return adopted_model(cfg, m, say)  # a conflicting [model] key refused, as by train


def _prepared_vocab_size(cfg: Config) -> int:
    """The vocabulary of data.input's prepared shards (meta.json), or 0 when it is not prepared."""
    meta = _prepared_meta(cfg)
    return int(meta["vocab_size"]) if meta else 0


CHARS_COUNTED = 1 << 26  # characters read to find a char vocabulary: past 64 M, new ones are rare


def _vocab_size(cfg: Config) -> int:
    """What the tokenizer `train` (or `lmforge prep RECIPE`) would build gives: the BPE target
    size, or a character vocabulary counted in the raw text (its characters + 3 specials; prep's
    cleaning may leave a few fewer). The text is data.input, or prep.inputs where data.input is
    the recipe's prep.out, not yet prepared."""
    if cfg.data.tokenizer == "bpe":
        return cfg.data.vocab_size
    key, source = "data.input", cfg.data.input
    if cfg.prep.inputs and cfg.prep.out and Path(cfg.prep.out) == Path(cfg.data.input):
        key, source = "prep.inputs", cfg.prep.inputs
    chars: set[str] = set()
    read = 0
    try:
        for doc in read_documents(split_inputs(source), cfg.data.text_field, json_field=cfg.prep.json_field):
            chars.update(doc.text)
            read += len(doc.text)
            if read >= CHARS_COUNTED:
                break
    except LmforgeError as e:  # list_files: a missing input, or a folder with no text files
        raise LmforgeError(
            f"model.vocab_size=0 and {key}={source!r} is neither a prepared directory nor text"
            f" to count characters in ({e}, relative to the working directory {Path.cwd()}):"
            " give --model.vocab_size=N, or prepare the data first"
        ) from None
    if not chars:
        raise LmforgeError(f"{key}={source!r}: no text to count characters in; give --model.vocab_size=N")
    return len(chars) + len(SPECIALS)


def epoch_steps(cfg: Config, m: ModelConfig, micro: int, world_size: int) -> int:
    """Optimizer steps in one epoch, which `train` multiplies by train.epochs (train/loop.py): its
    own loaders' steps_per_epoch, on data.input's prepared lm or translation shards or its
    classification rows (their training side, held out as the task holds it out). Other data
    (raw text train would tokenize first, chat and QA examples built by the tokenizer) is refused:
    plan cannot know its size, and a number of steps made up for it would be wrong."""
    t, d = cfg.train, cfg.data
    if d.task == "classification":
        from lmforge.data.holdout import hold_out
        from lmforge.data.labelled import LabelledLoader, read_labelled

        rows = read_labelled(
            d.input, _labels(cfg), d.text_field, d.label_field, text_pair_field=d.text_pair_field
        )
        kept, _ = hold_out(rows, key=lambda row: row[0], fraction=d.val_fraction, seed=t.seed,
                           source=str(d.input), noun="example", say=lambda _: None)  # fmt: skip
        no_encoding = None  # steps_per_epoch counts rows; it never encodes them
        loader = LabelledLoader(kept, no_encoding, t.batch_size, micro, 0, world_size, t.seed + 1)  # type: ignore[arg-type]
        return loader.steps_per_epoch
    meta = _prepared_meta(cfg)
    if d.task not in ("lm", "translation") or meta is None:
        what = f"data.input={d.input!r} is not prepared" if meta is None else f"data.task={d.task!r}"
        raise LmforgeError(
            f"train.epochs={t.epochs}: {what}, so plan cannot count the steps of an epoch (train builds"
            " the examples first); plan with train.max_steps, or prepare the data (lmforge prep)"
        )
    if meta.get("task", "lm") != d.task:  # as train refuses it (train/tasks/lm.py)
        raise LmforgeError(
            f"{d.input}: prepared for task {meta.get('task', 'lm')!r}, but data.task={d.task!r}"
        )
    if d.task == "translation":
        from lmforge.data.pair_loader import PairLoader
        from lmforge.data.pairs import load_split

        src, tgt = load_split(d.input, "train")
        return PairLoader(
            src, tgt, t.batch_size, micro, 0, 0, 0, world_size, t.seed, m.block_size
        ).steps_per_epoch
    from lmforge.data.loader import BatchLoader
    from lmforge.data.shards import open_split

    shards = open_split(d.input, "train")
    loader = BatchLoader(shards, cfg.lm_window(m), t.batch_size, micro, 0, world_size, t.seed,
                         whole_epochs=cfg.privacy.enabled)  # fmt: skip
    return loader.steps_per_epoch


def _prepared_meta(cfg: Config) -> dict[str, Any] | None:
    meta = Path(cfg.data.input) / "meta.json"
    return json.loads(meta.read_text()) if meta.is_file() else None
