"""`lmforge prep`: raw files -> cleaned documents -> trained tokenizer -> token shards + report.

Three streaming passes over disk, so memory does not grow with the corpus:
1. read + clean (pipeline.py, every core) -> a temporary file of cleaned documents;
2. train the tokenizer on that file (HF `tokenizers`, multi-threaded);
3. encode it with the fastest exact encoder (encode.py) and write EOS-separated documents to
   train/val shards (each after what the tokenizer puts before a text: Llama's BOS), a document
   going to val when its text hash falls below val_fraction.
With prep.canaries (canaries.py), random secrets are written into the train shards in pass 3
and recorded in canaries.json, for `lmforge audit`.
meta.json, tokenizer.json and report.json are written beside the shards; the directory appears
atomically (temp dir + rename), and only where it loses nothing (lmforge/outputs.py).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
from tqdm import tqdm

from lmforge.config import COMMAND_LINE, Config, load_config
from lmforge.data.canaries import FILE as CANARIES_FILE
from lmforge.data.canaries import Planter, check_documents, check_split, make_canaries
from lmforge.data.encode import hf_encoder, make_encoder, verify
from lmforge.data.input_files import DOCUMENTS, input_notes, list_files, split_inputs, suffixes
from lmforge.data.pipeline import (
    _batches,
    check_stage_options,
    clean_documents,
    parse_stages,
    read_docs,
    write_docs,
)
from lmforge.data.report import Report
from lmforge.data.shard_writer import ShardWriter
from lmforge.data.shards import META, SHARDS_FORMAT, earlier_prep_output
from lmforge.data.sources import read_documents
from lmforge.errors import LmforgeError
from lmforge.outputs import staged_folder
from lmforge.tokenization.tokenizer import Tokenizer, UnknownChars

VERIFY_DOCS = 64  # documents checked against HF before trusting the fast encoder
VERIFY_CHARS = 16384  # characters of each


def is_val(text: str, val_fraction: float) -> bool:
    """The deterministic split: a document's xxh64 hash, as a fraction of 2^64."""
    return xxhash.xxh64_intdigest(text.encode("utf-8")) < val_fraction * 2.0**64


PREP_READS = ("data", "prep")  # the config sections prep reads


def _settings(
    inputs: Any,
    config: str | Path | None,
    args: dict[str, Any],
    options: dict[str, Any],
    overrides: list[str],
) -> tuple[list[str], Config]:
    """Merge a recipe (if any), explicit arguments and [prep] options into one Config."""
    items = [inputs] if isinstance(inputs, str | Path) else list(inputs or [])
    if config is None and len(items) == 1 and str(items[0]).endswith(".toml"):
        config, items = items[0], []
    recipes = [str(i) for i in items if str(i).endswith(".toml")]
    if recipes:  # it would be read as a document, and its settings ignored
        raise LmforgeError(
            f"prep: {recipes[0]} looks like a recipe: give it as the only input (its prep.inputs"
            " name the inputs) and the other settings as --section.key=value overrides"
        )
    # checked once every setting is in: --canaries N with a --prep.canary_length override is fine
    cfg = load_config(config, overrides, validate=False) if config is not None or overrides else Config()
    unread = [
        k for k, where in cfg.given.items() if where == COMMAND_LINE and k.split(".")[0] not in PREP_READS
    ]
    if unread:  # `--train.init_from=M` did not make prep use M's tokenizer, unsaid
        raise LmforgeError(
            f"prep: --{unread[0]} is not read by prep, which reads [data] and [prep] keys only (to"
            " prepare text with a model's tokenizer, give it to `lmforge train --train.init_from=M"
            " --data.input=TEXT`, which preps it so)"
        )
    typed = [k for k in ("prep.inputs", "data.input") if cfg.given.get(k) == COMMAND_LINE]
    if items and typed:  # the INPUT... were read and the key dropped, unsaid
        value = cfg.prep.inputs if typed[0] == "prep.inputs" else cfg.data.input
        given = ", ".join(map(str, items))
        raise LmforgeError(f"prep: --{typed[0]}={value} and the inputs {given}: give one of them")
    for key, value in args.items():
        if value is not None:
            setattr(cfg.data, key, value)
    known = {f.name for f in dataclasses.fields(cfg.prep)}
    for key, value in options.items():
        if key not in known:
            raise LmforgeError(f"prep: unknown option {key!r} (known: {', '.join(sorted(known))})")
        if value is not None:
            setattr(cfg.prep, key, value)
    cfg.validate()
    if not items:
        key = "prep.inputs" if cfg.prep.inputs else "data.input"
        source = cfg.prep.inputs or cfg.data.input
        items = split_inputs(source)
        for item in items:  # a recipe's relative path is the working directory's, not the recipe's
            if not Path(item).is_absolute() and not glob.glob(item, recursive=True):
                where = f"{key} of {config}" if config is not None else key
                raise LmforgeError(
                    f"{item}: no such file, folder or glob match ({where}; a relative path is read"
                    f" from the working directory, {Path.cwd()})"
                )
    if not items:
        raise LmforgeError("prep: no inputs (pass INPUT... or set prep.inputs in the recipe)")
    return [str(i) for i in items], cfg


