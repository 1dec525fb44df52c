"""Activation checkpointing (train.activation_checkpointing): every model family the loop trains
gives the same loss and the same gradients with its blocks recomputed in backward, dropout on
(the recomputation must draw the same masks), and it really keeps less for backward. Training
runs: the same losses and weights with and without it, on the local engine and on DDP at 2 ranks.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from lmforge.config import ModelConfig
from lmforge.model.checkpointing import set_activation_checkpointing
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"n_layer": 3, "n_head": 4, "n_embd": 64, "block_size": 32, "vocab_size": 50, "dropout": 0.2}
LLAMA = {"pos": "rope", "mlp": "swiglu", "norm": "rmsnorm", "n_kv_head": 2, "bias": False}


def _gpt() -> nn.Module:
    return GPT(ModelConfig(**SHAPE))


def _llama() -> nn.Module:
    return GPT(ModelConfig(**SHAPE, **LLAMA, tie_embeddings=False))


def _bert(**kw) -> Encoder:
    return Encoder(ModelConfig(**SHAPE, arch="encoder", mlp="gelu", type_vocab_size=2, **kw))


def _seq2seq() -> nn.Module:
    return Seq2Seq(ModelConfig(**SHAPE, arch="seq2seq"), pad_id=0)


def _loss(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    if isinstance(model, Seq2Seq):
        return model(idx, idx.flip(1)).float().square().mean()
    if isinstance(model, Classifier):
        return nn.functional.cross_entropy(model(idx, torch.ones_like(idx)), idx[:, 0] % 2)
    if isinstance(model, SpanModel):
        return model(idx, torch.ones_like(idx), torch.zeros_like(idx)).square().mean()
    return nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.roll(-1, 1).flatten())


def _run(model: nn.Module, idx: torch.Tensor, on: bool) -> tuple[float, dict[str, torch.Tensor]]:
    set_activation_checkpointing(model, on)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(7)  # the same dropout draws for both runs
    loss = _loss(model, idx)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _lora() -> nn.Module:
    """Frozen base, adapters with dropout: no block input needs a gradient, the adapters' weights do
    (the case a reentrant checkpoint would silently give no gradients for)."""
    from lmforge.config import LoraConfig
    from lmforge.model import lora

    model = _llama()
    torch.manual_seed(1)
    lora.inject(model, LoraConfig(enabled=True, targets="q_proj,v_proj", dropout=0.1))
    for p in model.parameters():  # B starts at zero: give the adapters something to pass on
        if p.requires_grad:
            nn.init.normal_(p, std=0.02)
    return model


MODELS: dict[str, Callable[[], nn.Module]] = {
    "gpt": _gpt,
    "llama": _llama,
    "llama-lora": _lora,
    "encoder-classifier": lambda: Classifier(_bert(), ["a", "b"], "cls", dropout=0.2),
    "encoder-span": lambda: SpanModel(_bert()),
    "gpt-classifier": lambda: Classifier(_gpt(), ["a", "b"]),
    "seq2seq": _seq2seq,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_same_loss_and_gradients_with_dropout(name: str) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().train()
    idx = torch.randint(1, 50, (4, 32))
    loss, grads = _run(model, idx, on=False)
    loss_ckpt, grads_ckpt = _run(model, idx, on=True)
    torch.manual_seed(8)  # a different dropout draw changes the loss: the comparison can fail
    assert _loss(model, idx).item() != pytest.approx(loss, abs=1e-4)
    assert loss_ckpt == pytest.approx(loss, abs=1e-6)
    assert grads_ckpt.keys() == grads.keys() and grads
    for n, g in grads.items():
        torch.testing.assert_close(grads_ckpt[n], g, rtol=1e-5, atol=1e-7, msg=n)


def test_every_block_of_every_family_is_switched() -> None:
    assert set_activation_checkpointing(_gpt(), True) == 3
    assert set_activation_checkpointing(SpanModel(_bert()), True) == 3
    assert set_activation_checkpointing(_seq2seq(), True) == 6  # encoder and decoder blocks


def _saved_bytes(model: nn.Module, idx: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward (each storage once)."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _loss(model, idx)
    return sum(seen.values())


def test_checkpointing_keeps_less_for_backward_and_nothing_changes_in_eval() -> None:
    torch.manual_seed(0)
    model = _gpt().train()
    idx = torch.randint(1, 50, (4, 32))
    plain = _saved_bytes(model, idx)
    set_activation_checkpointing(model, True)
    assert _saved_bytes(model, idx) < plain / 2
    model.eval()
    with torch.no_grad():  # decoding and evaluation: no recomputation, the same logits
        out = model(idx)
    set_activation_checkpointing(model, False)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), out, rtol=0, atol=0)


SMALL = [
    "--model.n_layer=2",
    "--model.n_head=4",
    "--model.n_embd=64",
    "--model.block_size=64",
    "--model.dropout=0.1",
    "--train.batch_size=8",
    "--train.max_steps=6",
    "--train.warmup_steps=2",
    "--train.dtype=fp32",
    "--train.log_interval=1",
    "--train.eval_interval=6",
    "--train.eval_batches=1",
    "--train.checkpoint_interval=6",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmforge.data.shards import prepare_corpus

    root = tmp_path_factory.mktemp("ckpt-data")
    prepare_corpus(ROOT / "data" / "shakespeare.jsonl.xz", root, "char")
    return root


def _train(data: Path, out: Path, nproc: int, *overrides: str) -> Path:
    launcher = ["launch", f"--nproc={nproc}"] if nproc > 1 else []
    args = ["train", "--quiet", str(ROOT / "configs" / "shakespeare-char.toml"), f"--data.input={data}"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lmforge",
            *launcher,
            *args,
            *SMALL,
            "--out",
            str(out),
            *overrides,
            "--engine.timeout_s=60",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# ZeRO-3 partitioning every parameter (tests/test_engines.py): each recomputation gathers again
ZERO3 = (
    "--engine.zero_stage=3",
    f"--engine.deepspeed_config={ROOT / 'tests' / 'fixtures' / 'zero3-partition-all.json'}",
)
ENGINES = {  # the local engine in the quick suite; DDP and the sharded ones in `make test-all` (slow)
    "local-1": (1,),
    "ddp-2": (2, "--engine.name=ddp"),
    "fsdp-2": (2, "--engine.name=fsdp"),
    "zero2-2": (2, "--engine.name=deepspeed", "--engine.zero_stage=2"),
    "zero3-2": (2, "--engine.name=deepspeed", *ZERO3),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow if n != "local-1" else ()) for n in ENGINES]
)
def test_training_gives_the_same_losses_and_weights(data: Path, tmp_path: Path, name: str) -> None:
    if "zero" in name:
        pytest.importorskip("deepspeed")
    nproc, *flags = ENGINES[name]
    plain = _train(data, tmp_path / "plain", nproc, *flags)
    ckpt = _train(data, tmp_path / "ckpt", nproc, *flags, "--train.activation_checkpointing=true")
    want = {r["step"]: r["loss"] for r in read_metrics(plain) if "loss" in r}
    got = {r["step"]: r["loss"] for r in read_metrics(ckpt) if "loss" in r}
    assert sorted(got) == sorted(want) == list(range(1, 7))
    for step, loss in want.items():
        assert got[step] == pytest.approx(loss, abs=1e-6), step
    a, b = load_file(plain / "model" / "model.safetensors"), load_file(ckpt / "model" / "model.safetensors")
    for key, weight in a.items():  # six AdamW steps on the same gradients
        torch.testing.assert_close(b[key], weight, rtol=1e-5, atol=1e-6, msg=key)


def test_the_loop_recomputes_every_block(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The option reaches the model: with it every training forward of each block goes through
    checkpoint (2 blocks x 6 steps at least; a kernel autotune may time a few more), without it none."""
    import lmforge
    from lmforge.model import checkpointing

    calls: list[int] = []

    def counting(*args, **kw):
        calls.append(1)
        return torch.utils.checkpoint.checkpoint(*args, **kw)

    monkeypatch.setattr(checkpointing, "checkpoint", counting)
    recipe, overrides = ROOT / "configs" / "shakespeare-char.toml", [f"--data.input={data}", *SMALL]
    lmforge.train(recipe, overrides, out=tmp_path / "plain", quiet=True)
    assert not calls
    on = [*overrides, "--train.activation_checkpointing=true"]
    lmforge.train(recipe, on, out=tmp_path / "ckpt", quiet=True)
    assert len(calls) >= 2 * 6 and len(calls) % 2 == 0


