"""The training forward under torch.compile, chosen by measurement (train/compiling.py): where it is
tried, that the choice is remembered and resumed, and that a compiled run trains as an eager one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge import tuning
from lmforge.model.attention import set_sequence_route
from lmforge.train import autotune, compiling

STEPS = ["--train.max_steps=6", "--train.checkpoint_interval=3", "--train.eval_interval=6"]
STEPS += ["--train.dtype=fp32"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_AUTOTUNE", raising=False)  # conftest turns it off for other tests
    monkeypatch.setattr(autotune, "MARGIN", 1e9)  # time the kernels for real, keep the fixed rule's
    yield tmp_path / "cache" / tuning.FILE_NAME
    set_sequence_route("bmm")


def _train(overrides: list[str], out: Path | None = None, **kwargs: object) -> dict:
    from lmforge.train.loop import train

    return train(None, overrides, out, quiet=True, **kwargs)  # type: ignore[arg-type]


def _losses(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def _train_entries(cache: Path) -> dict:
    """The cache's training-kernel entries (it also keeps the matmul peak, tuning.matmul_peak)."""
    return {k: v for k, v in json.loads(cache.read_text()).items() if " | train | " in k}


def _copy_at_step_3(run: Path, to: Path) -> Path:
    """A copy of a 6-step run as it was at its step-3 checkpoint (STEPS checkpoint every 3)."""
    shutil.copytree(run, to)
    for name in ("checkpoints/step_00000006", "model", "summary.json"):
        path = to / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return to


def _fake_measure(monkeypatch: pytest.MonkeyPatch, outcome: bool | Exception) -> list[int]:
    """compiling.measure reports `outcome` (or raises it), and nothing compiles; counts the calls."""
    calls: list[int] = []

    def measure(*args: object) -> dict[str, float]:
        calls.append(1)
        if isinstance(outcome, Exception):
            raise outcome
        fast, slow = 1e-3, 2e-3
        return {"eager": slow if outcome else fast, "compiled": fast if outcome else slow, "compile": 30.0}

    monkeypatch.setattr(compiling, "measure", measure)
    monkeypatch.setattr(compiling, "compiled_step", lambda model, *args: model)
    return calls


