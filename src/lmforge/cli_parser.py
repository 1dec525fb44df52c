"""The machinery under cli.py's verb table: the specs (Verb, Opt, Switch), the argparse parser
built from them, whose help is written only when asked for, and the keyword call.

An option the user does not give is not passed (argparse.SUPPRESS), so its default is the
function's. A verb's `--help` imports the function to show its docstring and its signature's
defaults, and lists the config keys of the verb's recipe sections (config_doc).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn


@dataclass(frozen=True)
class Opt:
    """One command-line argument, filling the function's keyword `dest`."""

    dest: str
    flag: str  # "--vocab-size", or the metavar of a positional ("inputs")
    help: str
    kw: dict[str, Any] = field(default_factory=dict)  # type, nargs, action, choices, required
    alt: bool | None = None  # True: only with the verb's switch (prep --pairs); False: only without
    config: str = ""  # the recipe key that a None default stands for ("data.vocab_size")
    override: str = ""  # passed as this --section.key=value override, not as a keyword

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")


def opt(flag: str, help: str = "", *, dest: str = "", alt: bool | None = None, config: str = "",
        override: str = "", **kw: Any) -> Opt:  # fmt: skip
    """An Opt; `kw` are argparse's add_argument keywords (type, nargs, action, choices, required)."""
    return Opt(dest or flag.lstrip("-").replace("-", "_"), flag, help, kw, alt, config, override)


Show = Callable[[Any, dict[str, Any]], int | None]  # prints a result; may return the exit status


@dataclass(frozen=True)
class Switch:
    """A flag that runs another function for the same verb: `prep --pairs` is prepare_pairs. With
    `choices` (the verb's own value, the switch's) the flag takes a value: `export --format onnx`
    is export_onnx, `--format hf` (the default) export_hf."""

    flag: str
    target: str
    help: str
    show: Show | None = None
    choices: tuple[str, str] | tuple[()] = ()

    @property
    def label(self) -> str:
        """How messages name the switch: `--pairs`, `--format onnx`."""
        return f"{self.flag} {self.choices[1]}" if self.choices else self.flag

    def given(self, kwargs: dict[str, Any]) -> bool:
        """Whether the user chose the switch's function (its flag's value leaves `kwargs`)."""
        value = kwargs.pop(self.flag.lstrip("-").replace("-", "_"), None)
        return value == self.choices[1] if self.choices else bool(value)


@dataclass(frozen=True)
class Verb:
    target: str  # "module:function"
    help: str  # one line, for `lmforge --help`
    options: tuple[Opt, ...]
    show: Show | None = None
    overrides: bool = False  # takes --section.key=value strings as `overrides`
    config_sections: tuple[str, ...] = ()  # the config keys `--help` lists
    switch: Switch | None = None
    fixed: dict[str, Any] = field(default_factory=dict)  # keywords the CLI passes (callable: of the others)
    before: Callable[[dict[str, Any]], None] | None = None  # called with the keywords before the import


def load(target: str) -> Callable[..., Any]:
    """The function a "module:function" target names, imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with a usage error as one line, as every other bad input is: `lmforge: error:
    MESSAGE (lmforge VERB --help lists the options)`, exit 2 (argparse's own printed its usage
    block first, which pushed the error itself to the end)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lmforge: error: {message} ({self.prog} --help lists the options)\n")


class VerbParser(OneLineParser):
    """A verb's parser; its help, written only when asked for, imports the function for its
    docstring and defaults and lists the config keys of the verb's recipe sections."""

    verb: Verb

    def format_help(self) -> str:
        from lmforge import config_doc

        main = load(self.verb.target)
        switch = self.verb.switch
        alt = load(switch.target) if switch else None
        name = self.prog.split()[-1]
        self.description = (
            f"{self.verb.help}\n\n`lmforge {name}` calls {main.__name__}():\n{inspect.getdoc(main)}"
        )
        if switch and alt:
            self.description += (
                f"\n\n`lmforge {name} {switch.label}` calls {alt.__name__}():\n{inspect.getdoc(alt)}"
            )
        for action in self._actions:
            spec = next((o for o in self.verb.options if o.dest == action.dest), None)
            if spec and not getattr(action, "explained", False):
                action.help = _escape(spec.help + _defaults(spec, main, alt, switch))
                action.explained = True  # type: ignore[attr-defined]
        text = super().format_help()
        if not self.verb.config_sections:
            return text
        listing = self._get_formatter()
        for section in self.verb.config_sections:
            title = f"[{section}] keys: in the recipe, or as --{section}.KEY=VALUE"
            listing.start_section(title)
            listing.add_text(config_doc.section_doc(section) or None)
            listing.add_arguments([
                argparse.Action([f"--{key.dotted}={key.type.upper()}"], key.dotted, nargs=0,
                                help=_escape(f"{key.doc} (default: {config_doc.toml_value(key.default)})"))
                for key in config_doc.keys((section,))
            ])  # fmt: skip
            listing.end_section()
        return text + "\n" + listing.format_help()


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats help strings


