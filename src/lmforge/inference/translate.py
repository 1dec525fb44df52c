"""`lmforge translate` and `lmforge eval-translate`: text in, translations and scores out.

Sentences are sorted by length and decoded in batches (little padding), then returned in their
input order; scores are sacreBLEU's corpus BLEU and chrF, printed with their signatures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmforge.data.pair_loader import encode_sources
from lmforge.data.pairs import read_lines
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.hardware import resolve_dtype
from lmforge.inference.seq2seq_decode import beam_decode, greedy_decode, length_limits
from lmforge.model.seq2seq import Seq2Seq
from lmforge.tokenization.tokenizer import Tokenizer


def load_translator(model: str | Path, dtype: str = "fp32") -> tuple[Seq2Seq, Tokenizer]:
    net, tokenizer = load_model(model)
    if not isinstance(net, Seq2Seq):
        raise LmforgeError(f"{model}: not a translation (encoder-decoder) model")
    net.to(resolve_dtype(dtype, net.config)[0])
    return net, tokenizer


def translate_ids(
    model: Seq2Seq,
    sources: list[list[int]],
    eos: int,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float = 1.0,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
    use_cache: bool = True,
) -> list[list[int]]:
    """Token ids in, token ids out (same order), decoded in length-sorted batches; beam None:
    the model's default (model.num_beams: 1, greedy, for lmforge's; opus-mt's generation config)."""
    beam = model.num_beams if beam is None else beam
    limit = model.config.block_size - 1  # room for the EOS appended to every source
    for n, ids in enumerate(sources, start=1):
        if len(ids) > limit:
            raise LmforgeError(f"sentence {n}: {len(ids)} tokens, more than the model's {limit}")
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[int]] = [[] for _ in sources]
    device = model.wte.weight.device
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        src = encode_sources([sources[i] for i in idx], eos, model.pad_id, model.config.block_size).to(device)
        limits = length_limits(
            [len(sources[i]) + 1 for i in idx], model.config.block_size, max_len_a, max_len_b
        )
        if beam > 1:
            hyps = beam_decode(model, src, limits, eos, beam, length_penalty, use_cache)
        else:
            hyps = greedy_decode(model, src, limits, eos, use_cache)
        for i, h in zip(idx, hyps, strict=True):
            out[i] = h
    return out


def translate_texts(model: Seq2Seq, tokenizer: Tokenizer, texts: list[str], **options: Any) -> list[str]:
    eos = tokenizer.eos_id
    assert eos is not None
    ids = translate_ids(model, [tokenizer.encode(t.strip()) for t in texts], eos, **options)
    return [tokenizer.decode(i).strip() for i in ids]


def translate(
    model: str | Path,
    texts: str | list[str] | None = None,
    file: str | Path | None = None,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float = 1.0,
    dtype: str = "fp32",
) -> list[str]:
    """Translate `texts` (a string or a list) or every line of `file` with a run, checkpoint or
    model directory; greedy with beam=1, else beam search (None: the model's default)."""
    if (beam is not None and beam < 1) or batch_size < 1:
        raise LmforgeError("--beam and --batch-size must be >= 1")
    lines = [texts] if isinstance(texts, str) else list(texts or [])
    if file is not None:
        lines += read_lines(file)
    if not lines:
        raise LmforgeError("nothing to translate: give text or --file")
    net, tokenizer = load_translator(model, dtype)
    return translate_texts(
        net, tokenizer, lines, beam=beam, batch_size=batch_size, length_penalty=length_penalty
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


def eval_translate(
    model: str | Path,
    src: str | Path,
    ref: str | Path,
    beam: int | None = None,
    batch_size: int = 32,
    length_penalty: float = 1.0,
    out: str | Path | None = None,
    dtype: str = "fp32",
) -> dict[str, Any]:
    """Translate every line of `src`, score against `ref` (same line count); optionally write the
    hypotheses to `out`. Returns score()'s dict plus the sentence count."""
    sources, references = read_lines(src), read_lines(ref)
    if len(sources) != len(references):
        raise LmforgeError(f"{src} has {len(sources)} lines but {ref} has {len(references)}")
    hyps = translate(
        model, sources, beam=beam, batch_size=batch_size, length_penalty=length_penalty, dtype=dtype
    )
    if out is not None:
        Path(out).write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
    return {**score(hyps, references), "sentences": len(hyps)}
