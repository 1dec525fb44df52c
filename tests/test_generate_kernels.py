"""The inference kernels chosen by measurement change speed only: either linear route gives the
same logits (to summation order) and the same greedy tokens; a bad override is one clear error;
the CPU's vector units are read from /proc/cpuinfo's flags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.parametrize
import torch.nn.utils.prune

from lmforge import cli, hardware
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.inference.generate import generate_ids
from lmforge.model import kernels, packed_weights
from lmforge.model.gpt import GPT
from lmforge.model.layers import linear
from lmforge.tokenization.tokenizer import Tokenizer


@pytest.fixture
def route(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Set LMFORGE_LINEAR / LMFORGE_BF16_LINEAR through the returned monkeypatch; the process's
    choices are restored after."""
    kernels.bucket_route.cache_clear()
    kernels.choose_bf16_routes.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    kernels.bucket_route.cache_clear()
    kernels.choose_bf16_routes.cache_clear()


def test_every_route_gives_the_same_tokens(route: pytest.MonkeyPatch) -> None:
    """Each route, `packed` on a model an entry point marked (its layers then keep packed copies),
    gives MKL's logits to summation order and its greedy tokens, one row and several."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=51)).eval()
    kernels.for_inference(model)  # as generate, chat, serve... mark theirs
    idx = torch.randint(0, 51, (2, 12))
    results = {}
    for name in kernels.available_routes():
        route.setenv("LMFORGE_LINEAR", name)
        kernels.bucket_route.cache_clear()
        assert kernels.describe() == f"fp32 inference linear: {name} (LMFORGE_LINEAR)"
        with torch.no_grad():
            logits = model(idx)
        results[name] = (logits, generate_ids(model, [[1, 2, 3], [4, 5]], 20, temperature=0))
        kept = model.blocks[0].mlp.up in packed_weights._PACKED
        assert kept == (name == "packed")  # a copy is made only where the packed route runs
        packed_weights._PACKED.clear()
    logits, tokens = results.pop("mkl")
    for other_logits, other_tokens in results.values():
        torch.testing.assert_close(other_logits, logits, atol=1e-5, rtol=1e-5)
        assert other_tokens == tokens


@pytest.mark.parametrize("kernel", ["split", "swapped", "packed"])
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("n_out", [1, 2, 7, 96])
@pytest.mark.parametrize("bias", [True, False])
def test_the_split_and_swapped_routes_are_f_linear(kernel: str, threads: int, n_out: int, bias: bool) -> None:
    """split: rows cut into one block per thread, the left-over rows (n_out not a multiple of the
    threads, or fewer rows than threads); swapped: weight @ x^T transposed back; packed: oneDNN on
    the weight packed once. With a bias or
    not, weights that are views into larger tensors, inputs of 1, 15 and 40 rows, a vector, a
    non-contiguous input: the same product, contiguous, of F.linear's shape."""
    if kernel == "packed" and not kernels.FP32_PACKING_AVAILABLE:
        pytest.skip("this torch build cannot pack weights for oneDNN")
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, n_out, bias=bias)
    if n_out == 96:  # a weight and bias that are slices of larger tensors (offset storage)
        layer.weight.data = torch.randn(2 * 96, 24)[96:]
        if bias:
            layer.bias.data = torch.randn(2 * 96)[96:]
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            inputs = (torch.randn(1, 1, 24), torch.randn(3, 5, 24), torch.randn(40, 24), torch.randn(24))
            for x in (*inputs, torch.randn(24, 5).t()):  # the last is not contiguous
                if kernel == "packed":  # on the layer's weight packed for oneDNN, kept beside it
                    got = packed_weights.packed_linear(x, layer)
                else:
                    got = kernels.FP32_KERNELS[kernel](x, layer.weight, layer.bias)
                torch.testing.assert_close(got, layer(x), atol=1e-5, rtol=1e-5)
                assert got.is_contiguous()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("inference_mode", [False, True])
