"""compile="auto" (inference/compile_choice.py): eager decoding that switches to the compiled step
once the eager time spent reaches the switch's measured wait; what a compiled run remembers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge import cli, tuning
from lmforge.config import ModelConfig
from lmforge.formats.directory import load_model, write_model_dir
from lmforge.inference import compile_choice, compiled_decode, compiled_store
from lmforge.inference.autotune import to_inference_dtype
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer

CONFIG = ModelConfig(n_layer=2, n_head=4, n_embd=64, block_size=48, vocab_size=97)
PROMPT = [5, 17, 3, 88, 41, 9]


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Measuring on (the suite runs with LMFORGE_AUTOTUNE=0), a cache of this test's own, no eager
    time spent yet."""
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "1")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compile_choice, "_eager_seconds", {})
    monkeypatch.setattr(compile_choice, "_never_measured", set())
    monkeypatch.setattr(compile_choice, "_hinted", [])


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def _measured(model: GPT, **entry: float) -> None:
    """Remember step times and waits for model as a compiled run would have."""
    tuning.remember(compile_choice.KIND, compile_choice._shape(model), {**entry, "measured": "in a test"})


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[GPT]:
    """Record every model the compiled step is asked for."""
    asked: list[GPT] = []
    real = compile_choice.compiled_step

    def counted(model: GPT) -> compiled_decode.CompiledStep:
        asked.append(model)
        return real(model)

    monkeypatch.setattr(compile_choice, "compiled_step", counted)
    return asked


