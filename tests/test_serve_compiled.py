"""The server's compiled decoding (compile_choice.step_for_serving, inference/batching.py): a row
decoding alone goes through the compiled step, a batch eagerly, with the cache moving between the
two layouts as sequences join and leave; each row's tokens are those it decodes alone, eagerly.
`lmforge serve` chooses at start: --compile, --no-compile, or auto from this machine's record."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_compile_choice import _measured
from test_compiled_decode import LLAMA_LIKE, _model
from test_serve_batching import run

from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.inference import compile_choice, compiled_decode, compiled_store
from lmforge.inference.batching import DecodeBatch, Sequence
from lmforge.inference.compile_choice import step_for_serving
from lmforge.inference.compiled_decode import LayerCache, compiled_step
from lmforge.inference.generate import generate_ids, row_generator


@pytest.mark.parametrize("step_rows", [1, 2])
def test_few_rows_decode_compiled_one_by_one_and_more_eagerly_each_as_alone(step_rows: int) -> None:
    """Row 0 decodes alone, rows 1 and 2 join it (past step_rows the rows' own caches join into
    one padded cache), rows leave (the padded cache splits again), row 3 fills the 48-token
    context (its last token predicted from all 48), a seeded row samples."""
    model = _model(LLAMA_LIKE)
    batch = DecodeBatch(model, compiled_step(model), step_rows)
    gen = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 97, (n,), generator=gen).tolist() for n in (5, 9, 2, 30, 4)]
    wants = [12, 6, 8, 19, 10]
    joins = [0, 4, 5, 14, 45]
    seeds = [None, None, None, None, 7]
    plan = []
    for i, (j, p, w, s) in enumerate(zip(joins, prompts, wants, seeds, strict=True)):
        sampler = (1.0, 0, 0.9, row_generator(s, 0)) if s is not None else (0.0, 0, 0.9, None)
        plan.append((j, Sequence(list(p), *sampler, tag=(i, w)), w))
    layouts: list[bool] = []  # per step: did the rows have caches of their own (the step's layout)

    def watch(b: DecodeBatch) -> None:
        layouts.append(b.own is not None and all(isinstance(c, LayerCache) for c in b.own))

    out = run(model, plan, batch, watch)
    for i, (p, w, s) in enumerate(zip(prompts, wants, seeds, strict=True)):
        temperature = 0.0 if s is None else 1.0
        assert out[i] == generate_ids(model, [p], w, temperature, 0, 0.9, seed=s)[0], f"row {i}"
    assert batch.compiled_steps > 20 and batch.step is not None and batch.step.eager_steps == 0
    changes = sum(a != b for a, b in zip(layouts, layouts[1:], strict=False))
    assert layouts[0] and changes >= 2  # own caches, joined into one padded cache, split again


@pytest.fixture
def tuned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Measuring on, a cache of this test's own."""
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "1")
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))


