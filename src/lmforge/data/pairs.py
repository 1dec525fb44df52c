"""Parallel corpora for sequence-to-sequence training (translation).

`prepare_pairs` (the `lmforge prep --pairs` verb) reads sentence pairs, cleans and filters them,
splits them by document, trains one byte-level BPE over both languages and writes a directory:

    meta.json            task "translation", languages, counts, what each filter dropped
    tokenizer.json       shared source/target vocabulary
    {train,val,test}.{src_lang,tgt_lang}   the kept pairs as text, one sentence per line
    {train,val,test}.docs                  the document each pair came from
    {train,val,test}.npz                   token ids: src_ids, src_offsets, tgt_ids, tgt_offsets

Inputs: JSON Lines, TSV or aligned NAME.en + NAME.fr files, read by pair_files.read_pairs.

The split holds out whole documents (Bible chapters, help pages): a document goes to test or
val when a hash of its name falls under test_fraction or test_fraction + val_fraction, so it is
deterministic and stable when other documents are added. Pairs in val/test whose source
sentence also occurs in train are dropped, so held-out scores are not inflated by repeats.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.input_files import input_notes, suffixes
from lmforge.data.pair_files import Pair, pair_files, read_pairs, sibling
from lmforge.data.shards import earlier_prep_output
from lmforge.data.sources import strict_lines
from lmforge.errors import LmforgeError
from lmforge.outputs import check_target, staged_folder
from lmforge.tokenization.tokenizer import Tokenizer

SPLITS = ("train", "val", "test")
FORMAT = "lmforge-pairs-1"
PAIRS_VAL_FRACTION = 0.02  # held out for validation (and as much for test) unless told otherwise


def split_of(doc: str, val_fraction: float, test_fraction: float, seed: int = 0) -> str:
    """test / val / train for a document, from a hash of its name (stable, order-free)."""
    u = int.from_bytes(hashlib.sha256(f"{seed}:{doc}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"


def prepare_pairs(
    inputs: str | Path | list[str | Path],
    out: str | Path,
    src_lang: str = "en",
    tgt_lang: str = "fr",
    vocab_size: int = 8000,
    max_tokens: int = 128,
    max_ratio: float = 2.5,
    val_fraction: float = PAIRS_VAL_FRACTION,
    test_fraction: float = PAIRS_VAL_FRACTION,
    seed: int = 0,
    tokenizer: Any = "bpe",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Clean, dedup, split and tokenize sentence pairs into `out` (atomically); returns meta.json.
    `tokenizer`: the kind to train on both sides of the training split, `bpe` (byte-level, of
    `vocab_size`) or `char`; or a model's tokenizer (train.init_from) to use as it is; a Marian
    tokenizer segments targets with its target model (`encode_target`).

    `out` must be a new or empty folder, or an earlier prep output that `overwrite` (`--overwrite`)
    allows replacing; a folder with other files, one that is, holds or lies inside an input, and
    the working directory are refused before anything is read.

    Filters, each counted in meta["dropped"]: an empty side; a repeated (source, target) pair;
    a val/test pair whose source occurs in train; a side longer than `max_tokens` tokens; a
    token-length ratio above `max_ratio` (one side more than that many times the other).
    """
    if tokenizer is None:
        tokenizer = "bpe"
    if isinstance(tokenizer, str) and tokenizer not in ("bpe", "char"):
        raise LmforgeError(f"tokenizer={tokenizer!r} must be 'bpe' or 'char' (or a model's tokenizer)")
    if src_lang == tgt_lang:
        raise LmforgeError(f"src_lang and tgt_lang are both {src_lang!r}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise LmforgeError("val_fraction and test_fraction must be in (0, 1) with a sum below 1")
    if max_tokens < 1 or not max_ratio >= 1:  # else every pair is dropped
        raise LmforgeError(f"max_tokens={max_tokens} must be >= 1 and max_ratio={max_ratio} >= 1")
    outputs: list[Path] = []
    files = pair_files(inputs, src_lang, tgt_lang, outputs)
    for note in input_notes([], outputs):  # earlier outputs in the input folders, not read
        print(f"lmforge: {note}", file=sys.stderr)
    given = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    named = ", ".join(map(str, given))  # the inputs, as error messages name them
    sources = [*given, *files]
    sources += [sibling(f, src_lang, tgt_lang) for f in files if suffixes(f)[0] == f".{src_lang}"]
    check_target(out, sources, earlier_prep_output, overwrite, "prep")  # before the slow part
    start = time.time()
    dropped = dict.fromkeys(("empty", "duplicate", "in_train", "too_long", "ratio"), 0)
    seen: set[tuple[str, str]] = set()
    kept: list[Pair] = []
    total = 0
    for pair in read_pairs(inputs, src_lang, tgt_lang):
        total += 1
        if not pair.src or not pair.tgt:
            dropped["empty"] += 1
        elif (pair.src, pair.tgt) in seen:
            dropped["duplicate"] += 1
        else:
            seen.add((pair.src, pair.tgt))
            kept.append(pair)
    splits, split_by = _split(kept, val_fraction, test_fraction, seed)
    train_sources = {p.src for p in splits["train"]}
    for split in ("val", "test"):
        kept = [p for p in splits[split] if p.src not in train_sources]
        dropped["in_train"] += len(splits[split]) - len(kept)
        splits[split] = kept
    if not splits["train"]:
        raise LmforgeError(f"{named}: no training pairs left after cleaning ({total} read)")

    texts = (t for p in splits["train"] for t in (p.src, p.tgt))
    if tokenizer == "bpe":
        tok, target = Tokenizer.train_bpe(texts, vocab_size), {"vocab_target": vocab_size}
    else:
        tok, target = Tokenizer.train_char(texts) if tokenizer == "char" else tokenizer, {}
    counts: dict[str, int] = {}
    tokens: dict[str, int] = {}
    with staged_folder(
        out, inputs=sources, owner=earlier_prep_output, overwrite=overwrite, verb="prep"
    ) as tmp:
        for split, pairs in splits.items():
            src_ids = _encode_all(tok, [p.src for p in pairs], target=False)
            tgt_ids = _encode_all(tok, [p.tgt for p in pairs], target=True)
            keep = []
            for i, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
                if max(len(s), len(t)) > max_tokens:
                    dropped["too_long"] += 1
                elif max(len(s), len(t)) > max_ratio * min(len(s), len(t)):
                    dropped["ratio"] += 1
                else:
                    keep.append(i)
            _write_split(tmp, split, [pairs[i] for i in keep], [src_ids[i] for i in keep],
                         [tgt_ids[i] for i in keep], src_lang, tgt_lang)  # fmt: skip
            counts[split] = len(keep)
            tokens[split] = sum(len(src_ids[i]) + len(tgt_ids[i]) for i in keep)
            if split == "train" and not keep:
                raise LmforgeError(
                    f"{named}: no training pairs within max_tokens={max_tokens} and"
                    f" max_ratio={max_ratio} ({dropped['too_long']} too long, {dropped['ratio']} by ratio)"
                )
        tok.save_dir(tmp)
        meta = {
            "format": FORMAT,
            "task": "translation",
            "src_lang": src_lang,
            "tgt_lang": tgt_lang,
            "vocab_size": tok.vocab_size,
            "eos_id": tok.eos_id,
            "pad_id": tok.pad_id,
            "tokenizer": tok.kind,
            "tokenizer_sha256": tok.sha256(),
            **target,  # the vocabulary asked of a trained BPE (train checks data.vocab_size against it)
            "dtype": "int32",
            "shards": {},
            "pairs": counts,
            "tokens": tokens,
            "read": total,
            "dropped": dropped,
            "filters": {"max_tokens": max_tokens, "max_ratio": max_ratio},
            "split": {
                "val_fraction": val_fraction,
                "test_fraction": test_fraction,
                "seed": seed,
                "by": split_by,
            },
            "sources": [str(p) for p in files],
            "files": sorted([*(f.name for f in tmp.iterdir()), "meta.json"]),  # a later prep's check
            "seconds": round(time.time() - start, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _split(
    pairs: list[Pair], val_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[Pair]], str]:
    """The pairs by split, and how they were split: by document, so that no document's sentences
    sit on both sides; or, where the documents are too few for that to give val and test a pair
    each, by source sentence (a repeated source still lands in one split)."""
    by_doc: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for pair in pairs:
        by_doc[split_of(pair.doc, val_fraction, test_fraction, seed)].append(pair)
    if all(by_doc.values()) or not pairs:
        return by_doc, "document"
    by_source: dict[str, list[Pair]] = {s: [] for s in SPLITS}
    for pair in pairs:
        by_source[split_of(pair.src, val_fraction, test_fraction, seed)].append(pair)
    documents = len({p.doc for p in pairs})
    return by_source, f"source sentence ({documents:,} document{'s' * (documents != 1)}: too few to split by)"


def _encode_all(tok: Any, texts: list[str], target: bool) -> list[list[int]]:
    """Token ids of each text: lmforge's BPE in one batch on every core; a model's own tokenizer
    text by text (Marian's segments targets with its target model)."""
    if isinstance(tok, Tokenizer):
        return [e.ids for e in tok.hf.encode_batch(texts, add_special_tokens=False)]
    encode = tok.encode_target if target and hasattr(tok, "encode_target") else tok.encode
    return [encode(t) for t in texts]


def _write_split(
    directory: Path,
    split: str,
    pairs: list[Pair],
    src_ids: list[list[int]],
    tgt_ids: list[list[int]],
    src_lang: str,
    tgt_lang: str,
) -> None:
    (directory / f"{split}.{src_lang}").write_text("".join(p.src + "\n" for p in pairs), encoding="utf-8")
    (directory / f"{split}.{tgt_lang}").write_text("".join(p.tgt + "\n" for p in pairs), encoding="utf-8")
    (directory / f"{split}.docs").write_text("".join(p.doc + "\n" for p in pairs), encoding="utf-8")
    arrays = {}
    for side, ids in (("src", src_ids), ("tgt", tgt_ids)):
        arrays[f"{side}_ids"] = np.asarray([i for s in ids for i in s], dtype=np.int32)
        arrays[f"{side}_offsets"] = np.cumsum([0] + [len(s) for s in ids], dtype=np.int64)
    np.savez(directory / f"{split}.npz", **arrays)


def is_pairs_dir(path: str | Path) -> bool:
    file = Path(path) / "meta.json"
    return file.is_file() and json.loads(file.read_text()).get("format") == FORMAT


def load_split(directory: str | Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(source token arrays, target token arrays) of a prepared split, checked against meta.json."""
    directory = Path(directory)
    file = directory / f"{split}.npz"
    meta = json.loads((directory / "meta.json").read_text())
    try:
        with np.load(file, allow_pickle=False) as z:
            data = {k: z[k] for k in ("src_ids", "src_offsets", "tgt_ids", "tgt_offsets")}
    except (OSError, KeyError, ValueError) as e:
        raise LmforgeError(f"{file}: unreadable pair split: {e}") from None
    sides = []
    for side in ("src", "tgt"):
        ids, off = data[f"{side}_ids"], data[f"{side}_offsets"]
        if len(off) - 1 != meta["pairs"][split] or (len(ids) and int(ids.max()) >= meta["vocab_size"]):
            raise LmforgeError(f"{file}: corrupt ({side} side does not match meta.json)")
        sides.append([ids[off[i] : off[i + 1]] for i in range(len(off) - 1)])
    return sides[0], sides[1]


def read_lines(path: str | Path) -> list[str]:
    """Lines of a text file (plain or compressed), for translate --file and eval-translate."""
    return [line.rstrip("\r\n") for _, line in strict_lines(Path(path))]
