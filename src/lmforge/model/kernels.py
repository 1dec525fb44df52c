"""Which kernel runs an fp32 linear layer at inference on this CPU, chosen by measurement.

PyTorch sends fp32 CPU matmuls to MKL; oneDNN's kernel (`mkldnn._linear_pointwise`, the one bf16
uses) is the second route; `split` the third: the weight's rows cut into one block per thread
(views, no copy) and the blocks' products run as one batched matmul, so every thread streams its
share of the weight (MKL runs a one-row product on one thread); `swapped` the fourth: the same
product taken the other way round, weight @ x^T, then transposed back (MKL packs it differently);
`packed` the fifth: oneDNN's kernel on the weight reordered once into oneDNN's blocked layout and
kept beside the layer (below), where `onednn` reorders it at every call: on the AVX2-only EPYC it
ran 8 rows through SmolLM2's blocks 1.2x faster than `split` and its 49,152-row head 1.5x, with the
same sums as `onednn` from two rows. None wins everywhere (benchmarks/README.md): on a 2-core AMD
EPYC with AVX512_BF16 oneDNN read the weights 2.7x faster than MKL; on a 2-core Intel Xeon
(AVX-512) MKL decoded 1.3x faster; on a 2-core AVX2-only EPYC `split` read them 1.1-1.4x faster
than oneDNN at one row, and at 32 rows MKL reached 76-100 GFLOP/s where `swapped` and oneDNN
reached 100-137; and on one CPU the winner at one row (a decoding step) lost at eight (a batch of
them). So an fp32 linear without autograd times the routes at its first product of a row count: one
row and eight rows through 47 and 189 MB of weights, 32 rows through 47 MB, 256 rows through 24 MB
(each well under a second), and keeps the fastest: one for single rows, one for 2-15 rows, one for
16-63 rows (a batch of decoding steps each), one from 64 rows (prefill, evaluation), where only MKL
and oneDNN compete. A vocabulary's head (16,384 outputs or more) has probes and routes of its own
(1 row; 8 rows for 2-63; 64 rows from 64): at one row on the AVX2-only EPYC oneDNN read SmolLM2's
head 1.3x faster than `split`, which its blocks' probe chose; on the EPYC with AVX512_BF16 oneDNN
ran GPT-2's head 1.6x faster than MKL from 64 to 1,024 rows and its blocks 1.2x, and with the
kernels capped at AVX2 the head 1.4-2x and the blocks about level; at 8 rows oneDNN ran the head
1.8x faster than `split`, which the blocks' probe chose (1.3x capped). The choices are remembered
for the machine (model/route_memory.py: in the autotune cache), so later processes skip the probe
and take the same routes. Under autocast (a training run's evaluation) F.linear runs, which
autocast casts to bf16 (oneDNN's kernel would compute in fp32).
`LMFORGE_LINEAR=mkl|onednn|split|swapped|packed` skips the probe and sets every case. A close call
(within MARGIN of MKL) keeps MKL, PyTorch's own route. The routes' sums differ only in order (~1e-6
relative).

A bf16 product (a model in bf16 for inference) always runs in oneDNN, but F.linear hands it the
weight in PyTorch's layout, which oneDNN reorders into its own blocked one at every call. Packed
once (`mkldnn._reorder_linear_weight`) and kept beside the layer, the same kernel skips that: the
same sums, bit for bit, and on an AMD EPYC with AVX512_BF16 1.4-1.7x faster from 1 to 16 rows
(1.2x at 64-1024). It too is chosen by measurement (one row, eight rows);
`LMFORGE_BF16_LINEAR=plain|packed` skips the probe. A packed copy (bf16, or fp32's `packed` route)
is a second copy of the weight in memory while the model runs, and only models an inference entry
point marked (`for_inference`) take it; any other layer on the fp32 `packed` route runs `onednn`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lmforge.env_switch import switch
from lmforge.errors import LmforgeError
from lmforge.model import decode_attention, packed_weights, prefill_attention, route_memory
from lmforge.model.packed_weights import onednn_linear, packed_linear

ROUTES = ("mkl", "onednn", "split", "swapped", "packed")
BF16_ROUTES = ("plain", "packed")
MARGIN = 1.15  # another route must be this much faster than MKL to be chosen
ONEDNN_AVAILABLE = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
FP32_PACKING_AVAILABLE = ONEDNN_AVAILABLE and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
# oneDNN packs bf16 weights only where the CPU has the instructions for them (AVX512-BW/VL/DQ or
# AVX-NE-CONVERT); elsewhere (an AVX2-only CPU, or one capped by ONEDNN_MAX_CPU_ISA) it raises. The
# ops are torch's private ones (those inductor packs weights with), so their presence is checked.
PACKING_AVAILABLE = (
    ONEDNN_AVAILABLE
    and all(hasattr(torch.ops.mkldnn, op) for op in ("_reorder_linear_weight", "_is_mkldnn_bf16_supported"))
    and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
)
# A decoding step's products: rows through each of a stack of distinct weights (GPT blocks' MLPs
# at 384 and 768 wide), so the weights stream from memory as in decoding rather than sitting in
# a cache. (A probe over one weight, or over 16-row products, picked the route that decoded
# slower.) Row counts probed, with the stack each needs: one row (a decoding step) through 47 MB;
# eight (a batch of decoding steps) through 189 MB, since at 47 MB they still ran from cache: on
# an AMX Xeon MKL took 1.09x oneDNN's time there but 1.34x at 189 MB and 1.37x through GPT-2
# small's blocks, while one row was MKL's at every size. From 16 rows the two were level; at 32
# rows the products are bound by arithmetic more than by bytes, so 47 MB serve.
STACK = ((1536, 384), (384, 1536), (3072, 768), (768, 3072))
HEAD = ((16384, 768),)  # a vocabulary's head, one wide weight (GPT-2's: 50,257 x 768)
FEW_ROWS_MAX, DOZENS_ROWS_MAX = 15, 63  # the row-count buckets' upper ends
HEAD_OUT = 16384  # from 2 rows, a layer with this many outputs or more takes a head's route
# bucket -> (the rows its probe times, the weights (out, in) they go through). From 64 rows only
# MKL and oneDNN compete: `swapped`, which a 256-row probe chose on AVX2 kernels, ran 6x384's
# forward at 0.86x MKL's speed at 1,024 rows. And 128 rows chose oneDNN where it was no faster at
# 1,024; 256 rows did not.
MANY_ROUTES = ("mkl", "onednn")
BUCKETS = {
    "one": (1, STACK * 2),
    "one_head": (1, HEAD),
    "few": (8, STACK * 8),
    "dozens": (32, STACK * 2),
    "many": (256, STACK),
    "few_head": (8, HEAD),
    "many_head": (64, HEAD),
}


def split_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) with the weight's rows in one block per thread, the blocks'
    products one batched matmul, so each thread reads its block. x (..., in), weight (out, in).
    The blocks are strided views of the weight (no copy); as_strided makes each in one call, since
    at a decoding step's small products the per-call overhead of a chain of views counts."""
    parts = torch.get_num_threads()
    n_out, n_in = weight.shape
    block = n_out // parts
    if parts < 2 or block == 0 or not (x.is_contiguous() and weight.is_contiguous()):
        return F.linear(x, weight, bias)
    rows, main = x.numel() // n_in, parts * block
    xs = x.as_strided((parts, rows, n_in), (0, n_in, 1))  # (P, R, in): x for every block
    blocks = weight.as_strided((parts, n_in, block), (block * n_in, 1, n_in))  # (P, in, block)
    if bias is None:
        y = torch.bmm(xs, blocks)
    else:  # bias (P, 1, block), broadcast over the rows
        y = torch.baddbmm(
            bias.as_strided((parts, 1, block), (block * bias.stride(0), 0, bias.stride(0))), xs, blocks
        )
    if rows > 1:
        y = y.transpose(0, 1).contiguous()  # (R, P, block), rows apart in memory as F.linear's
    if main < n_out:  # the rows left over when out is not a multiple of the threads
        rest = F.linear(x.view(rows, n_in), weight[main:], None if bias is None else bias[main:])
        return torch.cat([y.reshape(rows, main), rest], dim=1).view(*x.shape[:-1], n_out)
    return y.reshape(*x.shape[:-1], n_out)


