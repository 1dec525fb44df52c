"""A child that asked to die with its parent (prep's workers, a launcher's ranks) does, even when
the parent is killed with SIGKILL and can tidy nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lmforge import processes
from lmforge.train.engines import distributed

PARENT = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid())])
print(child.pid, flush=True)
time.sleep(60)
"""
CHILD = """
import signal, sys, time
from lmforge.processes import die_with_parent
die_with_parent(int(sys.argv[1]), signal.SIGTERM)
time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (exited, not yet reaped by init) is gone too
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child has made its request
    assert _alive(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_launched_rank_asks_to_end_with_its_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(processes, "die_with_parent", lambda parent, sig: asked.append((parent, sig)))
    monkeypatch.setattr(distributed, "rank_threads", lambda *_: None)
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    distributed.ensure_launch_env()
    assert asked == [(os.getppid(), signal.SIGTERM)]
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: nothing to end with
    distributed.ensure_launch_env()
    assert len(asked) == 1


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_kill_of_lmforge_launch_ends_its_agent_and_ranks(tmp_path, tiny_overrides: list[str]) -> None:
    """kill -9 of `lmforge launch` left torchrun's agent and both ranks training on (seen)."""
    out = tmp_path / "run-killed"
    command = [sys.executable, "-m", "lmforge", "launch", "--nproc", "2", "train", *tiny_overrides]
    command += ["--engine.name=ddp", "--train.max_steps=100000", "--train.max_minutes=0", f"--out={out}"]
    launch = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ours() -> list[int]:
        found = subprocess.run(["pgrep", "-f", str(out)], capture_output=True, text=True).stdout.split()
        return [int(pid) for pid in found if int(pid) != launch.pid and _alive(int(pid))]

    deadline = time.monotonic() + 120
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:  # the ranks train
        time.sleep(0.2)
    assert len(ours()) >= 3  # the agent and two ranks
    launch.send_signal(signal.SIGKILL)
    launch.wait()
    deadline = time.monotonic() + 30
    while ours() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ours()


def test_a_rank_whose_launcher_is_gone_ends_at_once() -> None:
    """Under lmforge launch the agent's pid is known: a rank whose parent is another process (the
    agent died while the rank started) ends, saying so; without it, a parent of pid 1 is no proof
    (torchrun as a container's first process), so the rank only asks to end with it."""
    code = "from lmforge import processes; processes.end_with_launcher(); print('trained on')"
    env = {**os.environ, "LMFORGE_AGENT_PID": "999999999"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "lmforge: error: the launcher (pid 999999999) is gone; this rank stops\n"
    env["LMFORGE_AGENT_PID"] = str(os.getpid())  # the test process is the rank's parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0 and done.stdout == "trained on\n"


def test_the_command_line_asks_before_anything_else(monkeypatch: pytest.MonkeyPatch) -> None:
    """`lmforge train` as a rank asks at once (before its imports and checks, minutes on a big
    run); other verbs, or one process, do not."""
    from lmforge import cli

    asked: list[str] = []
    monkeypatch.setattr(cli, "end_with_launcher", lambda: asked.append("asked"))
    monkeypatch.setattr(cli, "run", lambda *_: 0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["train", "--data.input=x"]) == 0 and asked == ["asked"]
    assert cli.main(["plan", "--data.input=x"]) == 0 and asked == ["asked"]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert cli.main(["train", "--data.input=x"]) == 0 and asked == ["asked"]
