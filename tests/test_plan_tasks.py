"""`lmforge plan` for classification and question-answering recipes: the counts equal the built
task model's (a classifier on a decoder or an encoder, a span model on an encoder, head-only and
LoRA), the per-rank model states equal what a real run's summary.json measures, to the byte, and
recipes it cannot plan get one line."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch
from hf_helpers import make_hf_model, tiny_bpe
from test_classify import _data
from test_qa_task import FIXTURE, write_squad

import lmforge
from lmforge import cli
from lmforge.config import LoraConfig, ModelConfig
from lmforge.data.labelled import encode_batch
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, write_model_dir
from lmforge.model import lora
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.span import SpanModel
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools import plan_model
from lmforge.tools.plan_model import Head
from lmforge.train.report import flops_per_token

SMALL = dict(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16)
BERT = ModelConfig(**SMALL, type_vocab_size=2, mlp_hidden=64)
LLAMA = ModelConfig(**SMALL, pos="rope", mlp="swiglu", bias=False, norm="rmsnorm", n_kv_head=2,
                    tie_embeddings=False)  # fmt: skip
GPT2 = ModelConfig(**SMALL)


def _models() -> dict[str, tuple[ModelConfig, Head, torch.nn.Module]]:
    head_only = Classifier(GPT(GPT2), ["a", "b"])
    head_only.backbone.requires_grad_(False)  # what train.head_only does (train/tasks/classification.py)
    cls = "classification"
    return {
        "span on an encoder": (BERT, Head("span", encoder=True), SpanModel(Encoder(BERT))),
        "classifier on an encoder": (BERT, Head(cls, True, 3), Classifier(Encoder(BERT), list("abc"))),
        "classifier on a tied gpt": (GPT2, Head(cls, False, 2), Classifier(GPT(GPT2), ["a", "b"])),
        "classifier on an untied llama": (LLAMA, Head(cls, False, 4), Classifier(GPT(LLAMA), list("abcd"))),
        "head-only classifier": (GPT2, Head(cls, False, 2, frozen_body=True), head_only),
    }


def _gradients(model: torch.nn.Module) -> int:
    """Parameters that get a gradient in one training step: what torch's AdamW keeps moments for."""
    ids = torch.randint(0, 97, (2, 12))
    out = model(ids, torch.ones_like(ids))
    out.float().sum().backward()
    return sum(p.numel() for p in model.parameters() if p.requires_grad and p.grad is not None)


@pytest.mark.parametrize("name", sorted(_models()))
def test_counts_equal_the_built_task_model(name: str) -> None:
    from deepspeed.runtime.zero.stage3 import model_to_params

    c, head, model = _models()[name]
    counts = plan_model.count(c, seq_len=12, head=head)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert (counts.params, counts.largest_module) == model_to_params(model)
    assert counts.flops_per_token == flops_per_token(model, 12)  # the step log's count
    assert counts.stepped == _gradients(model)


def test_lora_on_a_classifier() -> None:
    spec = LoraConfig(enabled=True, rank=4, targets="q_proj,v_proj,down_proj", also_train="head")
    model = lora.inject(Classifier(GPT(LLAMA), ["a", "b"]), spec)
    counts = plan_model.count(LLAMA, spec, 12, Head("classification", False, 2))
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.trainable == counts.stepped == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.flops_per_token == flops_per_token(model, 12)


def test_the_unused_head_costs_no_flops() -> None:
    """A classifier on GPT-2 small never runs its 38.6 M-weight output layer: the step log and the
    plan count the body and the head only."""
    gpt2 = ModelConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257, mlp="gelu_tanh")
    lm = plan_model.count(gpt2, seq_len=128)
    cls = plan_model.count(gpt2, seq_len=128, head=Head("classification", False, 2))
    assert lm.flops_per_token - cls.flops_per_token == 6 * (50257 * 768 - 768 * 2)


def _plan_run(overrides: list[str]) -> dict:
    result = lmforge.plan(overrides=overrides, calibrate=True, calibrate_steps=2)
    measured = result["calibration"]["memory_per_rank"]
    assert set(measured) == {"params", "grads", "optimizer"}
    assert result["memory_per_rank"] == measured  # to the byte, key by key
    return result


def test_a_short_qa_run_measures_what_the_plan_predicts(tmp_path: Path) -> None:
    data = write_squad(tmp_path / "squad.json", paragraphs=20)
    args = ["--data.task=qa", f"--data.input={data}", f"--train.init_from={FIXTURE}", "--train.batch_size=4",
            "--data.max_len=48", "--data.doc_stride=16", "--data.val_fraction=0.2", "--train.dtype=fp32",
            "--model.dropout=0.1"]  # fmt: skip
    result = _plan_run(args)
    assert result["model"]["arch"] == "encoder" and result["model"]["head"] == "span"
    assert result["tokens_per_sequence"] == 48  # the window, not the model's 64 positions
    # the frozen pooler: a parameter, no gradient slot, no optimizer state
    assert result["parameters"] - result["trainable_parameters"] == 32 * 32 + 32
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["plan", *args, "--json"]) == 0
    assert json.loads(out.getvalue())["memory_per_rank"] == result["memory_per_rank"]


