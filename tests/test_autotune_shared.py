"""Processes of one machine share the autotune cache (tuning.py): the ranks of a run, a server
beside a `generate`. Their writes take turns, so none drops another's entry, and a process that
needs a choice another is measuring waits and takes its answer, so both compute alike."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmforge import tuning

WRITER = """
import sys, time
from pathlib import Path
from lmforge import tuning
name, folder, how = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(folder / f"ready-{name}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)
for n in range(40):
    if how == "entries":  # an entry each
        tuning.remember("test", f"{name} {n}", {"measured": "x"})
    else:  # a field each, all in one entry
        tuning.update("test", "one entry", lambda entry: {**entry, f"{name} {n}": n})
"""

PROBER = """
import sys, time
from pathlib import Path
from lmforge import tuning
marker = Path(sys.argv[1])
def measure():
    marker.touch()  # the lock is held from here
    time.sleep(1.0)
    return "slow-route", "measured by the other process"
print(tuning.remembered_route("test route", "shape", ("slow-route", "own-route"), measure))
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("LMFORGE_AUTOTUNE", raising=False)  # conftest turns it off for other tests
    return tmp_path / "cache" / tuning.FILE_NAME


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True)


def _wait_for(*paths: Path) -> None:
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"waited 120 s for {paths}"
        time.sleep(0.01)


def test_writers_at_once_keep_every_entry(cache: Path, tmp_path: Path) -> None:
    names = ["a", "b", "c", "d"]
    writers = [_python(WRITER, name, str(tmp_path), "entries") for name in names]
    _wait_for(*(tmp_path / f"ready-{name}" for name in names))
    (tmp_path / "go").touch()
    assert [w.wait(timeout=120) for w in writers] == [0] * len(names)
    shapes = {key.split(" | ")[-1] for key in json.loads(cache.read_text())}
    assert shapes == {f"{name} {n}" for name in names for n in range(40)}


def test_updates_of_one_entry_at_once_keep_every_field(cache: Path, tmp_path: Path) -> None:
    # a lookup then a remember would drop the fields another process added in between
    names = ["a", "b", "c", "d"]
    updaters = [_python(WRITER, name, str(tmp_path), "fields") for name in names]
    _wait_for(*(tmp_path / f"ready-{name}" for name in names))
    (tmp_path / "go").touch()
    assert [u.wait(timeout=120) for u in updaters] == [0] * len(names)
    (entry,) = json.loads(cache.read_text()).values()
    assert set(entry) - {"when"} == {f"{name} {n}" for name in names for n in range(40)}


def test_a_process_waits_for_anothers_probe_and_takes_its_route(cache: Path, tmp_path: Path) -> None:
    marker = tmp_path / "probing"
    other = _python(PROBER, str(marker))
    _wait_for(marker)  # the other process is measuring, under the lock

    def measure() -> tuple[str, str]:
        raise AssertionError("this process should have waited for the other's probe and taken its route")

    route, timings, how = tuning.remembered_route("test route", "shape", ("slow-route", "own-route"), measure)
    assert (route, timings) == ("slow-route", "measured by the other process")
    assert how.startswith("measured on ")  # remembered, not measured here
    out, _ = other.communicate(timeout=120)
    assert other.returncode == 0
    assert "'slow-route', 'measured by the other process', ''" in out  # the other measured it now


def test_the_lock_is_re_entrant_within_a_process(cache: Path) -> None:
    def inner() -> tuple[str, str]:  # a probe whose measurement probes again (dtype -> kernel routes)
        tuning.remembered_route("test inner", "shape", ("x",), lambda: ("x", "inner"))
        return "y", "outer"

    assert tuning.remembered_route("test outer", "shape", ("y",), inner)[:2] == ("y", "outer")
    assert {key.split(" | ")[1] for key in json.loads(cache.read_text())} == {"test inner", "test outer"}


def test_with_autotune_off_each_process_measures_and_keeps_nothing(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMFORGE_AUTOTUNE", "0")
    entry, now = tuning.measured_once("test", "shape", lambda e: True, lambda: {"measured": "now"})
    assert (entry, now) == ({"measured": "now"}, True)
    assert not cache.exists()


def test_a_read_only_cache_folder_costs_a_probe_not_a_failure(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    monkeypatch.setenv("LMFORGE_CACHE", str(blocked / "cache"))
    route = tuning.remembered_route("test route", "shape", ("r",), lambda: ("r", "measured"))
    assert route == ("r", "measured", "")
