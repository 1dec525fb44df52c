"""Run an ONNX export (`lmforge export --format onnx`) in ONNX Runtime, without the PyTorch model.

`OnnxModel` opens an export's graphs and tokenizer from its onnx.json (formats/onnx_export.py).
`generate_onnx` is `lmforge generate DIR --runtime onnx`: the decoding of inference/generate.py
(greedy, temperature, top-k, top-p, per-row seeds, left-padded batches, a window sliding past the
context) with each step one run of the decoder graph, its present keys/values fed back as the next
step's past. `translate_ids_onnx` decodes an encoder-decoder greedily (`translate_onnx` is `lmforge
translate DIR --runtime onnx`), and `OnnxModel.run` runs any graph on numpy arrays (an encoder's
hidden states, a classifier's logits).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import onnx_runs
from lmforge.inference.bans import NO_BANS, Bans
from lmforge.inference.generate import (
    OnToken,
    check_prompt,
    check_prompts,
    collect_tokens,
    encode_prompts,
    row_generator,
    stop_set,
)
from lmforge.inference.options import check_options, check_texts
from lmforge.inference.penalties import penalize_repeats, seen_tokens
from lmforge.inference.sampling import NO_CUTOFFS, Cutoffs, sample_next
from lmforge.inference.seq2seq_decode import length_limits
from lmforge.inference.text_stream import TextStream, check_stops, cut_at_stop, watcher
from lmforge.tokenization.marian import MarianTokenizer, load_translation_tokenizer
from lmforge.tokenization.tokenizer import Tokenizer

MANIFEST = "onnx.json"


class OnnxModel:
    """An ONNX export: its manifest (`meta`), tokenizer and one ONNX Runtime session per graph."""

    def __init__(self, directory: str | Path, kind: str | None = None, threads: int = 0) -> None:
        """kind: the model kind the caller needs ("decoder", "seq2seq", ...), or any."""
        try:
            import onnxruntime as ort
        except ImportError:
            raise LmforgeError("running ONNX needs onnxruntime: pip install onnxruntime") from None
        self.directory = Path(directory)
        file = self.directory / MANIFEST
        if not self.directory.is_dir():
            raise LmforgeError(f"{self.directory}: no such folder (an `lmforge export --format onnx` folder)")
        if not file.is_file():
            raise LmforgeError(f"{file}: missing (not an `lmforge export --format onnx` folder)")
        try:
            self.meta: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
            self.kind: str = self.meta["kind"]
            graphs = {name: g["file"] for name, g in self.meta["graphs"].items()}
            if not isinstance(self.kind, str) or not self.kind:
                raise TypeError(f"kind {self.kind!r} is not a model kind")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise LmforgeError(f"{file}: not an ONNX export's manifest ({e!r})") from None
        if kind is not None and self.kind != kind:
            raise LmforgeError(f"{directory}: {onnx_runs(self.directory, self.kind)}, not a {kind} model")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's default, one per core
        # Idle workers would otherwise spin between runs, taking the cores from whatever the
        # process does next: PyTorch decoded 4.5x slower beside a spinning session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        for name, graph in graphs.items():
            path = self.directory / graph
            try:
                self.sessions[name] = ort.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]
                )
            except Exception as e:  # onnxruntime raises its own exception types on bad files
                raise LmforgeError(f"{path}: cannot load ONNX graph: {str(e).splitlines()[0]}") from None
        self.tokenizer: Tokenizer | MarianTokenizer = load_translation_tokenizer(self.directory)
        if isinstance(self.tokenizer, Tokenizer) and isinstance(self.meta.get("eos_token_id"), int):
            self.tokenizer.eos_id = self.meta["eos_token_id"]

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        """One run of a graph: its named inputs -> its named outputs."""
        session = self.sessions[graph]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs), strict=True))

    def call(self, graph: str, *inputs: np.ndarray) -> list[np.ndarray]:
        """One run of a graph with its inputs in the manifest's order -> its outputs in order."""
        names = self.meta["graphs"][graph]["inputs"]
        return self.sessions[graph].run(None, dict(zip(names, inputs, strict=True)))

    def empty_past(self, batch: int) -> list[np.ndarray]:
        """Keys and values of zero positions per layer: the first step's past."""
        c = self.meta["cache"]
        return [np.zeros((batch, c["n_kv_head"], 0, c["head_size"]), np.float32)] * (2 * c["n_layer"])

    def decoder_step(
        self, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """ids (B, T), mask (B, P+T) 1 on real tokens, past (B, n_kv, P, hs) per layer ->
        (last position's logits (B, V), present (B, n_kv, P+T, hs) per layer)."""
        out = self.call("model", ids, mask, *past)
        return out[0][:, -1], out[1:]


def stream_ids_onnx(
    model: OnnxModel,
    prompt: np.ndarray,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: list[torch.Generator] | None = None,
    mask: np.ndarray | None = None,
    repetition_penalty: float = 1.0,
    min_p: float = 0.0,
    bans: Bans = NO_BANS,
    cutoffs: Cutoffs = NO_CUTOFFS,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) one step at a time for prompts (B, T) (left-padded, mask
    (B, T) 1 on real tokens), as generate.stream_ids does with the PyTorch model."""
    context = model.meta["block_size"]
    seq = prompt
    real = np.ones_like(prompt) if mask is None else mask
    logits, past = model.decoder_step(seq[:, -context:], real[:, -context:], model.empty_past(len(seq)))
    seen = None  # (B, vocab): each row's tokens so far, its padding left out
    if repetition_penalty != 1.0:
        seen = seen_tokens(torch.from_numpy(seq), logits.shape[-1], torch.from_numpy(real == 1))
    histories = bans.histories(p[m == 1].tolist() for p, m in zip(seq, real, strict=True))
    for _ in range(max_new_tokens):
        scores = torch.from_numpy(logits)
        if seen is not None:
            scores = penalize_repeats(scores, seen, repetition_penalty)
        if histories is not None:
            scores = bans.apply(scores, histories)
        token = sample_next(scores, temperature, top_k, top_p, generator, min_p, cutoffs)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        if histories is not None:
            bans.record(histories, token)
        yield token
        column = token.numpy()[:, None].astype(np.int64)
        seq = np.concatenate([seq, column], axis=1)
        real = np.concatenate([real, np.ones_like(column)], axis=1)
        if past[0].shape[2] < context:  # one token's work: the present keys/values are the past
            logits, past = model.decoder_step(column, real, past)
        else:  # the window slides: recompute over the last `context` tokens
            logits, past = model.decoder_step(
                seq[:, -context:], real[:, -context:], model.empty_past(len(seq))
            )


def generate_ids_onnx(
    model: OnnxModel,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    truncate: bool = False,
    on_token: OnToken | None = None,
    stop_at_eos: bool = True,
    repetition_penalty: float = 1.0,
    min_p: float = 0.0,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
    typical_p: float = 1.0,
    epsilon_cutoff: float = 0.0,
    eta_cutoff: float = 0.0,
) -> list[list[int]]:
    """New token ids for each prompt, stopping at the export's EOS (unless stop_at_eos=False):
    generate.generate_ids on ONNX Runtime (min_new_tokens holds back the EOS ids either way)."""
    check_options(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        repetition_penalty=repetition_penalty, min_p=min_p, min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, typical_p=typical_p, epsilon_cutoff=epsilon_cutoff,
        eta_cutoff=eta_cutoff,
    )  # fmt: skip
    context = model.meta["block_size"]
    prompts = check_prompts(prompts, context, truncate)
    if max_new_tokens == 0 or not prompts:  # no prompts: no outputs, as generate_ids
        return [[] for _ in prompts]
    width = max(map(len, prompts))
    ids = np.array([[0] * (width - len(p)) + p for p in prompts], dtype=np.int64)  # left padding
    mask = np.array([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=np.int64)
    generator = None if seed is None else [row_generator(seed, i) for i in range(len(prompts))]
    # every stop id of the model (exports before 2026-12-06 kept the EOS alone)
    eos = stop_set(model.meta.get("stop_token_ids", model.meta.get("eos_token_id")))
    stops = eos if stop_at_eos else frozenset()
    steps = stream_ids_onnx(
        model, ids, max_new_tokens, temperature, top_k, top_p, generator, mask, repetition_penalty, min_p,
        Bans(no_repeat_ngram_size, min_new_tokens, eos), Cutoffs(typical_p, epsilon_cutoff, eta_cutoff),
    )  # fmt: skip
    return collect_tokens(steps, len(prompts), stops, on_token)


def generate_onnx(
    model: str | Path,
    prompt: str | list[str] = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int | None = None,
    stream: bool = False,
    truncate_prompt: bool = False,
    stop: str | list[str] | None = None,
    repetition_penalty: float = 1.0,
    min_p: float = 0.0,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
    typical_p: float = 1.0,
    epsilon_cutoff: float = 0.0,
    eta_cutoff: float = 0.0,
) -> list[str]:
    """`lmforge generate DIR --runtime onnx`: generate text with ONNX Runtime from a decoder
    exported by `lmforge export --format onnx`; returns prompt + continuation, as generate() does
    (the same defaults, sampling, per-row seeds and stop strings)."""
    check_options(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        truncate_prompt=truncate_prompt,
        repetition_penalty=repetition_penalty,
        min_p=min_p,
        min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size,
        typical_p=typical_p,
        epsilon_cutoff=epsilon_cutoff,
        eta_cutoff=eta_cutoff,
    )
    prompts = check_texts(prompt, "prompt")
    stops = check_stops(stop)
    onnx = OnnxModel(model, "decoder")
    tokenizer = onnx.tokenizer
    assert isinstance(tokenizer, Tokenizer)
    ids = encode_prompts(tokenizer, prompts)
    streaming = stream and len(prompts) == 1
    if streaming:
        check_prompt(ids[0], onnx.meta["block_size"], truncate_prompt, "the prompt")
        sys.stdout.write(prompts[0])
    watch = watcher(tokenizer, ids, stops, streaming)
    outs = generate_ids_onnx(
        onnx, ids, max_new_tokens, temperature, top_k, top_p, seed, truncate_prompt, watch,
        repetition_penalty=repetition_penalty, min_p=min_p, min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, typical_p=typical_p, epsilon_cutoff=epsilon_cutoff,
        eta_cutoff=eta_cutoff,
    )  # fmt: skip
    if isinstance(watch, TextStream):
        watch.finish()
        sys.stdout.write("\n")
    texts = [tokenizer.decode_after(i, o) for i, o in zip(ids, outs, strict=True)]  # as generate's
    return [p + cut_at_stop(t, stops)[0] for p, t in zip(prompts, texts, strict=True)]


def translate_ids_onnx(
    model: OnnxModel,
    sources: list[list[int]],
    max_new_tokens: int | None = None,
    max_len_a: float = 2.0,
    max_len_b: int = 10,
) -> list[list[int]]:
    """Greedy translation of source ids (EOS appended here) with an exported encoder-decoder: each
    sentence's target ids without the EOS, at most min(block_size, a * source_len + b) and
    max_new_tokens (EOS included), as translate.translate_ids decodes with beam 1."""
    m = model.meta
    eos, pad, start = m["eos_token_id"], m["pad_token_id"], m["decoder_start_token_id"]
    rows = [s + [eos] for s in sources]
    width = max(map(len, rows))
    if width > m["block_size"]:
        raise LmforgeError(f"a source of {width} tokens (EOS included) exceeds the context {m['block_size']}")
    limits = length_limits([len(r) for r in rows], m["block_size"], max_len_a, max_len_b)
    if max_new_tokens is not None:
        limits = [min(n, max_new_tokens) for n in limits]
    src = np.array([r + [pad] * (width - len(r)) for r in rows], dtype=np.int64)  # right padding
    src_mask = (np.arange(width)[None, :] < np.array([len(r) for r in rows])[:, None]).astype(np.int64)
    cross = model.call("encoder", src, src_mask)[1:]  # per layer: keys, values (B, nh, S, hs)
    tokens = np.full((len(rows), 1), start, dtype=np.int64)
    past = model.empty_past(len(rows))
    out: list[list[int]] = [[] for _ in rows]
    done = [n == 0 for n in limits]
    for step in range(1, max(limits, default=0) + 1):
        if all(done):
            break
        result = model.call("decoder", tokens, src_mask, *cross, *past)
        logits, past = result[0][:, -1], result[1:]
        if m["suppress_tokens"]:  # never generated (Marian's pad token)
            logits[:, m["suppress_tokens"]] = -np.inf
        nxt = np.where([step >= n for n in limits], eos, logits.argmax(-1))  # EOS forced at the limit
        for i, token in enumerate(nxt.tolist()):
            if not done[i] and token != eos:
                out[i].append(token)
            done[i] = done[i] or token == eos or step >= limits[i]
        tokens = np.where(done, eos, nxt)[:, None].astype(np.int64)
    return out


def translate_onnx(
    model: str | Path,
    texts: str | list[str] | None = None,
    file: str | Path | None = None,
    batch_size: int = 32,
    truncate: bool = False,
) -> list[str]:
    """`lmforge translate DIR --runtime onnx`: translate `texts` or every line of `file` greedily
    (beam 1) with an encoder-decoder exported by `lmforge export --format onnx`, in length-sorted
    batches, as translate() does with beam=1: a blank line stays blank, and a sentence over the
    model's limit is an error, or with `truncate` is cut to it."""
    from lmforge.inference.translate import (  # the PyTorch path's rules
        fit_sources,
        gather_sentences,
        in_length_batches,
    )

    check_options(batch_size=batch_size, truncate=truncate)
    lines = gather_sentences(texts, file)
    onnx = OnnxModel(model, "seq2seq")
    tokenizer = onnx.tokenizer
    sources = fit_sources([tokenizer.encode(t.strip()) for t in lines], onnx.meta["block_size"] - 1, truncate)
    out = in_length_batches(
        sources, batch_size, lambda idx: translate_ids_onnx(onnx, [sources[i] for i in idx])
    )
    return [tokenizer.decode(ids).strip() for ids in out]