def test_compile_is_tried_on_long_runs_only_then_remembered(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    calls = _fake_measure(monkeypatch, True)
    short = _train([*tiny_overrides, *STEPS], tmp_path / "short")  # seconds of steps: not worth a compile
    assert calls == [] and short["kernels"]["compile"] is False
    entry = next(iter(_train_entries(own_cache).values()))
    assert "compile" not in entry and entry["micro_batch_s"] > 0  # unknown yet, not "slower"

    monkeypatch.setattr(compiling, "MIN_RUN_S", 0.0)  # now the run counts as long
    first = _train([*tiny_overrides, *STEPS], tmp_path / "a")
    assert calls == [1] and first["kernels"]["compile"] is True
    entry = next(iter(_train_entries(own_cache).values()))
    assert entry["compile"] is True and "compiled in 30 s" in entry["compiled"]
    second = _train([*tiny_overrides, *STEPS], tmp_path / "b")  # remembered
    assert calls == [1] and second["kernels"] == first["kernels"]

    monkeypatch.setattr(compiling, "MIN_RUN_S", 1e9)  # a remembered "faster" does not pay on a short run
    assert _train([*tiny_overrides, *STEPS], tmp_path / "c")["kernels"]["compile"] is False
    monkeypatch.setattr(compiling, "MIN_RUN_S", 0.0)
    own_cache.unlink()  # a resumed run compiles as it started, without measuring
    resumed = _train(["--train.max_steps=8"], None, resume=tmp_path / "a")
    assert calls == [1] and resumed["kernels"]["compile"] is True and resumed["steps"] == 8


def test_an_entry_from_before_compile_is_completed_and_a_failure_means_eager(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    monkeypatch.setattr(compiling, "MIN_RUN_S", 0.0)
    calls = _fake_measure(monkeypatch, RuntimeError("inductor: no C++ compiler"))
    _train([*tiny_overrides, *STEPS], tmp_path / "a")
    key, entry = next(iter(_train_entries(own_cache).items()))
    assert calls == [1] and entry["compile"] is False and "failed here (RuntimeError)" in entry["compiled"]

    for name in ("compile", "compiled", "micro_batch_s"):  # as an entry written before compile was tried
        del entry[name]
    own_cache.write_text(json.dumps({key: entry}))
    calls = _fake_measure(monkeypatch, False)
    summary = _train([*tiny_overrides, *STEPS], tmp_path / "b")
    entry = json.loads(own_cache.read_text())[key]
    assert calls == [1] and summary["kernels"]["compile"] is False
    assert entry["compile"] is False and entry["micro_batch_s"] > 0 and entry["dtype"] == "fp32"


def test_train_compile_on_and_off_override_the_measurement(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    calls = _fake_measure(monkeypatch, True)
    forced = _train([*tiny_overrides, *STEPS, "--train.compile=on"], tmp_path / "on")  # short, yet compiled
    assert calls == [] and forced["kernels"]["compile"] is True
    assert "compile" not in next(iter(_train_entries(own_cache).values()))  # nothing measured, nothing cached

    monkeypatch.setattr(compiling, "MIN_RUN_S", 0.0)
    assert _train([*tiny_overrides, *STEPS], tmp_path / "auto")["kernels"]["compile"] is True
    off = _train([*tiny_overrides, *STEPS, "--train.compile=off"], tmp_path / "off")  # measured faster
    assert calls == [1] and off["kernels"]["compile"] is False
    resumed = _train(["--train.max_steps=8", "--train.compile=off"], None, resume=tmp_path / "on")
    assert resumed["kernels"]["compile"] is False and resumed["steps"] == 8  # the setting, not the checkpoint


@pytest.mark.parametrize("engine", ["local", "ddp", "fsdp", "deepspeed"])
def test_compile_on_is_allowed_on_the_compiled_engines_only(tiny_overrides: list[str], engine: str) -> None:
    """config/checks.py cannot import train/ (the layering), so it names the engines itself."""
    from lmforge.config import load_config
    from lmforge.errors import LmforgeError

    overrides = [*tiny_overrides, "--train.compile=on", f"--engine.name={engine}"]
    if engine in compiling.ENGINES:
        assert load_config(None, overrides).train.compile == "on"
    else:
        with pytest.raises(LmforgeError, match=r"train.compile='on' runs on engine.name="):
            load_config(None, overrides)


def test_train_compile_on_refuses_batches_of_varying_width(tiny_overrides: list[str]) -> None:
    from lmforge.config import load_config
    from lmforge.errors import LmforgeError

    translation = ["--data.task=translation", "--model.arch=seq2seq"]
    cfg = load_config(None, [*tiny_overrides, "--train.compile=on", *translation])
    with pytest.raises(LmforgeError, match=r"train.compile='on': data.task='translation' pads its batches"):
        autotune.choose_kernels(cfg, None, None, None, None, compilable=False)  # type: ignore[arg-type]


def test_a_checkpoint_from_before_compile_resumes_eager() -> None:
    saved = {"kernels": {"dtype": "bf16", "attention": "sdpa", "adamw": "fused"}}
    assert autotune.kernels_from_state(saved) == {**saved["kernels"], "compile": False}
    saved["kernels"]["compile"] = True
    assert autotune.kernels_from_state(saved)["compile"] is True


def test_a_compiled_run_trains_as_eager_and_resumes_exactly(
    tmp_path: Path, tiny_overrides: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """For real: inductor compiles the tiny GPT's forward, which the probe then keeps (MARGIN 0)."""
    monkeypatch.setattr(compiling, "MIN_RUN_S", 0.0)
    monkeypatch.setattr(compiling, "MARGIN", 0.0)
    compiled = _train([*tiny_overrides, *STEPS], tmp_path / "compiled")
    assert compiled["kernels"] == {"dtype": "fp32", "attention": "bmm", "adamw": "fused", "compile": True}
    assert not torch.are_deterministic_algorithms_enabled()  # the compiled run's setting, undone
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    eager = _train([*tiny_overrides, *STEPS], tmp_path / "eager")
    assert eager["kernels"]["compile"] is False
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)

    monkeypatch.delenv("LMFORGE_AUTOTUNE")  # with dropout the random state matters: resume from step 3
    run = tmp_path / "dropout"
    _train([*tiny_overrides, *STEPS, "--model.dropout=0.1"], run)
    other = _copy_at_step_3(run, tmp_path / "resumed")
    resumed = _train([], None, resume=other)
    assert resumed["kernels"]["compile"] is True
    a = load_file(str(run / "checkpoints" / "step_00000006" / "model.safetensors"))
    b = load_file(str(other / "checkpoints" / "step_00000006" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert _losses(other)[-3:] == _losses(run)[-3:]


# slow (make test-all): 70 s on a 2-core AVX2-only EPYC, where `make test` must stay under 20 minutes;
# one rank compiling, training as eager and resuming runs in `make test` above
@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_ranks_compile_together_and_train_as_eager(
    tmp_path: Path, tiny_overrides: list[str], own_cache: Path, engine: str
) -> None:
    """Two ranks for real: they time the kernels together and make one choice (their timings
    summed), and the cached micro-batch is their mean. Once their cache says the run is long and
    compiled steps faster, both compile the engine's module (DDP's graph split at its buckets,
    FSDP2's at its per-block hooks) and train as eager ranks do, two micro-batches a step (the
    first without a gradient sync); resumed from step 3, they compile again and end as they did."""
    env = {k: v for k, v in os.environ.items() if k != "LMFORGE_AUTOTUNE"}

    def launch(name: str, resume: bool = False, **extra: str) -> dict:
        args = ["--resume", str(tmp_path / name)] if resume else [
            "--out", str(tmp_path / name), *tiny_overrides, *STEPS, f"--engine.name={engine}",
            "--engine.backend=gloo", "--engine.timeout_s=120", "--train.micro_batch_size=2"]  # fmt: skip
        cmd = [sys.executable, "-m", "lmforge", "launch", "--nproc=2", "train", "--quiet", *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env | extra)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((tmp_path / name / "summary.json").read_text())

    short = launch("short")  # the ranks measure the kernels together and agree; rank 0 caches them
    [(key, entry)] = _train_entries(own_cache).items()
    assert short["world_size"] == 2 and short["kernels"]["adamw"] in ("fused", "foreach")
    assert {k: entry[k] for k in ("dtype", "attention", "adamw")} | {"compile": False} == short["kernels"]
    assert "compile" not in entry and 0 < entry["micro_batch_s"] < 1  # seconds of steps: not tried
    entry |= {"micro_batch_s": 1e3, "compile": True, "compiled": "1 ms against 2 ms eager"}
    own_cache.write_text(json.dumps({key: entry}))  # a long run, measured faster before
    compiled = launch("compiled")
    assert compiled["kernels"]["compile"] is True
    eager = launch("eager", LMFORGE_AUTOTUNE="0")
    assert eager["kernels"]["compile"] is False
    assert _losses(tmp_path / "compiled") == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], rel=1e-4)

    _copy_at_step_3(tmp_path / "compiled", tmp_path / "resumed")
    assert launch("resumed", resume=True)["kernels"]["compile"] is True
    a, b = (load_file(str(tmp_path / run / "model" / "model.safetensors")) for run in ("compiled", "resumed"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("signal_error", [KeyboardInterrupt, SystemExit])
def test_a_signal_during_start_up_is_not_replaced_by_a_half_done_import(
    monkeypatch: pytest.MonkeyPatch, signal_error: type[BaseException]
) -> None:
    """Ctrl-C or SIGTERM in the middle of torch's lazy torch._dynamo import (AdamW's constructor)
    left torch._inductor half imported; restoring the deterministic settings imports it, and its
    ImportError replaced the signal: a traceback and exit 1 rather than 130 or 143."""
    from lmforge.train.compiling import kept_settings

    def half_imported(*args: object, **kwargs: object) -> None:
        raise ImportError("cannot import name 'IndentedBuffer' from partially initialized module")

    with pytest.raises(signal_error), kept_settings():
        monkeypatch.setattr(torch, "use_deterministic_algorithms", half_imported)
        raise signal_error
    monkeypatch.undo()
    with pytest.raises(ImportError), kept_settings():  # with no signal in flight, a real error
        monkeypatch.setattr(torch, "use_deterministic_algorithms", half_imported)
