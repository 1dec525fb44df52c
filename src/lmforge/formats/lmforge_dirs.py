"""lmforge's own model directories: the GPT, the encoder, the encoder-decoder and the classifier.

Each is config.json (its `model_type`, the ModelConfig keys, token ids) + model.safetensors +
tokenizer files. The LOADERS table in directory.py maps each model_type to a loader here; the
model package itself knows nothing of files.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from lmforge.config import ModelConfig, model_config_from
from lmforge.errors import LmforgeError
from lmforge.formats.directory import (
    MODEL_TYPE,
    WEIGHTS,
    load_tokenizer,
    load_weights,
    read_config_json,
    read_model_config,
    save_weights,
)
from lmforge.formats.seq2seq_generation import note_unapplied
from lmforge.model.classifier import Classifier
from lmforge.model.empty import empty
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.tokenization.marian import MarianTokenizer, load_translation_tokenizer
from lmforge.tokenization.tokenizer import Tokenizer

ENCODER_TYPE = "lmforge-encoder"
CLASSIFIER_TYPE = "lmforge-classifier"
# config.json's record that a classifier reads a text as transformers' `tokenizer(text)` gives it:
# with the special tokens of its tokenizer's post-processor (a Llama's BOS). Decoder classifiers
# written before lmforge did so lack it, and keep reading texts without them.
SPECIAL_TOKENS = "add_special_tokens"


def load_gpt_dir(directory: Path) -> tuple[GPT, Tokenizer]:
    config = read_model_config(directory)
    model = empty(lambda: GPT(config))
    load_weights(model, directory / WEIGHTS)
    return model.eval(), load_tokenizer(directory, config.vocab_size)


def load_encoder_dir(directory: Path) -> tuple[Encoder, Tokenizer]:
    config = read_model_config(directory, ENCODER_TYPE)
    model = empty(lambda: Encoder(config))
    load_weights(model, directory / WEIGHTS)
    return model.eval(), load_tokenizer(directory, config.vocab_size)


def checked_num_beams(beams: Any, file: str | Path) -> int:
    """A config file's num_beams, which must be an integer >= 1."""
    if not isinstance(beams, int) or isinstance(beams, bool) or beams < 1:
        raise LmforgeError(f"{file}: num_beams={beams!r} must be an integer >= 1")
    return beams


def checked_repeats(source: dict[str, Any], file: str | Path) -> tuple[float, int]:
    """A config file's repetition_penalty (a finite number > 0) and no_repeat_ngram_size (an
    integer >= 0); absent or null: off (1 and 0), as transformers reads them."""
    penalty, ngram = source.get("repetition_penalty"), source.get("no_repeat_ngram_size")
    penalty, ngram = 1.0 if penalty is None else penalty, 0 if ngram is None else ngram
    number = isinstance(penalty, (int, float)) and not isinstance(penalty, bool)
    if not (number and math.isfinite(penalty) and penalty > 0):
        raise LmforgeError(f"{file}: repetition_penalty={penalty!r} must be a finite number > 0")
    if not isinstance(ngram, int) or isinstance(ngram, bool) or ngram < 0:
        raise LmforgeError(f"{file}: no_repeat_ngram_size={ngram!r} must be an integer >= 0")
    return float(penalty), ngram


def checked_length_penalty(source: dict[str, Any], file: str | Path) -> float:
    """A config file's length_penalty (beam score = log p / length**this): a finite number; absent
    or null: 1, as transformers reads it."""
    value = source.get("length_penalty")
    value = 1.0 if value is None else value
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
        raise LmforgeError(f"{file}: length_penalty={value!r} must be a finite number")
    return float(value)


def checked_early_stopping(value: Any, file: str | Path) -> bool | str:
    """A config file's early_stopping: true, false or "never", as transformers reads it (null,
    its field's default, decodes as false)."""
    if value is None:
        return False
    if not (isinstance(value, bool) or value == "never"):
        raise LmforgeError(f'{file}: early_stopping={value!r} must be true, false or "never"')
    return value


def load_seq2seq_dir(directory: Path) -> tuple[Seq2Seq, Tokenizer | MarianTokenizer]:
    """(model in eval mode, tokenizer) from a model directory with model_type lmforge-seq2seq."""
    file = directory / "config.json"
    raw = read_config_json(directory)
    config = model_config_from(raw, file)
    if not isinstance(raw.get("pad_token_id"), int):
        raise LmforgeError(f"{file}: pad_token_id missing (needed for source padding masks)")
    start, suppress = raw.get("decoder_start_token_id"), raw.get("suppress_tokens") or []
    if not (start is None or isinstance(start, int)) or not all(isinstance(i, int) for i in suppress):
        raise LmforgeError(f"{file}: decoder_start_token_id / suppress_tokens must be token ids")
    beams = checked_num_beams(raw.get("num_beams", 1), file)
    stopping = checked_early_stopping(raw.get("early_stopping", True), file)
    decoding = (*checked_repeats(raw, file), checked_length_penalty(raw, file))
    model = empty(lambda: Seq2Seq(config, raw["pad_token_id"], start, suppress, beams, stopping, *decoding))
    load_weights(model, directory / WEIGHTS)
    tokenizer = load_translation_tokenizer(directory)
    # an import's copy of its source's generation_config.json: what lmforge does not apply of it
    note_unapplied(directory, None, file, model, tokenizer.eos_id)
    return model.eval(), tokenizer


