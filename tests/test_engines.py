"""Every engine runs the same loop to the same numbers: DDP, FSDP2 and DeepSpeed ZeRO 1-3 against
the local engine, in fp32 (within 1e-5 relative), with accumulation, bf16, and checkpoints that
resume on another engine and world size. Several processes come from `lmforge launch` (torchrun),
so no process group outlives its test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmforge.config import EngineConfig, TrainConfig
from lmforge.data.shards import prepare_corpus
from lmforge.errors import LmforgeError
from lmforge.train.engines.base import Plan
from lmforge.train.engines.deepspeed_config import deepspeed_config
from lmforge.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--model.n_layer=2",
    "--model.n_head=4",
    "--model.n_embd=64",
    "--model.block_size=64",
    "--train.batch_size=8",
    "--train.max_steps=20",
    "--train.warmup_steps=5",
    "--train.lr=3e-3",
    "--train.dtype=fp32",
    "--train.log_interval=1",
    "--train.eval_interval=10",
    "--train.eval_batches=2",
    "--train.checkpoint_interval=10",
    "--train.keep_checkpoints=2",
]


def _deepspeed_available() -> bool:
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        return False
    return True


needs_deepspeed = pytest.mark.skipif(not _deepspeed_available(), reason="deepspeed not installed")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    """run(name, nproc, *overrides) -> run dir; each distinct run happens once per module."""
    root = tmp_path_factory.mktemp("engines")
    data = prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", root / "data", "char") and root / "data"
    done: dict[str, Path] = {}

    def run(name: str, nproc: int, *overrides: str, resume: Path | None = None) -> Path:
        if name in done:
            return done[name]
        out = root / name
        args = ["train", "--quiet"]
        if resume is not None:
            args += ["--resume", str(resume)]
        else:
            args += [str(ROOT / "configs" / "shakespeare-char.toml"), f"--data.input={data}", *SMALL]
            args += ["--out", str(out)]
        launcher = ["launch", f"--nproc={nproc}"] if nproc > 1 else []
        # a rank left waiting in a collective fails its run after 60 s instead of hanging the suite
        result = subprocess.run(
            [sys.executable, "-m", "lmforge", *launcher, *args, *overrides, "--engine.timeout_s=60"],
            capture_output=True,
            text=True,
            cwd=root,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        done[name] = resume or out
        return done[name]

    return run


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def assert_same_losses(run: Path, reference: Path, steps: range) -> None:
    got, want = losses(run), losses(reference)
    for step in steps:
        assert got[step] == pytest.approx(want[step], rel=1e-5), f"step {step}"


# ZeRO-3 keeps parameters under 1e5 elements whole on every rank, and gathered ones gathered while
# they will be reused soon: this toy model would never be partitioned. This config partitions
# every parameter and gathers it at each use, as a large model would be.
ZERO3 = (
    "--engine.zero_stage=3",
    f"--engine.deepspeed_config={ROOT / 'tests' / 'fixtures' / 'zero3-partition-all.json'}",
)
ENGINES = {
    "ddp-2": (2, "--engine.name=ddp"),
    "fsdp-2": (2, "--engine.name=fsdp"),
    "zero1-2": (2, "--engine.name=deepspeed", "--engine.zero_stage=1"),
    "zero2-2": (2, "--engine.name=deepspeed", "--engine.zero_stage=2"),
    "zero3-2": (2, "--engine.name=deepspeed", *ZERO3),
    "zero3-1": (1, "--engine.name=deepspeed", *ZERO3),
}


# ZeRO-1 differs from ZeRO-2 only inside DeepSpeed (lmforge passes the stage through), and it
# resumes a ZeRO-3 checkpoint below; its own comparison runs in `make test-all`, as ZeRO-3 on one
# rank's does (ZeRO-3 on two ranks runs here). ZeRO-2 on two ranks is compared with the local
# engine in `make test` by LoRA's and translation's runs (test_lora.py, test_translation.py), so
# its comparison here is `make test-all`'s too: 20 s that `make test`'s 20 minutes cannot spare.
# ZeRO-3 at 2 ranks matches local in make test through test_tasks_on_engines.py's chat run and the
# ZeRO-3 resume tests below; here it is slow with the other stages (16 s on the AVX2 EPYC)
SLOW_HERE = ("zero1-2", "zero2-2", "zero3-1", "zero3-2")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow if n in SLOW_HERE else ()) for n in ENGINES]
)
def test_engine_matches_local_in_fp32_with_accumulation(runs, name: str) -> None:
    if "zero" in name and not _deepspeed_available():
        pytest.skip("deepspeed not installed")
    reference = runs("local", 1)  # whole batch in one pass
    nproc, *engine = ENGINES[name]
    run = runs(name, nproc, *engine, "--train.micro_batch_size=2")  # 2 or 4 accumulation steps
    assert_same_losses(run, reference, range(1, 21))
    assert read_metrics(run)[-1]["val_loss"] == pytest.approx(
        read_metrics(reference)[-1]["val_loss"], rel=1e-5
    )
    for files in ("checkpoints/step_00000020", "model"):  # the same files: FSDP2 added lm_head beside wte
        names = load_file(str(run / files / "model.safetensors")).keys()
        assert names == load_file(str(reference / files / "model.safetensors")).keys(), files


@pytest.mark.parametrize("name", ["fsdp-2", pytest.param("zero2-2", marks=pytest.mark.slow)])
def test_bf16_trains(runs, name: str) -> None:
    if "zero" in name and not _deepspeed_available():
        pytest.skip("deepspeed not installed")
    nproc, *engine = ENGINES[name]
    curve = losses(runs(f"{name}-bf16", nproc, *engine, "--train.dtype=bf16"))
    assert curve[20] < curve[1] - 0.5, curve


@needs_deepspeed
def test_zero3_reports_the_small_parameters_it_keeps_whole_as_plan_predicts(runs) -> None:
    """ZeRO-3 keeps tensors of at most 1e5 elements whole on every rank beside their partition
    (DeepSpeed's default stage3_param_persistence_threshold): memory_per_rank counted the
    partition alone, half this toy's real parameter memory. The run and `lmforge plan` agree."""
    import json

    import lmforge

    run = runs(
        "zero3-default-2", 2, "--engine.name=deepspeed", "--engine.zero_stage=3", "--train.max_steps=2"
    )
    summary = json.loads((run / "summary.json").read_text())
    params = summary["parameters"]
    assert summary["memory_per_rank"]["params"] == 4 * (-(-params // 2) + params)  # every tensor is small
    recipe = str(ROOT / "configs" / "shakespeare-char.toml")
    engine = ["--engine.name=deepspeed", "--engine.zero_stage=3", f"--data.input={run.parent / 'data'}"]
    planned = lmforge.plan(recipe, [*SMALL, *engine], world_size=2)
    assert planned["memory_per_rank"]["params"] == summary["memory_per_rank"]["params"]


@needs_deepspeed
def test_zero3_checkpoint_and_export_hold_the_trained_weights(runs) -> None:
    reference, zero3 = (
        runs("local", 1),
        runs("zero3-2", 2, *ENGINES["zero3-2"][1:], "--train.micro_batch_size=2"),
    )
    trained = load_file(str(zero3 / "checkpoints" / "step_00000010" / "model.safetensors"))
    expected = load_file(str(reference / "checkpoints" / "step_00000010" / "model.safetensors"))
    exported = load_file(str(zero3 / "model" / "model.safetensors"))
    local_export = load_file(str(reference / "model" / "model.safetensors"))
    assert trained.keys() == expected.keys() and exported.keys() == local_export.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(exported[key], local_export[key], rtol=1e-4, atol=1e-5)
    initial = torch.nn.Embedding(*trained["wte.weight"].shape)
    assert (trained["wte.weight"] - expected["wte.weight"]).abs().max() < 1e-4
    assert not torch.allclose(trained["wte.weight"], initial.weight.detach(), atol=1e-2)


@needs_deepspeed
@pytest.mark.parametrize(  # onto ZeRO-1: slow, DeepSpeed onto DeepSpeed (the others cross engines)
    "target", ["local-1", "ddp-2", pytest.param("zero1-1", marks=pytest.mark.slow)]
)
def test_zero3_checkpoint_resumes_on_another_engine_and_world_size(runs, tmp_path, target: str) -> None:
    reference = runs("local", 1)
    source = runs("zero3-2", 2, *ENGINES["zero3-2"][1:], "--train.micro_batch_size=2")
    copy = tmp_path / "run"
    shutil.copytree(source, copy)
    shutil.rmtree(copy / "checkpoints" / "step_00000020")  # continue from step 10
    engine, nproc = target.split("-")
    flags = {"local": ["--engine.name=local"], "ddp": ["--engine.name=ddp"]}.get(
        engine, ["--engine.name=deepspeed", "--engine.zero_stage=1"]
    )
    resumed = runs(f"resume-{target}", int(nproc), *flags, resume=copy)
    assert_same_losses(resumed, reference, range(11, 21))


@needs_deepspeed
def test_local_checkpoint_resumes_on_zero3(runs, tmp_path) -> None:
    reference = runs("local", 1)
    copy = tmp_path / "run"
    shutil.copytree(reference, copy)
    shutil.rmtree(copy / "checkpoints" / "step_00000020")
    resumed = runs("local-to-zero3", 2, *ENGINES["zero3-2"][1:], resume=copy)
    assert_same_losses(resumed, reference, range(11, 21))


def test_deepspeed_config_comes_from_lmforge_config(tmp_path) -> None:
    plan = Plan(torch.bfloat16, global_batch=32, micro_batch=4, accumulation=4)
    engine = EngineConfig(name="deepspeed", zero_stage=3, offload="all")
    cfg = deepspeed_config(engine, TrainConfig(grad_clip=0.5), plan)
    assert cfg["train_batch_size"] == 32 and cfg["gradient_accumulation_steps"] == 4
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_clipping"] == 0.5
    assert cfg["bf16"] == {"enabled": True} and cfg["zero_optimization"]["offload_param"] == {"device": "cpu"}
    extra = tmp_path / "ds.json"
    extra.write_text(
        '{"zero_optimization": {"overlap_comm": true, "stage": 3}, "wall_clock_breakdown": true}'
    )
    merged = deepspeed_config(EngineConfig("deepspeed", 3, deepspeed_config=str(extra)), TrainConfig(), plan)
    assert merged["zero_optimization"]["overlap_comm"] is True and merged["wall_clock_breakdown"] is True
    extra.write_text('{"zero_optimization": {"stage": 2}}')
    conflict = rf"^{extra}: DeepSpeed config key 'zero_optimization.stage'=2 conflicts"  # names the file
    with pytest.raises(LmforgeError, match=conflict):
        deepspeed_config(EngineConfig("deepspeed", 3, deepspeed_config=str(extra)), TrainConfig(), plan)
    extra.write_text('{"scheduler": {"type": "WarmupLR"}}')
    with pytest.raises(LmforgeError, match="scheduler"):
        deepspeed_config(EngineConfig("deepspeed", 3, deepspeed_config=str(extra)), TrainConfig(), plan)


@pytest.mark.parametrize(
    ("json_text", "engine", "message"),
    [  # each was applied, or ignored, while the run said otherwise
        ('{"zero_optimization": {"stage": 3}}', {}, r"'zero_optimization.stage'=3 .*\(engine.zero_stage\)"),
        ('{"gradient_clipping": 0.5}', {}, r"'gradient_clipping'=0.5 .*\(train.grad_clip\)"),
        ('{"bf16": {"enabled": true}}', {}, r"'bf16.enabled'=True .*\(train.dtype\)"),
        ('{"bfloat16": {"enabled": true}}', {}, r"'bfloat16' \(DeepSpeed's older bf16\) is train.dtype's"),
        (
            '{"zero_optimization": {"offload_optimizer": {"device": "cpu"}}}',
            {},
            r"'zero_optimization.offload_optimizer' is engine.offload's: set --engine.offload=optimizer",
        ),
        ('{"zero_optimization": {"offload_param": {"device": "nvme"}}}', {}, "--engine.offload=all"),
        # DeepSpeed's deprecated spellings offload as well (the start line said `offload none`)
        (
            '{"zero_optimization": {"cpu_offload": true}}',
            {},
            r"'zero_optimization.cpu_offload' \(DeepSpeed's older offload_optimizer\) is engine.offload's:"
            r" set --engine.offload=optimizer \(or none\) and remove it$",
        ),
        ('{"zero_optimization": {"cpu_offload_param": "yes"}}', {}, "--engine.offload=all"),
        # beside the section lmforge sets, DeepSpeed asserts whatever the value
        (
            '{"zero_optimization": {"cpu_offload": false}}',
            {"offload": "optimizer"},
            "'zero_optimization.cpu_offload'",
        ),
        # DeepSpeed's autocast trained an fp32 run under bf16, which lmforge reported as fp32
        (
            '{"torch_autocast": {"enabled": true, "dtype": "bfloat16"}}',
            {},
            r"key 'torch_autocast' \(DeepSpeed's autocast\) is train.dtype's: set --train.dtype and"
            r" remove it$",
        ),
        ('{"torch_autocast": true}', {}, "key 'torch_autocast'"),
        # DeepSpeed's own check of the section, before any data or model (a traceback from initialize)
        (
            '{"zero_optimization": {"overlap_comm": true, "reduce_bucket_sise": 5e8}}',
            {},
            r"'zero_optimization.reduce_bucket_sise': Extra inputs are not permitted \(DeepSpeed's own",
        ),
        (
            '{"zero_optimization": {"reduce_bucket_size": "big"}}',
            {},
            r"zero_optimization.reduce_bucket_size': Input",
        ),
        ('{"steps_per_print": 1}', {}, r"'steps_per_print'=1: lmforge sets it to 2147483647; remove it$"),
    ],
)
def test_a_deepspeed_json_may_not_set_what_lmforge_sets(
    tmp_path: Path, json_text: str, engine: dict, message: str
) -> None:
    """The start line said `offload none` while DeepSpeed offloaded; `bfloat16` trained in fp32."""
    plan = Plan(torch.float32, global_batch=8, micro_batch=2, accumulation=4)
    (tmp_path / "ds.json").write_text(json_text)
    config = EngineConfig("deepspeed", 2, deepspeed_config=str(tmp_path / "ds.json"), **engine)
    with pytest.raises(LmforgeError, match=f"^{tmp_path / 'ds.json'}: .*{message}"):
        deepspeed_config(config, TrainConfig(), plan)


@needs_deepspeed
def test_a_deepspeed_json_is_judged_at_the_runs_zero_stage(tmp_path: Path) -> None:
    """DeepSpeed's rules across keys depend on the stage, which lmforge sets: the JSON alone was
    judged as stage 0, and a config that trains at stage 2 was refused."""
    from lmforge.config.deepspeed_json import read_user_config

    plan = Plan(torch.float32, global_batch=8, micro_batch=2, accumulation=4)
    (tmp_path / "ds.json").write_text('{"zero_optimization": {"compute_grad_norm": false}}')
    for stage in (1, 2):
        config = EngineConfig("deepspeed", stage, deepspeed_config=str(tmp_path / "ds.json"))
        assert deepspeed_config(config, TrainConfig(), plan)["zero_optimization"]["stage"] == stage
        read_user_config(tmp_path / "ds.json", stage)
    message = (
        r"'zero_optimization': Value error, compute_grad_norm=false is supported only with ZeRO Stage 1 or 2"
    )
    with pytest.raises(LmforgeError, match=message):
        deepspeed_config(
            EngineConfig("deepspeed", 3, deepspeed_config=str(tmp_path / "ds.json")), TrainConfig(), plan
        )
    with pytest.raises(LmforgeError, match=message):
        read_user_config(tmp_path / "ds.json", 3)


def test_a_deepspeed_json_may_tune_the_offload_lmforge_sets(tmp_path: Path) -> None:
    plan = Plan(torch.float32, global_batch=8, micro_batch=2, accumulation=4)
    (tmp_path / "ds.json").write_text(
        '{"zero_optimization": {"offload_optimizer": {"device": "cpu", "pin_memory": true}}}'
    )
    config = EngineConfig("deepspeed", 2, offload="optimizer", deepspeed_config=str(tmp_path / "ds.json"))
    merged = deepspeed_config(config, TrainConfig(), plan)["zero_optimization"]
    assert merged["offload_optimizer"] == {"device": "cpu", "pin_memory": True}
    # what offloads nothing may stay: DeepSpeed ignores cpu_offload_use_pin_memory, and autocast is off
    (tmp_path / "ds.json").write_text(
        '{"zero_optimization": {"cpu_offload": false, "cpu_offload_param": "off",'
        ' "cpu_offload_use_pin_memory": true}, "torch_autocast": {"enabled": false, "dtype": "bfloat16"}}'
    )
    config = EngineConfig("deepspeed", 3, deepspeed_config=str(tmp_path / "ds.json"))
    assert "offload_optimizer" not in deepspeed_config(config, TrainConfig(), plan)["zero_optimization"]


def test_deepspeed_keys_on_another_engine_are_said_at_start(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DeepSpeed recipe run with --engine.name=local (or resumed there) trains without its ZeRO
    keys: the engine line says which it ignores, rather than dropping them silently."""
    from lmforge.train.loop import train

    given = ["--engine.offload=optimizer", "--train.max_steps=1"]
    train(None, [*tiny_overrides, *given], out=tmp_path / "run", quiet=False)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("  engine  "))
    ignored = "ignores engine.offload='optimizer': DeepSpeed only"
    assert line.startswith(f"  engine  local ({ignored}), world size 1"), line
    assert EngineConfig(name="deepspeed", offload="optimizer").ignored() == []
    assert EngineConfig(name="ddp", zero_stage=3).ignored() == ["engine.zero_stage=3: DeepSpeed only"]
    # the process group's keys on one process (they were dropped unsaid)
    local = EngineConfig(backend="nccl", timeout_s=60).ignored()
    assert local == [
        "engine.backend='nccl': several processes only",
        "engine.timeout_s=60: several processes only",
    ]
    assert EngineConfig(name="ddp", backend="gloo", timeout_s=60).ignored() == []


@needs_deepspeed
@pytest.mark.slow  # 21 s of DeepSpeed runs for two messages; make test-all
def test_a_deepspeed_json_edited_before_resume_is_said_and_a_moved_one_named(tmp_path: Path) -> None:
    """Editing the JSON between runs changed the steps after a resume (bucket sizes, the
    communication dtype), unsaid; a moved JSON was 'cannot read DeepSpeed config'."""
    data = prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", tmp_path / "data", "char")
    assert data
    ds = tmp_path / "ds.json"
    ds.write_text('{"zero_optimization": {"reduce_bucket_size": 500000000}}')
    base = [sys.executable, "-m", "lmforge", "train", "--quiet", "--engine.timeout_s=60"]
    small = [s for s in SMALL if not s.startswith(("--train.max_steps", "--train.checkpoint_interval"))]
    first = [*base, f"--data.input={tmp_path / 'data'}", *small, "--train.max_steps=4"]
    first += ["--train.checkpoint_interval=2", "--engine.name=deepspeed", "--engine.zero_stage=2"]
    first += [f"--engine.deepspeed_config={ds}", "--out", str(tmp_path / "run")]
    subprocess.run(first, check=True, capture_output=True, cwd=tmp_path, timeout=600)
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_00000004")
    resume = [*base, "--resume", str(tmp_path / "run")]
    ds.rename(tmp_path / "moved.json")
    moved = subprocess.run(resume, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert moved.returncode == 2
    assert f"engine.deepspeed_config='{ds}': no such file; the run's config.toml names it" in moved.stderr
    (tmp_path / "moved.json").write_text(
        '{"zero_optimization": {"reduce_bucket_size": 1000}, "wall_clock_breakdown": false}'
    )
    moved_to = f"--engine.deepspeed_config={tmp_path / 'moved.json'}"
    again = subprocess.run([*resume, moved_to], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    said = "differs from the DeepSpeed JSON step_00000002 was trained with (wall_clock_breakdown,"
    assert f"{said} zero_optimization.reduce_bucket_size): the steps from here may differ" in again.stderr
