"""The command line is a table: each verb is a function called with keywords, defaults come from
the function alone, `--help` documents every config key, `import lmforge` is lazy, and a user's
mistake is one line on stderr while a bug keeps its traceback."""

from __future__ import annotations

import dataclasses
import errno
import functools
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lmforge
from lmforge import cli, cli_parser, config_doc
from lmforge.config import joined_overrides, load_config
from lmforge.errors import LmforgeError

load = cli_parser.load  # the real one, for the stand-ins below

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
# verb -> the name of its function in the Python API (launch's lives in lmforge.launch)
NAMES = {"prep": "prep", "train": "train", "generate": "generate", "import": "import_hf",
         "export": "export_hf", "finetune-classify": "finetune_classify", "translate": "translate",
         "eval-translate": "eval_translate", "classify": "classify", "eval-classify": "eval_classify",
         "embed": "embed",
         "launch": "launch", "merge-lora": "merge_lora",
         "chat": "chat", "eval": "evaluate", "eval-instruct": "eval_instruct", "serve": "serve",
         "inspect": "inspect", "ask": "ask", "eval-qa": "eval_qa", "plan": "plan",
         "audit": "audit"}  # fmt: skip
# keywords of the Python API that take Python objects, not command-line text
PYTHON_ONLY = {"prep": {"config"}}


def functions(verb: cli_parser.Verb, spec: cli_parser.Opt) -> list[Any]:
    """The functions an option goes to: the verb's, its switch's, or both."""
    main = load(verb.target)
    alt = load(verb.switch.target) if verb.switch else None
    return [f for f, switched in ((main, False), (alt, True)) if f and spec.alt in (None, switched)]


def test_every_verb_maps_to_the_function_of_its_name() -> None:
    assert set(cli.VERBS) == set(NAMES)
    for verb, name in NAMES.items():
        function = load(cli.VERBS[verb].target)
        assert function.__name__ == name
        if verb != "launch":
            assert getattr(lmforge, name) is function
    assert load(cli.VERBS["prep"].switch.target) is lmforge.prepare_pairs  # prep --pairs


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_options_are_the_functions_keywords(name: str) -> None:
    verb = cli.VERBS[name]
    given: dict[int, set[str]] = {}  # id(function) -> keywords the CLI can pass it
    for spec in verb.options:
        for function in functions(verb, spec):
            params = inspect.signature(function).parameters
            if spec.override:  # passed as --section.key=value: a real config key
                config_doc.default_of(spec.override)
                assert "overrides" in params and verb.overrides
            elif spec.dest not in params:  # only a [prep] key may travel in **options
                assert spec.config.startswith("prep."), (name, spec.dest, function.__name__)
                assert any(p.kind is p.VAR_KEYWORD for p in params.values())
            given.setdefault(id(function), set()).add(spec.dest)
    for function in functions(verb, cli_parser.Opt("", "--any", "")):
        params = inspect.signature(function).parameters
        missing = {p.name for p in params.values() if p.kind is not p.VAR_KEYWORD}
        missing -= (
            given.get(id(function), set()) | set(verb.fixed) | PYTHON_ONLY.get(function.__name__, set())
        )
        missing -= {"overrides"} if verb.overrides else set()
        assert not missing, f"{name}: {function.__name__}'s {missing} cannot be set from the command line"