def test_probe_times_every_route(inference_mode: bool) -> None:
    """Every bucket's candidates, also where the first product comes under inference_mode (the
    server's decoding thread), whose probe layers then hold inference tensors."""
    for bucket in kernels.BUCKETS:
        with torch.inference_mode(inference_mode):
            times = kernels.probe(bucket, rounds=1)
        competing = kernels.MANY_ROUTES if bucket in ("many", "many_head") else kernels.ROUTES
        assert (
            set(times) == set(competing) & set(kernels.available_routes()) == set(kernels.candidates(bucket))
        )
        assert all(t > 0 for t in times.values())
    assert kernels.linear_route() in kernels.ROUTES


def test_each_row_count_takes_its_own_route(route: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """One row, a few rows, dozens and many rows may take different routes, and a vocabulary's
    head of a few or many rows others (a probe per bucket, run at its first product: decoding one
    row never times 32)."""
    route.setenv("LMFORGE_CACHE", str(tmp_path))
    route.delenv("LMFORGE_AUTOTUNE")  # on: from 64 rows the routes are measured only for the machine
    probed = []
    fastest = {
        "one_head": "packed",
        "few": "onednn",
        "dozens": "swapped",
        "many": "split",
        "few_head": "split",
        "many_head": "onednn",
    }

    def probe(bucket: str) -> dict[str, float]:
        probed.append(bucket)
        others = ("onednn", "split", "swapped", "packed")
        return {"mkl": 1.0} | {r: 0.5 if fastest.get(bucket) == r else 2.0 for r in others}

    route.setattr(kernels, "probe", probe)
    kernels.bucket_route.cache_clear()
    assert kernels.linear_route(1) == "mkl" and probed == ["one"]
    rows = (1, 2, 8, 15, 16, 32, 63, 64, 512)
    expected = ["mkl"] + ["onednn"] * 3 + ["swapped"] * 3 + ["split"] * 2
    assert [kernels.linear_route(n) for n in rows] == expected
    assert probed == ["one", "few", "dozens", "many"]
    wide = kernels.HEAD_OUT
    heads = [kernels.linear_route(n, wide) for n in (1, 2, 8, 32, 63, 64, 512)]
    assert heads == ["packed", "split", "split", "split", "split", "onednn", "onednn"]
    assert kernels.linear_route(512, wide - 1) == "split" and kernels.linear_route(8, wide - 1) == "onednn"
    assert kernels.linear_route(1, wide - 1) == "mkl"
    assert probed == ["one", "few", "dozens", "many", "one_head", "few_head", "many_head"]
    assert kernels.describe().startswith(
        "fp32 inference linear: mkl for 1 row, onednn for 2-15 rows, swapped for 16-63, split from 64"
        f" (a head of {wide}+ outputs: packed for 1 row, split for 2-63, onednn from 64) (measured: 1 row"
    )
    assert f"1 row x {wide} out mkl 1000.00 ms, onednn 2000.00 ms, split 2000.00 ms" in kernels.describe()
    assert f"8 rows x {wide} out mkl 1000.00 ms, onednn 2000.00 ms, split 500.00 ms" in kernels.describe()
    assert f"64 rows x {wide} out mkl 1000.00 ms, onednn 500.00 ms" in kernels.describe()


def test_without_autotune_evaluation_products_keep_mkl(route: pytest.MonkeyPatch) -> None:
    """With LMFORGE_AUTOTUNE=0 (conftest's) a process measures the decoding routes for itself, but
    products of 64 rows or more (evaluation) take MKL unmeasured: a run's resumption, another
    process, must evaluate as the unbroken run did, and a probe of its own might choose otherwise."""
    route.setattr(
        kernels, "probe", lambda bucket: {"mkl": 1.0, "onednn": 0.5 if bucket[:3] != "one" else 2.0}
    )
    assert [kernels.linear_route(rows, out) for rows, out in ((8, 0), (64, 0), (64, kernels.HEAD_OUT))] == [
        "onednn", "mkl", "mkl",
    ]  # fmt: skip
    assert (
        "onednn for 2-15 rows, onednn for 16-63, mkl from 64 (a head of 16384+ outputs: mkl for 1 row,"
        " onednn for 2-63, mkl" in kernels.describe()
    )


def test_under_autocast_a_product_is_autocasts(route: pytest.MonkeyPatch) -> None:
    """A training run evaluates under bf16 autocast without autograd: every route must compute
    in bf16 there, as F.linear does, and oneDNN's kernel would compute in fp32."""
    route.setenv("LMFORGE_LINEAR", "onednn")
    if not kernels.ONEDNN_AVAILABLE:
        pytest.skip("this torch build has no oneDNN linear kernel")
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(80, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        got, expected = linear(layer, x), F.linear(x, layer.weight, layer.bias)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    with torch.no_grad():
        assert linear(layer, x).dtype == torch.float32


def test_the_fastest_route_is_chosen_only_by_a_margin(route: pytest.MonkeyPatch) -> None:
    """The fastest route wins where it beats MKL by MARGIN; a close call keeps MKL. Without
    oneDNN in the build the probe times the other routes."""
    times = {
        "one": {"mkl": 1.0, "onednn": 0.8, "split": 0.5, "swapped": 0.9},
        "one_head": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "packed": 0.9},
        "few": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "swapped": 0.9},
        "dozens": {"mkl": 1.0, "onednn": 0.7, "split": 0.8, "swapped": 0.6},
        "many": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "swapped": 0.9},
        "few_head": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "swapped": 0.9},
        "many_head": {"mkl": 1.0, "onednn": 0.9, "split": 0.95, "swapped": 0.9},
    }
    route.setattr(kernels, "probe", lambda bucket: times[bucket])
    kernels.bucket_route.cache_clear()
    assert [kernels.linear_route(rows) for rows in (1, 8, 32, 64)] == ["split", "mkl", "swapped", "mkl"]
    assert "1 row mkl 1000.00 ms, onednn 800.00 ms, split 500.00 ms, swapped 900.00 ms" in kernels.describe()
    route.undo()
    route.setattr(kernels, "ONEDNN_AVAILABLE", False)
    route.setattr(kernels, "FP32_PACKING_AVAILABLE", False)
    assert set(kernels.probe("one", rounds=1)) == {"mkl", "split", "swapped"}
    route.setattr(kernels, "ONEDNN_AVAILABLE", True)  # oneDNN's kernel without its weight packing
    assert set(kernels.probe("one_head", rounds=1)) == {"mkl", "onednn", "split", "swapped"}
    route.setenv("LMFORGE_LINEAR", "packed")
    kernels.bucket_route.cache_clear()
    with pytest.raises(LmforgeError, match="LMFORGE_LINEAR=packed: this torch build cannot pack weights"):
        kernels.linear_route()


