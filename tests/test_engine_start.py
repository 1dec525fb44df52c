"""What a rank checks and sets as its engine starts, under any launcher (torchrun, deepspeed,
`lmforge launch`): the local engine in several processes is refused, each rank gets its share of
the cores, and a global batch that does not split over the ranks says what to set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.config import EngineConfig, TrainConfig, load_config
from lmforge.config.batch_split import split_batch
from lmforge.errors import LmforgeError
from lmforge.hardware import cores_in_cpuinfo, physical_cores
from lmforge.train import loop
from lmforge.train.engines import build_engine
from lmforge.train.engines.distributed import free_port, rank_threads
from lmforge.train.engines.local import LocalEngine

COPIES = "engine.name='local' trains in one process, so 2 processes would run 2 identical jobs"


# --- the local engine in several processes --------------------------------------------------------
def test_a_rank_of_several_refuses_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(LmforgeError, match=rf"^{COPIES} into the same run directory; pass --engine.name=ddp"):
        build_engine(EngineConfig(), TrainConfig())
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc_per_node 1: one job, as asked
    assert build_engine(EngineConfig(), TrainConfig()).name == "local"
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(LmforgeError, match=r"^WORLD_SIZE='two' \(set by the launcher\): not an integer"):
        build_engine(EngineConfig(), TrainConfig())


def test_torchrun_with_the_local_engine_stops_every_rank_in_one_line(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """torchrun bypasses `lmforge launch`'s check: each rank refuses, writing nothing."""
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    torchrun += [f"--master_port={free_port()}", "-m", "lmforge", "train"]
    done = subprocess.run(
        [*torchrun, *tiny_overrides, "--train.max_steps=3", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("lmforge: error: ")]
    assert len(errors) == 2 and all(COPIES in line for line in errors), done.stderr[-3000:]
    assert "LmforgeError" not in done.stderr  # no rank's traceback (torchrun's own report follows)
    assert done.stderr.count("exitcode  : 2") + done.stderr.count("exitcode: 2") >= 1, done.stderr[-3000:]
    assert not out.exists()


# --- threads per rank -----------------------------------------------------------------------------
TORCHRUN = {"TORCHELASTIC_RUN_ID": "none", "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
DEEPSPEED = {"LOCAL_SIZE": "2", "WORLD_SIZE": "2"}  # the deepspeed launcher's names


@pytest.mark.parametrize(
    ("environ", "cores", "launcher", "threads"),
    [
        ({}, 8, {}, None),  # no launcher: torch's own
        ({"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}, 8, {}, None),  # one process
        (DEEPSPEED, 8, {}, 4),  # the deepspeed launcher sets no OMP_NUM_THREADS: all 8 in each rank
        ({**DEEPSPEED, "OMP_NUM_THREADS": "3"}, 8, {}, None),  # the user's (or --bind_cores_to_rank's)
        ({**TORCHRUN, "OMP_NUM_THREADS": "1"}, 8, {}, 4),  # torchrun's own 1 (none was given)
        ({**TORCHRUN, "OMP_NUM_THREADS": "1"}, 8, None, 4),  # the launcher's environment unreadable
        ({**TORCHRUN, "OMP_NUM_THREADS": "1"}, 8, {"OMP_NUM_THREADS": "1"}, None),  # the user's 1
        ({**TORCHRUN, "OMP_NUM_THREADS": "2"}, 8, {"OMP_NUM_THREADS": "2"}, None),
        ({**TORCHRUN, "LOCAL_WORLD_SIZE": "1", "OMP_NUM_THREADS": "1"}, 8, {}, None),  # torchrun sets none
        ({**TORCHRUN, "WORLD_SIZE": "4", "OMP_NUM_THREADS": "1"}, 8, {}, 4),  # 2 nodes of 2 ranks
        ({**TORCHRUN, "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4", "OMP_NUM_THREADS": "1"}, 2, {}, 1),
        ({"WORLD_SIZE": "2"}, 8, {}, 4),  # another launcher: the world on one node
    ],
)
def test_each_rank_gets_its_share_of_the_cores(
    environ: dict[str, str], cores: int, launcher: dict[str, str] | None, threads: int | None
) -> None:
    assert rank_threads(environ, cores, launcher) == threads


def test_cores_count_each_physical_core_once() -> None:
    # 2 packages x 2 cores x 2 hyperthreads; the process may run on CPUs 0-3 (package 0's)
    blocks = [(cpu, cpu // 4, cpu // 2 % 2) for cpu in range(8)]
    cpuinfo = "\n\n".join(f"processor\t: {c}\nphysical id\t: {p}\ncore id\t\t: {k}" for c, p, k in blocks)
    assert cores_in_cpuinfo(cpuinfo, set(range(8))) == 4
    assert cores_in_cpuinfo(cpuinfo, {0, 1, 2, 3}) == 2
    assert cores_in_cpuinfo("processor\t: 0\nprocessor\t: 1", {0, 1}) == 2  # no core ids: CPUs


def _deepspeed() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _deepspeed(), reason="deepspeed not installed")
def test_the_deepspeed_launcher_shares_the_cores_as_torchrun_ranks_do(tmp_path: Path) -> None:
    """The deepspeed launcher gives each rank every core (torch's default); lmforge's start gives
    each its share, as under `lmforge launch`."""
    script = tmp_path / "threads.py"
    script.write_text(
        "import os, torch\n"
        "from lmforge.train.engines.distributed import ensure_launch_env\n"
        "ensure_launch_env()\n"
        # one write of under PIPE_BUF bytes is atomic: the launcher runs ranks unbuffered (-u), where
        # print's pieces are separate writes and two ranks' lines interleaved ("rank 0rank 1 ...")
        "os.write(1, f\"rank {os.environ['RANK']} threads {torch.get_num_threads()}\\n\".encode())\n"
    )
    runner = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus=2",
        f"--master_port={free_port()}",
    ]
    env = {**os.environ, "DS_ACCELERATOR": "cpu"}
    env.pop("OMP_NUM_THREADS", None)
    done = subprocess.run([*runner, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    said = sorted(line.split()[-4:] for line in done.stdout.splitlines() if line.startswith("rank "))
    share = str(max(1, physical_cores() // 2))
    assert said == [["rank", "0", "threads", share], ["rank", "1", "threads", share]], done.stdout[-3000:]


# --- the global batch over the ranks --------------------------------------------------------------
UNEVEN = r"train\.batch_size=32 does not split evenly over world_size=3 ranks: set train\.batch_size"


@pytest.mark.parametrize(
    ("batch", "world", "micro", "expected"),
    [
        (32, 2, 0, (16, 1)),
        (32, 2, 4, (4, 4)),
        (32, 3, 0, rf"^{UNEVEN} to a multiple of 3 \(30 or 33\), or run 2 or 4 ranks$"),
        (32, 3, 4, rf"^{UNEVEN} to a multiple of world_size x train\.micro_batch_size = 12 \(24 or 36\), or"),
        (7, 2, 3, r"= 6 \(6 or 12\)$"),  # no number of ranks splits 7 into micro-batches of 3
        (2, 3, 0, r"a multiple of 3 \(3\), or run 2 ranks$"),  # fewer examples than ranks
        # the ranks split it; the micro-batch the user set does not split a rank's share
        (24, 2, 8, r"^train\.batch_size=24 must split into world_size=2 x micro_batch_size=8 x accumulation"),
    ],
)  # fmt: skip
def test_the_batch_split_names_what_to_set(batch: int, world: int, micro: int, expected) -> None:
    if isinstance(expected, tuple):
        assert split_batch(batch, world, micro) == expected
    else:
        with pytest.raises(LmforgeError, match=expected):
            split_batch(batch, world, micro)


def test_a_resumed_run_is_told_the_numbers_of_ranks_that_split_its_batch() -> None:
    """Its batch size cannot change on resume, so that is not what the line offers."""
    kept = r"does not split evenly over world_size=3 ranks, and a resumed run keeps its batch size: run"
    with pytest.raises(LmforgeError, match=rf"{kept} 2 or 4 ranks$"):
        split_batch(16, 3, 0, resuming=True)
    with pytest.raises(LmforgeError, match=rf"{kept} 2 or 4 ranks with --train\.micro_batch_size=0$"):
        split_batch(16, 3, 3, resuming=True)  # 3 divides no rank's share


def test_training_refuses_a_batch_the_ranks_cannot_split(tmp_path: Path, tiny_overrides: list[str]) -> None:
    cfg = load_config(None, [*tiny_overrides, "--train.batch_size=32"])
    engine = LocalEngine(cfg.engine, cfg.train)
    engine.world_size = 3  # as a 3-rank DDP run's engine
    with pytest.raises(LmforgeError, match=r"^train\.batch_size=32 does not split evenly over world_size=3"):
        loop._set_up(cfg, tmp_path, engine, False, print, True)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written
