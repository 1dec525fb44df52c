"""The devices `lmforge plan` knows: dense bf16 peak FLOP/s (no sparsity) and memory, each from its
vendor's datasheet; `cpu` is this machine (its RAM, its measured matmul peak)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmforge.errors import LmforgeError

GiB = 2**30


@dataclass(frozen=True)
class Device:
    name: str
    peak_flops: float  # dense bf16 matmul FLOP/s (cpu: measured in the run's dtype)
    memory: int  # bytes one rank may use
    source: str
    runtime: int  # bytes taken before the first tensor: CUDA context and allocator, or the
    # Python + torch + lmforge process (cpu)


CUDA_RUNTIME = 1 * GiB  # CUDA context, cuBLAS workspace, allocator slack: a rule of thumb
# Peak RSS of `lmforge train` on this CPU before its tensors count: the interpreter, torch,
# lmforge, tensorboard and matplotlib (which the run imports): an estimate from the imports' RSS
# (230-275 MiB) and one local run's peak; DeepSpeed's import adds to it. benchmarks/bench_plan.py
# checked it on every engine (docs/plan.md): planned peaks 0.2% below to 15% above the measured.
CPU_RUNTIME = int(0.5 * GiB)
CPU_RUNTIME_DEEPSPEED = int(0.1 * GiB)


def _gpu(name: str, tflops: float, memory: int, source: str) -> Device:
    return Device(name, tflops * 1e12, memory, source, CUDA_RUNTIME)


# name -> dense bf16 peak (no sparsity) and memory, from the vendor's datasheet
GPUS = {
    "h100": _gpu("h100", 989.4, 80 * GiB, "NVIDIA H100 SXM5 datasheet: 989.4 TFLOP/s bf16, 80 GB"),
    "h100-pcie": _gpu("h100-pcie", 756.0, 80 * GiB, "NVIDIA H100 PCIe datasheet: 756 TFLOP/s bf16, 80 GB"),
    "h200": _gpu("h200", 989.4, 141 * 10**9, "NVIDIA H200 SXM datasheet: 989 TFLOP/s bf16, 141 GB"),
    "a100-40": _gpu("a100-40", 312.0, 40 * GiB, "NVIDIA A100 datasheet: 312 TFLOP/s bf16, 40 GB"),
    "a100-80": _gpu("a100-80", 312.0, 80 * GiB, "NVIDIA A100 datasheet: 312 TFLOP/s bf16, 80 GB"),
    "l4": _gpu("l4", 121.0, 24 * GiB, "NVIDIA L4 datasheet: 121 TFLOP/s bf16 (242 with sparsity), 24 GB"),
    "rtx4090": _gpu("rtx4090", 165.2, 24 * GiB, "NVIDIA Ada whitepaper: 165.2 TFLOP/s bf16, fp32 accumulate"),
    "mi300x": _gpu("mi300x", 1307.4, 192 * GiB, "AMD Instinct MI300X datasheet: 1307.4 TFLOP/s bf16, 192 GB"),
}
NAMES = (*GPUS, "cpu")


def host_memory() -> int:
    """This machine's RAM in bytes."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def device(name: str, cpu_peak: float = 0.0) -> Device:
    """The device called `name`; `cpu` needs this machine's measured matmul peak (cpu_peak)."""
    if name == "cpu":
        source = "this machine: its RAM, its matmul peak measured now (lmforge.hardware)"
        return Device("cpu", cpu_peak, host_memory(), source, CPU_RUNTIME)
    if name not in GPUS:
        raise LmforgeError(f"--device {name!r} is not known (known: {', '.join(NAMES)})")
    return GPUS[name]