def test_the_probes_leave_the_random_generator_alone() -> None:
    """They run at a training run's first evaluation: a draw there would make a run resumed with
    dropout part from an unbroken one."""
    before = torch.get_rng_state()
    kernels.probe("one", rounds=1)
    if kernels.PACKING_AVAILABLE:
        kernels.probe_bf16("one", rounds=1)
    assert torch.equal(torch.get_rng_state(), before)


def test_bad_override_is_one_clear_error(route: pytest.MonkeyPatch) -> None:
    route.setenv("LMFORGE_LINEAR", "blas")
    with pytest.raises(LmforgeError, match="LMFORGE_LINEAR='blas': expected one of mkl, onednn"):
        kernels.linear_route()


@pytest.mark.parametrize(
    ("env", "value"),
    [
        ("LMFORGE_LINEAR", "blas"),
        ("LMFORGE_BF16_LINEAR", "packd"),
        ("LMFORGE_DECODE_ATTENTION", "x"),
        ("LMFORGE_PREFILL_ATTENTION", "x"),
    ],
)
def test_a_bad_override_stops_generate_before_it_prints(
    route: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], env: str, value: str
) -> None:
    """The routes are chosen at the first product, after the prompt is streamed: the setting is
    checked when the model is made ready, so the error is not glued to the prompt ('hilmforge: ...')."""
    tok = Tokenizer.train_char(["hi there"])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    route.setenv(env, value)
    assert cli.main(["generate", str(tmp_path / "gpt"), "--prompt", "hi", "--max-new-tokens", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"lmforge: error: {env}='{value}': expected one of"), (out, err)


def test_training_keeps_autograd(route: pytest.MonkeyPatch) -> None:
    """With autograd on (training) the layer's own forward runs, whatever the route."""
    route.setenv("LMFORGE_LINEAR", "onednn" if kernels.ONEDNN_AVAILABLE else "mkl")
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20))
    model(torch.randint(0, 20, (1, 8))).sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.skipif(not kernels.ONEDNN_AVAILABLE, reason="no oneDNN linear kernel in this torch build")
