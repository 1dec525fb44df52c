"""`lmforge audit`: what a trained decoder memorized of its training data.

Two measures (docs/privacy.md explains how to read them):
- canary exposure (audit_exposure.py): for the secrets `lmforge prep --canaries` planted, log2 of
  the candidate space minus log2 of the true secret's rank among the candidates, by the model's
  likelihood; per repeat count, mean and max. 1.44 bits on average means "never seen"; log2 |R|
  means the model gives the secret back first.
- verbatim extraction (audit_extract.py): the share of training-document windows whose true next
  k tokens greedy decoding reproduces after a p-token prefix, beside the same share on held-out
  documents (the baseline: what the style of the corpus alone gives).

Python API (stable): `audit(model, data, ...) -> dict` (the JSON `lmforge audit` prints), and
`format_table(result) -> str`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.canaries import FILE as CANARIES_FILE
from lmforge.data.canaries import CanarySet
from lmforge.data.report import Report
from lmforge.data.shards import is_prepared, open_split, read_meta
from lmforge.data.sources import read_documents
from lmforge.errors import LmforgeError, counted
from lmforge.formats.directory import load_model
from lmforge.inference.translate import check_out
from lmforge.model.kinds import require_decoder
from lmforge.outputs import write_file
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools.audit_exposure import exposures, model_scorer
from lmforge.tools.audit_extract import Documents, extraction, model_greedy, windows

MIN_CANDIDATES = 100  # sampled secrets: fewer and the fitted exposure is noise (10 gave min 0.0)


def _positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise LmforgeError(f"{name}={value!r}: must be an integer >= 1")


def _prepared(path: Path, tokenizer: Tokenizer, split: str) -> Documents:
    meta = read_meta(path)
    data_tok = Tokenizer.load(path / "tokenizer.json")
    if data_tok.hf.get_vocab() != tokenizer.hf.get_vocab():
        raise LmforgeError(
            f"{path}: its tokenizer.json is not the model's (train on this data, or audit text files)"
        )
    arrays = open_split(path, split)
    ids = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    eos = meta.get("eos_id", tokenizer.eos_id)
    if eos is None:
        raise LmforgeError(f"{path / 'meta.json'}: no eos_id: documents cannot be told apart")
    return Documents.from_stream(ids, eos)


def _files(
    data: Any, tokenizer: Tokenizer, text_field: str, label: str, start: list[int] | None = None
) -> Documents:
    report = Report()
    start = tokenizer.text_affixes()[0] if start is None else start  # Llama's BOS: as prep writes one
    docs = [start + tokenizer.encode(d.text) for d in read_documents(data, text_field, report) if d.text]
    if not docs:  # else the table would only say no document is long enough
        names = ", ".join(map(str, data)) if isinstance(data, list) else str(data)
        why = (
            f"skipped {report.problems[0]}"
            if report.problems
            else f"every document's {text_field!r} is empty"
        )
        raise LmforgeError(f"{label} {names}: no documents to audit ({why})")
    for line in report.skipped():
        print(f"lmforge: warning: {line}", file=sys.stderr)
    return Documents.from_lists(docs, tokenizer.eos_id)


def _check_held_out_is_other_text(data: Any, heldout: Any) -> None:
    """The held-out baseline is what the model did not train on: the same file or folder given as
    both would make memorised text look like the baseline, and every gap vanish."""
    if heldout is None:
        return
    listed = lambda paths: paths if isinstance(paths, list) else [paths]  # noqa: E731
    trained = [Path(p).resolve() for p in listed(data)]
    for given in listed(heldout):
        path = Path(given).resolve()
        inside = next((t for t in trained if path == t or t in path.parents or path in t.parents), None)
        if inside is not None:  # the same file or folder, or one inside the other
            how = "also given as data" if path == inside else f"overlaps data {inside}"
            raise LmforgeError(
                f"heldout {given}: {how}; the held-out baseline must be text the model did not train on"
            )


def audit(
    model: str | Path,
    data: str | Path | list[str | Path],
    heldout: str | Path | list[str | Path] | None = None,
    canaries: str | Path | None = None,
    prefix_tokens: int = 50,
    k: int = 50,
    samples: int = 200,
    candidates: int = 5_000,
    exact_limit: int = 10_000,
    batch_size: int = 64,
    seed: int = 0,
    text_field: str = "text",
    out: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Canary exposure and verbatim extraction of a decoder (run, checkpoint or model directory).

    data: a prepared directory (its train split is the training text, its val split the held-out
    baseline, its canaries.json the canaries), or files, folders or globs as prep reads them (the
    training text to probe; held-out text then comes from `heldout`, canaries from `canaries`).
    Extraction: `samples` windows from each side, a `prefix_tokens` prompt and `k` true tokens to
    reproduce greedily (prefix_tokens + k must fit the model's context). Exposure: every candidate
    secret is scored when there are at most `exact_limit`, else `candidates` sampled ones (the
    paper's skew-normal estimate). `batch_size` rows per forward; `seed` draws windows and
    candidates. `out`: also write the JSON there; `quiet`: no progress lines. Returns the result
    as a dict (see docs/privacy.md).
    """
    _positive(prefix_tokens=prefix_tokens, k=k, samples=samples, candidates=candidates, batch_size=batch_size)
    if isinstance(exact_limit, bool) or not isinstance(exact_limit, int) or exact_limit < 0:
        raise LmforgeError(f"exact_limit={exact_limit!r}: must be an integer >= 0")
    if candidates < MIN_CANDIDATES:  # three skew-normal parameters fitted to a handful of points
        raise LmforgeError(
            f"candidates={candidates}: at least {MIN_CANDIDATES} sampled secrets for the skew-normal fit"
            " the estimated exposure rests on (default 5,000)"
        )
    _check_held_out_is_other_text(data, heldout)
    inputs = {"model": model, "canaries": canaries}
    for label, paths in (("data", data), ("heldout", heldout)):
        inputs |= {f"{label} {p}": p for p in (paths if isinstance(paths, list) else [paths])}
    given = {k: v for k, v in inputs.items() if v is not None}
    out_file = check_out(out, given, overwrite, model) if out is not None else None
    start = time.perf_counter()
    net, tokenizer = load_model(model)
    net = require_decoder(net, model)
    if prefix_tokens + k > net.config.block_size:
        raise LmforgeError(
            f"prefix_tokens={prefix_tokens} + k={k} is over the model's context of {net.config.block_size}:"
            " lower --prefix-tokens or --k"
        )
    single = data[0] if isinstance(data, list) and len(data) == 1 else data
    doc_start = None  # the tokenizer's, for text files; prepared data's own (none before 2026-12-06)
    if isinstance(single, str | Path) and is_prepared(single):
        doc_start = [int(i) for i in read_meta(single).get("document_start", [])]
        train = _prepared(Path(single), tokenizer, "train")
        held = (
            _prepared(Path(single), tokenizer, "val")
            if heldout is None
            else _files(heldout, tokenizer, text_field, "heldout", doc_start)
        )
        found = Path(single) / CANARIES_FILE
        canaries = canaries if canaries is not None else (found if found.is_file() else None)
    else:
        train = _files(data, tokenizer, text_field, "data")
        held = _files(heldout, tokenizer, text_field, "heldout") if heldout is not None else None
    canary_set = CanarySet.load(canaries) if canaries is not None else None  # a bad file: before the work
    result: dict[str, Any] = {"model": str(model), "data": str(single)}

    greedy = model_greedy(net, k)
    result["extraction"] = {"prefix_tokens": prefix_tokens, "k": k, "decoding": "greedy"}
    for name, docs in (("train", train), ("heldout", held)):
        if docs is None:
            continue
        _say(quiet, f"extraction: {name}: up to {samples} windows of {counted(len(docs), 'document')}")
        picked = windows(docs, prefix_tokens, k, samples, seed)
        result["extraction"][name] = {"documents": len(docs)} | extraction(
            greedy, picked, prefix_tokens, batch_size
        )
    if canary_set is not None:
        n = canary_set.candidates if canary_set.candidates <= exact_limit else candidates
        _say(quiet, f"exposure: {len(canary_set.canaries)} canaries, {n:,} candidates to score")
        scorer = model_scorer(net, tokenizer, canary_set, batch_size=max(batch_size, 256), start=doc_start)
        result["exposure"] = {"file": str(canaries)} | exposures(
            scorer, canary_set, exact_limit, candidates, seed
        )
    result["seconds"] = round(time.perf_counter() - start, 2)
    if out_file is not None:
        write_file(out_file, json.dumps(result, indent=2) + "\n")
    return result