def test_serve_chooses_at_start_from_the_flag_and_this_machines_record(
    tuned: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """auto: a model never measured here is compiled and measured at start, then used if faster;
    measured faster, it is loaded (or compiled again if its file is gone); measured slower, or bf16,
    eager. --compile always; --no-compile never; where it cannot apply, one line."""
    model = _model(LLAMA_LIKE)
    assert step_for_serving(model, False) == (None, "decoding eagerly")
    monkeypatch.setattr(compile_choice, "_time_a_load", lambda _: None)  # no new process to time
    monkeypatch.setattr(compile_choice, "time_steps", lambda runs, rounds: [0.010, 0.004])  # faster
    step, said = step_for_serving(model, "auto")  # never measured here: compiled and measured now
    assert step is not None and compiled_store.step_path(model).is_file()
    assert said.startswith("a lone request decodes through the compiled step (compiled and measured in ")
    assert "lmforge serve: compiling the decoding step (the first time" in capsys.readouterr().err
    assert compile_choice.rows_through_step(model) == 2  # two 4 ms steps fit in one 10 ms eager step
    held = "a lone request decodes through the compiled step (held already)"
    assert step_for_serving(model, "auto") == (step, held) == step_for_serving(model, True)
    _measured(model, eager_ms=1.0, compiled_ms=2.0)  # measured slower here: auto stays eager
    assert step_for_serving(model, "auto") == (None, "decoding eagerly")
    assert step_for_serving(model, True) == (step, held)  # unless asked for
    assert compile_choice.rows_through_step(model) == 1
    _measured(model, eager_ms=10.0, compiled_ms=1.0)  # faster, but its file is gone (pruned)
    compiled_store.step_path(model).unlink()
    monkeypatch.setattr(compiled_decode, "_steps", {})  # a new process
    again, said = step_for_serving(model, "auto")
    assert again is not None and "(compiled and measured in " in said
    assert compiled_store.step_path(model).is_file()
    bf16 = _model(LLAMA_LIKE, torch.bfloat16)  # auto never compiles bf16 (its tokens may change)
    assert step_for_serving(bf16, "auto") == (None, "decoding eagerly")
    other = _model(ModelConfig(**{**LLAMA_LIKE.__dict__, "n_layer": 1}))
    monkeypatch.setattr(compile_choice, "time_steps", lambda runs, rounds: [0.002, 0.004])  # slower
    step, said = step_for_serving(other, "auto")
    assert step is None and said.startswith("decoding eagerly (its compiled step, compiled and measured in ")
    assert said.endswith(", measured slower here)")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(LmforgeError, match="needs a C\\+\\+ compiler"):
        step_for_serving(model, True)


def test_a_served_request_decodes_compiled_and_answers_as_eager(tmp_path: Path) -> None:
    """Over HTTP: --compile's server gives the eager server's text, token for token, and its lone
    requests went through the compiled step."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from serve_helpers import make_model_dirs

    from lmforge.server.app import Settings, create_app
    from lmforge.server.models import load_models

    dirs = make_model_dirs(tmp_path, block_size=48)
    texts, batches = [], []
    for compile in (False, True):
        app = create_app(load_models([dirs["llama"]], "fp32", compile), Settings())
        with TestClient(app) as api:
            body = {"model": "llama", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30}
            got = api.post("/v1/chat/completions", json={**body, "temperature": 0}).json()
            texts.append(got["choices"][0]["message"]["content"])
            batches.append(next(iter(app.state.lmforge.decoder.batcher.batches.values())))
    assert texts[0] == texts[1] and len(texts[0]) > 0
    assert batches[0].compiled_steps == 0 and batches[1].compiled_steps > 0


def test_serve_auto_says_when_fp32_through_the_step_beats_the_bf16_it_chose(
    tuned: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--dtype auto picks bf16 where eager bf16 beats eager fp32 (batches decode eagerly), and auto
    leaves bf16 eager; where the compiled fp32 step is faster still, the start line says so, and
    --dtype fp32 then decodes a lone request through it."""
    pytest.importorskip("fastapi")
    from serve_helpers import make_model_dirs

    from lmforge.inference import autotune
    from lmforge.server.models import load_models

    directory = make_model_dirs(tmp_path, block_size=48)["llama"]
    monkeypatch.setattr(compile_choice, "_time_a_load", lambda _: None)
    fp32 = load_models([directory], "fp32", True)["llama"]  # compiles and keeps the fp32 step
    _measured(fp32.net, eager_ms=20.0, compiled_ms=8.0, compile_s=20.0, load_s=2.0)
    monkeypatch.setattr(autotune, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(autotune, "_time_decoding", lambda nets: [0.020, 0.012])  # eager: bf16 wins
    served = load_models([directory], "auto", "auto")["llama"]
    assert served.net.wte.weight.dtype == torch.bfloat16 and served.step is None
    assert served.decoding == (
        "bfloat16, decoding eagerly (one request at a time decodes faster with --dtype fp32, through"
        " the compiled step: 8.0 ms a token against 12.0 here; batches are faster in bf16)"
        "; in bf16 a reply can change with what else decodes (--dtype fp32 keeps it)"
    )  # a helper's greedy replies changed 2 of 3 times beside 5 other requests, in bf16 only
    served = load_models([directory], "fp32", "auto")["llama"]
    assert served.step is fp32.step and served.decoding.startswith("float32, a lone request decodes")
    _measured(fp32.net, eager_ms=20.0, compiled_ms=13.0, compile_s=20.0, load_s=2.0)  # slower than bf16
    assert load_models([directory], "auto", "auto")["llama"].decoding == (
        "bfloat16, decoding eagerly; in bf16 a reply can change with what else decodes"
        " (--dtype fp32 keeps it)"
    )