def test_a_layer_with_hooks_is_called_as_a_module(route: pytest.MonkeyPatch) -> None:
    """DeepSpeed ZeRO-3 gathers a partitioned weight in the layer's forward hooks: the oneDNN route
    must not go around them (it did, and ZeRO-3's evaluation desynchronised the ranks)."""
    route.setenv("LMFORGE_LINEAR", "onednn")
    layer, calls = torch.nn.Linear(8, 4), []
    layer.register_forward_pre_hook(lambda module, args: calls.append("pre"))
    layer.register_forward_hook(lambda module, args, out: calls.append("post"))
    with torch.no_grad():
        linear(layer, torch.ones(2, 8))
    assert calls == ["pre", "post"]


@pytest.mark.parametrize("change", ["pruned", "parametrized"])
def test_a_layer_whose_weight_is_computed_uses_it(route: pytest.MonkeyPatch, change: str) -> None:
    """linear() reads a plain layer's parameters from its own table; pruning (the weight an
    attribute made by a hook) and parametrization (a property on a new class) still give the
    weight they compute, not the stored one."""
    route.setenv("LMFORGE_LINEAR", "split")
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 6)
    if change == "pruned":
        torch.nn.utils.prune.l1_unstructured(layer, "weight", amount=0.5)
    else:
        torch.nn.utils.parametrize.register_parametrization(layer, "weight", torch.nn.Tanh())
    stored = layer.weight_orig if change == "pruned" else layer.parametrizations.weight.original
    x = torch.randn(1, 8)
    with torch.no_grad():
        assert torch.allclose(linear(layer, x), F.linear(x, layer.weight, layer.bias), atol=1e-6)
        assert not torch.allclose(linear(layer, x), F.linear(x, stored, layer.bias), atol=1e-3)