def write_classifier_files(
    directory: Path,
    labels: list[str],
    pooling: str,
    encoder: bool,
    config: ModelConfig,
    tokenizer: Tokenizer,
    dense: str = "",
    head_bias: bool = True,
    pad_id: int | None = None,
    problem_type: str = "",
    bos_id: int | None = None,
    special_tokens: bool = True,
    dropout: float | None = None,
) -> None:
    """config.json (the labels, the pooling, the dense layer's activation if any, a head without a
    bias, the padding id `last` pooling skips, an HF head's problem_type, the backbone's config, its
    source's BOS, which export names, and add_special_tokens: texts are read with what `tokenizer`
    puts around them; `special_tokens` false leaves it out, as for a run resumed from a decoder
    classifier's checkpoint written before it, which keeps reading texts bare) and tokenizer.json:
    what makes a directory of classifier weights (`backbone.*`, `dense.*`, `head.*`) a model
    directory."""
    meta = {
        "model_type": CLASSIFIER_TYPE,
        "labels": list(labels),
        "pooling": pooling,
        **({"dense": dense} if dense else {}),  # imported HF classifiers (formats/hf_heads.py)
        # imported HF decoder classifiers (formats/hf_decoder_heads.py)
        **({} if head_bias else {"head_bias": False}),
        **({} if pad_id is None else {"pad_token_id": pad_id}),
        **({"problem_type": problem_type} if problem_type else {}),  # how the outputs are read
        "backbone": {"model_type": ENCODER_TYPE if encoder else MODEL_TYPE, **dataclasses.asdict(config)},
        "eos_token_id": tokenizer.eos_id,
        **({} if bos_id is None else {"bos_token_id": bos_id}),  # an HF source's (Qwen3: not its EOS)
        **({SPECIAL_TOKENS: True} if special_tokens else {}),
        **({} if dropout is None else {"classifier_dropout": dropout}),  # before the head: kept for tuning
    }
    (directory / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    tokenizer.save(directory / "tokenizer.json")


def save_classifier(
    model: Classifier, directory: str | Path, tokenizer: Tokenizer, bos_id: int | None = None
) -> Path:
    """Write a classifier directory: weights, config.json and tokenizer (and an HF source's BOS)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(directory / WEIGHTS, model.state_dict())
    write_classifier_files(
        directory,
        model.labels,
        model.pooling,
        model.encoder,
        model.config,
        tokenizer,
        model.dense_act,
        model.head.bias is not None,
        model.pad_id,
        model.problem_type,
        bos_id,
        dropout=model.drop.p,
    )
    return directory


def load_classifier_dir(directory: Path) -> tuple[Classifier, Tokenizer]:
    """The LOADERS entry for `lmforge-classifier` directories."""
    file = directory / "config.json"
    raw = read_config_json(directory)
    backbone_raw = raw.get("backbone")
    if not isinstance(backbone_raw, dict) or not isinstance(raw.get("labels"), list):
        raise LmforgeError(f"{file}: a classifier config needs 'backbone' and 'labels'")
    config = model_config_from(backbone_raw, file)
    kind = backbone_raw.get("model_type")
    backbone = Encoder if kind == ENCODER_TYPE else GPT
    try:
        pooling, dense = raw.get("pooling", ""), raw.get("dense", "")
        head_bias, pad_id = raw.get("head_bias", True), raw.get("pad_token_id")
        problem, dropout = raw.get("problem_type", ""), raw.get("classifier_dropout", 0.1)
        if not isinstance(head_bias, bool):
            raise LmforgeError(f"head_bias={head_bias!r} must be true or false")
        if not isinstance(dropout, float | int) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise LmforgeError(f"classifier_dropout={dropout!r} must be a probability in [0, 1]")
        model = empty(
            lambda: Classifier(
                backbone(config),
                raw["labels"],
                pooling,
                float(dropout),
                dense=dense,
                head_bias=head_bias,
                pad_id=pad_id,
                problem_type="" if problem is None else problem,
            )
        )
    except LmforgeError as e:  # a hand-edited label list, pooling, dense or problem_type
        raise LmforgeError(f"{file}: {e}") from None
    load_weights(model, directory / WEIGHTS)
    return model.eval(), classifier_tokenizer(directory, raw, config.vocab_size)


def classifier_tokenizer(directory: Path, raw: dict[str, Any], rows: int | None = None) -> Tokenizer:
    """The tokenizer of a classifier directory as its classifier reads texts: a decoder classifier
    without add_special_tokens (trained before lmforge read texts as transformers does) read them
    bare, so its tokenizer drops what the post-processor adds (a Llama's BOS); encoders always
    read [CLS] ... [SEP]."""
    tokenizer = load_tokenizer(directory, rows)
    marked = reads_special_tokens(directory, raw)
    backbone = raw.get("backbone")
    if not marked and not (isinstance(backbone, dict) and backbone.get("model_type") == ENCODER_TYPE):
        tokenizer.drop_affixes()
    return tokenizer


def reads_special_tokens(directory: Path, raw: dict[str, Any]) -> bool:
    """Whether a classifier directory's config.json (`raw`) says it reads texts with its
    tokenizer's special tokens (add_special_tokens; absent: written before, bare)."""
    marked = raw.get(SPECIAL_TOKENS, False)
    if not isinstance(marked, bool):
        raise LmforgeError(f"{directory / 'config.json'}: {SPECIAL_TOKENS}={marked!r} must be true or false")
    return marked