def _say(quiet: bool, line: str) -> None:
    if not quiet:
        print(f"audit: {line}", file=sys.stderr, flush=True)


def format_table(result: dict[str, Any]) -> str:
    """The audit as a few readable lines."""
    lines = []
    ex = result.get("exposure")
    if ex:
        how = (
            "every candidate scored"
            if ex["method"] == "exact"
            else f"{ex['scored']:,} sampled candidates, {ex['method']}"
        )
        lines.append(
            f"canary exposure, bits (of {ex['max_exposure']}: {ex['candidates']:,} candidates; {how})"
        )
        lines.append(f"{'repeats':>8}{'canaries':>10}{'mean':>8}{'max':>8}")
        for row in ex["per_repeat"]:
            lines.append(f"{row['repeats']:>8}{row['canaries']:>10}{row['mean']:>8.2f}{row['max']:>8.2f}")
    else:
        lines.append("canary exposure: no canaries.json (prep --canaries K plants them)")
    e = result["extraction"]
    lines.append(f"verbatim extraction: greedy {e['k']} tokens after a {e['prefix_tokens']}-token prefix")
    for name, label in (("train", "train"), ("heldout", "held-out")):
        part = e.get(name)
        if part is None:
            lines.append(f"{label:>10}: no held-out text (pass heldout / --heldout)")
        elif not part["documents"]:  # a prepared split can be empty
            lines.append(f"{label:>10}: no documents")
        elif not part["samples"]:
            lines.append(f"{label:>10}: no document is {e['prefix_tokens'] + e['k']} tokens long")
        else:
            lines.append(
                f"{label:>10}: {part['extracted']:,} of {part['samples']:,} windows extracted"
                f" ({100 * part['rate']:.1f}%), {part['mean_matched']:.1f} tokens agree on average"
            )
    return "\n".join(lines)