@pytest.mark.skipif(not kernels.PACKING_AVAILABLE, reason="oneDNN cannot pack bf16 weights here")
def test_packed_bf16_weights_give_the_same_bits_and_tokens(route: pytest.MonkeyPatch) -> None:
    """A bf16 model's products on weights packed once for oneDNN: the same kernel as F.linear's
    (which reorders the weight at every call), so the same logits bit for bit, at one row, a few
    and many, and the same greedy tokens."""
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=100)).eval()
    model = kernels.for_inference(model.to(torch.bfloat16))  # as generate, chat, serve... mark theirs
    results = {}
    for name in kernels.BF16_ROUTES:
        route.setenv("LMFORGE_BF16_LINEAR", name)
        kernels.choose_bf16_routes.cache_clear()
        assert kernels.describe_bf16() == f"bf16 inference linear: {name} (LMFORGE_BF16_LINEAR)"
        with torch.no_grad():
            logits = [model(torch.randint(0, 100, (b, t), generator=torch.Generator().manual_seed(b)))
                      for b, t in ((1, 1), (3, 5), (4, 40))]  # fmt: skip
        results[name] = (logits, generate_ids(model, [[1, 2, 3], [4, 5]], 20, temperature=0))
    (a, tokens_a), (b, tokens_b) = results.values()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)) and tokens_a == tokens_b


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_packed_weight_follows_its_layer(route: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """The packed copy (bf16's packed route, fp32's) is made again when the weight changes in place
    or is replaced, and never travels with a deep copy or into state_dict. A layer no inference
    entry point marked (a model in training, whose engine may rewrite weights through .data,
    unseen) is never packed: fp32's route runs oneDNN on its weight as it is."""
    import copy

    if not (kernels.PACKING_AVAILABLE if dtype == torch.bfloat16 else kernels.FP32_PACKING_AVAILABLE):
        pytest.skip(f"oneDNN cannot pack {dtype} weights here")
    route.setenv("LMFORGE_BF16_LINEAR" if dtype == torch.bfloat16 else "LMFORGE_LINEAR", "packed")
    route.setattr(packed_weights, "PACK_AFTER", 1)  # packed at the first product (see the test below)
    layer = torch.nn.Linear(16, 8).to(dtype)
    # fp32: from two rows oneDNN's sums on a packed weight are those on the weight as it is
    x = torch.randn(1 if dtype == torch.bfloat16 else 3, 16).to(dtype)

    def check() -> None:
        with torch.no_grad():
            expected = F.linear(x, layer.weight, layer.bias)
            if dtype == torch.bfloat16:
                assert torch.equal(linear(layer, x), expected)
            else:  # F.linear is MKL's; oneDNN's, packed or not, sums in another order
                torch.testing.assert_close(linear(layer, x), expected, atol=1e-6, rtol=1e-5)
                assert torch.equal(linear(layer, x), kernels.onednn_linear(x, layer.weight, layer.bias))

    check()
    assert layer not in packed_weights._PACKED  # not marked: F.linear, nothing kept
    with torch.no_grad():
        layer.weight.data.copy_(torch.randn(8, 16))  # as DeepSpeed refreshes its bf16 copies
    check()
    kernels.for_inference(layer)
    check()
    assert layer in packed_weights._PACKED
    with torch.no_grad():
        layer.weight.mul_(2)  # in place: its version counter moves
    check()
    layer.weight = torch.nn.Parameter(torch.randn(8, 16).to(dtype))
    check()
    for _ in range(20):  # a new weight at a freed one's address, with the same version, was stale
        layer.weight.data = torch.randn(8, 16).to(dtype)
        check()
        layer.load_state_dict({"weight": torch.randn(8, 16).to(dtype), "bias": layer.bias}, assign=True)
        check()
    with torch.no_grad():
        layer.weight.data.mul_(2)  # through .data: unseen, so the caller forgets the copies
    packed_weights.forget(layer)
    check()
    twin = copy.deepcopy(layer)
    assert set(twin.state_dict()) == {"weight", "bias"} and twin not in packed_weights._PACKED
    with torch.inference_mode():  # an inference tensor has no version counter: never packed
        layer.weight = torch.nn.Parameter(torch.randn(8, 16).to(dtype), requires_grad=False)
        packed_weights.forget(layer)
        check()
        layer.weight.mul_(2)
        check()
    assert layer not in packed_weights._PACKED


@pytest.mark.skipif(not kernels.FP32_PACKING_AVAILABLE, reason="oneDNN cannot pack weights here")
def test_an_fp32_weight_is_packed_once_it_is_used(route: pytest.MonkeyPatch) -> None:
    """Packing costs about what a dozen eight-row products save: a layer's weight is packed at its
    PACK_AFTER-th product of two rows or more (a one-shot prompt's prefill, one product a layer, does
    not double the model's memory), until then oneDNN's kernel runs on it as it is, the same bits.
    One row, where the two differ, is packed at once."""
    route.setenv("LMFORGE_LINEAR", "packed")
    layer, one_row = (kernels.for_inference(torch.nn.Linear(32, 24)) for _ in range(2))
    x = torch.randn(5, 32)
    with torch.no_grad():
        outputs = []
        for _ in range(packed_weights.PACK_AFTER - 1):
            outputs.append(linear(layer, x))
            assert layer not in packed_weights._PACKED
        outputs.append(linear(layer, x))
        assert layer in packed_weights._PACKED
        assert all(torch.equal(out, outputs[0]) for out in outputs)
        linear(one_row, x[:1])
        assert one_row in packed_weights._PACKED


def test_bf16_routes_are_chosen_per_row_count(route: pytest.MonkeyPatch) -> None:
    route.setattr(kernels, "PACKING_AVAILABLE", True)
    route.setattr(kernels, "probe_bf16", lambda b: {"plain": 1.0, "packed": 0.5 if b != "one" else 0.95})
    assert [kernels.bf16_route(rows) for rows in (1, 2, 15, 16, 512)] == ["plain"] + ["packed"] * 4
    assert kernels.describe_bf16().startswith("bf16 inference linear: plain for 1 row, packed from 2 rows")
    route.setenv("LMFORGE_BF16_LINEAR", "fast")
    kernels.choose_bf16_routes.cache_clear()
    with pytest.raises(LmforgeError, match="LMFORGE_BF16_LINEAR='fast': expected one of plain, packed"):
        kernels.bf16_route()


def test_probe_times_both_bf16_routes() -> None:
    if not kernels.PACKING_AVAILABLE:
        pytest.skip("oneDNN cannot pack bf16 weights here")
    times = kernels.probe_bf16("one", rounds=1)
    assert set(times) == set(kernels.BF16_ROUTES) and all(t > 0 for t in times.values())


def test_cpu_features_from_cpuinfo() -> None:
    info = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx2 avx512f avx512bw\nprocessor\t: 1\n"
    flags = hardware.flags_in_cpuinfo(info)
    assert {"avx2", "avx512f"} <= flags and "avx512_bf16" not in flags
    assert hardware.flags_in_cpuinfo("model name : x\n") == frozenset()
    summary = hardware.cpu_summary()
    assert hardware.cpu_model() in summary and ("AVX2" in summary or "none of" in summary)


def test_the_inference_entry_points_mark_their_models() -> None:
    """generate, chat, serve, ask and the pipelines put a model in its dtype through
    to_inference_dtype, translate and eval through their own loaders: each marks it for the packed
    route; a model built or trained elsewhere is not marked."""
    from lmforge.inference.autotune import to_inference_dtype

    net = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=20))
    assert not packed_weights.packable(net.lm_head)
    for dtype in ("fp32", "bf16"):
        marked = to_inference_dtype(GPT(net.config), dtype)[0]
        assert all(packed_weights.packable(m) for m in marked.modules() if type(m) is torch.nn.Linear)


def test_a_cpu_that_cannot_pack_bf16_keeps_f_linear(route: pytest.MonkeyPatch) -> None:
    """On an AVX2-only CPU oneDNN refuses to pack bf16 weights (it raised in the middle of a
    decode): there the route is plain without a probe, and forcing `packed` is one clear error."""
    route.setattr(kernels, "PACKING_AVAILABLE", False)
    assert kernels.bf16_route(1) == "plain" and "cannot pack bf16" in kernels.describe_bf16()
    route.setenv("LMFORGE_BF16_LINEAR", "packed")
    kernels.choose_bf16_routes.cache_clear()
    with pytest.raises(LmforgeError, match="LMFORGE_BF16_LINEAR=packed: oneDNN cannot pack bf16 weights"):
        kernels.bf16_route()