class Calls:
    """Stands in for cli_parser.load: the real function's signature, recording each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, target: str) -> Any:
        real = load(target)

        @functools.wraps(real)  # inspect.signature follows __wrapped__
        def record(**kwargs: Any) -> None:
            self.calls.append((real.__name__, kwargs))

        return record


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    recorder = Calls()
    monkeypatch.setattr(cli_parser, "load", recorder)
    for name, verb in cli.VERBS.items():  # nothing to show for a recorded call
        switch = verb.switch and dataclasses.replace(verb.switch, show=None)
        monkeypatch.setitem(cli.VERBS, name, dataclasses.replace(verb, show=None, switch=switch))
    return recorder


MINIMAL = {
    "prep": ["prep", "in.txt"],
    "train": ["train"],
    "generate": ["generate", "m"],
    "import": ["import", "h", "--out", "o"],
    "export": ["export", "m", "--out", "o"],
    "finetune-classify": ["finetune-classify", "m", "--train", "t.jsonl", "--labels", "a,b"],
    "translate": ["translate", "m", "hello"],
    "eval-translate": ["eval-translate", "m", "--src", "s", "--ref", "r"],
    "classify": ["classify", "m", "hello"],
    "eval-classify": ["eval-classify", "m", "--data", "d.jsonl"],
    "embed": ["embed", "m", "hello"],
    "eval": ["eval", "m", "--data", "d.txt"],
    "launch": ["launch", "--nproc", "2", "train", "x.toml"],
    "chat": ["chat", "m"],
    "merge-lora": ["merge-lora", "m", "--out", "o"],
    "eval-instruct": ["eval-instruct", "m", "--data", "d.jsonl"],
    "serve": ["serve", "m"],
    "inspect": ["inspect", "m", "hello"],
    "ask": ["ask", "m", "q", "--docs", "d"],
    "eval-qa": ["eval-qa", "m", "--data", "d.json"],
    "plan": ["plan"],
    "audit": ["audit", "m", "--data", "d"],
}


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_an_option_not_given_is_not_passed(name: str, calls: Calls) -> None:
    """The function's signature is the one place a default lives."""
    assert cli.main(MINIMAL[name]) == 0
    [(function, kwargs)] = calls.calls
    assert function == NAMES[name]
    given = {
        "prep": {"inputs"}, "train": set(), "generate": {"model"}, "import": {"hf_dir", "out"},
        "export": {"model_path", "out"}, "finetune-classify": {"model", "train", "labels"},
        "translate": {"model", "texts"}, "eval-translate": {"model", "src", "ref"},
        "launch": {"nproc", "args"}, "eval": {"model", "data"}, "chat": {"model"},
        "merge-lora": {"model_path", "out"}, "eval-instruct": {"model", "data"}, "serve": {"models"},
        "inspect": {"model", "text"},
        "ask": {"model", "question", "docs"},
        "eval-qa": {"model", "data"},
        "classify": {"model", "texts"},
        "embed": {"model", "texts"},
        "eval-classify": {"model", "data"},
        "plan": set(),
        "audit": {"model", "data"},
    }[name]  # fmt: skip
    assert set(kwargs) == given | set(cli.VERBS[name].fixed)


def test_prep_pairs_defaults_are_prepare_pairs(calls: Calls, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["prep", "--pairs", "pairs.jsonl", "--out", "o"]) == 0
    assert calls.calls == [("prepare_pairs", {"inputs": ["pairs.jsonl"], "out": "o"})]
    defaults = inspect.signature(lmforge.prepare_pairs).parameters
    assert defaults["vocab_size"].default == 8000 and defaults["val_fraction"].default == 0.02
    with pytest.raises(SystemExit):
        cli.main(["prep", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "BPE vocabulary size (default: 4096 from data.vocab_size; with --pairs: 8000)" in text
    assert "(default: 0.1 from data.val_fraction; with --pairs: 0.02)" in text
    with pytest.raises(SystemExit):  # the same with and without the switch: said once
        cli.main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "tokens to generate (default: 200) " in text and "; with --runtime onnx: 200" not in text
    assert "measured that it pays back --dtype" in text  # the help says the default: not again


def test_arguments_become_keywords(calls: Calls) -> None:
    assert cli.main(["train", "r.toml", "--init-from", "M", "--train.max_steps=3", "--quiet"]) == 0
    assert cli.main(["translate", "m", "--beam", "2", "one", "two"]) == 0
    assert cli.main(["generate", "m", "--prompt", "a", "--prompt", "b", "--no-cache", "--top-k", "0"]) == 0
    assert cli.main(["generate", "m", "--prompt", "a"]) == 0
    assert cli.main(["launch", "--nproc=2", "train", "x", "--engine.name=ddp", "--debug"]) == 0
    assert cli.main(["prep", "a", "b", "--stages", "none", "--prep.min_chars=5", "--vocab-size", "9"]) == 0
    assert [kwargs for _, kwargs in calls.calls] == [
        {"config": "r.toml", "quiet": True, "overrides": ["--train.max_steps=3", "--train.init_from=M"]},
        {"model": "m", "beam": 2, "texts": ["one", "two"]},
        {"model": "m", "prompt": ["a", "b"], "use_cache": False, "top_k": 0, "stream": False},  # a batch
        {"model": "m", "prompt": ["a"], "stream": True},  # one prompt streams as it is generated
        {"nproc": 2, "args": ["train", "x", "--engine.name=ddp", "--debug"]},  # the children's
        {"inputs": ["a", "b"], "stages": "none", "vocab_size": 9, "overrides": ["--prep.min_chars=5"]},
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["prep", "x.txt", "--src-lang", "de"], "--src-lang needs --pairs"),
        (["prep", "--pairs", "x.tsv", "--out", "o", "--stages", "none"], "--stages does not go with --pairs"),
        (["prep", "--pairs", "x.tsv"], "--out is required with --pairs"),
        (
            ["prep", "--pairs", "x.tsv", "--out", "o", "--prep.min_chars=3"],
            "overrides do not go with --pairs",
        ),
        (["generate", "m", "--train.max_steps=3"], "unrecognized arguments: --train.max_steps=3"),
        (["export", "m", "--out", ""], "--out is empty (a $(...) or variable that gave nothing?)"),  # was `.:
        (["eval", "m", "--data", ""], "--data is empty"),  # is the working directory`
    ],
)
def test_usage_errors_are_argparse_s(argv: list[str], message: str, calls: Calls, capsys: Any) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err and not calls.calls