def prep(
    inputs: str | Path | list[str | Path] | None = None,
    out: str | Path | None = None,
    tokenizer: str | Tokenizer | None = None,
    vocab_size: int | None = None,
    val_fraction: float | None = None,
    text_field: str | None = None,
    *,
    config: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    overrides: list[str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """`lmforge prep`: clean the inputs, train a `char` or `bpe` tokenizer, write shards, meta.json,
    tokenizer.json and report.json to `out`. Returns meta.json's content.

    `inputs` may be a TOML recipe ([data] and [prep] sections); other arguments override it.
    `options` are [prep] keys (stages, split, workers, min_chars, ...); `overrides` are
    `--section.key=value` strings as on the command line.

    `out` must be a new or empty folder, or an earlier prep output (its meta.json lists what prep
    wrote) that `overwrite` (`--overwrite`) allows replacing; a folder with other files, one that
    is, holds or lies inside an input, and the working directory are refused before any work.
    """
    given = tokenizer if isinstance(tokenizer, Tokenizer) else None  # an existing model's (init_from)
    args = {"tokenizer": None if given else tokenizer, "vocab_size": vocab_size, "val_fraction": val_fraction}
    items, cfg = _settings(inputs, config, args | {"text_field": text_field}, options, overrides or [])
    if given is None and cfg.data.tokenizer == "char" and cfg.is_set("data.vocab_size"):
        raise LmforgeError(  # it was ignored, unsaid
            f"data.vocab_size={cfg.data.vocab_size} is for the bpe tokenizer (--tokenizer bpe); a char"
            " tokenizer's vocabulary is the text's characters"
        )
    if out and cfg.given.get("prep.out") == COMMAND_LINE and Path(cfg.prep.out) != Path(out):
        raise LmforgeError(f"prep: --prep.out={cfg.prep.out} and --out {out}: give one of them")
    out = out or cfg.prep.out
    if not out:
        raise LmforgeError("prep: no output directory (pass --out or set prep.out in the recipe)")
    check_stage_options(parse_stages(cfg.prep.stages), cfg.prep)  # before the inputs' notes
    passed_over: list[Path] = []
    files = list_files(items, passed_over)
    notes = input_notes(files, passed_over)  # on stderr, five names a kind; report.json: every one
    if not quiet:
        for line in notes:
            print(f"lmforge prep: {line}", file=sys.stderr)
    sources = [*items, *files, *([config] if config is not None else [])]
    out = Path(out)
    with staged_folder(
        out, inputs=sources, owner=earlier_prep_output, overwrite=overwrite, verb="prep"
    ) as tmp:
        every = input_notes(files, passed_over, shown=None)
        meta, report = _prep_into(tmp, out, items, files, cfg, given, quiet, every)
    if not quiet:
        print(report.format())
        asked = meta.get("vocab_target")
        if asked and meta["vocab_size"] < asked:  # tokenizers stops when no pair is left to merge
            print(
                f"lmforge prep: the BPE vocabulary has {meta['vocab_size']:,} tokens, fewer than the"
                f" {asked:,} asked (data.vocab_size): this corpus has no more pairs to merge",
                file=sys.stderr,
            )
    return meta


def _prep_into(
    tmp: Path,
    out: Path,
    items: list[str],
    files: list[Path],
    cfg: Config,
    given: Tokenizer | None,
    quiet: bool,
    notes: list[str],
) -> tuple[dict[str, Any], Report]:
    """prep's three passes, writing everything into the temporary folder `tmp` (`notes`: what
    the input listing said, kept in report.json)."""
    data, p = cfg.data, cfg.prep
    stage_names = parse_stages(p.stages)
    check_stage_options(stage_names, p)
    canaries = None  # drawn first: a bad setting stops prep before any work
    if p.canaries:
        canaries = make_canaries(p.canaries, p.canary_repeats, p.canary_seed, p.canary_length)
        check_split(out, p.split)
    start = time.time()
    report = Report()
    report.stage("read")  # first in the report
    if notes:
        report.extra["input_notes"] = notes
    total = sum(f.stat().st_size for f in files if f.is_file())
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="clean", disable=quiet or None, file=sys.stderr)
    compressed = any(suffixes(f)[1] or suffixes(f)[0] in (".parquet", *DOCUMENTS) for f in files)
    if compressed:
        bar.total = None  # text size unknown until decompressed (or extracted): rate, no ETA

    def texts() -> Any:
        for doc in read_documents(files, data.text_field, report, p.max_line_bytes, json_field=p.json_field):
            bar.update(len(doc.text))
            yield doc.text

    cleaned = tmp / "cleaned.bin"
    try:  # closed on an error too, so that the error's line is not glued onto the bar
        n_docs, n_bytes = write_docs(
            cleaned, clean_documents(texts(), stage_names, dataclasses.asdict(p), report, tmp, p.workers)
        )
    finally:
        bar.close()
    (tmp / "before_boilerplate.bin").unlink(missing_ok=True)
    t_clean = time.time() - start
    if n_docs == 0:
        first = f"; the first: {report.problems[0]}" if report.problems else ""
        raise LmforgeError(
            f"{', '.join(items)}: the corpus is empty after reading and cleaning ({report.summary()}){first}"
        )
    if canaries:  # one document cannot be on both sides of the split
        check_documents(", ".join(items), n_docs)

    t0 = time.time()
    budget = p.tokenizer_train_mb * 1_000_000 or None
    # their characters in the vocabulary, the whole alphabet's: a char vocabulary holding only the
    # drawn secrets' digits made audit's candidates with the others <|unk|>, overstating exposure
    extra = [c.text for c in canaries.canaries] + [canaries.alphabet] if canaries else []
    tok = given or _train_tokenizer(cleaned, data.tokenizer, data.vocab_size, budget, extra)
    t_train = time.time() - t0

    t0 = time.time()
    name, encode = make_encoder(tok, threads=max(2, os.cpu_count() or 1))
    # Pieces of the first documents: HF itself is slow, so the check is kept to ~1 MB.
    sample = [t[:VERIFY_CHARS] for _, t in zip(range(VERIFY_DOCS), read_docs(cleaned), strict=False)]
    same = name == "tokenizers" or verify(tok, encode, sample)
    if not same:
        name, encode = hf_encoder(tok)
        report.extra["encoder_note"] = "fast encoder differed from tokenizer.json; used HF tokenizers"
    # A document starts as the tokenizer starts a text (Llama's BOS: its models never saw one
    # without), as eval and generate read them, and ends with EOS, which tells documents apart.
    doc_start = tok.text_affixes()[0]
    writer = ShardWriter(tmp, tok.vocab_size, p.shard_tokens, doc_start)
    unknown = UnknownChars(tok)  # a given tokenizer, or one trained on the first MB only, may lack some
    eos = tok.eos_id
    planter = Planter(canaries, n_docs, encode, tok.decode) if canaries else None
    doc = 0
    desc = f"tokenize ({name})"  # disable=None: no bar into a pipe or file, as train's
    bar = tqdm(total=n_bytes, unit="B", unit_scale=True, desc=desc, disable=quiet or None, file=sys.stderr)
    for batch in _batches(read_docs(cleaned)):
        for text, ids in zip(batch, encode(batch), strict=True):
            if planter:  # canary copies go to train, before document `doc` when drawn there
                planter.at(doc, writer, eos)
            doc += 1
            size = len(text.encode("utf-8"))
            split = "val" if p.split == "hash" and is_val(text, data.val_fraction) else "train"
            writer.add(split, ids, eos, size)
            unknown.add(text, ids)
            bar.update(size)
    if planter:
        planter.at(doc, writer, eos)
    bar.close()
    if planter:  # before the writer falls back to the tail split, which could put a copy in val
        check_documents(", ".join(items), n_docs, writer.docs["val"], data.val_fraction)
    sizes = np.asarray(tok.token_bytes(), dtype=np.int64)
    split_kind = writer.finish(data.val_fraction, sizes, tail=p.split == "tail")
    if planter:
        if split_kind == "tail":  # a backstop: documents on both sides, yet a side with no tokens
            raise LmforgeError(
                f"{out}: prep.canaries needs the hash split; it fell back to the tail split (a side held no"
                " tokens), which could put a canary in validation: give more documents"
            )
        planter.canaries.save(tmp / CANARIES_FILE)
        report.extra["canaries"] = len(planter.canaries.canaries)
        report.extra["canary_copies_in_train"] = planter.inserted
    t_tok = time.time() - t0
    cleaned.unlink()
    if unknown.count:
        report.extra["unknown_characters"] = unknown.count
        print(f"lmforge: warning: {out}: {unknown.message()}", file=sys.stderr)

    tokens = sum(writer.tokens.values())
    seconds = time.time() - start
    meta = {
        "format": SHARDS_FORMAT,
        "out": str(out),
        "dtype": writer.dtype.name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "bos_id": tok.bos_id,
        "document_start": doc_start,
        "pad_id": tok.pad_id,
        "tokenizer": tok.kind,
        "tokenizer_sha256": tok.sha256(),
        # the vocabulary asked of a trained BPE (train checks data.vocab_size against it)
        **({"vocab_target": data.vocab_size} if given is None and data.tokenizer == "bpe" else {}),
        "encoder": name,
        "documents": n_docs,
        "split": split_kind,
        "val_fraction": data.val_fraction,
        "shards": writer.shards,
        "shard_tokens": writer.sizes,
        "tokens": dict(writer.tokens),
        "bytes": dict(writer.bytes),
        "documents_per_split": dict(writer.docs),
        "stages": stage_names,
        "sources": [_manifest(f) for f in files],
        "canaries": planter.inserted if planter else 0,
        "seconds": round(seconds, 2),
    }
    report.extra.update(
        {
            "documents_out": n_docs,
            "bytes_out": n_bytes,
            "tokens": tokens,
            "tokens_per_split": dict(writer.tokens),
            "split": split_kind,
            "bytes_per_token": round(n_bytes / max(1, tokens - n_docs), 3),
            "encoder": name,
            "seconds": round(seconds, 2),
            "seconds_clean": round(t_clean, 2),
            "seconds_tokenizer_training": round(t_train, 2),
            "seconds_tokenize": round(t_tok, 2),
            "MB_per_s": round(report.stage("read").bytes_out / 1e6 / max(seconds, 1e-9), 2),
            "tokenize_MB_per_s": round(n_bytes / 1e6 / max(t_tok, 1e-9), 2),
        }
    )
    tok.save(tmp / "tokenizer.json")
    report.save(tmp / "report.json")
    # The manifest of what prep wrote: a later prep replaces this folder only if nothing else is in it.
    meta["files"] = sorted([*(f.name for f in tmp.iterdir()), META])
    (tmp / META).write_text(_json(meta))
    return meta, report


def _train_tokenizer(
    cleaned: Path, kind: str, vocab_size: int, budget: int | None, extra: list[str] | None = None
) -> Tokenizer:
    def texts() -> Any:
        yield from extra or []
        used = 0
        for text in read_docs(cleaned):
            yield text
            used += len(text)
            if budget and used >= budget:
                return

    if kind == "char":
        return Tokenizer.train_char(texts())
    return Tokenizer.train_bpe(texts(), vocab_size)


def _manifest(path: Path) -> dict[str, Any]:
    try:
        return {"path": str(path), "bytes": path.stat().st_size}
    except OSError:
        return {"path": str(path), "bytes": None}


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"
