"""Kernel routes chosen by timing (model/kernels.py, model/decode_attention.py) are remembered for
the machine (model/route_memory.py, with the memory lmforge.formats installs:
tuning.remembered_route): a later process takes the route the first one measured, so that one
command gives one result; LMFORGE_AUTOTUNE=refresh measures again, =0 keeps nothing."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import lmforge.formats  # noqa: F401 - installs the route memory
from lmforge import tuning
from lmforge.model import decode_attention as da
from lmforge.model import kernels, prefill_attention, route_memory

TODAY = datetime.date.today().isoformat()


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An autotune cache of the test's own, autotune on, no route forced; the process's route
    choices are forgotten before and after (as a new process starts)."""
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_AUTOTUNE", raising=False)  # conftest turns it off for other tests
    for env in (
        "LMFORGE_LINEAR",
        "LMFORGE_BF16_LINEAR",
        "LMFORGE_DECODE_ATTENTION",
        "LMFORGE_PREFILL_ATTENTION",
    ):
        monkeypatch.delenv(env, raising=False)
    _new_process(monkeypatch)
    yield tmp_path / "cache" / tuning.FILE_NAME
    kernels.bucket_route.cache_clear()
    kernels.choose_bf16_routes.cache_clear()


def _new_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget what this process chose, as a new process would not know it."""
    kernels.bucket_route.cache_clear()
    kernels.choose_bf16_routes.cache_clear()
    monkeypatch.setattr(da, "_chosen", {})
    monkeypatch.setattr(prefill_attention, "_chosen", {})


def _no_probe(*args: object) -> None:
    raise AssertionError("the remembered route should have been taken, without a probe")


def _entries(cache: Path, kind: str) -> dict[str, dict]:
    return {k.split(" | ")[-1]: v for k, v in json.loads(cache.read_text()).items() if f" | {kind} | " in k}


def test_fp32_linear_routes_are_probed_once_per_machine(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    times = {
        "one": {"mkl": 1.0, "onednn": 0.5, "split": 0.9, "swapped": 0.9},
        "few": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "swapped": 0.6},
        "dozens": {"mkl": 1.0, "onednn": 0.98, "split": 0.99, "swapped": 0.97},
        "many": {"mkl": 1.0, "onednn": 0.95, "split": 0.99, "swapped": 0.97},
        "one_head": {"mkl": 1.0, "onednn": 0.8, "split": 0.99, "swapped": 0.97},
        "few_head": {"mkl": 1.0, "onednn": 0.7, "split": 0.99, "swapped": 0.97},
        "many_head": {"mkl": 1.0, "onednn": 0.6, "split": 0.99, "swapped": 0.97},
    }
    monkeypatch.setattr(kernels, "available_routes", lambda: kernels.ROUTES)
    monkeypatch.setattr(kernels, "probe", lambda bucket: times[bucket])
    head = kernels.HEAD_OUT
    cases = ((1, 0), (8, 0), (32, 0), (64, 0), (1, head), (8, head), (64, head))
    first = [kernels.linear_route(rows, out) for rows, out in cases]
    assert first == ["onednn", "swapped", "mkl", "mkl", "onednn", "onednn", "onednn"]
    assert kernels.describe().endswith("(measured: 1 row mkl 1000.00 ms, onednn 500.00 ms, split 900.00 ms,"
                                       f" swapped 900.00 ms; 1 row x {head} out mkl 1000.00 ms,"
                                       " onednn 800.00 ms, split 990.00 ms, swapped 970.00 ms;"
                                       " 8 rows mkl 1000.00 ms, onednn 900.00 ms, split 950.00 ms,"
                                       " swapped 600.00 ms; 32 rows mkl 1000.00 ms,"
                                       " onednn 980.00 ms, split 990.00 ms, swapped 970.00 ms; 256 rows"
                                       " mkl 1000.00 ms, onednn 950.00 ms, split 990.00 ms,"
                                       " swapped 970.00 ms;"
                                       f" 8 rows x {head} out mkl 1000.00 ms, onednn 700.00 ms,"
                                       " split 990.00 ms, swapped 970.00 ms;"
                                       f" 64 rows x {head} out mkl 1000.00 ms, onednn 600.00 ms,"
                                       " split 990.00 ms, swapped 970.00 ms)")  # fmt: skip
    assert {shape: e["route"] for shape, e in _entries(own_cache, "fp32 inference linear").items()} == {
        "1 row": "onednn", "8 rows": "swapped", "32 rows": "mkl", "256 rows": "mkl",
        f"1 row x {head} out": "onednn", f"8 rows x {head} out": "onednn", f"64 rows x {head} out": "onednn",
    }  # fmt: skip

    _new_process(monkeypatch)
    monkeypatch.setattr(kernels, "probe", _no_probe)
    again = [kernels.linear_route(rows, out) for rows, out in cases]
    assert again == first
    said = kernels.describe()
    assert f"(measured on {TODAY} on this machine, LMFORGE_AUTOTUNE=refresh measures again: 1 row mkl" in said

    _new_process(monkeypatch)
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "refresh")
    times["one"] = {"mkl": 1.0, "onednn": 0.9, "split": 0.5, "swapped": 0.9}
    monkeypatch.setattr(kernels, "probe", lambda bucket: times[bucket])
    assert kernels.linear_route(1) == "split"
    assert _entries(own_cache, "fp32 inference linear")["1 row"]["route"] == "split"


def test_a_route_remembered_among_fewer_routes_is_measured_again(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """A cache written before a route existed (`packed`, 2026-12-06) chose among the others: the
    new route may be the fastest, so the choice is measured again once, then remembered."""
    tuning.remember("fp32 inference linear", "8 rows", {"route": "split", "measured": "8 rows split 1.00 ms"})
    monkeypatch.setattr(kernels, "available_routes", lambda: kernels.ROUTES)
    probed = []

    def probe(bucket: str) -> dict[str, float]:
        probed.append(bucket)
        return {"mkl": 1.0, "onednn": 0.9, "split": 0.8, "swapped": 0.9, "packed": 0.5}

    monkeypatch.setattr(kernels, "probe", probe)
    assert kernels.linear_route(8) == "packed" and probed == ["few"]
    assert _entries(own_cache, "fp32 inference linear")["8 rows"]["among"] == list(kernels.ROUTES)
    _new_process(monkeypatch)
    monkeypatch.setattr(kernels, "probe", _no_probe)
    assert kernels.linear_route(8) == "packed"


def test_bf16_linear_routes_are_remembered(monkeypatch: pytest.MonkeyPatch, own_cache: Path) -> None:
    monkeypatch.setattr(kernels, "PACKING_AVAILABLE", True)
    monkeypatch.setattr(
        kernels, "probe_bf16", lambda bucket: {"plain": 1.0, "packed": 0.5 if bucket == "one" else 0.95}
    )
    assert [kernels.bf16_route(rows) for rows in (1, 8, 64)] == ["packed", "plain", "plain"]
    _new_process(monkeypatch)
    monkeypatch.setattr(kernels, "probe_bf16", _no_probe)
    assert [kernels.bf16_route(rows) for rows in (1, 8, 64)] == ["packed", "plain", "plain"]
    assert "measured on" in kernels.describe_bf16()


def _step(batch: int) -> tuple[torch.Tensor, ...]:
    """One bf16 query per row (batch, 4 heads) over 5 cached keys of 2 key/value heads."""
    q = torch.randn(batch, 4, 1, 8, dtype=torch.bfloat16)
    k, v = (torch.randn(batch, 2, 5, 8, dtype=torch.bfloat16) for _ in range(2))
    return q, k, v, None


def test_the_decoding_attention_route_is_remembered_per_shape(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """The route measured at a shape's first call in one process is every later process's route for
    that shape, whatever its own timings would say; another shape is measured for itself."""
    monkeypatch.setattr(
        da, "_measure", lambda q, k, v, mask: ("grouped", "sdpa 9 us, fp32 8 us, grouped 3 us")
    )
    assert da.route_for(*_step(2)) == "grouped"
    _new_process(monkeypatch)
    monkeypatch.setattr(da, "_measure", lambda *step: ("fp32", "sdpa 9 us, fp32 3 us, grouped 8 us"))
    assert da.route_for(*_step(2)) == "grouped"  # remembered, not measured again
    assert da.route_for(*_step(3)) == "fp32"  # a shape of its own
    assert {shape: e["route"] for shape, e in _entries(own_cache, da.KIND).items()} == {
        "batch 2, heads 4, key/value heads 2, head size 8": "grouped",
        "batch 3, heads 4, key/value heads 2, head size 8": "fp32",
    }


def test_a_route_outside_the_routes_is_measured_again(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """A cache entry naming a route this version does not have (an edited file, an older lmforge)
    is not taken: the shape is measured again and the entry replaced."""
    monkeypatch.setattr(da, "_measure", lambda q, k, v, mask: ("grouped", "timings"))
    da.route_for(*_step(2))
    entries = json.loads(own_cache.read_text())
    key = next(k for k in entries if f" | {da.KIND} | " in k)
    entries[key]["route"] = "flash"
    own_cache.write_text(json.dumps(entries))
    _new_process(monkeypatch)
    monkeypatch.setattr(da, "_measure", lambda q, k, v, mask: ("fp32", "timings"))
    assert da.route_for(*_step(2)) == "fp32"
    assert json.loads(own_cache.read_text())[key]["route"] == "fp32"


def test_with_autotune_off_every_process_measures_and_nothing_is_kept(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    calls: list[int] = []

    def measure(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: None) -> tuple[str, str]:
        calls.append(q.size(0))
        return "fp32", "timings"

    monkeypatch.setattr(da, "_measure", measure)
    assert da.route_for(*_step(2)) == "fp32"
    _new_process(monkeypatch)
    assert da.route_for(*_step(2)) == "fp32"
    assert calls == [2, 2] and not own_cache.exists()


def test_the_real_probe_chooses_and_remembers_a_route(
    own_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unfaked: the route timed on a real step is one of the routes, with its timings kept."""
    route = da.route_for(*_step(2))
    (entry,) = _entries(own_cache, da.KIND).values()
    assert route in da.ROUTES and entry["route"] == route
    assert entry["measured"].startswith("sdpa ") and entry["measured"].endswith(" us at 5 keys")


