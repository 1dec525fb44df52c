"""The dtype a decoder generates in, chosen by measurement on this machine.

Decoding reads every weight once per token, so bf16 halves the bytes read; but at small widths its
casts and kernels cost more than that saves, and where the break-even lies differs by CPU: on a
Xeon with AMX a 6x384 model decoded at 345 tok/s in bf16 and 453 in fp32 (benchmarks/README.md),
while on an EPYC with AVX512_BF16 bf16 won from 64 wide. So with dtype `auto` on a CPU with bf16
units, a decoder times a decoding step (one token from a KV cache, after a 16-token prompt) in
fp32 and in a bf16 copy, taking turns, and keeps bf16 only when it is MARGIN (10%) faster. The answer
is cached per machine and model shape (tuning.py). Other models (encoders, encoder-decoders) and
explicit `fp32`/`bf16` follow `hardware.resolve_dtype`'s rule.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
from torch import nn

from lmforge import tuning
from lmforge.hardware import cpu_has_bf16, resolve_dtype
from lmforge.inference.compiled_decode import next_logits
from lmforge.model import kernels
from lmforge.model.attention import KVCache
from lmforge.model.gpt import GPT

# bf16 must decode this much faster than fp32 to be chosen: it rounds the weights (a 135M chat
# model's answers change), and on a shared 2-core machine one probe of SmolLM2-135M's step swung
# +-10% between fp32 and bf16 from run to run.
MARGIN = 1.10
PROMPT, STEPS = 16, 16


def to_inference_dtype(net: nn.Module, requested: str) -> tuple[nn.Module, str]:
    """(net in the dtype to run it in, why): `requested` is auto, fp32 or bf16. The net's bf16
    products may then run on packed weights (model/kernels.py)."""
    net, why = _to_dtype(net, requested)
    return kernels.for_inference(net), why


def chose_bf16(requested: str, why: str) -> str | None:
    """What generate and chat say when `auto` chose bf16 (`why`: to_inference_dtype's): rounded
    weights give other tokens than fp32's, as transformers computes them; None otherwise."""
    if requested == "auto" and why.startswith("bf16"):
        return f"{why}; --dtype fp32 keeps the weights as trained"
    return None


def _to_dtype(net: nn.Module, requested: str) -> tuple[nn.Module, str]:
    dtype, why = resolve_dtype(requested, net.config)
    device = next(net.parameters()).device
    measurable = isinstance(net, GPT) and net.config.block_size > PROMPT + STEPS
    if requested != "auto" or device.type != "cpu" or not cpu_has_bf16() or not measurable:
        return net.to(dtype), why
    if not tuning.enabled():
        return net.to(dtype), f"{why}; fixed rule, LMFORGE_AUTOTUNE=0"
    timed: list[nn.Module] = []  # the fp32 and bf16 nets a probe timed, if this process probed

    def measure() -> dict:
        fp32 = net.float()
        bf16 = kernels.for_inference(copy.deepcopy(fp32).to(torch.bfloat16))  # timed as it would run
        timed.extend([fp32, bf16])
        fp32_s, bf16_s = _time_decoding(timed)
        chosen = "bf16" if bf16_s * MARGIN < fp32_s else "fp32"
        measured = f"fp32 {1e3 * fp32_s:.2f} ms, bf16 {1e3 * bf16_s:.2f} ms per token"
        return {
            "dtype": chosen,
            "measured": measured,
            "fp32_ms": round(1e3 * fp32_s, 3),
            "bf16_ms": round(1e3 * bf16_s, 3),
        }

    def usable(entry: dict) -> bool:
        return entry.get("dtype") in ("fp32", "bf16") and isinstance(entry.get("measured"), str)

    entry, now = tuning.measured_once("decode", _shape_key(net), usable, measure)
    chosen, how = entry["dtype"], f"measured: {entry['measured']}" if now else tuning.earlier(entry)
    if timed and chosen == "bf16":
        return timed[1], f"bf16 (auto, {how})"
    return net.to(torch.bfloat16 if chosen == "bf16" else torch.float32), f"{chosen} (auto, {how})"


def remembered_step_ms(net: GPT, dtype: str) -> float | None:
    """ms per eager decoding step of net in dtype ("fp32", "bf16"), as the dtype probe measured it
    on this machine; None if it never did."""
    value = (tuning.lookup("decode", _shape_key(net)) or {}).get(f"{dtype}_ms")
    return value if isinstance(value, float) else None


def _shape_key(net: GPT) -> str:
    """The model's shape, and how bf16 products were routed when it was timed (model/kernels.py): a
    choice timed before packing (which made bf16 decoding 1.4-1.6x faster), or with the route
    forced otherwise, is measured again. The setting, not the route the probe picks, so that a
    remembered choice costs no probe of the bf16 products."""
    c = net.config
    n_params = sum(p.numel() for p in net.parameters())
    return (
        f"GPT {n_params} params, {c.n_layer}L x {c.n_head}H/{c.n_kv_head or c.n_head}kv x {c.n_embd},"
        f" mlp {c.mlp}, vocab {c.vocab_size}; bf16 linear {kernels.bf16_setting()}"
    )


def _time_decoding(nets: list[GPT], rounds: int = 3) -> list[float]:
    """Seconds per eager decoding step of each net, from its own cache (time_steps)."""
    return time_steps([(net, next_logits, net.new_cache) for net in nets], rounds)


Step = Callable[[GPT, torch.Tensor, KVCache], torch.Tensor]  # (model, token (1, 1), cache) -> logits


def time_steps(
    runs: list[tuple[GPT, Step, Callable[[int, int], KVCache]]],
    rounds: int = 3,
    prompt_tokens: int = PROMPT,
    new_tokens: int = STEPS,
) -> list[float]:
    """Seconds per decoding step of each run, a model with its step and its cache maker (batch 1,
    new_tokens steps after a prompt_tokens prefill, fewer in a short context): the best of `rounds`
    after a warm-up, the runs taking turns so that load from elsewhere hits them alike."""
    best = [float("inf")] * len(runs)
    with torch.inference_mode():
        for turn in range(rounds + 1):
            for i, (model, step, new_cache) in enumerate(runs):
                prompt = min(prompt_tokens, model.config.block_size // 2)
                steps = max(1, min(new_tokens, model.config.block_size - prompt - 1))
                cache = new_cache(1, prompt + steps)
                ids = torch.zeros(1, prompt, dtype=torch.long, device=model.wte.weight.device)
                model(ids, cache, True)
                token = torch.zeros(1, 1, dtype=torch.long, device=ids.device)  # not a view of ids:
                start = time.perf_counter()  # its strides would fail a compiled step's guards
                for _ in range(steps):
                    step(model, token, cache)
                if turn:
                    best[i] = min(best[i], (time.perf_counter() - start) / steps)
    return best
