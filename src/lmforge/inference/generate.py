"""Decoding: greedy, temperature, top-k, top-p, min-p, typical-p, epsilon and eta cutoffs,
repetition penalty, banned tokens (n-grams, an early EOS, suppressed and bad words); KV cache;
streaming; batched prompts (prefilled in inference/prefill.py).

`generate_ids` works on token ids; `generate` is the text-level function behind
`lmforge generate`. Past the model's context, decoding slides a window over the last
block_size tokens (the cache is rebuilt each step there), so cached and uncached decoding
always condition on the same tokens and give the same output.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import stop_ids
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference import compile_choice
from lmforge.inference.autotune import chose_bf16, to_inference_dtype
from lmforge.inference.bans import NO_BANS, Bans
from lmforge.inference.compiled_decode import check_compilable, layer_cache, next_logits
from lmforge.inference.options import check_options, check_texts
from lmforge.inference.penalties import penalize_repeats, seen_tokens
from lmforge.inference.prefill import left_pad, prefill
from lmforge.inference.sampling import NO_CUTOFFS, Cutoffs, sample_next
from lmforge.inference.text_stream import TextStream, check_stops, cut_at_stop, watcher
from lmforge.model.gpt import GPT
from lmforge.model.kinds import require_decoder
from lmforge.tokenization.tokenizer import Tokenizer

OnToken = Callable[[int, int], bool | None]  # (row, token): True ends the row (a stop string)


@torch.inference_mode()
def stream_ids(
    model: GPT,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    use_cache: bool = True,
    generator: torch.Generator | list[torch.Generator] | None = None,
    mask: torch.Tensor | None = None,
    compile: bool | str = False,
    repetition_penalty: float = 1.0,
    min_p: float = 0.0,
    bans: Bans = NO_BANS,
    cutoffs: Cutoffs = NO_CUTOFFS,
) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) one step at a time for prompts (B, T). Prompts of different
    lengths come left-padded with mask (B, T) bool, True on real tokens; without one every row
    is real (the fast path: no mask, positions from 0). compile: one prompt's steps after the
    prefill run compiled (inference/compiled_decode.py); "auto": eager until this machine's
    measurements say the compiled step pays back (inference/compile_choice.py). repetition_penalty
    weighs down each row's tokens so far, its prompt's and its own (inference/penalties.py); bans
    keep each row from the tokens it may not take (inference/bans.py); min_p, cutoffs: sample_next's."""
    context = model.config.block_size
    seq, real = prompt, mask
    auto = None
    if compile == "auto":
        auto, compile = compile_choice.AutoSwitch.start(model, prompt.size(0), mask, use_cache), False
    if compile:
        check_compilable(model, prompt.size(0), mask, use_cache)
    new_cache = functools.partial(layer_cache, model) if compile else model.new_cache
    step: Callable[..., torch.Tensor] = compile_choice.compiled_step(model) if compile else next_logits
    # room for what this call decodes, not the whole context: a batch of 32 at SmolLM2's 8,192
    # positions would reserve 12 GB of keys and values
    room = min(context, prompt.size(1) + max_new_tokens)
    cache = new_cache(prompt.size(0), room) if use_cache else None
    logits = prefill(model, seq[:, -context:], cache, None if real is None else real[:, -context:])
    seen = seen_tokens(prompt, logits.size(-1), mask) if repetition_penalty != 1.0 else None  # (B, vocab)
    rows = prompt.tolist() if mask is None else (p[m].tolist() for p, m in zip(prompt, mask, strict=True))
    histories = bans.histories(rows)  # each row's own tokens, its padding left out; None: no bans
    for n in range(max_new_tokens):
        if seen is not None:
            logits = penalize_repeats(logits, seen, repetition_penalty)
        if histories is not None:
            logits = bans.apply(logits, histories)
        token = sample_next(logits, temperature, top_k, top_p, generator, min_p, cutoffs)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        if histories is not None:
            bans.record(histories, token)
        yield token
        if n + 1 == max_new_tokens:  # no step for a token nobody will read
            return
        seq = torch.cat([seq, token[:, None]], dim=1)
        if real is not None:
            real = torch.cat([real, real.new_ones(real.size(0), 1)], dim=1)
        # LongRoPE: the step that takes a row past the original context recomputes, as transformers
        stale = cache is not None and model.stale_cache(cache.length, 1, real)
        if cache is not None and cache.length < context and not stale:
            if real is None:
                if auto is not None and auto.due(min(max_new_tokens - n - 1, context - cache.length)):
                    step, cache = auto.switch(cache)
                    new_cache, auto = functools.partial(layer_cache, model), None
                start = time.perf_counter()
                logits = step(model, token[:, None], cache)
                if auto is not None:
                    auto.spent(time.perf_counter() - start)
            else:
                logits = model(token[:, None], cache, True, real)[:, -1]
        else:  # no cache, the window slides or longrope switches: recompute over the last `context` tokens
            cache = new_cache(seq.size(0)) if use_cache else None
            logits = prefill(model, seq[:, -context:], cache, None if real is None else real[:, -context:])


