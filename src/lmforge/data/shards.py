"""Token shards: raw little-endian token ids (`train_00000.bin`, `val_00000.bin`) + meta.json.

This is the format nanoGPT and llm.c users know: uint16 when the vocabulary fits, else uint32.
`prepare_corpus` (the `lmforge prep` verb, in prep.py) turns raw text into such a directory;
`open_split` memory-maps it back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmforge.config import Config, yield_note
from lmforge.errors import LmforgeError
from lmforge.outputs import describe_foreign, foreign_entries

if TYPE_CHECKING:
    from lmforge.tokenization.tokenizer import Tokenizer

META = "meta.json"
SHARDS_FORMAT = "lmforge-shards-1"
PREP_FORMATS = (SHARDS_FORMAT, "lmforge-pairs-1")  # the latter: pairs.FORMAT (prep --pairs)
# Beside prep's files: the note the trainer keeps of what it prepared RUN/data from (train/run_inputs.py).
COMPANIONS = {META, "source.json"}
# What prep wrote before meta.json listed its files.
_OLD_PREP_FILES = re.compile(
    r"(train|val)_\d{5}\.bin|(train|val|test)\.[\w-]+|tokenizer\.json|report\.json|source\.spm|target\.spm"
    r"|vocab\.json|tokenizer_config\.json|special_tokens_map\.json"
)


def is_prepared(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def adopt_prepared_settings(cfg: Config) -> None:
    """A prepared data.input fixes the tokenizer, its vocabulary and the split (its meta.json):
    refuse data.tokenizer, data.vocab_size or data.val_fraction chosen otherwise (Config.is_set: a
    recipe or override that names the key, even at its default; but a recipe's yields, with a note,
    to a data.input given on the command line), and take the prepared values into `cfg`, so that
    the run's config.toml records what it trains on. Values an older meta.json lacks
    (vocab_target, val_fraction) are neither checked nor taken."""
    data = cfg.data
    if not data.input or not is_prepared(data.input):
        return
    meta = read_meta(data.input)
    split = meta.get("split")  # prep: its kind (hash, tail); prep --pairs: a table with val_fraction
    pairs = split.get("val_fraction") if isinstance(split, dict) else None
    made = {"tokenizer": meta.get("tokenizer"), "val_fraction": meta.get("val_fraction", pairs)}
    if made["tokenizer"] == "bpe":  # a trained BPE's target (an init_from tokenizer has none)
        made["vocab_size"] = meta.get("vocab_target")
    yielded = []
    for key, prepared in made.items():
        given = getattr(data, key)
        if prepared is None or given == prepared:
            continue
        if cfg.outranked(f"data.{key}", by="data.input"):
            yielded.append(f"{key}={given!r}")
        elif cfg.is_set(f"data.{key}"):
            raise LmforgeError(
                f"data.{key}={given!r} differs from the {prepared!r} that data.input={data.input!r}"
                f" was prepared with (its meta.json): a prepared directory fixes the tokenizer, its"
                f" vocabulary and the split; leave data.{key} unset, set it to {prepared!r}, or"
                " prepare the data again"
            )
        if key != "tokenizer" or prepared in ("char", "bpe"):  # not an imported model's own
            setattr(data, key, prepared)
    if yielded:
        why = "was prepared with its own settings (its meta.json)"
        cfg.notes.append(yield_note(cfg, "data.input", why, "data", yielded))


def earlier_prep_output(folder: Path) -> str | None:
    """None when `folder` holds an earlier prep output and nothing else (prep may replace it, with
    overwrite), else why not: meta.json names prep's format and lists the files prep wrote."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("format") not in PREP_FORMATS:
        return describe_foreign(foreign_entries(folder, lambda name: False), "prep")
    listed = meta.get("files")
    if isinstance(listed, list):
        ours = {str(name) for name in listed} | COMPANIONS
        foreign = foreign_entries(folder, ours.__contains__)
    else:
        foreign = foreign_entries(folder, lambda n: n in COMPANIONS or bool(_OLD_PREP_FILES.fullmatch(n)))
    return describe_foreign(foreign, "prep") if foreign else None


