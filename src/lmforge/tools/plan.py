"""`lmforge plan`: the compute and memory a recipe needs, before it trains. From the recipe and its
overrides (as `lmforge train` reads them), for a world size and a device: parameters, FLOPs per
token, tokens to train, memory per rank for every engine and ZeRO stage (with and without
offload, with and without activation checkpointing), the largest micro-batch that fits, and the
time to train at a stated MFU or one measured by a short calibration run.

What the recipe trains is read in plan_recipe.py (the model, its task's head, tokens per
example); the arithmetic lives in plan_model.py (shapes, FLOPs, activations), plan_memory.py
(what each engine holds) and plan_devices.py (the device table); docs/plan.md states every formula.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lmforge.config import Config, ModelConfig, load_config
from lmforge.config.batch_split import split_batch
from lmforge.config.deepspeed_json import owned, with_user_json
from lmforge.errors import LmforgeError
from lmforge.tools import plan_devices, plan_memory, plan_model
from lmforge.tools.plan_devices import Device, GiB
from lmforge.tools.plan_memory import Setup
from lmforge.tools.plan_model import Head
from lmforge.tools.plan_recipe import epoch_steps, planned, sequence

CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al. 2022: compute-optimal tokens ~ 20 x parameters
DEFAULT_MFU = 0.4


def plan(
    config: str | Path | Config | None = None,
    overrides: list[str] | None = None,
    world_size: int = 1,
    device: str = "cpu",
    mfu: float = DEFAULT_MFU,
    calibrate: bool = False,
    calibrate_steps: int | None = None,
    json: bool = False,
) -> dict[str, Any]:
    """Plan a training run; returns the plan as a dict (what `--json` prints).

    config: a TOML recipe or a Config; overrides: `section.key=value` strings, as for `train`
    (the engine, ZeRO stage and offload come from them); world_size: ranks (several nodes: their
    total); device: h100, h100-pcie, h200, a100-40, a100-80, l4, rtx4090, mi300x or cpu (this
    machine); mfu: the model FLOPs utilisation the time assumes; calibrate: measure it instead,
    with `calibrate_steps` (default 10) real steps of the recipe on this machine (its data must
    exist): the MFU of the fastest step after the first, what a quiet machine gives
    (plan_calibrate.py);
    json: the command line prints the plan as JSON rather than as a table.
    """
    del json  # the command line's output format (cli.py); the function always returns the dict
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    whole = isinstance(world_size, int) and not isinstance(world_size, bool)
    _check(whole and world_size >= 1, f"world_size={world_size!r}: must be an integer >= 1")
    _check(0 < mfu <= 1, f"mfu={mfu}: must be in (0, 1]")
    _check(  # a calibration's length without one would be silently ignored
        calibrate or calibrate_steps is None,
        f"calibrate_steps={calibrate_steps} needs calibrate (--calibrate-steps goes with --calibrate)",
    )
    private = cfg.privacy.enabled  # DP-SGD: one process, the local engine (config/checks.py)
    _check(
        not private or world_size == 1,
        f"world_size={world_size}: privacy.enabled trains in one process (engine.name=local); ddp, fsdp"
        " and deepspeed, which several ranks need, refuse it",
    )
    model, head = planned(cfg, lambda line: print(line, file=sys.stderr, flush=True))  # train's note
    seq_len, seq_tokens = sequence(cfg, model, head)
    t = cfg.train
    micro, accumulation = split_batch(t.batch_size, world_size, t.micro_batch_size)
    sizes = plan_memory.buckets(cfg.engine)  # a user's DeepSpeed JSON, refused here as train would
    calibration = None
    if calibrate:
        from lmforge.tools.plan_calibrate import calibrate as run_calibration

        ranks = cfg
        if cfg.engine.name == "local" and world_size > 1:  # as planned: DDP (local is one process)
            ranks = copy.deepcopy(cfg)  # a deep copy keeps Config.given (replace() would reset it)
            ranks.engine.name = "ddp"
        calibration = run_calibration(ranks, world_size, 10 if calibrate_steps is None else calibrate_steps)
    dev = _device(device, cfg, model, seq_tokens * micro, calibration, world_size)
    width = _width(cfg, dev, model, seq_tokens * micro)
    if cfg.engine.name == "deepspeed":
        with_user_json(owned(cfg.engine, t, (t.batch_size, micro, accumulation), width == 2), cfg.engine)
    counts = plan_model.count(model, cfg.lora, seq_len, head, sizes.persistence)
    mine = _recipe_setup(cfg, world_size, width, sizes)
    # a private run's other engines are refused by train (config/checks.py): its row alone
    engines = [mine] if private else plan_memory.setups(world_size, width, sizes)
    rows = [_row(s, counts, model, head, dev, seq_len, seq_tokens, micro, private) for s in engines]
    recipe_row = next(r for r in rows if r["engine"] == mine.label)
    # train.epochs: train's steps, its loader's steps per epoch times the epochs (train/loop.py)
    steps = t.epochs * epoch_steps(cfg, model, micro, world_size) if t.epochs else t.max_steps
    tokens = steps * t.batch_size * seq_tokens
    train_flops = counts.flops_per_token * tokens
    # the calibration's MFU is of the matmul peak its run measured; a GPU's plan uses the datasheet's
    # peak, so the same FLOP/s is that peak's smaller share (an H200 measured 694-788 of 989 TFLOP/s)
    used_mfu = calibration["mfu"] * calibration["peak_flops"] / dev.peak_flops if calibration else mfu
    result = {
        "recipe": str(config) if isinstance(config, str | Path) else None,
        "task": cfg.data.task,
        "model": _shape(model, head),
        "parameters": counts.params,
        "trainable_parameters": counts.trainable,
        "flops_per_token": counts.flops_per_token,
        "flops_formula": "6 N + 12 L d T (PaLM, Chowdhery et al. 2022, app. B); frozen weights 4 N",
        "tokens_per_sequence": seq_tokens,
        "tokens_to_train": tokens,
        "compute_optimal_tokens": CHINCHILLA_TOKENS_PER_PARAM * counts.params,
        "train_flops": train_flops,
        "world_size": world_size,
        "device": dataclasses.asdict(dev),
        "dtype": "bf16" if width == 2 else "fp32",
        "batch": {"global": t.batch_size, "micro": micro, "accumulation": accumulation},
        "engine": mine.label,
        "memory_per_rank": recipe_row["memory_per_rank"],
        "peak_per_rank": recipe_row["peak"],
        "activation_checkpointing": cfg.train.activation_checkpointing,  # peak: step_checkpointed
        "setups": rows,
        "devices": _device_fit(mine, counts, model, head, seq_len, seq_tokens, cfg),
        "mfu": used_mfu,
        "mfu_source": "calibrated" if calibration else "stated",
        "time_s": train_flops / (world_size * dev.peak_flops * used_mfu),
        "steps": steps,
        "budget_s": 60 * t.max_minutes or None,  # train.max_minutes: the run stops there
        "advice": _advice(
            rows, recipe_row, micro, micro * accumulation, counts, model, head, dev, cfg, seq_len, seq_tokens
        ),  # fmt: skip
    }
    if dev.name == "cpu" and width == 2 and not calibration:
        from lmforge.hardware import cpu_has_bf16

        if not cpu_has_bf16():  # the time above assumes the fp32 peak (hardware.peak_dtype)
            result["warnings"] = [
                "train.dtype=bf16 on a CPU without bf16 units (AVX512_BF16, AMX): bf16 is emulated,"
                " 10-100x slower than fp32, so the run takes many times this; train.dtype=auto (fp32 here),"
                " or --calibrate to measure it"
            ]
    if private:
        result["privacy"] = {
            "per_example_grads": recipe_row["per_example_grads"],
            "activation_factor": plan_memory.DP_ACTIVATIONS,
            "engines": "local only (ddp, fsdp, deepspeed and activation checkpointing refuse"
            " privacy.enabled)",
        }
    if calibration:
        result["calibration"] = calibration
    return result


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmforgeError(message)


def _device(name: str, cfg: Config, m: ModelConfig, micro_tokens: int, calibration: dict | None,
            world_size: int) -> Device:  # fmt: skip
    if name != "cpu":
        return plan_devices.device(name)
    if calibration:  # the peak the calibration run's MFU was measured against
        peak = calibration["peak_flops"]
    else:
        import torch

        from lmforge.hardware import resolve_dtype
        from lmforge.tuning import matmul_peak

        dtype, _ = resolve_dtype(cfg.train.dtype, m, micro_tokens, torch.device("cpu"))
        # the ranks of a CPU run share this machine's cores: each computes at its share of the peak
        # (a calibration's peak is already a rank's, measured in one); 2 ranks were planned twice as fast
        peak = matmul_peak(dtype) / world_size
    cpu = plan_devices.device("cpu", peak)
    # and its RAM (lmforge's MFU counts each rank's share of the cores too)
    return dataclasses.replace(cpu, memory=cpu.memory // world_size)


def _width(cfg: Config, dev: Device, m: ModelConfig, micro_tokens: int) -> int:
    """Bytes per element of the compute dtype, as `train` resolves train.dtype on that device."""
    if cfg.train.dtype != "auto":
        return 2 if cfg.train.dtype == "bf16" else 4
    if dev.name != "cpu":
        return 2  # every GPU in the table has bf16
    from lmforge.hardware import resolve_dtype

    dtype, _ = resolve_dtype("auto", m, micro_tokens)
    return dtype.itemsize


def _recipe_setup(cfg: Config, world_size: int, width: int, sizes: plan_memory.Buckets) -> Setup:
    e = cfg.engine
    if e.name == "deepspeed":
        return Setup(f"zero{e.zero_stage}", e.offload, world_size, width, sizes)
    # engine.name=local is one process: several ranks are planned as DDP, what they would run
    name = "ddp" if e.name == "local" and world_size > 1 else e.name
    return Setup(name, "none", world_size, width)


def _row(s: Setup, counts: plan_model.Counts, m: ModelConfig, head: Head, dev: Device, seq_len: int,
         seq_tokens: int, micro: int, private: bool = False) -> dict[str, Any]:  # fmt: skip
    """One engine's memory per rank: model states, buffers, activations, peak, largest micro-batch;
    `private`: under DP-SGD (plan_memory.private_step), which cannot checkpoint activations."""
    states = plan_memory.model_states(counts, s)
    host = plan_memory.on_host(s)
    gpu = dev.name != "cpu"
    buffers = plan_memory.buffers(counts, plan_model.modules(m, head), s, gpu)
    if private:  # the clipped sums: the step's total and one micro-batch's (train/privacy.py)
        buffers["dp_sums"] = (8 * counts.trainable, False)
    if tables := plan_model.position_tables(m):  # 128 MiB of rotary tables at Llama 3.2 3B's context
        buffers["position_tables"] = (tables, False)
    # on a CPU the device is the host: every byte is RAM
    fixed = dev.runtime + sum(v for k, v in states.items() if k not in host or not gpu)
    on_device = {k: b for k, (b, on_host) in buffers.items() if not on_host or not gpu}
    late = plan_memory.after_the_loss(s)
    later = sum(b for k, b in on_device.items() if k in late)  # made after the loss's gradients are gone
    fixed += sum(b for k, b in on_device.items() if k not in late)
    if not gpu and s.stage:
        fixed += plan_devices.CPU_RUNTIME_DEEPSPEED
    one = plan_model.activation_bytes(m, seq_tokens, seq_len, s.width, not gpu, head)
    if private:
        one = plan_memory.private_step(one, counts)
    act = {k: v * micro for k, v in one.items()}
    peak = {
        "step": fixed + _peak(one, micro, later, False),
        "step_checkpointed": fixed + _peak(one, micro, later, True),
    }
    room = dev.memory - fixed
    offloaded = sum(v for k, v in states.items() if k in host) + sum(b for b, h in buffers.values() if h)
    row = {
        "engine": s.label,
        "world_size": s.world_size,
        "micro_batch": micro,
        "memory_per_rank": states,
        "on_host": sorted(host) if gpu else [],
        "buffers": {k: b for k, (b, _) in buffers.items()},
        "runtime": dev.runtime,
        "host": offloaded if gpu else 0,  # bytes an offloading engine keeps in the host's RAM
        "buffers_after_loss": later,  # of `buffers`: made after the loss's gradients are gone
        **act,
        "peak": peak,
        "fits": peak["step"] <= dev.memory,
        "max_micro_batch": _most(one, room, later, False),
        "max_micro_batch_checkpointed": _most(one, room, later, True),
    }
    if private:  # train refuses activation checkpointing with privacy.enabled: nothing fits that way
        row["activations_checkpointed"] = row["max_micro_batch_checkpointed"] = 0
        row["peak"]["step_checkpointed"] = 0
    return row


def _one_example_checkpointed(row: dict[str, Any]) -> int:
    """A row's peak with activation checkpointing at a micro-batch of one example."""
    keys = ("activations", "activations_checkpointed", "loss_backward", "rebuilt")
    one = {k: row[k] // row["micro_batch"] for k in keys}
    later = row["buffers_after_loss"]
    fixed = row["peak"]["step_checkpointed"] - _peak(one, row["micro_batch"], later, True)
    return fixed + _peak(one, 1, later, True)


def _moments(one: dict[str, int], checkpointed: bool) -> tuple[int, int]:
    """Per example: (activations at the loss's backward, activations when the later buffers exist):
    the loss's gradients are gone by then, and with checkpointing a rebuilt block is there instead.
    A private step's per-example gradients are counted at both (plan_memory.private_step)."""
    if "per_example_grads" in one and not checkpointed:
        grads = one["per_example_grads"]
        return one["activations"] + grads, one["activations"] - one["loss_backward"] + grads
    if checkpointed:
        base = one["activations_checkpointed"] - max(one["loss_backward"], one["rebuilt"])
        return base + one["loss_backward"], base + one["rebuilt"]
    return one["activations"], one["activations"] - one["loss_backward"]


def _peak(one: dict[str, int], micro: int, later: int, checkpointed: bool) -> int:
    """Activations and the buffers made after the loss (`later`) at the step's fullest moment."""
    at_loss, afterwards = _moments(one, checkpointed)
    return max(micro * at_loss, micro * afterwards + later)


def _most(one: dict[str, int], room: int, later: int, checkpointed: bool) -> int:
    """The largest micro-batch whose _peak fits in `room`: both moments must."""
    at_loss, afterwards = _moments(one, checkpointed)
    return max(min(room // max(at_loss, 1), (room - later) // max(afterwards, 1)), 0)


def _device_fit(mine: Setup, counts: plan_model.Counts, m: ModelConfig, head: Head, seq_len: int,
                seq_tokens: int, cfg: Config) -> dict[str, int]:  # fmt: skip
    """The largest micro-batch the recipe's engine fits on each GPU of the table, at this world size."""
    out = {}
    for name in plan_devices.GPUS:
        dev = plan_devices.device(name)
        width = 4 if cfg.train.dtype == "fp32" else 2
        s = dataclasses.replace(mine, width=width)
        row = _row(s, counts, m, head, dev, seq_len, seq_tokens, 1, cfg.privacy.enabled)
        out[name] = row["max_micro_batch"]
    return out


def _advice(rows: list[dict], mine: dict, micro: int, per_rank: int, counts: plan_model.Counts,
            m: ModelConfig, head: Head, dev: Device, cfg: Config, seq_len: int,
            seq_tokens: int) -> str:  # fmt: skip
    """'' when the recipe fits as it is; else one line on what would."""
    checkpointing = cfg.train.activation_checkpointing  # the recipe's own: its activations are those
    most = mine["max_micro_batch_checkpointed" if checkpointing else "max_micro_batch"]
    if most >= micro:
        return ""
    if not checkpointing and mine["max_micro_batch_checkpointed"] >= micro:
        return f"micro-batch {micro} does not fit; it does with train.activation_checkpointing=true"
    if most >= 1:
        fit = max(d for d in range(1, per_rank + 1) if per_rank % d == 0 and d <= most)
        steps = per_rank // fit
        return f"micro-batch {micro} does not fit; train.micro_batch_size={fit} does ({steps} accumulations)"
    if cfg.privacy.enabled:  # no other engine, no checkpointing: nothing else to offer
        raise LmforgeError(
            f"privacy.enabled: one example does not fit on {dev.name} ({dev.memory / GiB:.1f} GiB per rank):"
            f" DP-SGD keeps its gradient of all {counts.trainable:,} trained parameters"
            f" ({mine['per_example_grads'] // micro / GiB:,.2f} GiB) beside the activations, on"
            " engine.name=local without activation checkpointing; train fewer parameters (lora.enabled)"
            " or a shorter context"
        )
    options = [
        f"{r['engine']} (micro-batch <= {r['max_micro_batch']}{_host(r)})"
        for r in rows
        if r["max_micro_batch"] >= 1
    ]
    options += [
        f"{r['engine']} with activation checkpointing (micro-batch <= {r['max_micro_batch_checkpointed']}"
        f"{_host(r)}: train.activation_checkpointing=true)"
        for r in rows
        if r["max_micro_batch"] < 1 <= r["max_micro_batch_checkpointed"]
    ]
    if options:
        return f"{mine['engine']} does not fit one sequence per rank; fits with: " + ", ".join(options[:4])
    raise LmforgeError(_nowhere(rows, counts, m, head, dev, cfg, seq_tokens))


def _host(row: dict) -> str:
    return f", {row['host'] / GiB:,.1f} GiB of host RAM per rank" if row["host"] else ""


def _nowhere(rows: list[dict], counts: plan_model.Counts, m: ModelConfig, head: Head, dev: Device,
             cfg: Config, seq_tokens: int) -> str:  # fmt: skip
    """The one-line answer for a recipe that fits no engine: ZeRO-3 with everything offloaded keeps
    only one gathered layer and the activations on a device, so more ranks cannot help (lmforge
    has no tensor or sequence parallelism); a shorter sequence can, and the answer names one."""
    # one example with checkpointing, the least any engine needs
    least = min(_one_example_checkpointed(r) for r in rows)
    answer = (
        f"{counts.params:,} parameters at {seq_tokens:,} tokens per example do not fit on"
        f" {rows[0]['world_size']} x {dev.name} ({dev.memory / GiB:.0f} GiB per rank) with any engine,"
        f" offload or checkpointing (the least needs {least / GiB:,.1f} GiB); more ranks do not help"
    )
    key = "data.max_len" if cfg.data.task in ("chat", "classification", "qa") else "model.block_size"
    width = 4 if cfg.train.dtype == "fp32" else 2
    sizes = plan_memory.buckets(cfg.engine)
    offloaded = Setup("zero3", "all", rows[0]["world_size"], width, sizes)
    length = (seq_tokens if key == "data.max_len" else m.block_size) // 2
    while length >= 1:
        # a shorter data.max_len keeps the model (its position table); a shorter context does not
        shorter = dataclasses.replace(m, block_size=length) if key == "model.block_size" else m
        n, n_tokens = (length, length) if key == "data.max_len" else sequence(cfg, shorter, head)
        counted = plan_model.count(shorter, cfg.lora, n, head, sizes.persistence)
        r = _row(offloaded, counted, shorter, head, dev, n, n_tokens, 1)
        if r["max_micro_batch_checkpointed"] >= 1:
            return (
                f"{answer}; {key}={length} would fit with {offloaded.label} and activation checkpointing"
                f" (train.activation_checkpointing=true{_host(r)})"
            )
        length //= 2
    return f"{answer}, and no shorter sequence either"


def _shape(m: ModelConfig, head: Head) -> dict[str, Any]:
    keys = (
        "arch",
        "n_layer",
        "n_head",
        "n_kv_head",
        "n_embd",
        "block_size",
        "vocab_size",
        "mlp",
        "tie_embeddings",
        "head_dim",
        "qk_norm",
    )
    body = "encoder" if head.encoder else m.arch
    return {**{k: getattr(m, k) for k in keys}, "arch": body, "head": head.task, "labels": head.labels}