def swapped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) computed as weight @ x^T (out, rows), then transposed back into a
    contiguous (..., out): MKL takes this product with the weight as the left operand, which on an
    AVX2-only EPYC ran 1.2-1.5x faster than F.linear's from 16 to 64 rows."""
    flat_t = x.reshape(-1, weight.size(1)).t()  # (in, R)
    # (out, R), a bias broadcast over the rows
    y = torch.mm(weight, flat_t) if bias is None else torch.addmm(bias[:, None], weight, flat_t)
    return y.t().contiguous().view(*x.shape[:-1], weight.size(0))


def traced_one_row(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias) for one row, written as the sum it is, for torch.compile to trace
    (inference/compiled_decode.py): inductor turns it into its own loop over the weight's rows, which
    on a 2-core AMD EPYC with AVX512_BF16 read 6x384's weights at 50 GB/s where MKL's and oneDNN's
    matrix-vector kernels read 10-19 (benchmarks/README.md). x (..., in) with one row, weight (out, in)."""
    y = (x.unsqueeze(-2) * weight).sum(-1)  # (..., 1, in) * (out, in) summed over in: (..., out)
    return y if bias is None else y + bias


FP32_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]] = {
    "mkl": F.linear,
    "onednn": onednn_linear,
    "split": split_linear,
    "swapped": swapped_linear,
    "packed": onednn_linear,  # a layer no entry point marked: its weight as it is (layers.linear)
}


def available_routes() -> tuple[str, ...]:
    """The fp32 routes this torch build has (oneDNN's kernel, or its packing, may be missing)."""
    missing = {"onednn": not ONEDNN_AVAILABLE, "packed": not FP32_PACKING_AVAILABLE}
    return tuple(r for r in ROUTES if not missing.get(r))


def candidates(bucket: str) -> tuple[str, ...]:
    """The routes a bucket's probe times: from 64 rows ('many', 'many_head') only MANY_ROUTES."""
    return tuple(r for r in available_routes() if bucket not in ("many", "many_head") or r in MANY_ROUTES)


def _on_layer(kernel: Callable[..., torch.Tensor]) -> Callable[[torch.Tensor, nn.Linear], torch.Tensor]:
    return lambda x, layer: kernel(x, layer.weight, layer.bias)


def probe(bucket: str = "one", rounds: int = 3) -> dict[str, float]:
    """Seconds each of the bucket's candidates takes for its rows through its weights (BUCKETS)."""
    names = candidates(bucket)
    routes = {name: packed_linear if name == "packed" else _on_layer(FP32_KERNELS[name]) for name in names}
    return _time_routes(routes, *BUCKETS[bucket], torch.float32, rounds)


def probe_bf16(bucket: str = "one", rounds: int = 3) -> dict[str, float]:
    """Seconds F.linear ("plain") and the packed weights take for a bucket's rows in bf16, through
    twice its weights (half the bytes each: as many read from memory as fp32's)."""
    routes = {"plain": _on_layer(F.linear), "packed": packed_linear}
    rows, shapes = BUCKETS[bucket]
    return _time_routes(routes, rows, shapes * 2, torch.bfloat16, rounds)


def _constant_linear(n_in: int, n_out: int, dtype: torch.dtype) -> nn.Linear:
    """A layer of constant weights: random ones would take longer to make than to time, and
    nn.utils.skip_init's first call (through the meta device) took 0.3-0.4 s of imports. The 1x1
    layer's initialisation must not draw from the global generator: the probe runs at a training
    run's first evaluation, and a resumed run with dropout would part from an unbroken one."""
    with torch.random.fork_rng(devices=[]):
        layer = nn.Linear(1, 1, dtype=dtype)
    layer.in_features, layer.out_features = n_in, n_out
    layer.weight = nn.Parameter(torch.full((n_out, n_in), 0.01, dtype=dtype), requires_grad=False)
    layer.bias = nn.Parameter(torch.zeros(n_out, dtype=dtype), requires_grad=False)
    return layer


def _time_routes(
    routes: dict[str, Callable[[torch.Tensor, nn.Linear], torch.Tensor]],
    rows: int,
    shapes: tuple[tuple[int, int], ...],
    dtype: torch.dtype,
    rounds: int,
) -> dict[str, float]:
    """The best of `rounds` seconds each route takes through layers of `shapes`, the routes taking
    turns so that load from elsewhere hits them alike."""
    x = {n_in: torch.full((rows, n_in), 0.5, dtype=dtype) for _, n_in in shapes}
    layers = [_constant_linear(n_in, n_out, dtype) for n_out, n_in in shapes]

    def through(kernel: Callable[[torch.Tensor, nn.Linear], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            for layer in layers:
                kernel(x[layer.in_features], layer)

        return run

    with torch.inference_mode():
        return route_memory.best_times({route: through(kernel) for route, kernel in routes.items()}, rounds)


_NO_PACKING = "oneDNN cannot pack bf16 weights with this torch build on this CPU"


def forced_route(env: str) -> str:
    """The route LMFORGE_LINEAR or LMFORGE_BF16_LINEAR forces ('' when unset), checked: a typo or a
    route this build lacks is one line."""
    routes = {"LMFORGE_LINEAR": ROUTES, "LMFORGE_BF16_LINEAR": BF16_ROUTES}[env]
    forced = switch(env, routes)
    lacking = {
        ("LMFORGE_LINEAR", "onednn"): (ONEDNN_AVAILABLE, "this torch build has no oneDNN linear kernel"),
        ("LMFORGE_LINEAR", "packed"): (FP32_PACKING_AVAILABLE, "this torch build cannot pack weights"),
        ("LMFORGE_BF16_LINEAR", "packed"): (PACKING_AVAILABLE, _NO_PACKING),
    }
    available, missing = lacking.get((env, forced), (True, ""))
    if not available:
        raise LmforgeError(f"{env}={forced}: {missing}")
    return forced


@functools.cache
def bucket_route(bucket: str) -> tuple[str, str, str]:
    """(route, its timings, how measured: as route_memory.choose gives them) for fp32 products
    of a bucket (BUCKETS: 'one', 'few', 'dozens', 'many' rows, or a head of one, a few or many rows):
    remembered for this machine, else probed at the bucket's first product (a batch-1 decoder
    times no 32 rows) and remembered. The timings are '' where LMFORGE_LINEAR forces the route."""
    forced = forced_route("LMFORGE_LINEAR")
    if forced:
        return forced, "", ""

    def measure() -> tuple[str, str]:
        times = probe(bucket)
        return _fastest(times, "mkl"), _timings(_shape(bucket), times)

    # from 64 rows (evaluation), where nothing is measured for the machine, MKL: see per_process
    fixed = "mkl" if bucket in ("many", "many_head") else ""
    return route_memory.choose("fp32 inference linear", _shape(bucket), candidates(bucket), measure, fixed)


def choose_linear_routes() -> tuple[dict[str, str], str]:
    """({bucket: route}, why) for every bucket, each probed if it was not yet (see bucket_route)."""
    chosen = {bucket: bucket_route(bucket) for bucket in BUCKETS}
    routes = {bucket: route for bucket, (route, _, _) in chosen.items()}
    if forced_route("LMFORGE_LINEAR"):
        return routes, "LMFORGE_LINEAR"
    return routes, route_memory.said([c for c in chosen.values() if c[1]])


def _fastest(times: dict[str, float], base: str) -> str:
    """The fastest route if it beats `base` by MARGIN, else `base`, so that a close call does not
    flip the choice run to run."""
    fastest = min(times, key=times.__getitem__)
    return fastest if times[base] > MARGIN * times[fastest] else base


def _shape(bucket: str) -> str:
    """How the cache and the start-up line name a bucket's probe: '8 rows', '64 rows x 16384 out'."""
    rows, shapes = BUCKETS[bucket]
    named = f"{rows} row{'s' * (rows > 1)}"
    return f"{named} x {shapes[0][0]} out" if bucket.endswith("_head") else named


def _timings(shape: str, times: dict[str, float]) -> str:
    ms = ", ".join(f"{route} {1e3 * took:.2f} ms" for route, took in times.items())
    return f"{shape} {ms}"


def _bucket(rows: int, out: int = 0) -> str:
    """One row (a decoding step), a few (a batch of decoding steps), dozens (a larger batch of
    them), or more (prefill, evaluation); a vocabulary's head (`out` outputs) has buckets of its
    own. Called at every product: plain comparisons."""
    if rows == 1:
        return "one_head" if out >= HEAD_OUT else "one"
    if rows <= DOZENS_ROWS_MAX:
        if out >= HEAD_OUT:
            return "few_head"
        return "few" if rows <= FEW_ROWS_MAX else "dozens"
    return "many_head" if out >= HEAD_OUT else "many"


def linear_route(rows: int = 1, out: int = 0) -> str:
    """'mkl', 'onednn', 'split', 'swapped' or 'packed' for an fp32 product of `rows` rows into `out`
    outputs."""
    return bucket_route(_bucket(rows, out))[0]


def describe() -> str:
    """One line for start-up logs and benchmarks: the routes chosen and why (probing every bucket)."""
    routes, why = choose_linear_routes()
    if len(set(routes.values())) == 1:
        return f"fp32 inference linear: {routes['one']} ({why})"
    few, dozens = FEW_ROWS_MAX, DOZENS_ROWS_MAX
    return (
        f"fp32 inference linear: {routes['one']} for 1 row, {routes['few']} for 2-{few} rows,"
        f" {routes['dozens']} for {few + 1}-{dozens}, {routes['many']} from {dozens + 1}"
        f" (a head of {HEAD_OUT}+ outputs: {routes['one_head']} for 1 row,"
        f" {routes['few_head']} for 2-{dozens}, {routes['many_head']} from {dozens + 1}) ({why})"
    )


def for_inference(net: nn.Module) -> nn.Module:
    """Let `net`'s linear layers keep packed weights (model/packed_weights.py) for the routes that
    run on them (bf16's and fp32's `packed`, where measured faster); `net`.
    A mistyped route setting is refused here, before an entry point prints anything."""
    forced_route("LMFORGE_LINEAR")
    forced_route("LMFORGE_BF16_LINEAR")
    decode_attention.forced_route()
    prefill_attention.forced_route()
    packed_weights.mark(m for m in net.modules() if type(m) is nn.Linear)
    return net


@functools.cache
def choose_bf16_routes() -> tuple[dict[str, str], str]:
    """({bucket: 'plain' or 'packed'}, why) for bf16 inference products: one row probed, eight rows
    probed, and from 16 rows as at eight (packed led there too where measured); remembered for this
    machine (the routes give the same bits: this spares later processes the probe)."""
    forced = forced_route("LMFORGE_BF16_LINEAR")
    if forced:
        return dict.fromkeys(BUCKETS, forced), "LMFORGE_BF16_LINEAR"
    if not PACKING_AVAILABLE:
        return dict.fromkeys(BUCKETS, "plain"), _NO_PACKING

    def measure(bucket: str) -> tuple[str, str]:
        times = probe_bf16(bucket)
        return _fastest(times, "plain"), _timings(_shape(bucket), times)

    one, few = (
        route_memory.choose("bf16 inference linear", _shape(b), BF16_ROUTES, functools.partial(measure, b))
        for b in ("one", "few")
    )
    routes = {"one": one[0], "one_head": one[0]}
    routes |= dict.fromkeys(("few", "dozens", "many", "few_head", "many_head"), few[0])
    return routes, route_memory.said([one, few])


def bf16_setting() -> str:
    """How bf16 products are routed, known without the probe: the route LMFORGE_BF16_LINEAR forces,
    'plain' where packing is unavailable, else 'measured' (the probe decides when first needed)."""
    return forced_route("LMFORGE_BF16_LINEAR") or ("measured" if PACKING_AVAILABLE else "plain")


def bf16_route(rows: int = 1) -> str:
    """'packed' or 'plain' (F.linear) for a bf16 product of `rows` rows."""
    return choose_bf16_routes()[0][_bucket(rows)]


def describe_bf16() -> str:
    routes, why = choose_bf16_routes()
    if len(set(routes.values())) == 1:
        return f"bf16 inference linear: {routes['one']} ({why})"
    return f"bf16 inference linear: {routes['one']} for 1 row, {routes['few']} from 2 rows ({why})"