def test_help_lists_every_config_key_with_type_default_and_doc(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "2000")  # no wrapping
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--train.max_steps=INT Optimizer steps to train" in text
    for key in config_doc.keys(None):
        assert key.doc, f"{key.dotted} has no docstring in config.py"
        default = config_doc.toml_value(key.default)
        assert f"--{key.dotted}={key.type.upper()} {key.doc} (default: {default})" in text
    assert " ".join(inspect.getdoc(lmforge.train).split()) in text  # the function's docstring
    with pytest.raises(SystemExit):
        cli.main(["prep", "--help"])
    text = capsys.readouterr().out
    assert "--data.vocab_size=INT" in text and "--prep.shard_tokens=INT" in text
    assert "--train.max_steps" not in text


@pytest.mark.parametrize("name", sorted(cli.VERBS))
def test_every_verb_has_help(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0 and f"`lmforge {name}` calls {NAMES[name]}()" in capsys.readouterr().out


def test_an_override_may_give_its_value_after_a_space(capsys: pytest.CaptureFixture) -> None:
    given = ["train", "--data.input", "my.txt", "--lora.enabled", "--lora.rank", "8", "--out", "o"]
    joined = ["train", "--data.input=my.txt", "--lora.enabled", "--lora.rank=8", "--out", "o"]
    assert joined_overrides([*given, "--train.min_lr", "-1"]) == [*joined, "--train.min_lr=-1"]
    assert load_config(None, ["--train.lr", "3e-4"]).train.lr == 3e-4  # lmforge.train(..., overrides) too
    # the value is the override's, not the recipe positional's ("fast: config file not found")
    assert cli.main(["train", "--train.lr", "fast"]) == 2
    assert "train.lr='fast' is not a number" in capsys.readouterr().err


@pytest.mark.parametrize("words", [["--train.lr=very fast"], ["--train.lr", "very fast"]])
def test_an_overrides_value_may_hold_a_space(words: list[str], capsys: pytest.CaptureFixture) -> None:
    """argparse takes a word with a space for a positional: `--data.input=my data.jsonl` was read
    as the recipe ("config file not found")."""
    assert cli.main(["train", *words]) == 2
    assert "train.lr='very fast' is not a number" in capsys.readouterr().err


def test_a_spaced_override_reaches_launchs_children(calls: Calls) -> None:
    assert cli.main(["launch", "--nproc=2", "train", "x", "--data.input=my data.txt"]) == 0
    assert calls.calls[0][1]["args"] == ["train", "x", "--data.input=my data.txt"]


def test_docs_config_md_is_up_to_date() -> None:
    assert (ROOT / "docs" / "config.md").read_text(encoding="utf-8") == config_doc.markdown(), (
        f"docs/config.md is out of date: run `{config_doc.REGENERATE}`"
    )
    listed = config_doc.markdown().split("\n## ")[0]
    recipes = sorted(p.name for p in (ROOT / "configs").glob("*.toml"))
    missing = [name for name in recipes if f"`configs/{name}`" not in listed]
    assert not missing, f"config_doc.py's list of recipes lacks {missing}"


def test_import_lmforge_and_help_load_no_torch() -> None:
    code = (
        "import sys, runpy, lmforge\n"
        "assert 'torch' not in sys.modules and 'lmforge.data' not in sys.modules\n"
        "assert sorted(dir(lmforge)) == sorted([*lmforge.__all__, '__version__'])\n"
        "lmforge.Config, lmforge.LmforgeError, lmforge.load_config\n"
        "sys.argv = ['lmforge', '--help']\n"
        "try:\n"
        "    runpy.run_module('lmforge', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0\n"
        "print(sorted(m for m in ('torch', 'numpy', 'datatrove', 'sentencepiece') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_api_names_load_on_use() -> None:
    importlib.import_module("lmforge.train.optim")  # binds the subpackage lmforge.train on lmforge...

    assert lmforge.train is load("lmforge.train.loop:train")  # ...the name stays the function
    for name in lmforge.__all__:
        assert getattr(lmforge, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lmforge.nope  # noqa: B018


# --- errors: one line for a user's mistake, a traceback for a bug -----------------------------
def failing(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def patched(target: str) -> Any:
        real = load(target)

        @functools.wraps(real)
        def fail(**_: Any) -> None:
            raise error

        return fail

    monkeypatch.setattr(cli_parser, "load", patched)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (LmforgeError("x.toml: unknown key 'a.b'"), "lmforge: error: x.toml: unknown key 'a.b'"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "in.txt"),
         "lmforge: error: in.txt: No such file or directory"),
        (PermissionError(errno.EACCES, "Permission denied", "o"), "lmforge: error: o: Permission denied"),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "d"), "lmforge: error: d: Is a directory"),
        (OSError(errno.ENOSPC, "No space left on device"), "lmforge: error: No space left on device"),
    ],
)  # fmt: skip
def test_a_user_error_is_one_line(
    error: Exception, line: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    failing(monkeypatch, error)
    assert cli.main(["train"]) == cli.USER_ERROR == 2
    assert capsys.readouterr().err.splitlines() == [line]
    assert cli.main(["--debug", "train"]) == 2  # --debug: the traceback, then the same line
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and err.splitlines()[-1] == line


def test_interrupt_and_bugs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("LMFORGE_DEBUG", raising=False)
    failing(monkeypatch, KeyboardInterrupt())
    assert cli.main(["train"]) == 130 and capsys.readouterr().err.splitlines() == ["lmforge: interrupted"]
    for bug in (RuntimeError("a bug"), OSError(errno.EIO, "I/O error"), ValueError("not ours")):
        failing(monkeypatch, bug)
        with pytest.raises(type(bug)):  # the traceback is shown: the exception is not swallowed
            cli.main(["train"])


def test_lmforge_error_from_the_shell(tmp_path: Path) -> None:
    """A real run: one stderr line and exit 2; LMFORGE_DEBUG=1 or --debug adds the traceback."""
    argv = [sys.executable, "-m", "lmforge", "train", str(tmp_path / "missing.toml"), "--out", str(tmp_path)]
    plain = subprocess.run(argv, capture_output=True, text=True, env=ENV, timeout=120)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        f"lmforge: error: {tmp_path / 'missing.toml'}: config file not found"
    ]
    debug = subprocess.run(
        argv, capture_output=True, text=True, env={**ENV, "LMFORGE_DEBUG": "1"}, timeout=120
    )
    assert debug.returncode == 2 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.splitlines()[0]
    flag = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=ENV, timeout=120)
    assert flag.returncode == 2 and "Traceback" in flag.stderr


def test_a_reader_gone_away_is_no_traceback() -> None:
    """`lmforge ... | head`: the pipe closes before lmforge writes; it stops quietly."""
    # the vocabulary given: a fresh clone has no prepared data to count it in (and a prepared one
    # must not be larger)
    argv = [
        sys.executable,
        "-m",
        "lmforge",
        "plan",
        "configs/demo.toml",
        "--model.vocab_size=256",  # at least any char vocabulary, prepared or not
        "--device",
        "h100",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=ROOT)
    proc.stdout.close()  # type: ignore[union-attr] - the reader leaves at once
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    assert proc.wait(timeout=120) == 1 and err == ""


def test_generate_with_several_prompts_prints_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--prompt a --prompt b` is a batch (its --help says so); the CLI always asked generate() to
    stream, which refuses several prompts, so every batch was `stream=True ... 2 were given`."""
    from serve_helpers import make_endless_gpt

    model = make_endless_gpt(tmp_path)
    argv = [
        "generate",
        str(model),
        "--prompt",
        "ab",
        "--prompt",
        "cd",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("-" * 40) == 2 and "ab" in out and "cd" in out