def test_a_route_measured_uncapped_is_not_taken_where_the_kernels_are_capped(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """An AVX-512 CPU run as an AVX2 one (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA,
    MKL_ENABLE_INSTRUCTIONS) is another machine for the cache."""
    for cap in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS"):
        monkeypatch.delenv(cap, raising=False)
    monkeypatch.setattr(da, "_measure", lambda *step: ("grouped", "timings"))
    assert da.route_for(*_step(2)) == "grouped"
    _new_process(monkeypatch)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    monkeypatch.setattr(da, "_measure", lambda *step: ("fp32", "timings"))
    assert da.route_for(*_step(2)) == "fp32"
    capped = [k for k in json.loads(own_cache.read_text()) if " ONEDNN_MAX_CPU_ISA=AVX2 | " in k]
    assert len(capped) == 1 and json.loads(own_cache.read_text())[capped[0]]["route"] == "fp32"


def test_the_memory_is_what_lmforge_formats_installs_and_the_model_alone_measures_each_time(
    monkeypatch: pytest.MonkeyPatch, own_cache: Path
) -> None:
    """Importing lmforge.formats (every path that loads, trains or writes a model does) installs the
    autotune cache as the memory; without it (the model package alone) every process measures."""
    assert route_memory._memory[0] is tuning.remembered_route
    monkeypatch.setattr(route_memory, "_memory", [route_memory.per_process])
    calls: list[int] = []

    def measure(*step: object) -> tuple[str, str]:
        calls.append(1)
        return "fp32", "timings"

    monkeypatch.setattr(da, "_measure", measure)
    da.route_for(*_step(2))
    _new_process(monkeypatch)
    da.route_for(*_step(2))
    assert calls == [1, 1] and not own_cache.exists()
