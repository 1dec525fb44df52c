"""`lmforge translate` and `lmforge eval-translate`: text in, translations and scores out.

Sentences are sorted by length and decoded in batches (little padding), then returned in their
input order; scores are sacreBLEU's corpus BLEU and chrF, printed with their signatures.
"""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmforge.data.pair_loader import encode_sources
from lmforge.data.pairs import read_lines
from lmforge.errors import LmforgeError, counted
from lmforge.formats.directory import load_model, model_folders, resolve_model_dir
from lmforge.hardware import resolve_dtype
from lmforge.inference.options import check_options, check_texts
from lmforge.inference.seq2seq_decode import Repeats, beam_decode, greedy_decode, length_limits
from lmforge.model import kernels
from lmforge.model.seq2seq import Seq2Seq
from lmforge.outputs import write_file
from lmforge.tokenization.tokenizer import Tokenizer


def load_translator(model: str | Path, dtype: str = "fp32") -> tuple[Seq2Seq, Tokenizer]:
    net, tokenizer = load_model(model)
    if not isinstance(net, Seq2Seq):
        raise LmforgeError(f"{model}: not a translation (encoder-decoder) model")
    kernels.for_inference(net.to(resolve_dtype(dtype, net.config)[0]))
    return net, tokenizer


def model_languages(model: str | Path) -> tuple[str, str] | None:
    """The (source, target) languages a translation model names, or None: config.json's
    source_lang/target_lang (lmforge's translation runs write data.src_lang/tgt_lang there), else
    a Marian's tokenizer_config.json (opus-mt's)."""
    directory = resolve_model_dir(model)
    for name in ("config.json", "tokenizer_config.json"):
        try:
            raw = json.loads((directory / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent or unreadable: the loader has already judged it
            continue
        src, tgt = (raw.get("source_lang"), raw.get("target_lang")) if isinstance(raw, dict) else (None, None)
        if isinstance(src, str) and isinstance(tgt, str) and src and tgt:
            return src, tgt
    return None


MAX_LEN_A, MAX_LEN_B = 2.0, 10  # a translation's length limit: a x its source's tokens (EOS included) + b
CUT_OPTION = "truncate=True (--truncate)"  # how the error names the option; the pipeline's is truncation


def translation_limits(
    model: Seq2Seq,
    source_lens: list[int],
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    max_new_tokens: int | None = None,
) -> list[int]:
    """Most target tokens (EOS included) translate_ids decodes for sources of these lengths (their
    EOS not counted): min(context, ceil(a x (source + EOS) + b)), and at most max_new_tokens. A
    translation as long as its limit was cut there: the model chose no EOS within it."""
    limits = length_limits([n + 1 for n in source_lens], model.config.block_size, max_len_a, max_len_b)
    return limits if max_new_tokens is None else [min(n, max_new_tokens) for n in limits]


def translate_ids(
    model: Seq2Seq,
    sources: list[list[int]],
    eos: int,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float | None = None,
    max_len_a: float = MAX_LEN_A,
    max_len_b: int = MAX_LEN_B,
    use_cache: bool = True,
    max_new_tokens: int | None = None,
    truncate: bool = False,
    truncate_option: str = CUT_OPTION,
    early_stopping: bool | str | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
) -> list[list[int]]:
    """Token ids in, token ids out (same order), decoded in length-sorted batches; beam and
    early_stopping None: the model's defaults (model.num_beams and model.early_stopping: 1 and
    True for lmforge's models; opus-mt's generation config, 4 and False).
    max_new_tokens caps each translation (EOS included, as in transformers) below its own limit.
    A source longer than the model's context (less its EOS) is an error, or with `truncate` is cut
    to it, with one warning line on stderr (transformers' truncation=True cuts without a word).
    An empty source gives an empty translation without decoding: from EOS alone a model invents a
    sentence, and a blank line of a file should stay blank in its translation. repetition_penalty
    and no_repeat_ngram_size are transformers' (seq2seq_decode.Repeats); None: the model's (its
    generation_config.json's, else off), and so is length_penalty's (else 1)."""
    check_given(repetition_penalty, no_repeat_ngram_size, length_penalty)
    check_options(
        beam=beam,
        batch_size=batch_size,
        max_len_a=max_len_a,
        max_len_b=max_len_b,
        use_cache=use_cache,
        truncate=truncate,
        early_stopping=early_stopping,
    )
    if max_new_tokens is not None:
        check_options(max_new_tokens=max_new_tokens)
    beam = model.num_beams if beam is None else beam
    length_penalty = model.length_penalty if length_penalty is None else length_penalty
    sources = fit_sources(
        sources, model.config.block_size - 1, truncate, truncate_option
    )  # room for each source's EOS
    if max_new_tokens == 0:
        return [[] for _ in sources]
    device = model.wte.weight.device
    repeats = Repeats(
        model.repetition_penalty if repetition_penalty is None else repetition_penalty,
        model.no_repeat_ngram_size if no_repeat_ngram_size is None else no_repeat_ngram_size,
    )

    def decode(idx: list[int]) -> list[list[int]]:
        src = encode_sources([sources[i] for i in idx], eos, model.pad_id, model.config.block_size).to(device)
        limits = translation_limits(
            model, [len(sources[i]) for i in idx], max_len_a, max_len_b, max_new_tokens
        )
        if beam > 1:
            return beam_decode(
                model, src, limits, eos, beam, length_penalty, use_cache, early_stopping, repeats
            )
        return greedy_decode(model, src, limits, eos, use_cache, repeats)

    return in_length_batches(sources, batch_size, decode)


def in_length_batches(
    sources: list[list[int]], batch_size: int, decode: Callable[[list[int]], list[list[int]]]
) -> list[list[int]]:
    """Each source's output, in the sources' order: decode(indices) runs on batches of up to
    `batch_size` sources sorted by length (so a batch pads little); an empty source is never
    decoded and gives []. translate_ids and the ONNX runner (translate_onnx) batch alike."""
    order = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        for i, ids in zip(idx, decode(idx), strict=True):
            out[i] = ids
    return out


def fit_sources(
    sources: list[list[int]], limit: int, truncate: bool, option: str = CUT_OPTION
) -> list[list[int]]:
    """`sources`, each at most `limit` tokens: a longer one is an error naming it and the caller's
    `option` that cuts it, or with `truncate` is cut to its first `limit` tokens, said on stderr."""
    long = [n for n, ids in enumerate(sources, start=1) if len(ids) > limit]
    if not long:
        return sources
    first, size = long[0], len(sources[long[0] - 1])
    if not truncate:
        raise LmforgeError(
            f"sentence {first} is {size} tokens, longer than the model's limit of {limit} (its context"
            f" of {limit + 1} less the EOS): shorten it, or {option} cuts such sentences"
        )
    print(
        f"lmforge: warning: {counted(len(long), 'sentence')} longer than the model's limit of {limit}"
        f" tokens cut to it (the first: sentence {first}, {size} tokens)",
        file=sys.stderr,
    )
    return [ids[:limit] for ids in sources]


def check_given(
    repetition_penalty: float | None, no_repeat_ngram_size: int | None, length_penalty: float | None = None
) -> None:
    """The options whose None means the model's default, checked where given."""
    given = {"repetition_penalty": repetition_penalty, "no_repeat_ngram_size": no_repeat_ngram_size}
    check_options(**{k: v for k, v in (given | {"length_penalty": length_penalty}).items() if v is not None})


def translate_texts(model: Seq2Seq, tokenizer: Tokenizer, texts: list[str], **options: Any) -> list[str]:
    """One translation per text; a blank text (empty or only whitespace) gives "" (translate_ids)."""
    return translate_encoded(model, tokenizer, encode_texts(tokenizer, texts), **options)


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's source ids, as translation encodes them (surrounding whitespace dropped)."""
    return [tokenizer.encode(t.strip()) for t in texts]


def translate_encoded(
    model: Seq2Seq, tokenizer: Tokenizer, sources: list[list[int]], **options: Any
) -> list[str]:
    """The translation text of each source's ids (encode_texts), through translate_ids."""
    eos = tokenizer.eos_id
    if eos is None:
        raise LmforgeError("the model's tokenizer has no EOS token (config.json eos_token_id)")
    return [tokenizer.decode(i).strip() for i in translate_ids(model, sources, eos, **options)]


def read_sentences(path: str | Path) -> list[str]:
    """Lines of a text file (plain or compressed), or a one-line error naming it."""
    path = Path(path)
    if path.is_dir():
        raise LmforgeError(f"{path}: a folder, not a file of sentences")
    try:
        return read_lines(path)
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as e:  # unreadable, or a damaged .gz/.xz
        raise LmforgeError(f"{path}: cannot read: {e}") from None


def gather_sentences(texts: str | list[str] | None, file: str | Path | None) -> list[str]:
    """The texts, then every line of `file`: what `lmforge translate` translates. Neither is an
    error, and so is an empty file; an empty list of texts is an empty list."""
    if texts is None and file is None:
        raise LmforgeError("nothing to translate: give some text or --file")
    lines = [] if texts is None else check_texts(texts)
    if file is not None:
        from_file = read_sentences(file)
        if not from_file:
            raise LmforgeError(f"{file}: empty, no sentences to translate")
        lines += from_file
    return lines


def translate(
    model: str | Path,
    texts: str | list[str] | None = None,
    file: str | Path | None = None,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float | None = None,
    dtype: str = "fp32",
    truncate: bool = False,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
) -> list[str]:
    """Translate `texts` (a string or a list) or every line of `file` with a run, checkpoint or
    model directory; greedy with beam=1, else beam search (None: the model's default). An empty
    list gives an empty list, as generate and the pipelines do; neither texts nor file is an error.
    A sentence over the model's limit is an error, or with `truncate` is cut to it (translate_ids).
    repetition_penalty and no_repeat_ngram_size are transformers' (None: the model's, else off), and
    length_penalty beam search's (None: the model's, else 1)."""
    check_options(beam=beam, batch_size=batch_size, dtype=dtype, truncate=truncate)
    check_given(repetition_penalty, no_repeat_ngram_size, length_penalty)
    lines = gather_sentences(texts, file)
    net, tokenizer = load_translator(model, dtype)  # checked even for no sentences, as generate does
    if not lines:
        return []
    return translate_texts(
        net,
        tokenizer,
        lines,
        beam=beam,
        batch_size=batch_size,
        length_penalty=length_penalty,
        truncate=truncate,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )


def score(hypotheses: list[str], references: list[str]) -> dict[str, Any]:
    """sacreBLEU corpus BLEU and chrF (default settings) with their signatures."""
    import sacrebleu

    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {
        "bleu": b.score,
        "chrf": c.score,
        "bleu_text": str(b),
        "chrf_text": str(c),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
    }


def check_out(
    out: str | Path, inputs: dict[str, str | Path], overwrite: bool = False, model: str | Path | None = None
) -> Path:
    """An evaluation's --out (eval-translate, eval-qa, eval-instruct, audit): a file it may write.
    An existing file is refused unless `overwrite` (--overwrite: the command did not write it, so it
    does not replace it unasked), and never replaced when it is one of the `inputs` (label -> path;
    the same file by any path, links included), a file of `model`'s directory or any path inside
    its folders (model_folders; a new file directly in a run's folder aside); a folder, a missing
    folder or a read-only file is refused."""
    out = Path(out)
    read = model_folders(model) if model is not None else {}  # a LoRA run's base too
    if model is not None:  # the model directory's files, and a run's own (config.toml, summary.json)
        folders = {resolve_model_dir(model), Path(model), *read}  # as given, for the message
        inputs = inputs | {
            f"the model's file {f}": f for d in folders if d.is_dir() for f in d.iterdir() if f.is_file()
        }
    for label, given in inputs.items():
        path = Path(given)
        same = out.exists() and path.exists() and os.path.samefile(out, path)
        if same or out.resolve() == path.resolve():
            raise LmforgeError(f"out={out} is {label}: writing it would overwrite an input")
        # a file a folder or pattern of the inputs holds (a prepared directory's canaries.json)
        held = out.exists() and path.is_dir() and out.resolve().is_relative_to(path.resolve())
        if held or (out.exists() and any(os.path.samefile(out, f) for f in glob.glob(str(given)))):
            raise LmforgeError(f"out={out} is a file of {label}: writing it would overwrite an input")
    if out.is_dir():
        raise LmforgeError(f"out={out}: a folder; give the name of a file to write")
    _check_outside(out, read)
    if out.exists() and not overwrite:
        raise LmforgeError(f"out={out} exists: give --overwrite to replace it, or another file name")
    if not out.parent.is_dir():
        raise LmforgeError(f"out={out}: folder {out.parent} does not exist")
    if (out.exists() and not os.access(out, os.W_OK)) or not os.access(out.parent, os.W_OK):
        raise LmforgeError(f"out={out}: not writable")
    return out


def _check_outside(out: Path, folders: dict[Path, bool]) -> None:
    """--out inside the model's folders (a checkpoint's optimizer state, best/'s weights) would
    replace or sit among the model's files, which training prunes and replaces: refused, even with
    --overwrite, whatever the file's name. A new file directly in a run's folder is fine."""
    target = out.resolve()
    for folder, run in folders.items():
        beside = run and target.parent == folder and not out.exists()
        if target.is_relative_to(folder) and not beside:
            what = "the run" if run else "the model directory"
            raise LmforgeError(
                f"out={out} lies inside {what} {folder}: writing it could replace the model's"
                " files; give a file outside it"
            )


def eval_translate(
    model: str | Path,
    src: str | Path,
    ref: str | Path,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float | None = None,
    out: str | Path | None = None,
    dtype: str = "fp32",
    overwrite: bool = False,
    truncate: bool = False,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
) -> dict[str, Any]:
    """Translate every line of `src`, score against `ref` (same line count); optionally write the
    hypotheses to `out` (an existing file only with `overwrite`; never `src`, `ref` or a model file).
    Everything is checked before the model loads. Returns score()'s dict plus the sentence count
    and how many sources `truncate` cut to the model's limit (without it a longer one stops the
    evaluation, naming it: translate_ids), so the score says when it is of cut sentences."""
    check_options(beam=beam, batch_size=batch_size, dtype=dtype, truncate=truncate)
    check_given(repetition_penalty, no_repeat_ngram_size, length_penalty)
    if out is not None:
        out = check_out(out, {f"src={src}": src, f"ref={ref}": ref}, overwrite, model)
    sources, references = read_sentences(src), read_sentences(ref)
    if not sources:
        raise LmforgeError(f"{src}: empty, no sentences to translate")
    if len(sources) != len(references):
        raise LmforgeError(f"{src} has {len(sources)} lines but {ref} has {len(references)}")
    net, tokenizer = load_translator(model, dtype)
    options = {"beam": beam, "batch_size": batch_size, "length_penalty": length_penalty, "truncate": truncate,
               "repetition_penalty": repetition_penalty,
               "no_repeat_ngram_size": no_repeat_ngram_size}  # fmt: skip
    ids = encode_texts(tokenizer, sources)
    hyps = translate_encoded(net, tokenizer, ids, **options)
    truncated = sum(len(i) > net.config.block_size - 1 for i in ids)  # as translate_ids cuts (room for EOS)
    if out is not None:
        try:
            write_file(out, "".join(h + "\n" for h in one_per_line(hyps)))
        except OSError as e:
            raise LmforgeError(f"out={out}: cannot write: {e.strerror or e}") from None
    return {**score(hyps, references), "sentences": len(hyps), "truncated": truncated}


def one_per_line(translations: list[str]) -> list[str]:
    """The translations as lines of a file, line N of it source line N: a line break inside one
    (a model can emit one) becomes a space, said once on stderr. Scores are unchanged: sacreBLEU's
    tokenizers read a line break as a space and chrF drops whitespace."""
    flat = [re.sub(r"\r\n|\r|\n", " ", t) for t in translations]
    broken = [n for n, (a, b) in enumerate(zip(translations, flat, strict=True), start=1) if a != b]
    if broken:
        print(
            f"lmforge: warning: {counted(len(broken), 'translation')} held a line break, written as a"
            f" space to keep one line per sentence (the first: sentence {broken[0]})",
            file=sys.stderr,
        )
    return flat