def test_a_short_classification_run_measures_what_the_plan_predicts(tmp_path: Path) -> None:
    """An imported BERT: the classifier never runs its pooler and freezes it (DDP fails on a trainable
    weight without a gradient): a parameter with no gradient and no AdamW state."""
    make_hf_model("bert", tmp_path / "bert")
    data = _data(tmp_path / "train.jsonl", n=80)
    args = ["--data.task=classification", f"--data.input={data}", "--data.labels=negative,positive",
            f"--train.init_from={tmp_path / 'bert'}", "--train.batch_size=8", "--data.max_len=24",
            "--train.dtype=fp32"]  # fmt: skip
    result = _plan_run(args)
    states, width = result["memory_per_rank"], result["model"]["n_embd"]
    assert states["optimizer"] == 2 * states["grads"]
    assert result["parameters"] - result["trainable_parameters"] == width * width + width  # the pooler
    assert result["model"]["head"] == "classification"
    # tokens per example: the longest text as the task encodes it, or max_len where that is shorter
    texts = [json.loads(line)["text"] for line in data.read_text().splitlines()]
    longest = encode_batch(load_model(tmp_path / "bert")[1], texts, 1000)[0].shape[1]
    assert longest > 24 and result["tokens_per_sequence"] == 24  # cut at data.max_len
    wide = lmforge.plan(overrides=[*args, "--data.max_len=1000"])
    assert longest < result["model"]["block_size"] and wide["tokens_per_sequence"] == longest


def test_recipes_it_cannot_plan_get_one_line(tmp_path: Path) -> None:
    gpt = GPT(GPT2)
    tiny_bpe(tmp_path)
    tokenizer = Tokenizer.load(tmp_path / "tokenizer.json")
    write_model_dir(tmp_path / "gpt", gpt.config, gpt.state_dict(), tokenizer)
    qa = ["--data.task=qa", "--data.input=x.json", f"--train.init_from={tmp_path / 'gpt'}"]
    with pytest.raises(LmforgeError, match=r"^train.init_from=.*gpt': not an encoder \(BERT, MiniLM\) model"):
        lmforge.plan(overrides=qa)
    cls = ["--data.task=classification", "--data.input=x.jsonl", f"--train.init_from={tmp_path / 'gpt'}"]
    with pytest.raises(LmforgeError, match=r"^data.labels='a': name at least two labels, comma-separated$"):
        lmforge.plan(overrides=[*cls, "--data.labels=a"])


@pytest.mark.slow  # 8 s; the QA and classification runs stay in make test
def test_a_translation_fine_tune_from_marian_measures_what_the_plan_predicts(tmp_path: Path) -> None:
    """train.init_from an encoder-decoder (an imported Marian) for translation: plan said it was no
    decoder it covers. A decoder for translation, or an encoder-decoder for lm, is refused as train
    refuses it."""
    pytest.importorskip("sentencepiece")
    from marian_helpers import make_marian_model, pairs

    make_marian_model(tmp_path / "opus-mt", eos_bias=0.0)
    short = [(en, fr) for en, fr in pairs(600) if len(en) < 90 and len(fr) < 90][:120]
    data = tmp_path / "pairs.jsonl"
    rows = [json.dumps({"doc": f"d{i}", "en": en, "fr": fr}) for i, (en, fr) in enumerate(short)]
    data.write_text("\n".join(rows) + "\n")
    args = ["--data.task=translation", f"--data.input={data}", f"--train.init_from={tmp_path / 'opus-mt'}",
            "--train.batch_size=8", "--train.dtype=fp32"]  # fmt: skip
    result = _plan_run(args)
    assert result["model"]["arch"] == "seq2seq" and result["model"]["vocab_size"] == 427
    with pytest.raises(LmforgeError, match=r"^train.init_from=.*opus-mt' is not a decoder language model$"):
        lmforge.plan(overrides=["--data.input=x.txt", f"--train.init_from={tmp_path / 'opus-mt'}"])
    gpt = GPT(GPT2)
    tiny_bpe(tmp_path)
    write_model_dir(
        tmp_path / "gpt", gpt.config, gpt.state_dict(), Tokenizer.load(tmp_path / "tokenizer.json")
    )
    with pytest.raises(
        LmforgeError, match=r"^train.init_from=.*gpt' is not an encoder-decoder \(translation\)$"
    ):
        lmforge.plan(overrides=[*args[:2], f"--train.init_from={tmp_path / 'gpt'}"])


