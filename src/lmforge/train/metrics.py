"""Metric sinks: metrics.jsonl, TensorBoard, the one-line step log, and loss.png."""

from __future__ import annotations

import io
import json
import math
import resource
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.outputs import write_file
from lmforge.processes import own_status


def format_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def peak_rss_gb() -> float:
    """Peak resident memory of this process, GiB. Linux's VmHWM where there is one: ru_maxrss
    starts a spawned process at its parent's resident size (a trainer launched from a 2 GiB
    process reported 2 GiB before its first tensor)."""
    if (high_water := own_status("VmHWM")) is not None:
        return int(high_water) / 2**20  # kB
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
    return kib / 2**20  # macOS reports bytes, Linux KiB


def peak_gpu_gb(device: torch.device) -> float | None:
    """Peak GPU memory this process's tensors took on `device` (the caching allocator's
    max_memory_allocated), or None off CUDA."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def step_line(
    step: int,
    total: int,
    loss: float,
    lr: float,
    grad_norm: float,
    tok_s: float,
    mfu: float,
    eta_s: float,
    device: torch.device | None = None,
) -> str:
    """The step log's line; `mem` is the process's peak RSS, or on a GPU its peak tensor memory."""
    gpu = peak_gpu_gb(device) if device is not None else None
    mem = f"{peak_rss_gb():.2f}GiB" if gpu is None else f"{gpu:.2f}GiB GPU"  # 2**30 bytes, as summary.json
    return (
        f"step {step:>6}/{total} | loss {loss:.4f} | lr {lr:.2e} | grad_norm {grad_norm:.3f}"
        f" | tok/s {tok_s:,.0f} | mfu {100 * mfu:.1f}% | mem {mem} | eta {format_duration(eta_s)}"
    )


class MetricsLog:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors it to TensorBoard.

    On resume from step s, records after s (written by the interrupted run) are dropped first,
    so the file reads as one uninterrupted run; so is a torn last line (a kill mid-write), with a
    note through `say`. A damaged line before the last is an error naming file:line.
    """

    def __init__(
        self,
        run_dir: Path,
        resume_step: int = 0,
        tensorboard: bool = True,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        if resume_step and self.path.exists():
            records = read_metrics(run_dir, say)
            kept = [r for r in records if r.get("step", 0) <= resume_step]
            write_file(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif self.path.exists():
            self.path.unlink()
        self.file = open(self.path, "a")  # noqa: SIM115 - held open for the run
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                str(run_dir / "tb"), purge_step=resume_step + 1 if resume_step else None
            )

    def log(self, step: int, **values: float) -> None:
        record = {"step": step, **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


def read_metrics(run_dir: Path, say: Callable[[str], None] = lambda _: None) -> list[dict[str, Any]]:
    """The records of run_dir/metrics.jsonl. A last line that does not parse is torn (the writer
    was killed mid-line): dropped, with a note; any other bad line is an error naming file:line."""
    path = run_dir / "metrics.jsonl"
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as e:
        raise LmforgeError(f"{path}: cannot read metrics: {e.strerror}") from None
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except ValueError:
            if number - 1 == last:
                say(f"{path}:{number}: dropped a torn last line (the run was stopped mid-write)")
                continue
            raise LmforgeError(f"{path}:{number}: not a JSON object (a damaged metrics log)") from None
        records.append(record)
    return records


def plot_loss(run_dir: Path) -> Path:
    """loss.png: training loss and validation loss against step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if isinstance(r.get("loss"), float)]
    val = [(r["step"], r["val_loss"]) for r in records if isinstance(r.get("val_loss"), float)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss", markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    out = run_dir / "loss.png"
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format="png")
    plt.close(fig)
    write_file(out, image.getvalue())  # whole or not at all
    return out
