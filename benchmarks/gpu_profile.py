"""Where a training step's time goes: lmforge's own loop (`lmforge.train`, the step the MFU figures
time) under torch.profiler for a few steps after warm-up. Prints the profiler's table of the ops
and kernels that took the most time, then a summary: the step's wall time, the share of it the GPU
spent running kernels (the rest is launches, host syncs and Python: what a CUDA graph or fewer
syncs would win), and that kernel time by kind (matmuls, attention, softmax and loss, optimizer,
the rest).
benchmarks/gpu_check.sh's `profile` part runs it on GPT-2 small for issue 18's MFU gap.

    python -m benchmarks.gpu_profile [--warmup N] [--active N] [--trace FILE] -- TRAIN_ARGS...

TRAIN_ARGS are `lmforge train`'s overrides (`--data.input=...`, the shape, `--train.compile=on`);
--train.max_steps is set to what the profile needs. On a CPU it profiles the CPU's ops (a dry run).
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

import lmforge
from benchmarks.common import hardware_line
from lmforge.train import loop

# kernel (or, on a CPU, op) names by what they compute: cuBLAS/CUTLASS matmuls, SDPA's flash kernels,
# cross-entropy, fused AdamW; Triton's, torch.compile's fused elementwise kernels, count as other
KINDS = {
    "matmul": r"gemm|gemv|cutlass|xmma|nvjet|cublas|aten::(add|b)?mm$|bmm",
    "attention": r"flash|fmha|attention|efficient_attention|sdpa",
    "softmax/loss": r"softmax|nll|cross_entropy",  # the loss's, and the bmm attention route's
    "optimizer": r"adam|multi_tensor|foreach",
}


def kind(name: str) -> str:
    lowered = name.lower()
    return next((k for k, pattern in KINDS.items() if re.search(pattern, lowered)), "other")


def summarise(prof: profile, active: int, gpu: bool) -> dict[str, Any]:
    """Wall time per profiled step, and device (or CPU self) time by kind of kernel."""
    events = prof.events()
    steps = [e for e in events if e.name.startswith("ProfilerStep")]  # "ProfilerStep#N" or "*"
    wall_us = sum(e.cpu_time_total for e in steps) / max(len(steps), 1)
    by_kind: dict[str, float] = dict.fromkeys([*KINDS, "other"], 0.0)
    for e in events:
        if gpu and e.device_type == DeviceType.CUDA:
            by_kind[kind(e.name)] += e.device_time_total / active  # a kernel's own time
        elif not gpu and e.device_type == DeviceType.CPU and not e.name.startswith("ProfilerStep"):
            by_kind[kind(e.name)] += e.self_cpu_time_total / active
    busy_us = sum(by_kind.values())
    return {"steps": len(steps), "wall_ms": wall_us / 1e3, "busy_ms": busy_us / 1e3,
            "by_kind_ms": {k: v / 1e3 for k, v in by_kind.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--warmup", type=int, default=8, help="steps after the first before profiling")
    parser.add_argument("--active", type=int, default=5, help="steps profiled")
    parser.add_argument("--trace", type=Path, help="write the Chrome trace here (gzipped)")
    parser.add_argument("train_args", nargs="*", help="lmforge train's overrides, after --")
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    print(hardware_line("cuda" if gpu else "cpu"))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    # step 1 (compile, cuBLAS and allocator warm-up) waits, `warmup` steps warm the profiler up
    when = schedule(wait=1, warmup=args.warmup, active=args.active, repeat=1)
    steps = 1 + args.warmup + args.active + 1
    real = loop.forward_backward

    with profile(activities=activities, schedule=when) as prof:

        def profiled(*a: Any, **k: Any) -> float:  # the loop calls it once a step: a step boundary
            prof.step()
            return real(*a, **k)

        loop.forward_backward = profiled
        out = Path(tempfile.mkdtemp(prefix="gpu-profile-"))
        try:
            overrides = [*args.train_args, f"--train.max_steps={steps}", f"--train.eval_interval={steps}",
                         f"--train.checkpoint_interval={steps}", "--train.max_minutes=0"]  # fmt: skip
            summary = lmforge.train(None, overrides, out=out / "run", quiet=True)
        finally:
            loop.forward_backward = real
            shutil.rmtree(out, ignore_errors=True)
    sort = "self_device_time_total" if gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25, max_name_column_width=70))
    s = summarise(prof, args.active, gpu)
    what = "GPU kernels" if gpu else "CPU ops (self time)"
    share = 100 * s["busy_ms"] / s["wall_ms"] if s["wall_ms"] else float("nan")
    print(f"profiled {s['steps']} steps ({summary['kernels']}): wall {s['wall_ms']:.2f} ms a step,"
          f" {what} {s['busy_ms']:.2f} ms ({share:.0f}% of the wall)")  # fmt: skip
    for name, ms in sorted(s["by_kind_ms"].items(), key=lambda kv: -kv[1]):
        print(f"  {name:<10} {ms:8.2f} ms  {100 * ms / max(s['busy_ms'], 1e-9):5.1f}%")
    if args.trace:
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(raw))
            with raw.open("rb") as src, gzip.open(args.trace, "wb") as dst:
                shutil.copyfileobj(src, dst)
        print(f"trace: {args.trace}")


if __name__ == "__main__":
    main()