def check_prompt(ids: list[int], context: int, truncate: bool, name: str = "prompt") -> list[int]:
    """The prompt's ids, its last `context` with truncate, else a one-line error past the context."""
    if len(ids) <= context:
        return ids
    if not truncate:
        raise LmforgeError(
            f"{name} is {len(ids)} tokens, longer than the model's context of {context}"
            f" (pass truncate_prompt=True / --truncate-prompt to keep its last {context} tokens)"
        )
    return ids[-context:]


def generate_ids(
    model: GPT,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    eos_id: int | Iterable[int] | None = None,
    use_cache: bool = True,
    seed: int | None = None,
    truncate: bool = False,
    on_token: OnToken | None = None,
    compile: bool | str = False,
    repetition_penalty: float = 1.0,
    row_ids: Sequence[int] | None = None,
    min_p: float = 0.0,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
    typical_p: float = 1.0,
    epsilon_cutoff: float = 0.0,
    eta_cutoff: float = 0.0,
    min_length: int = 0,
    suppress_tokens: Iterable[int] | None = None,
    begin_suppress_tokens: Iterable[int] | None = None,
    bad_words_ids: Iterable[Iterable[int]] | None = None,
    keep_stop: bool = False,
) -> list[list[int]]:
    """New token ids for each prompt, stopping at eos_id (not returned unless keep_stop: the
    text-generation pipeline decodes it, as transformers', so an ordinary token's text stays). eos_id
    may be several ids: chat models end a turn at any of them (generation_config.json's eos_token_id list).

    All prompts decode together as one batch, left-padded when their lengths differ (each row
    gives the tokens it would alone, up to floating-point summation order). With a seed, row i
    samples from its own generator (row_generator), so it draws what it would in any other batch
    where it is row i. on_token(prompt index, token id) is called as each token is chosen (for
    streaming); when it returns True the row ends there (a stop string: inference/text_stream.py).
    compile: each prompt in turn, its steps compiled (inference/compiled_decode.py); "auto": one
    prompt switches to the compiled step once this machine's measurements say it pays back
    (inference/compile_choice.py), several decode eagerly as one batch. repetition_penalty: as
    transformers' (inference/penalties.py; 1 = off). row_ids: each prompt's row (default 0, 1,
    ...): a larger batch's parts sample as there. min_p: drop the tokens less likely than min_p
    times the likeliest when sampling (0 = off); min_new_tokens: no eos_id before that many new
    tokens; no_repeat_ngram_size: no n-gram of that size twice in a row, its prompt included
    (0 = off); all three as transformers' (inference/bans.py). typical_p,
    epsilon_cutoff, eta_cutoff: transformers' warpers after min_p (inference/sampling.Cutoffs);
    min_length (no eos_id before a row, prompt included, is that long), suppress_tokens,
    begin_suppress_tokens, bad_words_ids: transformers' bans (inference/bans.py).
    """
    check_options(
        max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
        compile=compile, repetition_penalty=repetition_penalty, min_p=min_p, min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, typical_p=typical_p, epsilon_cutoff=epsilon_cutoff,
        eta_cutoff=eta_cutoff, min_length=min_length, suppress_tokens=suppress_tokens,
        begin_suppress_tokens=begin_suppress_tokens, bad_words_ids=bad_words_ids,
    )  # fmt: skip
    model.eval()
    device = next(model.parameters()).device  # decode where the model is (a GPU after training)
    rows = range(len(prompts)) if row_ids is None else row_ids
    generator = None if seed is None else [row_generator(seed, i, device) for i in rows]
    context = model.config.block_size
    prompts = check_prompts(prompts, context, truncate)
    stops = stop_set(eos_id)
    bans = Bans.of(
        stops, model.config.vocab_size, no_repeat_ngram_size, min_new_tokens, min_length, suppress_tokens,
        begin_suppress_tokens, bad_words_ids,
    )  # fmt: skip
    cutoffs = Cutoffs(typical_p, epsilon_cutoff, eta_cutoff)
    if max_new_tokens == 0 or not prompts:  # no prompts: no outputs (a batch of none is fine)
        return [[] for _ in prompts]
    if compile is True or _apart(
        model, prompts, max_new_tokens
    ):  # the prompts in turn, row i with its generator
        outputs: list[list[int]] = []
        for i, ids in enumerate(prompts):
            steps = stream_ids(
                model, torch.tensor([ids], device=device), max_new_tokens, temperature, top_k, top_p,
                use_cache, None if generator is None else [generator[i]], None, compile=compile,
                repetition_penalty=repetition_penalty, min_p=min_p, bans=bans, cutoffs=cutoffs,
            )  # fmt: skip
            tell = None if on_token is None else functools.partial(_as_row, on_token, i)
            outputs += collect_tokens(steps, 1, stops, tell, keep_stop)
        return outputs
    batch, mask = left_pad(prompts, device)
    steps = stream_ids(
        model, batch, max_new_tokens, temperature, top_k, top_p, use_cache, generator, mask, compile,
        repetition_penalty, min_p, bans, cutoffs,
    )  # fmt: skip
    return collect_tokens(steps, len(prompts), stops, on_token, keep_stop)


