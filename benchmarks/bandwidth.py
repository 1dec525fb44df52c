"""Memory bandwidth, measured STREAM-style, for the bound on memory-bound decoding.

    python -m benchmarks.bandwidth [--mib 512] [--rounds 5]

Decoding one token reads every weight once (batch 1), so tokens/s can be no more than
bandwidth / bytes of weights. Two probes on arrays far larger than the caches, with torch's
threads: `copy` (STREAM's Copy, a[:] = b: counts bytes read + bytes written, as STREAM does) and
`read` (a sum over one array: bytes read only, which is what a matrix-vector product does with
its weights). Each is the best of `rounds` runs, as STREAM reports.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

from benchmarks.common import hardware_line, timed


def _best(fn: Callable[[], object], rounds: int, device: torch.device) -> float:
    return min(timed(fn, device) for _ in range(rounds))  # on a GPU, to the end of the kernel


def measure(mib: int = 512, rounds: int = 5, device: str = "cpu") -> dict[str, float]:
    """{'copy': GB/s, 'read': GB/s} (1 GB = 1e9 bytes) over float32 arrays of `mib` MiB each, in
    host memory or on a GPU (`device="cuda"`: its HBM, the bound of decoding there)."""
    where = torch.device(device)
    n = mib * (1 << 20) // 4
    a = torch.empty(n, dtype=torch.float32, device=where)
    b = torch.ones(n, dtype=torch.float32, device=where)
    a.copy_(b)  # touch every page before timing
    nbytes = n * 4
    copy = _best(lambda: a.copy_(b), rounds, where)
    read = _best(lambda: b.sum(), rounds, where)
    return {"copy": 2 * nbytes / copy / 1e9, "read": nbytes / read / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512, help="size of each array")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = measure(args.mib, args.rounds)
    print(hardware_line())
    print(
        f"memory bandwidth, {torch.get_num_threads()} threads, {args.mib} MiB arrays:"
        f" copy {result['copy']:.1f} GB/s, read {result['read']:.1f} GB/s"
    )


if __name__ == "__main__":
    main()
