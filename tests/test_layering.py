"""The package's layering, enforced: each layer imports only the layers below it, and no cycles.

Layers (docs/design.md), lowest first. A module may import its own layer and those listed as
allowed for it; the model package in particular imports torch, the config and the errors,
nothing of data, tokenizers, formats, training or the CLI.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"

BASE = {
    "errors",
    "env_switch",
    "config",
    "hardware",
    "outputs",
    "tuning",
    "malloc",
    "processes",
    "folder_lock",
}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "env_switch": {"errors"},
    "malloc": {"errors", "env_switch"},
    "processes": {"errors"},
    "folder_lock": {"errors"},
    "config": {"errors"},
    "config_doc": {"errors", "config"},
    "hardware": {"errors", "config"},
    "tuning": {"errors", "env_switch", "config", "hardware"},
    "outputs": {"errors", "folder_lock"},
    "tokenization": BASE,
    "data": BASE | {"tokenization"},
    "model": {"errors", "env_switch", "config"},
    "formats": BASE | {"tokenization", "model"},
    "inference": BASE | {"tokenization", "data", "model", "formats"},
    "train": BASE | {"tokenization", "data", "model", "formats", "inference"},
    "launch": BASE | {"train"},
    "pipelines": BASE | {"tokenization", "data", "model", "formats", "inference"},
    "server": BASE | {"tokenization", "data", "model", "formats", "inference", "pipelines"},
    "tools": BASE | {"tokenization", "data", "model", "formats", "inference"},
    "cli": None,  # the top: the CLI and the Python API may import anything (lazily)
    "cli_parser": BASE | {"config_doc"},
    "cli_verbs": {"cli_parser", "cli_show", "cli_verbs_use"},  # the verb table: names, not imports,
    "cli_verbs_use": {"cli_parser", "cli_show"},  # of the functions
    "cli_show": None,  # the CLI's printers and hooks, as the CLI
    "__init__": None,
    "__main__": {"cli"},
}


def layer_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def lmforge_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level lmforge subpackage) for every import in the file, lazy ones included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "lmforge":
                names = [f"lmforge.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "lmforge" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down(path: Path) -> None:
    layer = layer_of(path)
    assert layer in ALLOWED, (
        f"{path}: layer {layer!r} is not in the layering table (add it, and to design.md)"
    )
    allowed = ALLOWED[layer]
    if allowed is None:
        return
    bad = [f"line {n}: imports lmforge.{target}" for n, target in lmforge_imports(path)
           if target != layer and target not in allowed]  # fmt: skip
    assert not bad, f"{path.relative_to(SRC)} ({layer}) may import only {sorted(allowed)}: {bad}"


def test_no_import_cycles_between_modules() -> None:
    """Module-level imports (not the lazy ones inside functions) form no cycle."""
    graph: dict[str, set[str]] = {}
    for path in FILES:
        module = ".".join(("lmforge", *path.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
        deps = set()
        for node in ast.parse(path.read_text()).body:  # top level only
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").startswith("lmforge")
            ):
                deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("lmforge")}
        graph[module] = {d for d in deps if d != module}

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, dep]))
            if dep in graph and not state.get(dep):
                visit(dep, [*stack, node])
        state[node] = 2

    for module in graph:
        if not state.get(module):
            visit(module, [])


def test_the_layering_test_sees_a_violation(tmp_path: Path) -> None:
    """A model file that imports a tokenizer is caught (the check above can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("from lmforge.tokenization.tokenizer import Tokenizer\nimport lmforge.train.loop\n")
    assert [t for _, t in lmforge_imports(bad)] == ["tokenization", "train"]
    assert not {"tokenization", "train"} <= ALLOWED["model"]
