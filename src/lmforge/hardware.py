"""What the CPU can do: bf16 support, the training dtype to use, and the measured matmul peak."""

from __future__ import annotations

import functools
import os
import platform
import time
from pathlib import Path

import torch

from lmforge.config import ModelConfig

# Below this width bf16 costs more in casts than its matmuls save. Measured with lmforge's
# decoding and training steps on an AVX512_BF16 EPYC (bf16/fp32 tokens/s): 32 wide 0.79x,
# 64 wide 1.23x, 128 wide 2.2x, 256 wide 2.9x.
BF16_MIN_WIDTH = 64
# Training also needs enough tokens per matmul: bf16 pays when n_embd x tokens per micro-batch
# reaches this (measured: 64 wide x 128 tokens 0.75x, 32 x 768 1.09x, 64 x 768 1.54x).
BF16_MIN_WORK = 16384


BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
# The vector units that decide which kernels are fastest, by their /proc/cpuinfo flag names.
CPU_FEATURES = {
    "AVX2": "avx2",
    "AVX-512": "avx512f",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX": "amx_tile",
}


# oneDNN's instruction-set ceilings (ONEDNN_MAX_CPU_ISA, formerly DNNL_MAX_CPU_ISA) below
# AVX512_CORE_BF16, the first with bf16 dot products (oneDNN's "CPU Dispatcher Control" page).
ONEDNN_ISAS_WITHOUT_BF16 = {
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"
}  # fmt: skip


# what caps the kernels below the CPU's own (benchmarks run an AVX-512 CPU as an AVX2 one with them)
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def onednn_allows_bf16() -> bool:
    """False when ONEDNN_MAX_CPU_ISA caps oneDNN below bf16 units (say AVX2, to run a bf16 CPU as
    an AVX2 one): its bf16 matmuls are then emulated, so bf16 is as slow as on a CPU without them."""
    ceiling = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    return ceiling.strip().upper() not in ONEDNN_ISAS_WITHOUT_BF16


def flags_in_cpuinfo(cpuinfo: str) -> frozenset[str]:
    """The flags of /proc/cpuinfo's first `flags` line (every core lists the same ones)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def bf16_in_cpuinfo(cpuinfo: str) -> bool:
    """True when /proc/cpuinfo's `flags` lines name a native bf16 unit (AVX512_BF16 or AMX)."""
    return bool(BF16_FLAGS & flags_in_cpuinfo(cpuinfo))


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no flags known, so no bf16 assumed
        return ""


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul units (AVX512_BF16 or AMX) and oneDNN may use them."""
    return bf16_in_cpuinfo(_cpuinfo()) and onednn_allows_bf16()


def cpu_model() -> str:
    """The CPU's model name, e.g. 'Intel(R) Xeon(R) Processor @ 2.00GHz'."""
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cores_in_cpuinfo(cpuinfo: str, allowed: set[int]) -> int:
    """The physical cores among the logical CPUs `allowed`, from /proc/cpuinfo's processor,
    physical id and core id lines (a core's hyperthreads count once); len(allowed) where it names
    no cores."""
    cores, cpu, package = set(), -1, ""
    for line in cpuinfo.splitlines():
        key, _, value = (part.strip() for part in line.partition(":"))
        if key == "processor":
            cpu, package = int(value) if value.isdigit() else -1, ""
        elif key == "physical id":
            package = value
        elif key == "core id" and cpu in allowed:
            cores.add((package, value))
    return len(cores) or len(allowed)


def physical_cores() -> int:
    """The physical cores this process may run on (its CPU affinity): torch's own default thread
    count on an MKL build such as lmforge's."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    return max(1, cores_in_cpuinfo(_cpuinfo(), allowed))


def cpu_features() -> dict[str, bool]:
    """{'AVX2': True, 'AVX-512': True, 'AVX512_BF16': False, ...} for this CPU (CPU_FEATURES)."""
    flags = flags_in_cpuinfo(_cpuinfo())
    return {name: flag in flags for name, flag in CPU_FEATURES.items()}


def cpu_summary() -> str:
    """One line naming the CPU and which of CPU_FEATURES it has, e.g. 'Intel(R) Xeon(R) ...;
    AVX2 AVX-512, no AVX512_VNNI/AVX512_BF16/AMX'."""
    features = cpu_features()
    has = " ".join(name for name, present in features.items() if present) or "none of AVX2/AVX-512"
    lacks = "/".join(name for name, present in features.items() if not present)
    caps = [f"{k}={os.environ[k]}" for k in KERNEL_CAPS if os.environ.get(k)]
    return (
        f"{cpu_model()}; {has}"
        + (f", no {lacks}" if lacks else "")
        + (f" (kernels capped: {' '.join(caps)})" if caps else "")
    )