def _apart(model: GPT, prompts: list[list[int]], max_new_tokens: int) -> bool:
    """Whether the prompts decode one at a time: a compiled step decodes one sequence, and under
    dynamic NTK a batch whose window slides past the context recomputes every row in one forward,
    which would change a row that never reached it (its cached keys keep older bases)."""
    c = model.config
    slides = max(map(len, prompts)) + max_new_tokens > c.block_size
    return len(prompts) > 1 and c.pos == "rope" and c.rope_type == "dynamic" and slides


def _as_row(on_token: OnToken, row: int, _: int, token: int) -> bool | None:
    return on_token(row, token)


def check_prompts(prompts: list[list[int]], context: int, truncate: bool) -> list[list[int]]:
    """Each prompt checked against the context (kept to its last tokens when truncate); an empty
    one is an error."""
    prompts = [
        check_prompt(p, context, truncate, "the prompt" if len(prompts) == 1 else f"prompt {n}")
        for n, p in enumerate(prompts, start=1)
    ]
    if any(not p for p in prompts):
        raise LmforgeError("empty prompt: give at least one token (e.g. the EOS id)")
    return prompts


def collect_tokens(
    steps: Iterable[torch.Tensor],
    rows: int,
    stops: frozenset[int],
    on_token: OnToken | None,
    keep_stop: bool = False,
) -> list[list[int]]:
    """Each row's tokens from a stream of per-step (rows,) token tensors, up to its first stop id
    (kept only with keep_stop); stops reading once every row has stopped."""
    outputs: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    for tokens in steps:
        for i, token in enumerate(tokens.tolist()):
            if done[i] or token in stops:  # a finished row decodes on, unread, until all finish
                if keep_stop and not done[i]:
                    outputs[i].append(token)
                done[i] = True
                continue
            outputs[i].append(token)
            if on_token is not None and on_token(i, token):  # a stop string ended the row's text
                done[i] = True
        if all(done):
            break
    return outputs


