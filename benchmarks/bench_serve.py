"""Serving under load: `lmforge serve` (continuous batching) against transformers' `generate` behind
the same HTTP API, on the same SmolLM2-135M-Instruct weights, driven by one load generator.

    python -m benchmarks.bench_serve [--clients 1,4,8,16] [--max-tokens 48]
    python -m benchmarks.bench_serve --dtype bf16 --peer-dtype bf16
    python -m benchmarks.bench_serve --variant='--dtype fp32 --compile'
    python -m benchmarks.bench_serve --variant='--dtype bf16 --no-compile' \
        --variant='--dtype auto'   # serve's defaults against the old default and eager fp32
    python -m benchmarks.bench_serve --profile [--rounds 3]   # one stream, no HTTP

Both servers run as processes of their own, fp32 unless `--dtype` (lmforge's `serve --dtype`) and
`--peer-dtype` say otherwise, decoding in their main thread with uvicorn in another. The peer
(`--peer-server`, below) loads the same GGUF with transformers (dequantized, as `lmforge import`
does, to fp32, or bf16) and answers `/v1/chat/completions` with `model.generate` and a
streamer, one request at a time: `generate` takes a fixed batch, so requests that arrive while
it decodes wait for it. The load generator (httpx, asyncio) runs C clients at once, each sending
`--requests` streamed chat requests in a row (greedy, `max_tokens`), and measures from the client:
aggregate output tokens/s (all completion tokens / wall time from the first request to the last
reply), time to first token (request sent -> first text), inter-token latency (gaps between text
chunks). Concurrency levels run lmforge then the peer, one level at a time. lmforge decodes
eagerly (`--dtype D --no-compile`); each `--variant ARGS` adds a server `serve ARGS` (its own
options only: `--compile`, whose lone requests decode through the compiled step, compiled or
loaded at its start; `--dtype auto`, serve's defaults), and the script counts the replies it
gives that equal the first lmforge server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # here, not in peer_server: FastAPI reads the route's annotations from the module

PROMPTS = [
    "Write a short story about a cat who learns to fly.",
    "Explain how a bicycle works to a ten-year-old.",
    "Give me a recipe for a simple tomato soup.",
    "Describe the water cycle in a few sentences.",
    "What are the main causes of the seasons on Earth?",
    "Write a poem about the sea at night.",
    "List some tips for learning a new language.",
    "Tell me about the history of the printing press.",
]


# --- the peer: transformers' generate behind a minimal OpenAI-style endpoint -------------------------
def peer_server(gguf: Path, model_dir: Path, port: int, dtype: str) -> None:
    """One request at a time: the main thread runs model.generate; uvicorn runs in a thread."""
    import queue

    import torch
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    weights = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=weights).eval()
    if not tokenizer.chat_template:  # the same template lmforge serves (import wrote it from the GGUF)
        tokenizer.chat_template = (model_dir / "chat_template.jinja").read_text()
    work: queue.Queue = queue.Queue()
    app = FastAPI()

    class Streamer(BaseStreamer):
        """Sends each new piece of text (whole UTF-8 characters) to the request's event queue."""

        def __init__(self, send: Any) -> None:
            self.send, self.ids, self.text, self.prompt_seen = send, [], "", False

        def put(self, value: torch.Tensor) -> None:
            if not self.prompt_seen:  # generate passes the prompt first
                self.prompt_seen = True
                return
            self.ids.extend(value.reshape(-1).tolist())
            text = tokenizer.decode(self.ids, skip_special_tokens=True)
            if not text.endswith("\ufffd") and len(text) > len(self.text):
                self.send(("delta", text[len(self.text) :]))
                self.text = text

        def end(self) -> None:
            pass

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> StreamingResponse:
        body = await request.json()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        work.put((body, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev)))

        async def stream() -> Any:
            while True:
                event = await events.get()
                if event[0] == "end":
                    usage = {"completion_tokens": event[1]}
                    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
                    yield "data: [DONE]\n\n"
                    return
                chunk = {"choices": [{"index": 0, "delta": {"content": event[1]}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while True:
        body, send = work.get()
        ids = tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt")
        ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
        streamer = Streamer(send)
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=body["max_tokens"],
                do_sample=False,
                streamer=streamer,
                pad_token_id=tokenizer.eos_token_id,
            )
        new = out[0, ids.size(1) :].tolist()
        send(("end", len([t for t in new if t != tokenizer.eos_token_id])))


# --- the load generator ---------------------------------------------------------------------------
async def one_request(client: Any, url: str, model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    sent = time.perf_counter()
    arrivals: list[float] = []
    tokens, text = 0, ""
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            payload = json.loads(line[6:])
            if payload.get("usage"):
                tokens = payload["usage"]["completion_tokens"]
            for choice in payload.get("choices", []):
                if choice.get("delta", {}).get("content"):
                    arrivals.append(time.perf_counter())
                    text += choice["delta"]["content"]
    return {"sent": sent, "arrivals": arrivals, "tokens": tokens, "done": time.perf_counter(), "text": text}


async def load(url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    import httpx

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=64)) as client:

        async def user(i: int) -> list[dict[str, Any]]:
            return [
                await one_request(client, url, model, PROMPTS[(i + k) % len(PROMPTS)], max_tokens)
                for k in range(requests)
            ]

        start = time.perf_counter()
        runs = [r for rs in await asyncio.gather(*(user(i) for i in range(clients))) for r in rs]
        wall = time.perf_counter() - start
    ttft = [r["arrivals"][0] - r["sent"] for r in runs if r["arrivals"]]
    gaps = [b - a for r in runs for a, b in zip(r["arrivals"], r["arrivals"][1:], strict=False)]
    tokens = sum(r["tokens"] for r in runs)
    return {"tok_s": tokens / wall, "tokens": tokens, "wall": wall, "texts": [r["text"] for r in runs],
            "ttft_p50": pct(ttft, 50), "ttft_p95": pct(ttft, 95),
            "itl_p50": pct(gaps, 50), "itl_p95": pct(gaps, 95)}  # fmt: skip


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


# --- one stream, in process: where a decode step's time goes (--profile) -------------------------
def profile(model_dir: Path, gguf: Path, max_tokens: int, rounds: int) -> None:
    """ms per token at batch 1, no HTTP: the server's decode loop (Batcher + DecodeBatch) against
    lmforge's generate_ids and transformers' generate on the same weights, alternating; then the
    loop's own steps (sample, logprobs) against the model's (advance: the forward)."""
    import time as clock

    import torch
    from transformers import AutoModelForCausalLM

    import lmforge.inference.batching as batching
    from lmforge.formats.directory import load_model
    from lmforge.inference.chat import ChatSpec
    from lmforge.inference.generate import generate_ids
    from lmforge.server.batcher import Batcher
    from lmforge.server.decoding import Job

    net, tokenizer = load_model(model_dir)
    net = net.float().eval()
    prompt = tokenizer.encode(
        ChatSpec.read(model_dir, tokenizer).render([{"role": "user", "content": PROMPTS[0]}])
    )
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()

    def server_loop() -> int:
        job = Job(
            net, tokenizer, [prompt], 1, max_tokens, 0.0, 1.0, None, frozenset(), [], clock.monotonic() + 600
        )
        job.emit = lambda _: None  # a stream that takes every piece at once
        batcher = Batcher()
        batcher.add(job)
        batcher.run(until=job.future.done)
        return job.tokens

    def lmforge_generate() -> int:
        return len(generate_ids(net, [prompt], max_tokens, 0.0, eos_id=[])[0])

    def transformers_generate() -> int:
        ids = torch.tensor([prompt])
        out = hf.generate(ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
        return out.size(1) - ids.size(1)

    runs = {
        "server loop": server_loop,
        "generate_ids": lmforge_generate,
        "transformers": transformers_generate,
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # warm-up
        run()
    for _ in range(rounds):
        for name, run in runs.items():
            start = clock.perf_counter()
            tokens = run()
            times[name].append(1000 * (clock.perf_counter() - start) / tokens)
    print(
        f"# batch 1, {len(prompt)}-token prompt, {max_tokens} tokens, ms/token (prefill included),",
        rounds,
        "rounds",
    )
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values):.1f}  ({', '.join(f'{v:.1f}' for v in values)})")
    spent: dict[str, list[float]] = {"sample": [], "logprobs": [], "advance": []}
    for name in spent:  # time DecodeBatch's steps inside the loop
        method = getattr(batching.DecodeBatch, name)

        def timed(*args: Any, _method: Any = method, _name: str = name, **kwargs: Any) -> Any:
            start = clock.perf_counter()
            out = _method(*args, **kwargs)
            spent[_name].append(1000 * (clock.perf_counter() - start))
            return out

        setattr(batching.DecodeBatch, name, timed)
    server_loop()
    print(
        "server loop, per step (ms, median): "
        + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in spent.items())
    )


# --- the two servers ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(argv: list[str], port: int) -> subprocess.Popen:
    import httpx

    log = Path(tempfile.gettempdir()) / f"bench_serve_{port}.log"  # uvicorn logs each request there
    with log.open("w") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {' '.join(argv)} (see {log})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(argv)} (see {log})")


