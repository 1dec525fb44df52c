"""Decoding speed on a real model: SmolLM2-135M-Instruct, lmforge vs transformers `generate` on the
same weights (and llama.cpp on the same GGUF where its Python binding is installed).

    python -m benchmarks.bench_smollm2 [--rounds 3] [--new-tokens 128]
        [--llama-cpp-python /tmp/llamacpp/venv/bin/python] [--no-compiled]

The GGUF comes from `python -m data.smollm2`. transformers loads it (dequantized to fp32); lmforge
converts the same file (formats/gguf.py where present, else from transformers' load), so both
run the same fp32 weights, and both in bf16 (weights cast). Greedy, exactly N new tokens (EOS
ignored), from a ~100-token prompt. Batch 8: prompts of 8 different lengths (both pad them on
the left with an attention mask and decode one batch), and 8 prompts of equal length. At batch 1
lmforge also decodes through its compiled step (`generate --compile`; compiled at the warm-up).

Each figure is a median over rounds, the contenders interleaved. Printed beside each: the
memory-bandwidth bound, batch x bandwidth / bytes read per step (every weight once, plus the KV
cache at its mean length), with the bandwidth measured here (benchmarks/bandwidth.py, read probe).
llama.cpp runs in its own Python (a separate venv) as a worker process driven by this script, so
it is interleaved with the others too.
"""

from __future__ import annotations

import argparse
import copy
import json
import lzma
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.bandwidth import measure
from benchmarks.common import hardware_line, interleaved, kv_bytes, timed, weight_bytes
from lmforge.hardware import cpu_has_bf16
from lmforge.inference.generate import generate_ids
from lmforge.model import kernels
from lmforge.model.gpt import GPT

LLAMA_WORKER = r"""
import json, sys, time
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[1], n_ctx=512, n_batch=512, n_threads=int(sys.argv[2]),
            n_threads_batch=int(sys.argv[2]), verbose=False)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    llm.reset()
    start = time.perf_counter()
    if cmd["op"] == "prefill":
        llm.eval(cmd["ids"])
        out = {"seconds": time.perf_counter() - start}
    else:
        tokens = []
        for token in llm.generate(cmd["ids"], top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            tokens.append(token)
            if len(tokens) == cmd["n"]:
                break
        out = {"seconds": time.perf_counter() - start, "tokens": tokens}
    print(json.dumps(out), flush=True)
"""


