"""A long prompt joining a running stream of `lmforge serve`: how long the stream stalls.

A greedy stream of --stream-tokens runs; after its 10th token a completion with a prompt of
--prompt-tokens tokens (and 5 new ones) arrives, and half a second later a short one (a 4-token
prompt, 5 new tokens). Printed: the stream's median and longest gap between two tokens, the long
request's time and the short one's. The server prefills 256 prompt tokens between two decode steps
(inference/batching.py's Prefill), at least half of them the oldest prompt's, the rest the shortest
others' (server/batcher.py); run it at an older commit to see the whole prefill as one gap, or the
short request wait for the long one.

    python -m benchmarks.bench_long_prompt [MODEL] --prompt-tokens 3000
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import httpx

from benchmarks.bench_serve import free_port, start, stop
from benchmarks.common import hardware_line, smollm2_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "model", type=Path, nargs="?", help="a decoder directory (default: SmolLM2, imported into the cache)"
    )
    parser.add_argument("--prompt-tokens", type=int, default=3000)
    parser.add_argument("--stream-tokens", type=int, default=80)
    args = parser.parse_args()
    args.model = smollm2_dir(args.model)
    print(hardware_line(), flush=True)
    port = free_port()
    argv = [sys.executable, "-m", "lmforge", "serve", str(args.model), "--port", str(port)]
    proc = start([*argv, "--no-compile", "--dtype", "fp32"], port)
    url = f"http://127.0.0.1:{port}/v1/completions"
    try:
        name = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"][0]["id"]
        long_took: list[float] = []

        def long_request() -> None:
            begin = time.perf_counter()
            body = {"model": name, "prompt": [504] * args.prompt_tokens, "max_tokens": 5}
            httpx.post(url, json=body, timeout=900).raise_for_status()
            long_took.append(time.perf_counter() - begin)

        short_took: list[float] = []

        def short_request() -> None:
            time.sleep(0.5)
            begin = time.perf_counter()
            body = {"model": name, "prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
            httpx.post(url, json=body, timeout=900).raise_for_status()
            short_took.append(time.perf_counter() - begin)

        arrivals: list[float] = []
        joiners = [threading.Thread(target=long_request), threading.Thread(target=short_request)]
        body = {"model": name, "prompt": "Once upon a time", "max_tokens": args.stream_tokens,
                "temperature": 0, "stream": True}  # fmt: skip
        with httpx.stream("POST", url, json=body, timeout=900) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    arrivals.append(time.perf_counter())
                    if len(arrivals) == 10:
                        for joiner in joiners:
                            joiner.start()
        for joiner in joiners:
            joiner.join()
        gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:], strict=False))
        median, longest = gaps[len(gaps) // 2] * 1000, gaps[-1]
        print(f"stream of {args.stream_tokens} tokens: median gap {median:.0f} ms, longest {longest:.2f} s;"
              f" the {args.prompt_tokens}-token request took {long_took[0]:.1f} s,"
              f" the short one behind it {short_took[0]:.2f} s")  # fmt: skip
    finally:
        stop(proc, port)


if __name__ == "__main__":
    main()