def stop(proc: subprocess.Popen, port: int) -> None:
    """End a server `start` started; its log goes too (kept where it failed to start, for the reader)."""
    proc.terminate()
    proc.wait(30)
    (Path(tempfile.gettempdir()) / f"bench_serve_{port}.log").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="lmforge-imported SmolLM2 (default: imported into the cache)"
    )
    parser.add_argument("--gguf", type=Path, default=None, help="the GGUF it came from (data.smollm2)")
    parser.add_argument("--clients", default="1,4,8,16")
    parser.add_argument("--requests", type=int, default=1, help="requests each client sends in a row")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--no-peer", action="store_true", help="lmforge alone")
    parser.add_argument("--variant", action="append", default=[], help="also lmforge serve ARGS")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "auto"], help="lmforge's")
    parser.add_argument("--peer-dtype", default="fp32", choices=["fp32", "bf16"], help="the peer's")
    parser.add_argument("--profile", action="store_true", help="one stream in process: where the time goes")
    parser.add_argument("--rounds", type=int, default=3, help="--profile: rounds of each decoder")
    parser.add_argument("--peer-server", type=int, default=0, help=argparse.SUPPRESS)  # run the peer on PORT
    args = parser.parse_args()
    from benchmarks.common import smollm2_dir

    args.model = smollm2_dir(args.model)
    if args.gguf is None:
        from data.smollm2 import smollm2_gguf

        args.gguf = smollm2_gguf()
    if args.peer_server:
        peer_server(args.gguf, args.model, args.peer_server, args.peer_dtype)
        return
    if args.profile:
        profile(args.model, args.gguf, args.max_tokens, args.rounds)
        return
    import torch

    from benchmarks.common import hardware_line

    ports = {"lmforge": free_port(), "transformers": free_port()}
    argv = {
        "lmforge": [sys.executable, "-m", "lmforge", "serve", str(args.model)]
        + ["--port", str(ports["lmforge"]), "--dtype", args.dtype, "--max-queue", "64", "--no-compile"],
        "transformers": [sys.executable, "-m", "benchmarks.bench_serve", "--gguf", str(args.gguf), "--model"]
        + [str(args.model)]
        + ["--peer-server", str(ports["transformers"]), "--peer-dtype", args.peer_dtype],
    }
    for variant in args.variant:  # serve's own options: the model, port and queue as the first's
        name = f"lmforge {variant}"
        ports[name] = free_port()
        argv[name] = [*argv["lmforge"][:5], "--port", str(ports[name]), "--max-queue", "64", *variant.split()]
    names = ["lmforge", *(f"lmforge {v}" for v in args.variant)]
    names += [] if args.no_peer else ["transformers"]
    procs = {name: start(argv[name], ports[name]) for name in names}
    print(f"# {hardware_line()} (servers: torch {torch.get_num_threads()} threads each)")
    print(f"# SmolLM2-135M-Instruct, lmforge --dtype {args.dtype}, transformers {args.peer_dtype}, "
          f"greedy chat, max_tokens {args.max_tokens}, {args.requests} request(s) per client")  # fmt: skip
    print("| server | clients | output tok/s | TTFT p50 / p95 (s) | ITL p50 / p95 (ms) | tokens | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name in names:  # warm-up: first-request costs stay out of the figures
            asyncio.run(load(f"http://127.0.0.1:{ports[name]}", args.model.name, 1, 1, 4))
        for clients in map(int, args.clients.split(",")):
            texts = {}
            for name in names:
                m = asyncio.run(load(f"http://127.0.0.1:{ports[name]}", args.model.name, clients,
                                     args.requests, args.max_tokens))  # fmt: skip
                ttft = f"{m['ttft_p50']:.2f} / {m['ttft_p95']:.2f}"
                itl = f"{1000 * m['itl_p50']:.0f} / {1000 * m['itl_p95']:.0f}"
                print(f"| {name} | {clients} | {m['tok_s']:.1f} | {ttft} | {itl} | {m['tokens']} |"
                      f" {m['wall']:.1f} |", flush=True)  # fmt: skip
                texts[name] = m["texts"]
            for variant in args.variant:  # greedy: how many replies a variant changed
                same = sum(a == b for a, b in zip(texts["lmforge"], texts[f"lmforge {variant}"], strict=True))
                print(
                    f"# {clients} clients: {same} of {len(texts['lmforge'])} replies of lmforge {variant}"
                    " equal lmforge's",
                    flush=True,
                )
    finally:
        for name, proc in procs.items():
            stop(proc, ports[name])


if __name__ == "__main__":
    main()