def test_privacy_refuses_checkpointing() -> None:
    from lmforge.config import load_config
    from lmforge.errors import LmforgeError

    with pytest.raises(LmforgeError, match="train.activation_checkpointing does not combine with privacy"):
        load_config(
            None,
            ["--privacy.enabled=true", "--privacy.target_epsilon=8", "--train.activation_checkpointing=true"],
        )
    with pytest.raises(LmforgeError, match="activation_checkpointing"):
        load_config(None, ["--train.activation_checkpointing=maybe"])


def test_plan_counts_the_recipes_checkpointing() -> None:
    """A micro-batch that fits only with checkpointing: the plan names the option, and a recipe
    that sets it fits (its peak is the checkpointed one)."""
    import lmforge

    shape = ["--model.n_layer=12", "--model.n_head=12", "--model.n_embd=768", "--model.block_size=1024",
             "--model.vocab_size=50257"]  # fmt: skip
    one = lmforge.plan(overrides=[*shape, "--train.batch_size=1"], device="l4")["setups"][0]
    micro = one["max_micro_batch"] + 1
    assert one["max_micro_batch_checkpointed"] >= micro
    batch = [*shape, f"--train.batch_size={micro}"]
    plain = lmforge.plan(overrides=batch, device="l4")
    assert (
        plain["advice"]
        == f"micro-batch {micro} does not fit; it does with train.activation_checkpointing=true"
    )
    assert not plain["activation_checkpointing"]
    ckpt = lmforge.plan(overrides=[*batch, "--train.activation_checkpointing=true"], device="l4")
    assert ckpt["advice"] == "" and ckpt["activation_checkpointing"]
    assert ckpt["peak_per_rank"]["step_checkpointed"] < ckpt["peak_per_rank"]["step"]