def prepare_corpus(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    tokenizer: str | Tokenizer = "char",
    vocab_size: int = 4096,
    val_fraction: float = 0.1,
    text_field: str = "text",
    quiet: bool = True,
    overwrite: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """`lmforge prep` with the [data] arguments first (see `lmforge.data.prep.prep`); quiet by
    default, as the trainer calls it when `data.input` is raw text, and replacing an earlier prep
    output at `out` (the trainer's own RUN/data), never a folder with other files."""
    from lmforge.data.prep import prep

    return prep(
        inputs,
        out,
        tokenizer,
        vocab_size,
        val_fraction,
        text_field,
        quiet=quiet,
        overwrite=overwrite,
        **options,
    )


def check_shards_tokenizer(data_dir: Path, meta: dict[str, Any], tokenizer: Any) -> None:
    """The folder's tokenizer must be the one its shards were written with (meta.json's
    tokenizer_sha256, where it has one): a tokenizer.json copied in trained on ids it never made,
    and the run's model shipped it (until 2026-12-07)."""
    recorded = meta.get("tokenizer_sha256")
    if isinstance(recorded, str) and recorded != tokenizer.sha256():
        raise LmforgeError(
            f"{data_dir}: its tokenizer is not the one its shards were written with (meta.json's"
            " tokenizer_sha256 differs): put the right one back, or prepare the data again"
        )


def check_same_tokenizer(data_dir: Path, data_tokenizer: Any, model_tokenizer: Any, init_from: str) -> None:
    """Prepared shards must be read by the tokenizer of train.init_from they will train: the same
    line for `lmforge train` and `lmforge plan` (which planned such data without a word until
    2026-12-07)."""
    if data_tokenizer.sha256() != model_tokenizer.sha256():
        raise LmforgeError(
            f"{data_dir}: tokenized with another tokenizer than train.init_from={init_from!r}"
            " (give raw text as data.input to tokenize it with the model's)"
        )


def read_meta(path: str | Path) -> dict[str, Any]:
    file = Path(path) / META
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise LmforgeError(f"{file}: not found (not a prepared shard directory)") from None
    except json.JSONDecodeError as e:
        raise LmforgeError(f"{file}: invalid JSON: {e}") from None
    if not isinstance(meta, dict):
        raise LmforgeError(f"{file}: not a JSON object")
    for key in ("dtype", "vocab_size", "shards", "tokens"):
        if key not in meta:
            raise LmforgeError(f"{file}: missing key {key!r}")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError:
        raise LmforgeError(f"{file}: dtype {meta['dtype']!r} is not a numpy dtype") from None
    if dtype.kind not in "iu":  # token ids: a float16 read every id as 0 and trained on it unsaid
        raise LmforgeError(f"{file}: dtype {meta['dtype']!r} is not an integer type (uint16 or uint32)")
    if not isinstance(meta["vocab_size"], int):
        raise LmforgeError(f"{file}: vocab_size {meta['vocab_size']!r} is not an integer")
    for key in ("shards", "tokens"):
        if not isinstance(meta[key], dict):
            raise LmforgeError(f"{file}: {key!r} must be an object")
    return meta


def open_split(path: str | Path, split: str) -> list[np.ndarray]:
    """Memory-map a split's shards, checking each against meta.json."""
    path = Path(path)
    meta = read_meta(path)
    dtype = np.dtype(meta["dtype"])
    expected = meta.get("shard_tokens") or {}  # tokens per shard (older outputs: only the totals)
    arrays, files = [], []
    for name in meta["shards"].get(split, []):
        file = path / name
        if Path(name).name != name:  # a hand-edited meta.json may not point outside the folder
            raise LmforgeError(f"{path / META}: shard name {name!r} is not a file name in {path}")
        if not file.is_file():
            raise LmforgeError(f"{file}: shard listed in meta.json is missing")
        size = file.stat().st_size
        if size % dtype.itemsize:
            raise LmforgeError(f"{file}: corrupt shard ({size} bytes is not a multiple of {dtype.itemsize})")
        arrays.append(np.memmap(file, dtype=dtype, mode="r") if size else np.zeros(0, dtype))
        files.append(file)
    count = sum(len(a) for a in arrays)
    wrong = [
        (f, len(a)) for f, a in zip(files, arrays, strict=True) if expected.get(f.name, len(a)) != len(a)
    ]
    culprit = ""
    if wrong:
        (file, n), *_ = wrong
        culprit = f" ({file}: {n} tokens, meta.json says {expected[file.name]})"
    if count != meta["tokens"].get(split):
        raise LmforgeError(
            f"{path}: {split} shards hold {count} tokens, meta.json says {meta['tokens'].get(split)}{culprit}"
        )
    if wrong:
        raise LmforgeError(f"{path}: corrupt shard{culprit}")
    for file, a in zip(files, arrays, strict=True):
        if len(a) and int(a.max()) >= meta["vocab_size"]:
            raise LmforgeError(f"{file}: corrupt shard (token id >= vocab_size {meta['vocab_size']})")
    return arrays