def _defaults(
    spec: Opt, main: Callable[..., Any], alt: Callable[..., Any] | None, switch: Switch | None
) -> str:
    """ " (default: ...)" from the signature of each function the option goes to."""
    from lmforge import config_doc

    if spec.kw.get("action") in ("store_true", "store_false") or "default:" in spec.help:
        return ""  # a switch, or a help that says its default itself
    parts = []
    for function, with_switch in ((main, False), (alt, True)):
        if function is None or spec.alt not in (None, with_switch):
            continue
        param = inspect.signature(function).parameters.get(spec.dest)
        value = param.default if param is not None else None
        if param is not None and value is inspect.Parameter.empty:
            continue
        if value is None and spec.config and not with_switch:
            value = f"{config_doc.toml_value(config_doc.default_of(spec.config))} from {spec.config}"
        elif value in (None, "") or isinstance(value, list):
            continue
        if with_switch and switch and parts != [f"{value}"]:  # the same either way: said once
            parts.append(f"with {switch.label}: {value}")
        elif not with_switch:
            parts.append(f"{value}")
    return f" (default: {'; '.join(parts)})" if parts else ""


DEBUG_HELP = "show the traceback of errors too (or set LMFORGE_DEBUG=1)"


def build_parser(
    verbs: dict[str, Verb], version: str
) -> tuple[argparse.ArgumentParser, dict[str, VerbParser]]:
    """The `lmforge` parser and each verb's."""
    parser = OneLineParser(
        prog="lmforge",
        description="From raw text to a trained Transformer. Each verb is the Python function of the"
        " same name with the same arguments: `lmforge prep X --out D` is `lmforge.prep(X, out=D)`.",
        epilog="`lmforge VERB --help` lists a verb's options. Bad input prints one line"
        " `lmforge: error: ...` and exits 2.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument("--version", action="version", version=f"lmforge {version}")
    sub_parsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB", parser_class=VerbParser)
    subs: dict[str, VerbParser] = {}
    for name, verb in verbs.items():
        sub = sub_parsers.add_parser(
            name, help=verb.help, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        sub.verb = verb
        for o in verb.options:
            if o.positional:  # the keyword is the positional's name; its metavar the flag
                where = {"metavar": o.flag} if o.flag != o.dest else {}
                sub.add_argument(o.dest, **(where | o.kw), help=o.help, default=argparse.SUPPRESS)
            else:
                sub.add_argument(o.flag, **o.kw, dest=o.dest, help=o.help, default=argparse.SUPPRESS)
        if verb.switch and verb.switch.choices:
            choices = list(verb.switch.choices)
            sub.add_argument(
                verb.switch.flag, choices=choices, default=argparse.SUPPRESS, help=verb.switch.help
            )
        elif verb.switch:
            sub.add_argument(verb.switch.flag, action="store_true", help=verb.switch.help)
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        subs[name] = sub
    return parser, subs


PATHS = ("out", "model", "data", "file", "train", "input")  # options that name a file or folder


def keywords(
    verb: Verb, sub: VerbParser, args: argparse.Namespace, extra: list[str]
) -> tuple[str, dict[str, Any]]:
    """The function to call and its keyword arguments, from what the user gave (nothing else)."""
    kwargs = {k: v for k, v in vars(args).items() if k not in ("verb", "debug")}
    many = next((o.dest for o in verb.options if o.positional and o.kw.get("nargs") == "*"), None)
    if many:  # argparse leaves words given after an option in `extra`
        kwargs[many] = kwargs.get(many, []) + [a for a in extra if not a.startswith("--")]
        extra = [a for a in extra if a.startswith("--")]
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and not verb.overrides):
        sub.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    switched = bool(verb.switch and verb.switch.given(kwargs))
    for o in verb.options:  # "" is Path("."), the working directory: `--out ""` is a slip, not a folder
        values = kwargs.get(o.dest)
        values = values if isinstance(values, list) else [values]
        if o.dest in PATHS and not o.positional and "" in values:  # (a model: load_model's own line)
            sub.error(f"{o.flag} is empty (a $(...) or variable that gave nothing?): give a path")
    for o in verb.options:
        if o.dest in kwargs and o.alt is not None and o.alt != switched and verb.switch:
            sub.error(f"{o.flag} {'needs' if o.alt else 'does not go with'} {verb.switch.label}")
        if o.override and o.dest in kwargs:
            overrides.append(f"--{o.override}={kwargs.pop(o.dest)}")
    if overrides and verb.switch and switched:
        sub.error(f"--section.key=value overrides do not go with {verb.switch.label}")
    if overrides:
        kwargs["overrides"] = overrides
    target = verb.switch.target if verb.switch and switched else verb.target
    return target, kwargs | {k: v(kwargs) if callable(v) else v for k, v in verb.fixed.items()}


def run(verb: Verb, sub: VerbParser, args: argparse.Namespace, extra: list[str]) -> int:
    """Import the verb's function, call it with keywords, show the result; the exit status."""
    target, kwargs = keywords(verb, sub, args, extra)
    if verb.before:
        verb.before(kwargs)
    function = load(target)
    needed = [p.name for p in inspect.signature(function).parameters.values()
              if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]  # fmt: skip
    missing = [next((o.flag for o in verb.options if o.dest == n), n) for n in needed if n not in kwargs]
    if missing:
        switched = f" with {verb.switch.label}" if verb.switch and target == verb.switch.target else ""
        sub.error(f"{', '.join(missing)} is required{switched}")
    result = function(**kwargs)
    show = verb.switch.show if verb.switch and target == verb.switch.target else verb.show
    return (show(result, kwargs) if show else None) or 0