def row_generator(seed: int, row: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Row `row`'s random stream for a seed: row 0's is torch's for the seed itself, so one prompt
    samples as it always has; the others are spread over the 64-bit seed space."""
    return torch.Generator(device).manual_seed(
        seed if row == 0 else (seed + row * 0x9E3779B97F4A7C15) % 2**64
    )


def stop_set(eos_id: int | Iterable[int] | None) -> frozenset[int]:
    """The ids that end decoding: none, one, or several."""
    if eos_id is None:
        return frozenset()
    return frozenset([int(eos_id)] if isinstance(eos_id, int) else (int(i) for i in eos_id))


def encode_prompts(tokenizer: Tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids per prompt, with the special tokens its tokenizer adds to a text (a Llama 3 BOS);
    an empty prompt with none starts from EOS (as training separates documents)."""
    if any(not p for p in prompts) and tokenizer.eos_id is None:
        raise LmforgeError("empty prompt: this tokenizer has no EOS token to start from; give some text")
    return [tokenizer.encode_prompt(p) or [tokenizer.eos_id] for p in prompts]  # type: ignore[list-item]


def generate(
    model: str | Path,
    prompt: str | list[str] = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 50,
    top_p: float = 1.0,
    seed: int | None = None,
    stream: bool = False,
    truncate_prompt: bool = False,
    use_cache: bool = True,
    dtype: str = "auto",
    compile: bool | str = "auto",
    stop: str | list[str] | None = None,
    repetition_penalty: float = 1.0,
    min_p: float = 0.0,
    min_new_tokens: int = 0,
    no_repeat_ngram_size: int = 0,
    typical_p: float = 1.0,
    epsilon_cutoff: float = 0.0,
    eta_cutoff: float = 0.0,
) -> list[str]:
    """Generate text from a run, checkpoint or model directory; returns prompt + continuation.

    With stream=True (one prompt; more are an error) text goes to stdout as it is produced. dtype
    `auto` runs the weights in bf16 where this machine measured it faster (inference/autotune.py),
    and says so on stderr.
    Arguments are checked (inference/options.py) before the model loads; a prompt longer than the
    model's context is an error unless truncate_prompt keeps its last tokens. compile=True decodes
    each prompt through a compiled step (inference/compiled_decode.py): faster per token on the
    CPU, after a wait for its compile or load; "auto" (the default) switches to it when this
    machine's measurements say the wait pays back (inference/compile_choice.py), and says so on
    stderr after the text. stop: a text (or several) that ends a continuation, left out of it, as
    OpenAI's `stop` (the prompt is not searched). repetition_penalty: above 1, tokens already in
    the prompt or the continuation are less likely, as transformers' (1 = off, the default).
    min_p, min_new_tokens, no_repeat_ngram_size, typical_p, epsilon_cutoff, eta_cutoff: as
    generate_ids' (off by default).
    """
    check_options(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        truncate_prompt=truncate_prompt,
        use_cache=use_cache,
        dtype=dtype,
        compile=compile,
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
    if stream and len(prompts) > 1:  # their tokens would interleave on stdout
        raise LmforgeError(f"stream=True writes one prompt's text as it comes; {len(prompts)} were given")
    net, tokenizer = load_model(model)
    net, why = to_inference_dtype(require_decoder(net, model), dtype)
    eos = stop_ids(resolve_model_dir(model), tokenizer.eos_id)  # every EOS id, as transformers stops at
    if compile is True:  # before a streamed prompt is echoed
        check_compilable(net, 1, None, use_cache)
    ids = encode_prompts(tokenizer, prompts)
    compile_choice.switches.clear()
    streaming = stream and len(prompts) == 1
    watch = watcher(tokenizer, ids, stops, streaming)
    if streaming:  # a prompt too long for the context fails before it is echoed
        check_prompt(ids[0], net.config.block_size, truncate_prompt, "the prompt")
        sys.stdout.write(prompts[0])
    try:
        outs = generate_ids(
            net,
            ids,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            eos,
            use_cache,
            seed,
            truncate_prompt,
            watch,
            compile,
            repetition_penalty,
            min_p=min_p,
            min_new_tokens=min_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size,
            typical_p=typical_p,
            epsilon_cutoff=epsilon_cutoff,
            eta_cutoff=eta_cutoff,
        )
    except LmforgeError:  # mid-stream (every token banned): the text so far ends its line
        if isinstance(watch, TextStream):
            watch.finish()
            sys.stdout.write("\n")
            sys.stdout.flush()
        raise
    if isinstance(watch, TextStream):
        watch.finish()
        sys.stdout.write("\n")
    for said in compile_choice.switches:  # after the text, which a line in its middle would break
        print(f"lmforge: decoding {said}", file=sys.stderr)
    if (rounded := chose_bf16(dtype, why)) is not None:
        print(f"lmforge: decoded in {rounded}", file=sys.stderr)
    hint = compile_choice.hint()
    if hint is not None:
        print(f"lmforge: {hint}", file=sys.stderr)
    texts = [tokenizer.decode_after(i, o) for i, o in zip(ids, outs, strict=True)]  # first space kept
    return [p + cut_at_stop(t, stops)[0] for p, t in zip(prompts, texts, strict=True)]
