"""The README's and docs/' examples match the code, so the manual cannot drift from it. Every
`lmforge ...` command in a shell block is one the CLI takes: the verb exists, every flag is the
verb's, and every --section.key=value override names a real config key with a value of its type
(with the recipe the command names, validated as `train` would). Every Python block parses, and
what it imports or calls from lmforge exists. Parsed only, nothing runs."""

from __future__ import annotations

import ast
import importlib.util
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

import lmforge
from lmforge import __version__, cli, cli_parser
from lmforge.config import joined_overrides, load_config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("", "bash", "sh", "shell", "console")
SUBSTITUTION = re.compile(r"\$\((?:[^()]|\([^()]*\))*\)")  # $(python -c "...print(g.f())")
ENV = re.compile(r"^[A-Z_][A-Z0-9_]*=")


def code_blocks(text: str, languages: tuple[str, ...]) -> Iterator[str]:
    """The bodies of the page's fenced code blocks in one of `languages` ("" for untagged)."""
    language, body = None, []
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if language is None:
                language, body = line.strip()[3:], []
            else:
                if language in languages:
                    yield "\n".join(body)
                language = None
        elif language is not None:
            body.append(line)


def lmforge_commands(block: str) -> Iterator[tuple[str, list[str]]]:
    """(the line, its words after `lmforge`) for each lmforge command of a block; `a && b`, `a | b`,
    `a; b` and `a &` are each split, a $(...) stands for one word, synopses (`[--flag N]`) are skipped."""
    for line in block.replace("\\\n", " ").splitlines():
        text = SUBSTITUTION.sub("X", line.strip().removeprefix("$ "))
        if not re.search(r"(^|[\s;&|/])lmforge\s", text) or " [-" in text:
            continue  # no lmforge command, or a usage synopsis
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for word in [*lexer, ";"]:
            if word and set(word) <= set("();<>|&"):
                while words and ENV.match(words[0]):
                    words.pop(0)
                if words and words[0].endswith("lmforge"):
                    yield line.strip(), words[1:]
                words = []
            else:
                words.append(word)


COMMANDS = [
    pytest.param(argv, id=f"{page.name}: {line[:70]}")
    for page in PAGES
    for block in code_blocks(page.read_text(encoding="utf-8"), SHELL)
    for line, argv in lmforge_commands(block)
]


def test_the_docs_have_commands_to_check() -> None:
    assert len(COMMANDS) > 50


@pytest.mark.parametrize("argv", COMMANDS)
def test_a_documented_command_is_one_the_cli_takes(argv: list[str]) -> None:
    if argv[:1] == ["launch"]:  # lmforge launch --nproc=2 train ...: the verb after the launcher's options
        argv = argv[next(i for i, word in enumerate(argv) if i and word in cli.VERBS) :]
    parser, subs = cli_parser.build_parser(cli.VERBS, __version__)
    # argparse exits (a failed test) on an unknown verb or flag
    args, extra = parser.parse_known_args(joined_overrides(argv))
    _, keywords = cli_parser.keywords(cli.VERBS[args.verb], subs[args.verb], args, extra)
    if "overrides" in keywords:
        recipe = keywords.get("config")  # train and plan name their recipe so
        path = ROOT / recipe if isinstance(recipe, str) and (ROOT / recipe).is_file() else None
        load_config(path, keywords["overrides"])


PYTHON = [
    pytest.param(block, id=f"{page.name}: {block.strip().splitlines()[0][:60]}")
    for page in PAGES
    for block in code_blocks(page.read_text(encoding="utf-8"), ("python", "py"))
]


def test_the_docs_have_python_to_check() -> None:
    assert len(PYTHON) > 15


@pytest.mark.parametrize("block", PYTHON)
def test_a_documented_python_example_uses_names_lmforge_has(block: str) -> None:
    if ">>> " in block:  # a doctest: its statements, not the output shown under them
        block = "\n".join(line[4:] for line in block.splitlines() if line.startswith((">>> ", "... ")))
    for node in ast.walk(ast.parse(block)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "lmforge":
            module = importlib.import_module(str(node.module))
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                package = hasattr(module, "__path__")  # find_spec raises on a submodule of a plain module
                found = hasattr(module, alias.name) or (package and importlib.util.find_spec(name))
                assert found, f"from {node.module} import {alias.name}"
        elif isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "lmforge":
            assert hasattr(lmforge, node.attr), f"lmforge.{node.attr}"