class LlamaCpp:
    """llama-cpp-python in another interpreter, one request a line."""

    def __init__(self, python: str, gguf: Path, threads: int) -> None:
        self.proc = subprocess.Popen(
            [python, "-c", LLAMA_WORKER, str(gguf), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._read()

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError("llama.cpp worker exited")
        return json.loads(line)

    def ask(self, **cmd: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(cmd) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait()


def load_models(gguf: Path) -> tuple[torch.nn.Module, Any, GPT, str]:
    """(transformers' model, its tokenizer, lmforge's model, how lmforge loaded it), fp32, eval."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    try:
        from lmforge.formats.gguf import convert_gguf

        ours = convert_gguf(gguf)[0]
        how = "lmforge.formats.gguf.convert_gguf"
    except ImportError:  # before lmforge read GGUF itself: convert transformers' load
        from safetensors.torch import save_file

        from lmforge.formats.hf_files import convert_hf

        with tempfile.TemporaryDirectory() as tmp:
            config = hf.config.to_dict()
            config.pop("quantization_config", None)
            (Path(tmp) / "config.json").write_text(json.dumps(config))
            state = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "lm_head.weight"}
            save_file(state, str(Path(tmp) / "model.safetensors"))
            tokenizer.save_pretrained(tmp)
            ours = convert_hf(tmp)[0]
        how = "transformers' GGUF load, converted"
    # marked as lmforge's entry points mark the models they run (it may keep packed weights)
    return hf, tokenizer, kernels.for_inference(ours.eval()), how  # type: ignore[return-value]


def prompts(tokenizer: Any, length: int) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(one prompt of `length` tokens, 8 of different lengths, 8 of `length`) from Pride and Prejudice."""
    with lzma.open(Path(__file__).parent.parent / "data" / "austen.jsonl.xz", "rt") as f:
        docs = [json.loads(line)["text"] for line in f]
    first = next(i for i, d in enumerate(docs) if "truth universally acknowledged" in d)
    text = "\n\n".join(docs[first : first + 5])  # chapters 1-5
    ids = tokenizer(text[text.index("It is a truth") :], add_special_tokens=False)["input_ids"]
    equal = [ids[i * 400 : i * 400 + length] for i in range(8)]
    ragged = [p[: length - 4 * i] for i, p in enumerate(equal)]  # length, length-4, ..., length-28
    return equal[0], ragged, equal


def agree(a: list[int], b: list[int]) -> int:
    """How many tokens two greedy continuations share before they first differ."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def gguf_bytes(gguf: Path) -> int:
    from gguf import GGUFReader

    return sum(int(t.n_bytes) for t in GGUFReader(gguf).tensors)


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument(
        "--prompt-tokens", type=int, default=100, help="at least 29 (8 prompts, 4 tokens apart)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--llama-cpp-python", default="/tmp/llamacpp/venv/bin/python",
                        help="a Python with llama_cpp installed ('' to skip)")  # fmt: skip
    parser.add_argument("--compiled", action=argparse.BooleanOptionalAction, default=True,
                        help="add lmforge's compiled decoding at batch 1 (generate --compile)")  # fmt: skip
    args = parser.parse_args()
    if args.prompt_tokens < 29:  # the ragged prompts are it, 4 less, ..., 28 less
        parser.error(f"--prompt-tokens {args.prompt_tokens}: at least 29 (8 prompts, 4 tokens apart)")
    from data.smollm2 import smollm2_gguf

    gguf = smollm2_gguf()
    n, threads = args.new_tokens, torch.get_num_threads()
    hf, tokenizer, ours, how = load_models(gguf)
    one, ragged, equal = prompts(tokenizer, args.prompt_tokens)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    eos = hf.generation_config.eos_token_id
    print(f"SmolLM2-135M-Instruct ({gguf.name}), greedy, {n} new tokens, prompt {len(one)} tokens"
          f" | {hardware_line()}")  # fmt: skip
    skip = "" if cpu_has_bf16() else " (bf16 rows left out: emulated bf16 crawls)"
    print(f"lmforge model from {how}; bf16 units: {cpu_has_bf16()}{skip}")
    print(kernels.describe())
    if cpu_has_bf16():
        print(kernels.describe_bf16())
    bw = measure(rounds=3)
    print(
        f"memory bandwidth (benchmarks/bandwidth.py): read {bw['read']:.1f} GB/s, copy {bw['copy']:.1f} GB/s"
    )

    from transformers import GenerationConfig

    gen = GenerationConfig(
        max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=pad, eos_token_id=eos
    )

    def hf_batch(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, batch))  # left padding, as decoder-only generation needs
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        return ids, mask

    def run_hf(model: torch.nn.Module, batch: list[list[int]]) -> float:
        ids, mask = hf_batch(batch)
        return len(batch) * n / timed(lambda: model.generate(ids, attention_mask=mask, generation_config=gen))

    def run_ours(model: GPT, batch: list[list[int]], compile: bool = False) -> float:
        return (
            len(batch)
            * n
            / timed(lambda: generate_ids(model, batch, n, temperature=0, eos_id=None, compile=compile))
        )

    def prefill_hf(model: torch.nn.Module) -> float:
        ids = torch.tensor([one])
        return len(one) / timed(lambda: model(input_ids=ids, use_cache=True, logits_to_keep=1))

    def prefill_ours(model: GPT) -> float:
        ids = torch.tensor([one])
        return len(one) / timed(lambda: model(ids, model.new_cache(1), last_only=True))

    # the same greedy tokens first: otherwise a speed ratio compares different work
    ours_tokens = generate_ids(ours, [one], n, temperature=0, eos_id=None)[0]
    hf_tokens = hf.generate(torch.tensor([one]), generation_config=gen)[0, len(one) :].tolist()
    print(f"greedy fp32, batch 1: lmforge and transformers agree on the first {agree(ours_tokens, hf_tokens)}"
          f" of {n} tokens")  # fmt: skip

    if args.compiled:  # its first call compiles
        start = time.perf_counter()
        compiled_tokens = generate_ids(ours, [one], n, temperature=0, eos_id=None, compile=True)[0]
        took, same = time.perf_counter() - start, agree(compiled_tokens, ours_tokens)
        print(f"greedy fp32, batch 1: lmforge compiled (its first call compiles: {took:.0f} s) and eager"
              f" agree on the first {same} of {n} tokens")  # fmt: skip

    models: dict[str, tuple[torch.nn.Module, GPT]] = {"fp32": (hf, ours)}
    if cpu_has_bf16():
        ours_bf16 = kernels.for_inference(copy.deepcopy(ours).to(torch.bfloat16))  # as generate marks it
        models["bf16"] = (copy.deepcopy(hf).to(torch.bfloat16), ours_bf16)
    runs: dict[str, Callable[[], float]] = {}
    for dt, (h, o) in models.items():
        runs[f"b1 {dt} lmforge"] = lambda o=o: run_ours(o, [one])
        runs[f"b1 {dt} transformers"] = lambda h=h: run_hf(h, [one])
        if args.compiled:
            runs[f"b1 {dt} lmforge-compiled"] = lambda o=o: run_ours(o, [one], compile=True)
        runs[f"b8 ragged {dt} lmforge"] = lambda o=o: run_ours(o, ragged)
        runs[f"b8 ragged {dt} transformers"] = lambda h=h: run_hf(h, ragged)
        runs[f"b8 equal {dt} lmforge"] = lambda o=o: run_ours(o, equal)
        runs[f"b8 equal {dt} transformers"] = lambda h=h: run_hf(h, equal)
        runs[f"prefill {dt} lmforge"] = lambda o=o: prefill_ours(o)
        runs[f"prefill {dt} transformers"] = lambda h=h: prefill_hf(h)
    llama = None
    if args.llama_cpp_python and not Path(args.llama_cpp_python).exists():
        print(f"llama.cpp: not run (no {args.llama_cpp_python}; see benchmarks/README.md to build it)")
    elif args.llama_cpp_python:
        try:
            llama = LlamaCpp(args.llama_cpp_python, gguf, threads)
        except (OSError, RuntimeError) as e:
            print(f"llama.cpp: not run ({e})")
    if llama is not None:
        cpp_tokens = llama.ask(op="generate", ids=one, n=n)["tokens"]
        print(f"greedy, batch 1: llama.cpp (Q4_1) and transformers (fp32) agree on the first"
              f" {agree(cpp_tokens, hf_tokens)} tokens")  # fmt: skip
        runs["b1 Q4_1 llama.cpp"] = lambda: n / llama.ask(op="generate", ids=one, n=n)["seconds"]
        runs["prefill Q4_1 llama.cpp"] = lambda: len(one) / llama.ask(op="prefill", ids=one)["seconds"]
    for run in runs.values():  # warm up
        run()
    rates = interleaved(runs, args.rounds)
    if llama is not None:
        llama.close()

    mean_len = len(one) + n / 2
    print(f"\nmedian of {args.rounds} rounds, interleaved;"
          f" bound = batch x {bw['read']:.1f} GB/s / bytes read per step")  # fmt: skip
    print(f"{'':34} {'tok/s':>9} {'vs transformers':>16} {'bound tok/s':>12} {'of bound':>9}")
    for name, rate in rates.items():
        kind, dt, who = name.rsplit(" ", 2)
        if kind == "prefill":
            continue
        batch = 1 if kind == "b1" else 8
        if who == "llama.cpp":
            per_step = gguf_bytes(gguf) + kv_bytes(ours.config, mean_len, 2)  # f16 KV cache
        else:
            element = 4 if dt == "fp32" else 2
            per_step = weight_bytes(models[dt][1]) + batch * kv_bytes(ours.config, mean_len, element)
        bound = batch * bw["read"] * 1e9 / per_step
        peer = rates.get(f"{kind} {dt} transformers")
        ratio = f"{rate / peer:.2f}x" if peer and who != "transformers" else ""
        print(f"{name:34} {rate:9.1f} {ratio:>16} {bound:12.1f} {rate / bound:8.0%}")
    print("\nprefill (one forward over the prompt)")
    for name, rate in rates.items():
        if name.startswith("prefill"):
            dt, who = name.split(" ")[1:]
            peer = rates.get(f"prefill {dt} transformers")
            ratio = f"{rate / peer:.2f}x" if peer and who != "transformers" else ""
            print(f"{name:34} {rate:9.1f} {ratio:>16}")


if __name__ == "__main__":
    main()