def test_auto_decodes_eagerly_until_this_machine_has_measured_the_step(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    asked = _counting(monkeypatch)
    got = generate_ids(model, [PROMPT], 30, temperature=0, compile="auto")
    assert got == generate_ids(model, [PROMPT], 30, temperature=0) and asked == []
    auto = compile_choice.AutoSwitch.start(model, 1, None, True)
    assert auto is not None  # it counts the eager time, for hint(), but never switches
    auto.spent(1e9)
    assert not auto.due(10**9)


def test_the_switch_comes_once_eager_time_reaches_the_wait_and_the_steps_left_repay_it(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()
    _measured(model, eager_ms=10.0, compiled_ms=1.0, compile_s=0.2)  # 9 ms saved a step
    auto = compile_choice.AutoSwitch.start(model, 1, None, True)
    assert auto is not None and auto.wait == 0.2
    assert not auto.due(30)
    auto.spent(0.1)
    assert not auto.due(30)
    auto.spent(0.1)
    assert auto.due(30) and not auto.due(20)  # 30 steps save 0.27 s, 20 only 0.18 s
    assert compile_choice.AutoSwitch.start(model, 2, None, True) is None  # a batch decodes eagerly
    assert compile_choice.AutoSwitch.start(model, 1, None, False) is None  # so does no cache
    bf16 = model.to(torch.bfloat16)  # a compiled bf16 step's greedy tokens may part from eager's
    _measured(bf16, eager_ms=10.0, compiled_ms=1.0, compile_s=0.0)
    assert compile_choice.AutoSwitch.start(bf16, 1, None, True) is None
    model = model.float()
    monkeypatch.setattr(compiled_decode, "holds", lambda _: True)  # held by this process: no wait
    assert compile_choice.AutoSwitch.start(model, 1, None, True).wait == 0.0  # type: ignore[union-attr]
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    assert compile_choice.AutoSwitch.start(model, 1, None, True) is None


def test_eager_time_adds_up_across_calls(tuned: None) -> None:
    """A chat's replies: each spends toward the wait, so a long session switches."""
    model = _model()
    _measured(model, eager_ms=10.0, compiled_ms=1.0, compile_s=1e6)
    path = compiled_store.step_path(model)
    generate_ids(model, [PROMPT], 10, temperature=0, compile="auto")
    first = compile_choice._eager_seconds[path]
    generate_ids(model, [PROMPT], 10, temperature=0, compile="auto")
    assert 0 < first < compile_choice._eager_seconds[path]


@pytest.mark.parametrize(  # at once: slow (make test-all); mid-reply moves a longer cache
    "after", [pytest.param(0, marks=pytest.mark.slow), 5], ids=["at-once", "mid-reply"]
)
def test_a_switch_moves_the_cache_and_gives_the_eager_tokens(
    tuned: None, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """Switched at the first step or after 5 eager ones, the cache built so far moves into the
    compiled step's and the reply is the eager one."""
    model = _model()
    _measured(model, eager_ms=10.0, compiled_ms=1.0, compile_s=1e6)
    asked = _counting(monkeypatch)
    calls: list[int] = []

    def due(self: compile_choice.AutoSwitch, steps_left: int) -> bool:
        calls.append(steps_left)
        return len(calls) > after

    monkeypatch.setattr(compile_choice.AutoSwitch, "due", due)
    compile_choice.switches.clear()
    got = generate_ids(model, [PROMPT], 30, temperature=0, compile="auto")
    assert asked == [model] and len(calls) == after + 1 and calls[0] == 29
    assert got == generate_ids(model, [PROMPT], 30, temperature=0)
    said = compile_choice.switches
    assert len(said) == 1 and said[0].startswith("switched to the compiled step after")
    generate_ids(model, [PROMPT], 30, temperature=0, compile="auto")  # the step is held now
    assert len(compile_choice.switches) == 1


def test_a_compiled_run_remembers_its_wait_and_the_step_times(
    tuned: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compile also times the load a new process would do (in one)."""
    model = _model()
    generate_ids(model, [PROMPT], 5, temperature=0, compile=True)
    entry = tuning.lookup(compile_choice.KIND, compile_choice._shape(model))
    assert entry is not None and entry["compile_s"] > 0 and entry["load_s"] > 0
    assert entry["eager_ms"] > 0 and entry["compiled_ms"] > 0
    assert compiled_decode.compiled_step(model).eager_steps == 0  # the compiled steps were timed
    times = f"eager {entry['eager_ms']} ms, compiled {entry['compiled_ms']} ms a step; compiled in"
    assert entry["measured"].startswith(times) and "loaded in" in entry["measured"]
    tuning.remember(compile_choice.KIND, compile_choice._shape(model), {**entry, "load_s": 999.0})
    monkeypatch.setattr(compiled_decode, "_steps", {})  # a new process: the step is loaded from the store
    generate_ids(model, [PROMPT], 5, temperature=0, compile=True)
    again = tuning.lookup(compile_choice.KIND, compile_choice._shape(model))
    assert again is not None and again["load_s"] < 999.0 and again["eager_ms"] == entry["eager_ms"]


def test_generate_says_after_the_text_when_auto_switched(
    tuned: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = Tokenizer.train_char(["hi there, how are you"])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    net = to_inference_dtype(load_model(tmp_path / "gpt")[0], "fp32")[0]  # as generate will load it
    _measured(net, eager_ms=10.0, compiled_ms=1.0, compile_s=0.0)
    argv = ["generate", str(tmp_path / "gpt"), "--prompt", "hi", "--max-new-tokens", "8"]
    argv += ["--temperature", "0", "--dtype", "fp32"]
    assert cli.main(argv) == 0
    compiled = capsys.readouterr()
    assert compiled.err.startswith("lmforge: decoding switched to the compiled step after 0.0 s")
    assert "(auto: it saves 9.00 ms a step, after a 0.0 s compile)" in compiled.err
    assert cli.main([*argv, "--no-compile"]) == 0
    eager = capsys.readouterr()
    assert eager.err == "" and eager.out == compiled.out


def test_generate_says_once_that_a_long_eager_decode_could_switch_after_one_compile(
    tuned: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model auto could switch but this machine never compiled: past HINT_S seconds of eager
    decoding, generate says after the text that one --compile run would let later runs switch,
    once per process; not for a short decode, --no-compile, or a model whose step was measured."""
    tok = Tokenizer.train_char(["hi there, how are you"])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    argv = ["generate", str(tmp_path / "gpt"), "--prompt", "hi", "--max-new-tokens", "8"]
    argv += ["--temperature", "0", "--dtype", "fp32"]
    monkeypatch.setattr(compile_choice, "HINT_S", 0.0)
    assert cli.main([*argv, "--no-compile"]) == 0
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(compile_choice, "HINT_S", 1e9)
    assert cli.main(argv) == 0
    assert capsys.readouterr().err == ""  # shorter than HINT_S
    monkeypatch.setattr(compile_choice, "HINT_S", 0.0)
    assert cli.main(argv) == 0
    said = capsys.readouterr().err
    assert said.startswith("lmforge: ") and said.count("\n") == 1
    assert "s of eager decoding: this model has no compiled step on this machine; one --compile run" in said
    assert cli.main(argv) == 0
    assert capsys.readouterr().err == ""  # said once per process
    for name, empty in (("_hinted", []), ("_never_measured", set()), ("_eager_seconds", {})):
        monkeypatch.setattr(compile_choice, name, empty)  # a new process
    net = to_inference_dtype(load_model(tmp_path / "gpt")[0], "fp32")[0]
    _measured(net, eager_ms=1.0, compiled_ms=2.0, compile_s=0.0)  # measured, and slower: eager
    assert cli.main(argv) == 0
    assert capsys.readouterr().err == ""


def test_an_interactive_chat_says_when_fp32_through_the_compiled_step_beats_the_bf16_it_chose(
    tuned: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """dtype auto picks bf16 by eager steps and auto leaves bf16 eager; where this machine measured
    the compiled fp32 step faster, the chat's first line says so; otherwise nothing is added."""
    import builtins
    import sys

    from test_chat import make_chat_llama

    from lmforge.inference import autotune
    from lmforge.inference.chat import chat

    make_chat_llama(tmp_path / "llama")
    monkeypatch.setattr(autotune, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(autotune, "_time_decoding", lambda nets: [0.020, 0.012])  # eager: bf16 wins
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)

    def no_more_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr(builtins, "input", no_more_input)
    chat(tmp_path / "llama")
    assert "--dtype fp32 decodes faster" not in capsys.readouterr().err  # nothing measured of the step
    _measured(load_model(tmp_path / "llama")[0].float(), eager_ms=20.0, compiled_ms=8.0, compile_s=9.0)
    chat(tmp_path / "llama")
    hint = "--dtype fp32 decodes faster here, through the compiled step once it pays back: 8.0 ms a token"
    assert f"lmforge: {hint} against 12.0 eagerly in bf16" in capsys.readouterr().err
    chat(tmp_path / "llama", compile=False)
    assert "--dtype fp32 decodes faster" not in capsys.readouterr().err
