"""The plan as the command line prints it: a few lines and one table (`--json` prints the dict)."""

from __future__ import annotations

from typing import Any

from lmforge.model.kinds import heads_note

MiB = 2**20
BUSY = 0.1  # others' share of the CPU during a calibration above which the plan warns


def _si(value: float, unit: str) -> str:
    for factor, prefix in (
        (1e24, "Y"),
        (1e21, "Z"),
        (1e18, "E"),
        (1e15, "P"),
        (1e12, "T"),
        (1e9, "G"),
        (1e6, "M"),
        (1e3, "k"),
    ):
        if value >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _budget(p: dict[str, Any]) -> str:
    """What the recipe's time budget makes of the planned time (a run re-plans its steps to it)."""
    budget = p.get("budget_s") or 0
    if not budget or p["time_s"] <= budget:
        return ""
    steps = p["steps"]
    return (
        f"; train.max_minutes={budget / 60:g} ends it at {duration(budget)}, after about"
        f" {int(steps * budget / p['time_s']):,} of {steps:,} steps"
    )


def duration(seconds: float) -> str:
    if seconds < 10:  # a short run's 0.25 s printed as "0 s"
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _mib(n: float) -> str:
    return f"{n / MiB:,.1f}"


def _head(m: dict[str, Any]) -> str:
    """The task's head on the body, when it is not the language model's output layer."""
    head = m.get("head", "lm")
    if head == "span":
        return " + span head (QA)"
    return f" + classification head ({m['labels']} labels)" if head == "classification" else ""


def format_plan(p: dict[str, Any]) -> str:
    m, b, dev = p["model"], p["batch"], p["device"]
    lines = [
        f"plan: {p['recipe'] or 'the given config'} on {p['world_size']} x {dev['name']} ({p['dtype']}),"
        f" engine {p['engine']}",
        f"  model    {m['arch']}{_head(m)} {m['n_layer']}L x {m['n_head']}H"
        f"{heads_note(m['head_dim'], m['qk_norm'])} x {m['n_embd']},"
        f" context {m['block_size']}, vocab {m['vocab_size']}: {p['parameters']:,} parameters"
        f" ({p['trainable_parameters']:,} trainable)",
        f"  compute  {_si(p['flops_per_token'], 'FLOP')}/token ({p['flops_formula']})",
        f"           x {p['tokens_to_train']:,} tokens to train ({_si(p['train_flops'], 'FLOP')});"
        f" compute-optimal: {p['compute_optimal_tokens']:,} tokens (20 per parameter)",
        f"  batch    global {b['global']} = micro-batch {b['micro']} x {b['accumulation']} accumulation x"
        f" {p['world_size']} rank(s), {p['tokens_per_sequence']} tokens per example",
        f"  time     {duration(p['time_s'])} at MFU {100 * p['mfu']:.1f}% ({p['mfu_source']}) of"
        f" {_si(dev['peak_flops'], 'FLOP/s')} per rank ({dev['source']}){_budget(p)}",
        f"  memory   per rank, MiB (device: {dev['memory'] / 2**30:,.1f} GiB per rank; runtime"
        f" {_mib(dev['runtime'])} included in peak):",
    ]
    head = (
        f"  {'engine':<28} {'params':>9} {'grads':>9} {'optim':>9} {'buffers':>9} {'activ.':>9}"
        f" {'ckpt':>9} {'peak':>10} {'max micro':>9} {'ckpt':>6}"
    )
    lines.append(head)
    for r in p["setups"]:
        s = r["memory_per_rank"]
        mark = "*" if r["engine"] == p["engine"] else " "
        lines.append(
            f" {mark}{r['engine']:<28} {_mib(s['params']):>9} {_mib(s['grads']):>9} {_mib(s['optimizer']):>9}"
            f" {_mib(sum(r['buffers'].values())):>9} {_mib(r['activations']):>9}"
            f" {_mib(r['activations_checkpointed']):>9} {_mib(r['peak']['step']):>10}"
            f" {r['max_micro_batch']:>9,} {r['max_micro_batch_checkpointed']:>6,}"
        )
    lines.append(
        "  (* the recipe's engine; activations for its micro-batch, ckpt = with activation checkpointing;"
        " params/grads/optim: each state's bytes per rank wherever it lives, as summary.json's"
        " memory_per_rank; peak: the device's, without what an offload keeps in host RAM)"
    )
    if dp := p.get("privacy"):
        lines.append(
            f"  privacy  DP-SGD: peak with each example's gradients ({_mib(dp['per_example_grads'])} MiB:"
            f" micro-batch {b['micro']} x {p['trainable_parameters']:,} trained x 4 bytes) and"
            f" {dp['activation_factor']}x a plain step's activations (torch.func); engines: {dp['engines']}"
        )
    fits = ", ".join(f"{name} {n:,}" for name, n in p["devices"].items())
    lines.append(f"  fits     largest micro-batch of {p['engine']} per GPU: {fits}")
    if "calibration" in p:
        c = p["calibration"]
        rss = max(c["peak_rss_gb_per_rank"]) * 1024
        gpu = max(c.get("peak_gpu_gb_per_rank") or [0.0]) * 1024
        measured = ", ".join(f"{k} {_mib(v)}" for k, v in c["memory_per_rank"].items())
        lines.append(
            f"  measured {c['steps']} calibration steps: fastest {c['step_s']:.3f} s/step,"
            f" MFU {100 * c['mfu']:.1f}% (median {c['step_s_median']:.3f} s, {100 * c['mfu_median']:.1f}%)"
            f" of the {_si(c['peak_flops'], 'FLOP/s')} matmul peak its run measured,"
            f" memory_per_rank MiB: {measured}, peak RSS {rss:,.0f} MiB"
            + (f", peak GPU {gpu:,.0f} MiB" if gpu else "")
        )
        if (busy := c.get("others_cpu_share")) is not None and busy >= BUSY:
            lines.append(
                f"  warning  other processes used {100 * busy:.0f}% of this machine's CPU time during the"
                " calibration: a quiet machine's steps are likely faster than it measured"
            )
    lines += [f"  warning  {w}" for w in p.get("warnings", [])]
    if p["advice"]:
        lines.append(f"  advice   {p['advice']}")
    return "\n".join(lines)
