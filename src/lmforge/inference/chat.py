"""Chat: a model directory's own chat template, generation defaults and end-of-turn tokens, and
`lmforge chat`, the interactive loop over them.

A conversation is rendered as transformers' `apply_chat_template(messages,
add_generation_prompt=True)` renders it (inference/chat_template.py), with the tokenizer's special
tokens (bos_token, eos_token, ...) as template variables; a conversation ending in an assistant
message is continued, as transformers' pipeline does (continue_final_message). Sampling defaults
are transformers' text-generation pipeline's (max_new_tokens 256, do_sample, temperature 0.7,
top_k 50, top_p 1, repetition_penalty 1; min_p, min_new_tokens, no_repeat_ngram_size, typical_p,
epsilon_cutoff, eta_cutoff, min_length, suppress_tokens, begin_suppress_tokens and bad_words_ids
off), overridden by the directory's generation_config.json, overridden by the caller's keywords.
Decoding stops at any end-of-turn id (formats/chat_files.stop_ids).

In `lmforge chat` a message that cannot be answered (longer than the model's context, not valid
UTF-8, ...) is one line on stderr and is left out of the history; the session goes on. When the
conversation outgrows the context, its oldest turns are dropped (the system prompt stays) so that
the prompt leaves room for max_new_tokens, and one line says so; a reply stops where the context
is full (with one line), never sliding past it. At a terminal, Ctrl-C during a reply stops it as the
playground's Stop does (what came is kept, the session goes on); at the prompt it ends the session.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import (
    GENERATION_CONFIG,
    UNAPPLIED,
    missing_template,
    pick_template,
    read_chat_templates,
    read_generation_config,
    special_tokens,
    stop_ids,
)
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference import compile_choice
from lmforge.inference.autotune import chose_bf16, to_inference_dtype
from lmforge.inference.chat_commands import KNOWN_COMMANDS, chat_command
from lmforge.inference.chat_template import Message, check_messages, check_tools, compile_template, render
from lmforge.inference.compiled_decode import check_compilable
from lmforge.inference.generate import generate_ids
from lmforge.inference.options import check_options, check_some_new_tokens
from lmforge.inference.text_stream import TextStream
from lmforge.model.kinds import require_decoder
from lmforge.processes import Terminated
from lmforge.tokenization.tokenizer import Tokenizer, check_text

# transformers' TextGenerationPipeline._default_generation_config, on top of GenerationConfig's
PIPELINE_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 256,
    "do_sample": True,
    "temperature": 0.7,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,  # GenerationConfig's: off
    "min_p": 0.0,  # off (GenerationConfig's None), as are the two below (None, 0)
    "min_new_tokens": 0,
    "no_repeat_ngram_size": 0,
    "typical_p": 1.0,  # off, as are the rest
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "min_length": 0,  # counts the prompt, as transformers' MinLengthLogitsProcessor
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "bad_words_ids": None,
}
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "  # transformers' marker for the end of a continued message


@dataclass
class ChatSpec:
    """What a model directory says about chatting with it."""

    directory: Path
    template: str | None  # the default; `templates`: the other named ones (tool_use: with tools)
    generation: dict[str, Any]
    stops: list[int]
    variables: dict[str, str]
    noted: bool = False  # the keys it does not apply were named (once, not at every reply or call)
    templates: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path, tokenizer: Tokenizer) -> ChatSpec:
        templates = read_chat_templates(directory)
        for name, template in templates.items():
            try:  # a template that does not compile is the directory's fault: name it
                compile_template(template)
            except LmforgeError as e:
                raise LmforgeError(f"{directory}: {'' if name == 'default' else name + ': '}{e}") from None
        return cls(
            directory,
            templates.get("default"),
            read_generation_config(directory),
            stop_ids(directory, tokenizer.eos_id),
            special_tokens(directory, tokenizer),
            templates={k: v for k, v in templates.items() if k != "default"},
        )

    def has_template(self) -> bool:
        """Whether any chat renders: a default template, or only named ones (tool_use: with tools)."""
        return self.template is not None or bool(self.templates)

    def require_template(self, consequence: str) -> None:
        """One line when the model has no chat template; `consequence` says what that rules out."""
        if not self.has_template():
            raise LmforgeError(f"{missing_template(self.directory, {})}, {consequence}")

    def template_for(self, tools: object | None) -> str:
        """The template transformers renders (pick_template): `tool_use` with tools, else the default;
        a folder of named templates only has none for a call without tools (one line, as
        transformers' ValueError)."""
        both = {**self.templates, **({"default": self.template} if self.template is not None else {})}
        template = pick_template(both, tools)
        if template is None:
            raise LmforgeError(missing_template(self.directory, both))
        return template

    def render(
        self,
        messages: Sequence[Message],
        where: str = "messages",
        tools: list[Any] | None = None,
        new_turn: bool = False,
    ) -> str:
        """The prompt for the model's next turn: a new assistant message, or the continuation of a
        final assistant message (transformers' continue_final_message). tools: the template's
        `tools` (OpenAI-style function dicts, as transformers' apply_chat_template passes them).
        new_turn: a new assistant message after a final assistant one too (add_generation_prompt)."""
        self.require_template(
            "so it cannot chat; give it plain text to continue instead (lmforge generate, or a string to"
            " pipeline('text-generation'))"
        )
        checked = check_messages(messages, where)
        check_tools(tools)
        template = self.template_for(tools)
        if checked[-1]["role"] != "assistant" or new_turn:
            return render(template, checked, add_generation_prompt=True, **self._variables(tools))
        if "content" not in checked[-1]:  # transformers' ValueError: no "content" to continue
            raise LmforgeError(
                f"{where}[{len(checked) - 1}]: the final assistant message has tool calls and no"
                " 'content' to continue; end the conversation with the tool's result"
            )
        final = checked[-1]["content"]
        checked[-1] = {**checked[-1], "content": final + _CONTINUE_TAG}
        text = render(template, checked, add_generation_prompt=False, **self._variables(tools))
        if final.strip() not in text or _CONTINUE_TAG.strip() not in text:
            raise LmforgeError(
                f"{where}: the chat template drops part of the final assistant message to continue"
            )
        at = text.rindex(_CONTINUE_TAG.strip())
        return text[:at] if text[at : at + len(_CONTINUE_TAG)] == _CONTINUE_TAG else text[:at].rstrip()

    def _variables(self, tools: list[Any] | None = None) -> dict[str, Any]:
        # transformers passes tools and documents even when None: `tools is none` holds there
        return {"tools": tools, "documents": None, **self.variables}

    def sampling(self, applied: Sequence[str] = (), **given: Any) -> dict[str, Any]:
        """The decoding options of PIPELINE_DEFAULTS: the caller's (not None) over
        generation_config.json's over transformers' pipeline defaults, each checked. The file's
        keys lmforge does not apply are named once on stderr, but those the caller applies itself
        (`applied`: the text-generation pipeline's num_beams)."""
        out = dict(PIPELINE_DEFAULTS)
        for key in PIPELINE_DEFAULTS:
            value = self.generation.get(key)
            if value is not None:
                try:
                    check_options(**{key: value})
                except LmforgeError as e:
                    raise LmforgeError(f"{self.directory / GENERATION_CONFIG}: {e}") from None
                out[key] = value
        unapplied = {k: v for k, v in UNAPPLIED.items() if k not in applied}
        unused = {k: v for k, v in self.generation.items() if k in unapplied and v not in unapplied[k]}
        if unused and not self.noted:
            self.noted = True
            print(
                f"lmforge: note: {self.directory / GENERATION_CONFIG}: {unused} not applied", file=sys.stderr
            )
        given = {k: v for k, v in given.items() if v is not None}
        check_options(**given)
        out.update(given)
        return out


def decoding_options(options: dict[str, Any]) -> dict[str, Any]:
    """generate_ids' keywords among ChatSpec.sampling's options (the rest: max_new_tokens,
    do_sample and temperature, which the caller passes as it decodes)."""
    return {k: v for k, v in options.items() if k not in ("max_new_tokens", "do_sample", "temperature")}


def continuation(reply: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    """The conversation after the model's turn, in transformers' pipeline shape: a new assistant
    message, or the final assistant message continued."""
    history = [dict(m) for m in messages]
    if history and history[-1].get("role") == "assistant":
        return history[:-1] + [{**history[-1], "content": history[-1]["content"] + reply}]
    return history + [{"role": "assistant", "content": reply}]


def fit_context(
    spec: ChatSpec,
    tokenizer: Tokenizer,
    start: list[dict[str, Any]],
    history: list[dict[str, Any]],
    message: dict[str, Any],
    context: int,
    max_new_tokens: int,
) -> tuple[list[dict[str, Any]], list[int], int]:
    """(the conversation to answer, its prompt ids, how many old turns were dropped): the oldest
    turns (a user message and the replies after it; `start`, the system prompt, stays) dropped
    until the prompt leaves max_new_tokens of the context free, or none is left. An error when the
    new message alone does not fit in the context."""
    turns = history[len(start) :]
    dropped = 0
    while True:
        messages = [*start, *turns, message]
        ids = tokenizer.encode(spec.render(messages))
        if len(ids) + max_new_tokens <= context or not turns:
            break
        after = next((n for n in range(1, len(turns)) if turns[n]["role"] == "user"), len(turns))
        turns = turns[after:]
        dropped += 1
    if len(ids) >= context:  # a reply needs one position at least
        fills = "more than" if len(ids) > context else "all of"
        raise LmforgeError(
            f"the message is {len(ids)} tokens in the chat template, {fills} the model's context of"
            f" {context}, leaving no room for a reply: shorten it"
        )
    return messages, ids, dropped


def chat(
    model: str | Path,
    system: str | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    dtype: str = "auto",
    compile: bool | str = "auto",
    repetition_penalty: float | None = None,
    min_p: float | None = None,
    min_new_tokens: int | None = None,
    no_repeat_ngram_size: int | None = None,
    typical_p: float | None = None,
    epsilon_cutoff: float | None = None,
    eta_cutoff: float | None = None,
) -> None:
    """Chat with a model directory that has a chat template. Replies stream to stdout; the
    history is kept; `/reset` clears it (the system prompt stays), `/exit` quits. When stdin is not
    a terminal, each line is one user message and stdout holds only the replies, one after the
    other, each ending in a newline. Sampling defaults: transformers' (256 new tokens, sampling at
    temperature 0.7, top_k 50, no repetition penalty, min_p, min_new_tokens, no_repeat_ngram_size,
    typical_p, epsilon_cutoff or eta_cutoff), then the model's generation_config.json (its
    min_length, suppress_tokens, begin_suppress_tokens and bad_words_ids too), then these options.
    A message that cannot be answered is one line on stderr, left out of the history, and the
    session goes on (from stdin, the exit status is then 2: an error at the end counts them); a
    conversation longer than the context loses its oldest turns, with one line saying so.
    compile: replies decode through a compiled step (inference/compiled_decode.py), compiled or
    loaded at the first reply and reused by every later one; "auto" (the default): each reply
    where this machine measured that it pays back (inference/compile_choice.py)."""
    check_options(dtype=dtype, seed=seed, compile=compile)
    if max_new_tokens is not None:  # 0 printed an empty reply to every message
        check_some_new_tokens(max_new_tokens, "a reply")
    directory = resolve_model_dir(model)
    net, tokenizer = load_model(directory)
    net = require_decoder(net, model, "so it cannot chat")
    spec = ChatSpec.read(directory, tokenizer)
    start: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    opening = spec.render(
        [*start, {"role": "user", "content": "hello"}]
    )  # no template, or one refusing a system prompt
    options = spec.sampling(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, min_p=min_p, min_new_tokens=min_new_tokens,
        no_repeat_ngram_size=no_repeat_ngram_size, typical_p=typical_p, epsilon_cutoff=epsilon_cutoff,
        eta_cutoff=eta_cutoff,
    )  # fmt: skip
    taken = len(tokenizer.encode(opening)) if system is not None else 0
    if taken > net.config.block_size:  # no message would fit
        raise LmforgeError(
            f"--system: the system prompt takes {taken} tokens in the chat template with a one-word"
            f" message, more than the model's context of {net.config.block_size}: shorten it"
        )
    net, why = to_inference_dtype(net, dtype)
    if compile is True:  # refused before a line is read, not at every reply
        check_compilable(net, 1, None, True)
    if (rounded := chose_bf16(dtype, why)) is not None:
        print(f"lmforge: decoding in {rounded}", file=sys.stderr)
    interactive = sys.stdin.isatty()
    if isinstance(sys.stdin, io.TextIOWrapper):  # a bad byte reaches the tokenizer, which names it
        sys.stdin.reconfigure(errors="surrogateescape")
    if interactive:
        print(f"chatting with {directory} (/reset clears the history, /exit quits, /help)", file=sys.stderr)
        faster = compile_choice.faster_in_fp32(net) if compile == "auto" and dtype == "auto" else None
        if faster is not None:  # auto chose bf16 by eager steps, and leaves bf16 eager
            print(
                f"lmforge: --dtype fp32 decodes faster here, through the compiled step once it pays back:"
                f" {faster[0]:.1f} ms a token against {faster[1]:.1f} eagerly in bf16",
                file=sys.stderr,
            )
    history = list(start)
    context = net.config.block_size
    turn = 0
    unanswered = 0  # messages refused, from stdin: counted in the exit status
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except Terminated:
            print("\n" * interactive, end="", flush=True)  # ends the prompt's line, as ^C's echo does
            raise
        if not interactive and not line:
            break
        text = line.rstrip("\r\n")
        command = chat_command(text)
        if command == "exit":
            break
        if command == "reset":
            history = list(start)
            print("(history cleared)", file=sys.stderr)
            continue
        if command is not None:  # help, or a word the model should not get as a message
            said = KNOWN_COMMANDS if command == "help" else f"not sent: {command}: {KNOWN_COMMANDS}"
            print(f"lmforge: {said}", file=sys.stderr)
            unanswered += command != "help" and not interactive
            continue
        if not text.strip():
            continue
        stream: TextStream | None = None
        try:
            check_text(text)  # a bad byte named where the user typed it, not in the rendered template
            message = {"role": "user", "content": text}
            messages, prompt, dropped = fit_context(
                spec, tokenizer, start, history, message, context, options["max_new_tokens"]
            )
            if dropped:
                print(
                    f"lmforge: note: the conversation outgrew the model's context of {context} tokens:"
                    f" dropped its {'oldest turn' if dropped == 1 else f'{dropped} oldest turns'}",
                    file=sys.stderr,
                )
            stream = TextStream(tokenizer)
            # a reply stops where the context is full: sliding past it would forget the question
            # and recompute the whole window for every token (minutes a token at 8,192 positions)
            room = min(options["max_new_tokens"], context - len(prompt))
            generate_ids(
                net,
                [prompt],
                room,
                options["temperature"] if options["do_sample"] else 0.0,
                eos_id=spec.stops,
                seed=None if seed is None else seed + turn,
                on_token=stream,
                compile=compile,
                **decoding_options(options),
            )
        except LmforgeError as e:  # this message only: the session and its history go on
            if stream is not None and stream.ids:  # a reply cut short ends its line before the message
                stream.finish()
                sys.stdout.write("\n")
                sys.stdout.flush()
            print(f"lmforge: not answered: {e}", file=sys.stderr)
            unanswered += 1
            continue
        except KeyboardInterrupt as e:  # Ctrl-C mid-reply stops the reply, as the playground's Stop
            if not interactive or isinstance(e, Terminated):  # a script's Ctrl-C, a SIGTERM: the end
                if stream is not None and stream.ids:  # the reply's line ends before the stop's own
                    stream.finish()
                    sys.stdout.write("\n")
                    sys.stdout.flush()
                raise
            reply = stream.finish() if stream is not None else ""  # what came, held-back text too
            if not reply:  # nothing came: the message is not in the conversation
                print("(stopped before the reply began: the message is left out)", file=sys.stderr)
                continue
            sys.stdout.write("\n")
            sys.stdout.flush()
            print("(stopped: the reply so far is kept in the conversation)", file=sys.stderr)
            history = [*messages, {"role": "assistant", "content": reply}]
            turn += 1
            continue
        reply = stream.finish()  # writes any held-back partial character
        sys.stdout.write("\n")
        sys.stdout.flush()
        if len(stream.ids) == room < options["max_new_tokens"]:
            print(
                f"lmforge: note: the reply stopped after {room} tokens, where the conversation filled the"
                f" model's context of {context}",
                file=sys.stderr,
            )
        hint = compile_choice.hint()
        if hint is not None:
            print(f"lmforge: {hint}", file=sys.stderr)
        history = [*messages, {"role": "assistant", "content": reply}]
        turn += 1
    if unanswered and not interactive:  # a script learns that not every line was answered
        raise LmforgeError(f"{unanswered} message{'s' if unanswered > 1 else ''} not answered (see above)")