# a 2-core AVX2 EPYC: a 1024^2 bf16 matmul ran at 0.9 GFLOP/s against fp32's 116, a bf16 training
# step 23x slower than fp32's (960 against 41 ms a micro-batch; helper U2, 2026-12-07)
EMULATED_BF16 = (
    "bf16 autocast (requested; this CPU has no bf16 units (AVX512_BF16, AMX), so it is emulated, 10-100x"
    " slower than fp32: train.dtype=auto picks fp32 here)"
)


def resolve_dtype(
    requested: str,
    model: ModelConfig,
    tokens_per_micro_batch: int | None = None,
    device: torch.device | None = None,
) -> tuple[torch.dtype, str]:
    """(compute dtype, reason) for dtype = auto | fp32 | bf16. Training passes its tokens per
    micro-batch; decoding (memory-bound, one token a step) passes none and needs only width."""
    if requested == "fp32":
        return torch.float32, "fp32 (requested)"
    if requested == "bf16":
        if (device is None or device.type == "cpu") and not cpu_has_bf16():
            return torch.bfloat16, EMULATED_BF16
        return torch.bfloat16, "bf16 autocast (requested)"
    if device is not None and device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast (auto: the GPU supports bf16)"
        return torch.float32, "fp32 (auto: this GPU has no bf16)"
    if not cpu_has_bf16():
        return torch.float32, "fp32 (auto: this CPU has no bf16 units)"
    if model.n_embd < BF16_MIN_WIDTH:
        return torch.float32, f"fp32 (auto: n_embd {model.n_embd} < {BF16_MIN_WIDTH}, bf16 is slower here)"
    work = model.n_embd * (tokens_per_micro_batch or BF16_MIN_WORK)
    if work < BF16_MIN_WORK:
        return torch.float32, f"fp32 (auto: n_embd x tokens per micro-batch {work} < {BF16_MIN_WORK})"
    return torch.bfloat16, "bf16 autocast (auto: CPU has bf16 units)"


def peak_dtype(dtype: torch.dtype, device: torch.device, has_bf16: bool) -> torch.dtype:
    """The dtype whose matmul peak is MFU's denominator. A CPU without bf16 units emulates bf16
    (slower than its fp32), while autocast keeps parts of the step in fp32 at fp32 speed: measured
    against the emulated bf16 peak, MFU passed 100%. Such a CPU's peak is its fp32 one."""
    if device.type == "cpu" and dtype == torch.bfloat16 and not has_bf16:
        return torch.float32
    return dtype


def matmul_peak_flops(
    dtype: torch.dtype = torch.float32, device: torch.device | None = None, size: int = 1024
) -> float:
    """Best observed FLOP/s of a square matmul in `dtype` on `device` (see `peak_dtype`) in this
    process. MFU's denominator is `tuning.matmul_peak`: on the CPU, the best of all runs."""
    device = device or torch.device("cpu")
    has_bf16 = cpu_has_bf16() if device.type == "cpu" else True
    return _measure_peak(peak_dtype(dtype, device, has_bf16), device, size)


@functools.cache
def _measure_peak(dtype: torch.dtype, device: torch.device, size: int) -> float:
    if device.type == "cuda":
        size = 8192  # a GPU needs a big matmul to reach its peak
    generator = torch.Generator().manual_seed(0)  # never touch the global RNG a run depends on
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    # A fresh process's first products run slow while the thread pool and clocks ramp up (a 2-core
    # AVX2 EPYC: 67-90 GFLOP/s for the first 1024^2 products, 124-146 after): warm up for 0.1 s,
    # then take the best of at least 5 over another 0.2 s. One warm-up and 5 calls had read 90
    # there, so a first run printed MFU of 105-125%.
    timings: list[float] = []
    warm_until = time.perf_counter() + 0.1
    while len(timings) < 5 or time.perf_counter() < warm_until + 0.2:
        start = time.perf_counter()
        a @ b
        sync()
        if start >= warm_until:
            timings.append(time.perf_counter() - start)
    return 2 * size**3 / min(timings)