def test_a_lora_run_as_init_from_is_planned_as_the_model_it_merges_into(tmp_path: Path) -> None:
    """train takes a LoRA run as train.init_from (its adapters merged in), so plan does too: a
    classifier on a LoRA run's model, measured by a real run to the byte, the same plan as from
    the merged copy (plan told to merge first)."""
    from conftest import make_text
    from hf_helpers import make_hf_model

    from lmforge.formats.hf_files import import_hf

    make_hf_model("llama", tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "base")
    (tmp_path / "text.txt").write_text(make_text(lines=200))
    lora_run = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={tmp_path / 'base'}",
                "--lora.enabled=true", "--train.max_steps=2", "--train.batch_size=4", "--train.dtype=fp32",
                "--train.eval_interval=1000", "--train.eval_batches=1"]  # fmt: skip
    lmforge.train(overrides=lora_run, out=tmp_path / "lora", quiet=True)
    lmforge.merge_lora(tmp_path / "lora", out=tmp_path / "merged")
    data = _data(tmp_path / "train.jsonl", n=80)
    args = ["--data.task=classification", f"--data.input={data}", "--data.labels=negative,positive",
            "--train.batch_size=8", "--data.max_len=24", "--train.dtype=fp32"]  # fmt: skip
    result = _plan_run([*args, f"--train.init_from={tmp_path / 'lora'}"])
    merged = lmforge.plan(overrides=[*args, f"--train.init_from={tmp_path / 'merged'}"])
    assert result["memory_per_rank"] == merged["memory_per_rank"]
    assert result["parameters"] == merged["parameters"] and result["model"] == merged["model"]


@pytest.mark.parametrize("task", ["lm", "classification"])
def test_an_init_from_with_missing_or_cut_weights_is_refused_as_train_refuses_it(
    tmp_path: Path, task: str
) -> None:
    """plan read only config.json, so it planned a run that train then refused at once."""
    tok = Tokenizer.train_char(["abcdefgh ."])
    net = GPT(ModelConfig(**{**SMALL, "vocab_size": tok.vocab_size}))
    base = tmp_path / "base"
    write_model_dir(base, net.config, net.state_dict(), tok)
    data = _data(tmp_path / "train.jsonl", n=40)
    args = [f"--train.init_from={base}", "--train.dtype=fp32", "--train.batch_size=4"]
    if task == "classification":
        args += ["--data.task=classification", f"--data.input={data}", "--data.labels=negative,positive"]
    else:
        args += [f"--data.input={data}"]
    lmforge.plan(overrides=args)  # whole: planned
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(LmforgeError, match=rf"^{weights}: unreadable safetensors file \("):
        lmforge.plan(overrides=args)
    weights.unlink()
    with pytest.raises(LmforgeError, match=rf"^{base}: no weights \(model\.safetensors, an index's shards"):
        lmforge.plan(overrides=args)


@pytest.mark.parametrize("task", ["lm", "classification"])
def test_a_model_key_that_differs_from_init_from_is_refused_as_train_refuses_it(
    tmp_path: Path, task: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan planned train.init_from's model (2 layers) under --model.n_layer=6, exit 0, no note,
    where train refuses the key in one line; a recipe's key under a command line's train.init_from
    gives way, with train's note."""
    tok = Tokenizer.train_char(["abcdefgh ."])
    net = GPT(ModelConfig(**{**SMALL, "vocab_size": tok.vocab_size}))
    base = tmp_path / "base"
    write_model_dir(base, net.config, net.state_dict(), tok)
    data = _data(tmp_path / "train.jsonl", n=40)
    args = [f"--data.input={data}", "--train.dtype=fp32", "--train.batch_size=4", "--train.max_steps=1"]
    if task == "classification":
        args += ["--data.task=classification", "--data.labels=negative,positive"]
    init = f"--train.init_from={base}"
    assert lmforge.plan(overrides=[*args, init, "--model.n_layer=2"])["model"]["n_layer"] == 2  # the same
    with pytest.raises(LmforgeError) as trained:
        lmforge.train(overrides=[*args, init, "--model.n_layer=6"], out=tmp_path / "run", quiet=True)
    with pytest.raises(LmforgeError) as planned:
        lmforge.plan(overrides=[*args, init, "--model.n_layer=6"])
    assert str(planned.value) == str(trained.value)
    assert str(planned.value).startswith("model.n_layer=6 (on the command line) differs from the 2 of")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[model]\nn_layer = 6\n")
    capsys.readouterr()
    assert lmforge.plan(recipe, [*args, init])["model"]["n_layer"] == 2
    note = f"lmforge: note: train.init_from={str(base)!r} (on the command line) brings its own architecture"
    assert note in capsys.readouterr().err
