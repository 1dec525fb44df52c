"""The text-generation pipeline: HF's `[{"generated_text": ...}]` over lmforge's decoding.

Keywords are transformers' where they mean the same (max_new_tokens, max_length, do_sample,
temperature, top_k, top_p, repetition_penalty, min_p, typical_p, epsilon_cutoff, eta_cutoff,
min_new_tokens, min_length, no_repeat_ngram_size, suppress_tokens, begin_suppress_tokens,
bad_words_ids, return_full_text, num_beams, batch_size, tools) plus lmforge's seed and truncate_prompt;
any other keyword is an error naming it. max_length and min_length count the prompt, as
transformers' do (each prompt's own tokens: transformers' pipeline decodes them one by one).

A list of messages ({"role", "content"} dicts), or a list of such lists, is a chat, as in
transformers: rendered with the model's chat template, decoded until an end-of-turn token, and
returned as `[{"generated_text": [...messages, {"role": "assistant", "content": reply}]}]`.
Sampling defaults, for text and chats alike, are transformers' pipeline's (256 new tokens, sampling
at temperature 0.7, top_k 50), then the model's generation_config.json's (inference/chat.py);
explicit keywords win; the file's num_beams, length_penalty and early_stopping too (beam search),
as transformers' pipeline runs them. An end-of-text id's text is kept unless it is a special token
(transformers decodes with skip_special_tokens=True).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import stop_ids
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.autotune import chose_bf16, to_inference_dtype
from lmforge.inference.bans import Bans
from lmforge.inference.beam_search import beam_search
from lmforge.inference.chat import ChatSpec, continuation, decoding_options
from lmforge.inference.generate import check_prompts, encode_prompts, generate_ids, stop_set
from lmforge.inference.options import (
    FIRST_ITEM,
    check_keywords,
    check_options,
    check_texts,
    is_int,
    keyword_names,
)
from lmforge.inference.text_stream import StopWatch, check_stops
from lmforge.model.kinds import require_decoder
from lmforge.pipelines.streaming import streams


def check_beams(num_beams: int, n: int, do_sample: bool) -> None:
    """Beam search as lmforge runs it: greedy (transformers' beam sampling is not here), keeping
    num_beams hypotheses, so at most that many sequences."""
    if do_sample:
        raise LmforgeError(
            f"num_beams={num_beams} with sampling: lmforge's beam search is transformers' greedy one; give"
            " do_sample=False (beam sampling is not implemented)"
        )
    if n > num_beams:
        raise LmforgeError(
            f"num_return_sequences={n} is more than num_beams={num_beams}, the hypotheses kept"
        )


def _chats(text: Any) -> list[list[Any]] | None:
    """The conversations in `text` (one, or a batch), or None when it is plain text."""
    if not isinstance(text, (list, tuple)) or not text:
        return None
    if any(isinstance(m, Mapping) for m in text):
        return [list(text)]  # one conversation (check_messages names any item that is no message)
    if all(isinstance(c, (list, tuple)) for c in text):
        return [list(c) for c in text]
    return None


def sample_rows(first: int, prompts: int, n: int) -> list[int]:
    """The random stream (row_generator's row) of each of the prompts' n sequences: prompt p's first
    sequence samples from row p of the whole input, as with n = 1 and in a streamed part (`first`:
    the part's first prompt), its others from rows no prompt's first takes (negative numbers).
    Until 2026-12-07 a streamed part's rows counted from 0 again (its prompts sampled alike) and
    prompt p's first sequence was row p * n."""
    return [first + p if j == 0 else -(((first + p) << 32) | j) for p in range(prompts) for j in range(n)]


class TextGenerationPipeline:
    def __init__(self, model: str | Path, dtype: str = "auto", batch_size: int | None = None) -> None:
        check_options(dtype=dtype)
        if batch_size is not None:
            check_options(batch_size=batch_size)
        self.batch_size = batch_size  # every call's default: rows decoded together (None: all)
        self.directory = resolve_model_dir(model)
        net, self.tokenizer = load_model(self.directory)
        decoder = require_decoder(net, model, "so text-generation cannot use it")
        self.model, why = to_inference_dtype(decoder, dtype)
        if (rounded := chose_bf16(dtype, why)) is not None:  # other tokens than transformers' fp32
            said = rounded.replace("--dtype fp32", "dtype='fp32'")
            print(f"lmforge: text-generation decodes in {said}", file=sys.stderr)
        self._chat: ChatSpec | None = None

    @property
    def chat(self) -> ChatSpec:
        """The model's chat template, generation defaults and end-of-turn ids (read on first use)."""
        if self._chat is None:
            self._chat = ChatSpec.read(self.directory, self.tokenizer)
        return self._chat

    @streams(lambda pipe: pipe.batch_size)  # a generator or dataset: an iterator of results
    def __call__(
        self,
        text: str | list[str] | list[dict[str, str]] | list[list[dict[str, str]]] | None = None,
        *,
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        min_p: float | None = None,
        min_new_tokens: int | None = None,
        no_repeat_ngram_size: int | None = None,
        typical_p: float | None = None,
        epsilon_cutoff: float | None = None,
        eta_cutoff: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        suppress_tokens: list[int] | None = None,
        begin_suppress_tokens: list[int] | None = None,
        bad_words_ids: list[list[int]] | None = None,
        return_full_text: bool = True,
        seed: int | None = None,
        truncate_prompt: bool = False,
        num_beams: int | None = None,  # None: generation_config.json's, else 1
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        num_return_sequences: int = 1,
        stop_sequence: str | list[str] | None = None,
        compile: bool | str = "auto",
        batch_size: int | None = None,
        tools: list[Any] | None = None,
        **unknown: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """One prompt or conversation gives a list of num_return_sequences dicts (sampled, each
        row with its own generator); a list of them gives one such list each. do_sample=False
        decodes greedily (temperature 0); a prompt longer than the model's context is an error
        unless truncate_prompt keeps its last tokens. stop_sequence: a text (or several) that ends
        a sequence, kept in it, as transformers' pipeline (generate's stop_strings) does.
        compile=True decodes each prompt through a compiled step (inference/compiled_decode.py;
        CPU, for long outputs); "auto" (the default) where this machine measured that it pays back
        (inference/compile_choice.py). batch_size: rows (prompts x num_return_sequences) decoded
        together, the rest after them (default: the pipeline's, else all at once); the texts are
        the same whatever it is, seeded ones too. tools: a chat's tools (OpenAI-style function dicts),
        as transformers passes them to apply_chat_template: its `tool_use` template renders them
        where it has one."""
        if text is None:  # transformers' name for it
            text = unknown.pop("text_inputs", None)
        check_keywords(unknown, keyword_names(TextGenerationPipeline.__call__), "text-generation")
        if text is None:
            raise LmforgeError("text-generation needs a text, a list of texts or chat messages to continue")
        given = {"max_new_tokens": max_new_tokens, "do_sample": do_sample, "temperature": temperature,
                 "top_k": top_k, "top_p": top_p, "repetition_penalty": repetition_penalty, "min_p": min_p,
                 "min_new_tokens": min_new_tokens, "no_repeat_ngram_size": no_repeat_ngram_size,
                 "typical_p": typical_p, "epsilon_cutoff": epsilon_cutoff, "eta_cutoff": eta_cutoff,
                 "min_length": min_length, "suppress_tokens": suppress_tokens,
                 "begin_suppress_tokens": begin_suppress_tokens, "bad_words_ids": bad_words_ids}  # fmt: skip
        check_options(**{k: v for k, v in given.items() if v is not None})
        check_options(return_full_text=return_full_text, seed=seed, truncate_prompt=truncate_prompt,
                      num_beams=num_beams, compile=compile)  # fmt: skip
        if max_length is not None:
            check_options(max_length=max_length)
        if batch_size is not None:
            check_options(batch_size=batch_size)
        beams = self._beam_options(num_beams, length_penalty, early_stopping, stop_sequence)
        file_beams = num_beams is None and beams is not None  # where an error says they came from
        if not (is_int(num_return_sequences) and num_return_sequences >= 1):
            raise LmforgeError(f"num_return_sequences={num_return_sequences!r}: must be an integer >= 1")
        stops_text = check_stops(stop_sequence, "stop_sequence")
        chats = _chats(text)
        if chats is None:
            if tools is not None:  # transformers drops them unsaid: no template renders a text prompt
                raise LmforgeError(
                    "tools: are for a chat (a list of messages); a text prompt has no template"
                )
            prompts = check_texts(text)
            ids = encode_prompts(self.tokenizer, prompts)
            stops: int | list[int] | None = stop_ids(
                self.directory, self.tokenizer.eos_id
            )  # as transformers'
        else:
            first = FIRST_ITEM.get()  # a streamed batch's conversations, numbered as in the input
            alone = len(chats) == 1 and first == 1
            where = ["messages" if alone else f"conversation {n}" for n in range(first, first + len(chats))]
            rendered = [self.chat.render(c, w, tools) for c, w in zip(chats, where, strict=True)]
            ids = [self.tokenizer.encode(r) for r in rendered]
            stops = self.chat.stops
        options = self.chat.sampling(applied=("num_beams",), **given)
        n = num_return_sequences
        outs: list[list[int]] = []
        if beams:
            try:
                check_beams(beams["num_beams"], n, options["do_sample"])
            except LmforgeError as e:
                raise LmforgeError(f"{e} ({self._file}: num_beams)" if file_beams else str(e)) from None
        elif n > 1 and not options["do_sample"]:  # as transformers: greedy rows would be one text n times
            raise LmforgeError(f"num_return_sequences={n} needs sampling: greedy decoding gives one sequence")
        ids = [row for row in ids for _ in range(n)]  # each prompt's n rows, side by side
        budgets = self._budgets(ids, max_length, max_new_tokens, truncate_prompt, options["max_new_tokens"])
        if beams:  # a prompt's n rows are the n best hypotheses of its search
            outs = self._beam_outputs(
                ids[::n], budgets[::n], stop_set(stops), options, beams, n, truncate_prompt
            )
        size = batch_size or self.batch_size or max(len(ids), 1)
        rows = sample_rows(FIRST_ITEM.get() - 1, len(ids) // n, n)  # n >= 1, checked above
        # a row samples from row_generator(seed, its number) in any part
        for start in range(0, 0 if beams else len(ids), size):
            part, room = ids[start : start + size], budgets[start : start + size]
            with torch.inference_mode():
                outs += generate_ids(
                    self.model,
                    part,
                    max(room, default=0),
                    options["temperature"] if options["do_sample"] else 0.0,
                    eos_id=stops,
                    seed=seed,
                    truncate=truncate_prompt,
                    # a stop string may begin in the prompt, as transformers' stop_strings
                    on_token=StopWatch(self.tokenizer, len(part), stops_text, part) if stops_text else None,
                    compile=compile,
                    row_ids=rows[start : start + size],
                    keep_stop=True,  # decoded as transformers': a special token's text is dropped
                    **decoding_options(options),
                )
        # a row's first tokens are what it decodes alone, whatever the others' budgets
        decoded = [self.tokenizer.decode(o[:b]) for o, b in zip(outs, budgets, strict=True)]
        replies = [decoded[i : i + n] for i in range(0, len(decoded), n)]  # per prompt
        if chats is None:
            results: list[list[dict[str, Any]]] = [
                [{"generated_text": (p if return_full_text else "") + r} for r in rs]
                for p, rs in zip(prompts, replies, strict=True)
            ]
            return results[0] if isinstance(text, str) else results
        results = [
            [{"generated_text": continuation(r, c) if return_full_text else r} for r in rs]
            for c, rs in zip(chats, replies, strict=True)
        ]
        return results[0] if len(chats) == 1 and isinstance(text[0], Mapping) else results

    def _beam_options(
        self, num_beams: int | None, penalty: float | None, early_stopping: bool | str | None, stop: Any
    ) -> dict[str, Any] | None:
        """Beam search's num_beams, length_penalty and early_stopping (the keyword's, else
        generation_config.json's, else transformers' 1.0 and False); None without beams. The
        keywords are checked whatever num_beams is, the file's values only where they apply."""
        check_options(num_beams=num_beams, early_stopping=early_stopping)
        if penalty is not None:
            check_options(length_penalty=penalty)
        file = self.chat.generation
        where = ""
        if num_beams is None:  # not given: the file's, as transformers' pipeline
            num_beams, where = file.get("num_beams", 1), f" ({self._file}: num_beams)"
            if num_beams is None:  # written as null: transformers' default
                num_beams = 1
            self._checked_file(num_beams=num_beams)
        if num_beams == 1:
            return None
        if stop is not None:
            raise LmforgeError(
                f"stop_sequence with num_beams={num_beams}{where}: beam search stops at end-of-text ids"
            )
        out = {"length_penalty": penalty, "early_stopping": early_stopping}
        for key, default in (("length_penalty", 1.0), ("early_stopping", False)):
            if out[key] is None:
                out[key] = file.get(key, default)
                self._checked_file(**{key: out[key]})
        return {"num_beams": num_beams, **out}

    @property
    def _file(self) -> Path:
        return self.directory / "generation_config.json"

    def _checked_file(self, **values: Any) -> None:
        """generation_config.json's values, a bad one an error naming the file."""
        try:
            check_options(**values)
        except LmforgeError as e:
            raise LmforgeError(f"{self._file}: {e}") from None

    def _beam_outputs(
        self,
        prompts: list[list[int]],
        budgets: list[int],
        stops: frozenset[int],
        options: dict[str, Any],
        beams: dict[str, Any],
        n: int,
        truncate: bool,
    ) -> list[list[int]]:
        """Each prompt's n best hypotheses (inference/beam_search.py), side by side. A search ends at
        the model's context (its KV cache does not slide, as greedy decoding's window does): said on
        stderr where that cuts the new tokens; truncate_prompt keeps room for them."""
        context, outs = self.model.config.block_size, []
        bans = Bans.of(
            stops, self.model.config.vocab_size, options["no_repeat_ngram_size"], options["min_new_tokens"],
            options["min_length"], options["suppress_tokens"], options["begin_suppress_tokens"],
            options["bad_words_ids"],
        )  # fmt: skip
        for ids, budget in zip(prompts, budgets, strict=True):
            prompt = check_prompts([ids], context, truncate)[0]
            if truncate and len(prompt) + budget > context:  # its last tokens, with room for the new
                prompt = prompt[-max(context - budget, 1) :]
            room = min(budget, context - len(prompt))
            if room < budget:
                print(
                    f"lmforge: note: beam search stops at the model's context of {context} tokens: a"
                    f" {len(prompt)}-token prompt leaves {room} of the {budget} new tokens asked for",
                    file=sys.stderr,
                )
            outs += beam_search(
                self.model, prompt, room, stops, **beams, num_return_sequences=n,
                repetition_penalty=options["repetition_penalty"], bans=bans, keep_stop=True,
            )  # fmt: skip
        return outs

    def _budgets(
        self, ids: list[list[int]], max_length: int | None, given: int | None, truncate: bool, new: int
    ) -> list[int]:
        """Each row's new tokens: `new` (the max_new_tokens keyword's, else generation_config.json's,
        else 256), or, with a max_length (the keyword's, else the file's) and no max_new_tokens
        keyword (`given`) nor one in the file (which win, as in transformers), max_length less the
        row's prompt."""
        where = f"max_length={max_length}"
        if max_length is None:
            max_length, where = self._file_max_length()
        if max_length is None or given is not None or self.chat.generation.get("max_new_tokens") is not None:
            return [new] * len(ids)
        context = self.model.config.block_size
        lengths = [min(len(row), context) if truncate else len(row) for row in ids]
        if lengths and max(lengths) >= max_length:  # transformers' generate refuses it too
            raise LmforgeError(
                f"{where}: counts the prompt, and a prompt is {max(lengths)} tokens, leaving"
                " none to generate (give a larger max_length, or max_new_tokens, which counts only new"
                " tokens)"
            )
        return [max_length - length for length in lengths]

    def _file_max_length(self) -> tuple[int | None, str]:
        """generation_config.json's max_length (None where absent: transformers' pipeline's 256 new
        tokens apply then), and how a message names it."""
        value = self.chat.generation.get("max_length")
        where = f"{self.directory / 'generation_config.json'}: max_length={value}"
        if value is None:
            return None, where
        try:
            check_options(max_length=value)
        except LmforgeError as e:
            raise LmforgeError(f"{self.directory / 'generation_config.json'}: {e}") from None
        return value, where
