"""The config reference, generated from the dataclasses in config/sections.py (and [model]'s in
config/model_section.py): each key's type and default come from the dataclass, its description
from the docstring under the field. Python keeps no attribute docstrings, so they are read from
the source with `ast`.

`python -m lmforge.config_doc` prints docs/config.md; `--out docs/config.md` writes it.
`lmforge train --help` and `lmforge prep --help` list the same keys (`keys`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from lmforge.config import Config

REGENERATE = "python -m lmforge.config_doc --out docs/config.md"


@dataclass(frozen=True)
class Key:
    """One config key as the reference shows it."""

    section: str
    name: str
    type: str
    default: Any
    doc: str

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


def toml_value(value: Any) -> str:
    """A default as a recipe would spell it: "char", 4096, 0.1, true."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string for these plain values
    return repr(value)


@cache
def _docstrings(cls: type) -> tuple[str, dict[str, str]]:
    """(the class's docstring, {field: the docstring under it}), whitespace collapsed to one line."""
    node = ast.parse(inspect.getsource(cls)).body[0]
    assert isinstance(node, ast.ClassDef), cls
    docs: dict[str, str] = {}
    for field, after in zip(node.body, node.body[1:], strict=False):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = " ".join(after.value.value.split())
    return " ".join((ast.get_docstring(node) or "").split()), docs


def section_classes() -> dict[str, type]:
    """[section] name -> its dataclass, in Config's order."""
    return {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def section_doc(section: str) -> str:
    return _docstrings(section_classes()[section])[0]


def keys(sections: tuple[str, ...] | None = None) -> list[Key]:
    """Every key of the given sections (default: all), in the dataclasses' order."""
    classes = section_classes()
    found = []
    for section in sections or tuple(classes):
        cls = classes[section]
        docs, instance = _docstrings(cls)[1], cls()
        for f in dataclasses.fields(cls):
            found.append(Key(section, f.name, str(f.type), getattr(instance, f.name), docs.get(f.name, "")))
    return found


def default_of(dotted: str) -> Any:
    """The default of `section.key`, e.g. default_of("data.vocab_size") == 4096."""
    section, _, name = dotted.partition(".")
    return getattr(section_classes()[section](), name)


INTRO = """\
Recipes are TOML files in `configs/`; each key below can be overridden with `--section.key=value`
(or `--section.key value`); a value may hold spaces (`"--data.input=my data.jsonl"`: until
2026-12-07 argparse took such a word for the recipe's path, "config file not found").
An unknown key, a wrong type or an impossible combination stops with one line naming it, e.g.
`lmforge: error: configs/x.toml: unknown config key 'train.max_step' (did you mean
'train.max_steps'?)`, or every key of the section where none is near;
a combination names the file that set its keys (`model.n_embd=30 is not divisible by
model.n_head=4 (model.n_embd from x.toml)`).
So does a key that the run's `data.task` does not read (those whose description starts with a
task's name, such as `train.head_only` on a `qa` run): it would change nothing. No key takes
`inf` or `nan` (`train.lr=inf: must be a finite number`); where a key has "no limit", it is 0.
`lmforge train --help` lists the same keys.

Recipes: `configs/demo.toml` (the demo), `configs/shakespeare-char.toml` (nanoGPT's CPU shape;
give it your copy of Tiny Shakespeare with `--data.input=`, as lmforge does not ship it),
`configs/shakespeare-char-gpu.toml` (nanoGPT's GPU recipe), `configs/translate-demo.toml` and
`configs/translate-base.toml` ([translation.md](translation.md)), `configs/chat-demo.toml`
([instruction-tuning.md](instruction-tuning.md)), `configs/qa-demo.toml` and `configs/qa-scratch.toml`
([question-answering.md](question-answering.md)).
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    """docs/config.md: one table per section."""
    lines = [
        "# Config reference",
        "",
        "Generated from the dataclass docstrings in `src/lmforge/config/sections.py` and"
        f" `model_section.py` by `{REGENERATE}`;"
        " do not edit by hand (a test fails when it is out of date).",
        "",
        INTRO,
    ]
    for section in section_classes():
        lines += [f"## [{section}]", ""]
        if doc := section_doc(section):
            lines += [doc, ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        for key in keys((section,)):
            default = _cell(toml_value(key.default))
            lines.append(f"| `{key.name}` | {_cell(key.type)} | `{default}` | {_cell(key.doc)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmforge.config_doc", description=__doc__)
    parser.add_argument("--out", help="write the reference here (docs/config.md) instead of printing it")
    args = parser.parse_args(argv)
    if args.out:
        Path(args.out).write_text(markdown(), encoding="utf-8")
    else:
        sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
