"""The `lmforge train` command runs on tcmalloc where the system has it (lmforge/malloc.py), and the
allocator changes nothing a run computes."""

from __future__ import annotations

import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge import malloc
from lmforge.errors import LmforgeError

LIB = "libtcmalloc_minimal.so.4"


@pytest.mark.parametrize(
    ("environ", "platform", "library", "preload"),
    [
        ({}, "linux", LIB, LIB),
        ({"LD_PRELOAD": "libfoo.so"}, "linux", LIB, f"{LIB} libfoo.so"),  # kept, after tcmalloc
        ({}, "linux", None, None),  # not installed
        ({}, "darwin", LIB, None),
        ({"LMFORGE_MALLOC": "system"}, "linux", LIB, None),
        ({"LD_PRELOAD": LIB}, "linux", LIB, None),  # already restarted: no loop
        ({"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}, "linux", LIB, None),  # the user's choice
    ],
)
def test_when_the_command_restarts_on_tcmalloc(
    environ: dict[str, str], platform: str, library: str | None, preload: str | None
) -> None:
    env = malloc.restart_env({"HOME": "/h", **environ}, platform, library)
    assert (env and env["LD_PRELOAD"]) == preload
    assert env is None or env["HOME"] == "/h"


def _train(tmp_path: Path, name: str, tiny_overrides: list[str], **env: str) -> dict:
    out = tmp_path / name
    cmd = [sys.executable, "-m", "lmforge", "train", *tiny_overrides, "--train.max_steps=4"]
    cmd += ["--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "  malloc  " in done.stdout + done.stderr  # the start-up line says which
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {**json.loads((out / "summary.json").read_text()), "losses": losses}


def test_the_command_runs_on_tcmalloc_where_installed_and_computes_the_same(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    installed = ctypes.util.find_library(malloc.LIBRARY) is not None and sys.platform == "linux"
    default = _train(tmp_path, "default", tiny_overrides, LMFORGE_MALLOC="")
    system = _train(tmp_path, "system", tiny_overrides, LMFORGE_MALLOC="system")
    assert default["malloc"] == ("tcmalloc" if installed else "glibc")
    assert system["malloc"] == "glibc"
    assert default["losses"] == system["losses"] and default["val_loss"] == system["val_loss"]


def test_train_restarts_before_the_import_except_for_deepspeed_or_a_bad_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lmforge import cli_show

    calls: list[int] = []
    monkeypatch.setattr(malloc, "restart_with_tcmalloc", lambda: calls.append(1))
    cli_show.train_on_tcmalloc({"config": None, "overrides": ["--engine.name=ddp"]})
    assert calls == [1]
    cli_show.train_on_tcmalloc({"config": None, "overrides": ["--engine.name=deepspeed"]})
    cli_show.train_on_tcmalloc({"config": str(tmp_path / "missing.toml")})  # train says why, unrestarted
    cli_show.train_on_tcmalloc({"resume": str(tmp_path)})  # no config.toml there
    assert calls == [1]
    (tmp_path / "config.toml").write_text('[engine]\nname = "deepspeed"\n')
    cli_show.train_on_tcmalloc({"resume": str(tmp_path), "overrides": ["--train.max_steps=9"]})
    assert calls == [1]


def test_the_start_up_line_says_deepspeed_keeps_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command never restarts a DeepSpeed run on tcmalloc, so its line must not say it does."""
    monkeypatch.delenv(malloc.ENV, raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: LIB)  # tcmalloc installed
    monkeypatch.setattr(malloc, "in_use", lambda: "glibc")
    assert "runs on it" in malloc.describe("ddp")
    line = malloc.describe("deepspeed")
    assert line.startswith("glibc's (kept for DeepSpeed") and "runs on it" not in line, line
    monkeypatch.setattr(malloc, "in_use", lambda: "tcmalloc")  # LD_PRELOAD'ed by the user
    assert malloc.describe("deepspeed").startswith(
        "tcmalloc (preloaded; DeepSpeed runs otherwise keep glibc's"
    )
    assert malloc.describe("local") == f"tcmalloc ({malloc.ENV}=system keeps the system's)"


@pytest.mark.parametrize("value", ["glibc", "tcmalloc", "sytem"])
def test_a_mistyped_setting_is_one_line_not_a_silent_tcmalloc(value: str) -> None:
    with pytest.raises(LmforgeError, match=rf"LMFORGE_MALLOC='{value}': expected system"):
        malloc.restart_env({"LMFORGE_MALLOC": value}, "linux", LIB)
    assert malloc.keeps_system({"LMFORGE_MALLOC": " System "})
    assert not malloc.keeps_system({"LMFORGE_MALLOC": ""}) and not malloc.keeps_system({})


def test_the_command_refuses_a_mistyped_setting_before_it_makes_anything(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lmforge", "train", *tiny_overrides, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LMFORGE_MALLOC": "glibc"})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "lmforge: error: LMFORGE_MALLOC='glibc': expected system (keep the system's malloc), or leave"
        " it unset (tcmalloc where installed)"
    ]
    assert not out.exists()
