"""LoRA: adapters on a tiny random Llama (saved by transformers, loaded by lmforge), checked against
PEFT as the reference: the export loads with peft.PeftModel.from_pretrained on the exported base
with the same logits; merge and unmerge are exact; only the adapters train; checkpoints hold only
the adapters and name their base; kill -9 then --resume gives the same losses; DDP and ZeRO-2 give
the local engine's losses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_text
from hf_helpers import VOCAB, make_hf_model
from run_helpers import kill_mid_run
from safetensors.torch import load_file, save_file

from lmforge.config import LoraConfig, TrainConfig, load_config
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.formats.peft import load_adapted, merge_lora
from lmforge.model import lora
from lmforge.train.loop import train
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import build_optimizer

ALL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random Llama (grouped-query attention) as transformers saves it, imported by lmforge,
    and a small text corpus."""
    root = tmp_path_factory.mktemp("lora")
    make_hf_model("llama", root / "hf")
    import_hf(root / "hf", root / "base")
    (root / "text.txt").write_text(make_text(lines=400))
    return {"root": root, "hf": root / "hf", "base": root / "base", "text": root / "text.txt"}


def recipe(base: dict[str, Path], steps: int, *more: str) -> list[str]:
    return [
        f"--data.input={base['text']}",
        f"--train.init_from={base['base']}",
        "--lora.enabled=true",
        f"--lora.targets={ALL}",
        f"--train.max_steps={steps}",
        "--train.batch_size=4",
        "--train.dtype=fp32",
        "--train.log_interval=1",
        "--train.eval_interval=1000",
        "--train.eval_batches=1",
        "--train.lr=1e-2",
        "--train.warmup_steps=0",
        *more,
    ]


@pytest.fixture(scope="module")
def run(base: dict[str, Path]) -> Path:
    out = base["root"] / "run"
    train(overrides=recipe(base, 6, "--train.checkpoint_interval=3"), out=out, quiet=True)
    return out


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return (out[0] if isinstance(out, tuple) else out).float()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--lora.rank=0", "lora.rank=0 must be >= 1"),
        ("--lora.targets=q_proj,qq_proj", "lora.targets: unknown module 'qq_proj'"),
        ("--lora.alpha=0", "lora.alpha=0.0 must be > 0"),
        ("--lora.dropout=1", "lora.dropout=1.0 must be in [0, 1)"),
        ("--train.init_from=", "lora.enabled needs train.init_from"),
        ("--engine.zero_stage=3", "does not run on DeepSpeed ZeRO-3"),
    ],
)
def test_config_validation_is_one_line(override: str, message: str) -> None:
    args = ["--data.input=x", "--train.init_from=m", "--lora.enabled=true", "--engine.name=deepspeed"]
    with pytest.raises(LmforgeError, match=re.escape(message)) as e:
        load_config(None, [*args, override])
    assert "\n" not in str(e.value)


def test_a_target_the_model_lacks_is_named(base: dict[str, Path]) -> None:
    model, _ = load_model(base["base"])
    with pytest.raises(LmforgeError, match="'gate_proj' matches no module"):
        gpt2_like = torch.nn.ModuleDict({"attn": torch.nn.Module()})
        gpt2_like.attn.qkv = torch.nn.Linear(4, 12)
        lora.inject(gpt2_like, LoraConfig(targets="gate_proj"))
    lora.inject(model, LoraConfig(targets="q_proj"))  # a Llama has it


def test_a_wrong_target_or_rank_is_refused_before_the_data_is_prepared(
    base: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """They were refused after the corpus had been tokenized (a GPT-2 without gate_proj, a rank
    above a projection's width), on the HF directory and on its import alike."""
    for source in (base["hf"], base["base"]):
        for override, error in (("--lora.targets=c_attn", "unknown module 'c_attn'"),
                                ("--lora.rank=4096", r"lora\.rank=4096 is above the full rank")):  # fmt: skip
            args = [*recipe(base, 1), f"--train.init_from={source}", override]
            with pytest.raises(LmforgeError, match=error):
                train(overrides=args, out=tmp_path / "run")
            said = capsys.readouterr()
            assert "preparing" not in said.out + said.err and not (tmp_path / "run").exists()


def test_injected_model_starts_as_its_base_and_only_adapters_train(base: dict[str, Path]) -> None:
    model, _ = load_model(base["base"])
    ids = torch.randint(0, VOCAB, (2, 12))
    before = _logits(model, ids)
    frozen = {k: v.clone() for k, v in model.state_dict().items()}
    lora.inject(model.train(), LoraConfig(targets=ALL, rank=4))
    assert torch.equal(_logits(model.eval(), ids), before)  # B starts at zero
    trainable = lora.trainable_names(model)
    assert trainable and all(".lora_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".lora_" not in n)
    qkv = model.blocks[0].attn.qkv
    assert set(qkv.lora_A) == {"q", "k", "v"} and qkv.lora_B["k"].shape == (32, 4)  # 2 kv heads of 16
    optimizer = build_optimizer(model, TrainConfig(lr=1e-2))
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert held == {id(p) for n, p in model.named_parameters() if p.requires_grad}
    model.train()
    out = model(ids)
    (out[0] if isinstance(out, tuple) else out).float().pow(2).mean().backward()
    optimizer.step()
    state = model.state_dict()
    for name, tensor in frozen.items():
        assert torch.equal(state[name], tensor), name  # the base is untouched
    assert all(m.lora_B["q"].abs().sum() > 0 for m in lora.lora_modules(model).values() if "q" in m.lora_B)


def test_merge_and_unmerge_are_exact(base: dict[str, Path]) -> None:
    model, _ = load_model(base["base"])
    lora.inject(model, LoraConfig(targets="k_proj,o_proj,up_proj", rank=4, alpha=8))
    with torch.no_grad():
        for module in lora.lora_modules(model).values():
            for b in module.lora_B.values():
                b.normal_(0, 0.2)
    weights = {k: v.clone() for k, v in model.state_dict().items() if ".lora_" not in k}
    ids = torch.randint(0, VOCAB, (2, 12))
    adapted = _logits(model, ids)
    lora.merge(model)
    assert (_logits(model, ids) - adapted).abs().max() < 1e-4
    assert not torch.equal(model.blocks[0].attn.qkv.weight, weights["blocks.0.attn.qkv.weight"])
    assert torch.equal(model.blocks[0].attn.qkv.weight[:64], weights["blocks.0.attn.qkv.weight"][:64])  # q
    lora.unmerge(model)
    for name, tensor in weights.items():
        assert (model.state_dict()[name] - tensor).abs().max() < 1e-6, name
    assert (_logits(model, ids) - adapted).abs().max() < 1e-5
    lora.strip(model)
    assert not lora.lora_modules(model) and (_logits(model, ids) - adapted).abs().max() < 1e-4


def test_checkpoints_hold_the_adapters_and_name_their_base(run: Path, base: dict[str, Path]) -> None:
    for directory in (run / "checkpoints" / "step_00000006", run / "model"):
        names = list(load_file(str(directory / "model.safetensors")))
        assert names and all(".lora_" in n for n in names), directory
        meta = json.loads((directory / "lora.json").read_text())
        assert meta["base"]["path"] == str(base["base"].resolve())
        assert set(meta["base"]["sha256"]) == {"config.json", "model.safetensors"}
    moments = load_file(str(run / "checkpoints" / "step_00000006" / "optimizer.safetensors"))
    assert all(".lora_" in n for n in moments if n != "step")
    summary = json.loads((run / "summary.json").read_text())
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 5
    # only adapters have gradients: fp32 bytes of the trainable parameters, not of the whole model
    assert summary["memory_per_rank"]["grads"] == 4 * summary["trainable_parameters"]


def test_peft_loads_the_export_with_the_same_logits(run: Path, base: dict[str, Path]) -> None:
    peft = pytest.importorskip("peft")
    transformers = pytest.importorskip("transformers")
    root = base["root"]
    export_hf(run, root / "adapter")
    export_hf(base["base"], root / "base-hf")
    with pytest.raises(
        LmforgeError,
        match=r"holds an earlier export output with files this one would not write \(config.json",
    ):
        export_hf(run, root / "base-hf")  # an adapter over a whole model, both export's
    assert {p.name for p in (root / "adapter").iterdir()} == {
        ".lmforge-output",
        "adapter_config.json",
        "adapter_model.safetensors",
    }
    keys = load_file(str(root / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight" in keys
    hf = transformers.AutoModelForCausalLM.from_pretrained(root / "base-hf", dtype=torch.float32)
    reference = peft.PeftModel.from_pretrained(hf.eval(), root / "adapter").eval()
    model, _, _ = load_adapted(run)
    ids = torch.randint(0, VOCAB, (2, 16))
    ours = _logits(model, ids)
    theirs = reference(ids).logits
    assert (ours - theirs).abs().max() < 1e-4
    assert (ours - _logits(load_model(base["base"])[0], ids)).abs().max() > 1e-3  # the adapters matter
    merged = reference.merge_and_unload()
    merge_lora(run, root / "merged")
    assert (_logits(load_model(root / "merged")[0], ids) - merged(ids).logits).abs().max() < 1e-4
    merge_lora(run, root / "merged")  # its own earlier output: replaced
    # the adapters' own base, alike in its files, is no output of merge-lora: it stays
    before = (base["base"] / "model.safetensors").read_bytes()
    with pytest.raises(LmforgeError, match=r"base: the output folder is the input .*; give another --out"):
        merge_lora(run, base["base"])
    assert (base["base"] / "model.safetensors").read_bytes() == before
    # generate, eval, pipelines: load_model of the run itself gives the merged model
    assert (_logits(load_model(run)[0], ids) - merged(ids).logits).abs().max() < 1e-4
    # a PEFT adapter is read merged, by import: beside a model (transformers applies it; lmforge
    # loaded the model bare) and alone, loading it is a line saying so, for every verb
    beside = root / "beside"
    shutil.copytree(root / "base-hf", beside)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(root / "adapter" / name, beside)
    for folder in (beside, root / "adapter"):
        with pytest.raises(
            LmforgeError, match=r"holds a PEFT adapter \(adapter_config.json\), which lmforge"
        ):
            load_model(folder)
    # the export's base_model_name_or_path is the run's base, an lmforge folder: exported to
    # HF names, merged, imported
    import_hf(root / "adapter", root / "imported")
    assert (_logits(load_model(root / "imported")[0], ids) - merged(ids).logits).abs().max() < 1e-4


def test_resume_switching_lora_off_names_only_the_keys_given(run: Path) -> None:
    """--lora.enabled=false resets the run's [lora] keys to their defaults (config/files.py); the
    refusal named those too, lora.targets at its default as if the user had changed it (until
    2026-12-07)."""
    for extra, named in (([], ""), (["--lora.rank=2"], "; lora.rank=2 (the run has lora.rank=8)")):
        with pytest.raises(LmforgeError, match="--resume cannot change") as e:
            train(resume=run, overrides=["--lora.enabled=false", *extra], quiet=True)
        assert f"cannot change lora.enabled=False (the run has lora.enabled=True){named}; see" in str(e.value)
        assert "lora.targets" not in str(e.value)


def test_resume_and_export_refuse_another_base(base: dict[str, Path], tmp_path: Path) -> None:
    own = tmp_path / "base"
    import_hf(base["hf"], own)
    args = [*recipe(base, 4, "--train.checkpoint_interval=2"), f"--train.init_from={own}"]
    train(overrides=[*args, "--train.max_steps=2"], out=tmp_path / "run", quiet=True)
    weights = load_file(str(own / "model.safetensors"))
    weights["wte.weight"] = weights["wte.weight"] + 1e-3
    save_file(weights, str(own / "model.safetensors"))
    with pytest.raises(LmforgeError, match="model.safetensors sha256 is not the one recorded"):
        train(resume=tmp_path / "run", overrides=["--train.max_steps=4"], quiet=True)
    with pytest.raises(LmforgeError, match="the adapters belong to the other base"):
        merge_lora(tmp_path / "run", tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_a_trained_tied_head_is_the_one_loaded_and_merged(
    base: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """SmolLM2's lm_head is its token embedding. With lora.also_train=lm_head the run saves the
    trained tensor once (wte.weight); loading put the base's back through the tied name
    (lm_head.weight), unsaid: a helper's SmolLM2 logits were 12.9 apart from the model as trained."""
    make_hf_model("qwen2", tmp_path / "hf")  # tie_word_embeddings
    tied = import_hf(tmp_path / "hf", tmp_path / "base")
    args = [
        *recipe(base, 2),
        f"--train.init_from={tied}",
        "--lora.also_train=lm_head",
        "--lora.targets=q_proj",
    ]
    train(overrides=args, out=tmp_path / "run")
    said = capsys.readouterr()
    assert "lora    rank 8, alpha 16 on q_proj, lm_head trained whole:" in said.out + said.err
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    head = next(saved[k] for k in ("wte.weight", "lm_head.weight") if k in saved)
    assert not torch.equal(head, load_model(tied)[0].wte.weight)  # it trained
    model, _, _ = load_adapted(tmp_path / "run")
    assert torch.equal(model.wte.weight, head) and model.lm_head.weight is model.wte.weight
    merged, _ = load_model(merge_lora(tmp_path / "run", tmp_path / "merged"))
    assert torch.equal(merged.wte.weight, head) and torch.equal(merged.lm_head.weight, head)


def test_a_few_adapters_memory_is_not_shown_as_zero() -> None:
    """8,192 adapters' optimizer state on ZeRO-2 at 2 ranks printed "0.0 MiB" (a helper)."""
    from lmforge.train.report import memory_line

    assert memory_line({"params": 3 * 2**20, "grads": 0, "optimizer": 51_200}) == (
        "params 3.0 MiB, grads 0.0 MiB, optimizer state 50.0 KiB"
    )


def _lmforge(*args: str, cwd: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "lmforge", *args, "--engine.timeout_s=60"],
                            capture_output=True, text=True, cwd=cwd, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


# slow (make test-all): kill -9 and resume is `make test`'s for the language model and translation
# (test_resume.py, test_tasks_on_engines.py); a LoRA run's resume is checked in process below
# (test_a_translation_lora_run_trains_cross_attention_and_merges) and by the refusals above
@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(base: dict[str, Path], tmp_path: Path) -> None:
    """Adapter dropout on, so the RNG must come back too; the adapters and their moments from the
    adapter-only checkpoint, the frozen base from train.init_from."""
    args = recipe(
        base, 100, "--train.checkpoint_interval=20", "--lora.dropout=0.1", "--lora.targets=q_proj,v_proj"
    )
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    train(overrides=args, out=whole, quiet=True)
    cmd = [sys.executable, "-m", "lmforge", "train", "--quiet", *args, "--out", str(killed)]
    assert 20 <= kill_mid_run(cmd, killed, cwd=tmp_path) < 100
    _lmforge("train", "--quiet", "--resume", str(killed), cwd=tmp_path)
    expected = {r["step"]: r for r in read_metrics(whole)}
    got = {r["step"]: r for r in read_metrics(killed)}
    assert sorted(got) == sorted(expected)
    for step, record in expected.items():
        assert got[step]["loss"] == record["loss"], step


ENGINES = {"ddp": ["--engine.name=ddp"], "zero2": ["--engine.name=deepspeed", "--engine.zero_stage=2"]}


@pytest.mark.parametrize(  # `make test` runs ZeRO-2; DDP is slow (test_tasks_on_engines.py says why)
    "engine", [pytest.param(e, marks=() if e == "zero2" else pytest.mark.slow) for e in ENGINES]
)
def test_two_ranks_match_local(base: dict[str, Path], tmp_path: Path, engine: str) -> None:
    """Global batch 4 = 2 ranks x 1 x 2 accumulation against 4 in one pass, adapters on every
    target; the adapters they export agree too."""
    if engine == "zero2":
        pytest.importorskip("deepspeed")
    args = recipe(base, 6, "--train.micro_batch_size=1", "--train.checkpoint_interval=3")
    train(overrides=args, out=tmp_path / "local", quiet=True)
    launch = ["launch", "--nproc=2", "train", "--quiet", *args, *ENGINES[engine]]
    _lmforge(*launch, "--out", str(tmp_path / engine), cwd=tmp_path)
    local, other = read_metrics(tmp_path / "local"), read_metrics(tmp_path / engine)
    assert [r["step"] for r in other] == list(range(1, 7))
    for a, b in zip(local, other, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), a["step"]
    ours = load_file(str(tmp_path / engine / "model" / "model.safetensors"))
    reference = load_file(str(tmp_path / "local" / "model" / "model.safetensors"))
    assert sorted(ours) == sorted(reference)
    # AdamW moves each weight by up to lr (1e-2) a step whatever its gradient's size, so summation
    # order can move a weight whose gradient is near 0 by ~1e-5 in 6 steps: on an AVX-512 Xeon, ZeRO-2
    # left 1 of 14,848 adapter weights 1.6e-5 from local. atol is 1% of one step.
    for name, tensor in reference.items():
        assert torch.allclose(ours[name], tensor, rtol=1e-4, atol=1e-4), name


def test_a_new_task_head_must_train_beside_the_adapters() -> None:
    """Adapters-only training would leave a task's new head as drawn (PEFT's task types save it)."""
    from lmforge.model.lora import require_trained

    with pytest.raises(
        LmforgeError, match=r"the answer-span head \(qa_outputs\) is new .*--lora\.also_train=qa_outputs"
    ):
        require_trained(LoraConfig(enabled=True), "qa_outputs", "the answer-span head (qa_outputs)")
    require_trained(LoraConfig(enabled=True, also_train="blocks.0, qa_outputs"), "qa_outputs", "the head")
    require_trained(LoraConfig(enabled=False), "head", "the head")


def test_peft_export_refuses_a_base_transformers_cannot_load(base: dict[str, Path], tmp_path: Path) -> None:
    """A rotary GPT with GELU and LayerNorm has no transformers class, so a PEFT adapter of it
    would name Llama modules of a model nobody can load: refused, nothing written."""
    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.model.gpt import GPT
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char([make_text(lines=40)])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, pos="rope", vocab_size=tok.vocab_size)
    gpt = GPT(config)
    write_model_dir(tmp_path / "rope-gelu", gpt.config, gpt.state_dict(), tok)
    args = recipe(base, 2, f"--train.init_from={tmp_path / 'rope-gelu'}", "--lora.targets=q_proj,v_proj")
    train(overrides=args, out=tmp_path / "run", quiet=True)
    refusal = r"no PEFT export, as its base has no transformers model: .*no Hugging Face equivalent"
    with pytest.raises(LmforgeError, match=refusal):
        export_hf(tmp_path / "run", tmp_path / "peft")  # lmforge export: a LoRA run exports for PEFT
    assert not (tmp_path / "peft").exists()


def test_peft_export_refuses_an_adapter_trained_on_a_lora_run(
    run: Path, base: dict[str, Path], tmp_path: Path
) -> None:
    """LoRA trained on top of a LoRA run wrote a PEFT adapter whose base_model_name_or_path was
    the first run's model, which PEFT reads as another adapter; imported on the original base (what
    lmforge's own import advised) its logits were 3.6 off the run's. Refused; merge-lora holds it."""
    train(overrides=recipe(base, 2, f"--train.init_from={run}"), out=tmp_path / "chain", quiet=True)
    with pytest.raises(LmforgeError, match=r"itself a LoRA run's model .*\(lmforge merge-lora"):
        export_hf(tmp_path / "chain", tmp_path / "peft")
    assert not (tmp_path / "peft").exists()
    merge_lora(tmp_path / "chain", tmp_path / "merged")
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    chain, merged = load_model(tmp_path / "chain")[0], load_model(tmp_path / "merged")[0]
    assert torch.allclose(_logits(chain, ids), _logits(merged, ids), atol=1e-4)


def _marian_pair_file(path: Path) -> Path:
    from marian_helpers import pairs

    short = [(en, fr) for en, fr in pairs(600) if len(en) < 80 and len(fr) < 80][:120]
    path.write_text(
        "".join(json.dumps({"doc": f"d{i}", "en": en, "fr": fr}) + "\n" for i, (en, fr) in enumerate(short))
    )
    return path


def test_an_encoder_decoder_adapts_cross_attention_as_peft_does_on_marian(tmp_path: Path) -> None:
    """q_proj,v_proj on a Marian reach the decoder's encoder_attn too in PEFT (a suffix match):
    lmforge puts the same pairs on cross.q and cross.kv's v rows, so with PEFT's adapters copied
    in, the logits are PEFT's."""
    peft = pytest.importorskip("peft")
    from marian_helpers import make_marian_model

    hf = make_marian_model(tmp_path / "hf")
    import_hf(tmp_path / "hf", tmp_path / "base")
    ours, _ = load_model(tmp_path / "base")
    lora.inject(ours, LoraConfig(enabled=True, rank=4, alpha=8, targets="q_proj,v_proj"))
    spec = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    reference = peft.get_peft_model(hf, spec).eval()
    assert lora.count(ours)[0] == reference.get_nb_trainable_parameters()[0]
    copied = 0
    for name, module in reference.named_modules():
        found = re.search(r"(encoder|decoder)\.layers\.(\d+)\.(self_attn|encoder_attn)\.(q|v)_proj$", name)
        if found is None:
            continue
        stack, layer, kind, proj = found.groups()
        path, rows = (
            ("attn.qkv", proj)
            if kind == "self_attn"
            else ("cross.q", "all")
            if proj == "q"
            else ("cross.kv", "v")
        )
        target = ours.get_submodule(f"{stack}.blocks.{layer}.{path}")
        with torch.no_grad():
            target.lora_A[rows].copy_(module.lora_A["default"].weight)
            target.lora_B[rows].copy_(module.lora_B["default"].weight)
        copied += 1
    assert copied == 12  # self q, v in 2 + 2 layers; cross q, v in the decoder's 2
    assert {"decoder.blocks.0.cross.q", "decoder.blocks.1.cross.kv"} <= set(lora.lora_modules(ours))
    src = torch.randint(0, hf.config.vocab_size - 1, (2, 7), generator=torch.Generator().manual_seed(0))
    tgt = torch.randint(0, hf.config.vocab_size - 1, (2, 5), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(input_ids=src, decoder_input_ids=tgt).logits
        got = ours.eval()(src, tgt)
    assert (got - expected).abs().max().item() < 1e-4


def test_a_translation_lora_run_trains_cross_attention_and_merges(tmp_path: Path) -> None:
    from marian_helpers import make_marian_model

    make_marian_model(tmp_path / "opus-mt", eos_bias=0.0)
    overrides = [
        f"--data.input={_marian_pair_file(tmp_path / 'pairs.jsonl')}",
        "--data.task=translation",
        f"--train.init_from={tmp_path / 'opus-mt'}",
        "--lora.enabled=true",
        "--train.max_steps=3",
        "--train.batch_size=8",
        "--train.dtype=fp32",
        "--train.lr=1e-2",
        "--train.warmup_steps=0",
        "--train.eval_interval=1000",
        "--train.eval_bleu_sentences=0",
    ]
    train(overrides=overrides, out=tmp_path / "run", quiet=True)
    saved = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert all(".lora_" in k for k in saved)
    assert saved["decoder.blocks.0.cross.q.lora_B.all"].abs().sum() > 0  # it trained
    assert saved["decoder.blocks.1.cross.kv.lora_B.v"].abs().sum() > 0
    merged = merge_lora(tmp_path / "run", tmp_path / "merged")
    model, _ = load_model(merged)
    base, _ = load_model(tmp_path / "opus-mt")
    assert not torch.equal(model.decoder.blocks[0].cross.q.weight, base.decoder.blocks[0].cross.q.weight)
    assert torch.equal(model.decoder.blocks[0].cross.proj.weight, base.decoder.blocks[0].cross.proj.weight)

    # adapters saved before q_proj/v_proj reached cross-attention (same lora.json, no cross.* tensors)
    # still load, as they were trained: on self-attention alone
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "run" / "model", old)
    save_file({k: v for k, v in saved.items() if ".cross." not in k}, str(old / "model.safetensors"))
    adapted, _, _ = load_adapted(old)
    assert not any(".cross." in path for path in lora.lora_modules(adapted))
    assert "decoder.blocks.0.attn.qkv" in lora.lora_modules(adapted)
    # ... and such a run resumes, training on without adding cross-attention adapters
    resumed = tmp_path / "old-run"
    shutil.copytree(tmp_path / "run", resumed)
    (last,) = sorted((resumed / "checkpoints").iterdir())[-1:]
    for name in ("model.safetensors", "optimizer.safetensors"):
        tensors = load_file(str(last / name))
        save_file({k: v for k, v in tensors.items() if ".cross." not in k}, str(last / name))
    (last / "manifest.json").unlink(missing_ok=True)  # the files changed on purpose
    train(resume=resumed, overrides=["--train.max_steps=5"], quiet=True)
    more = load_file(str(resumed / "model" / "model.safetensors"))
    assert not any(".cross." in k for k in more) and more.keys() == {k for k in saved if ".cross." not in k}


def test_merge_lora_never_writes_over_the_base_it_reads(
    base: dict[str, Path], run: Path, tmp_path: Path
) -> None:
    """Merge, train another round on the merged folder, merge again into that folder: merge-lora
    replaced its own earlier output, the second round's base, and the second run could no longer
    load (its base's sha256 changed)."""
    merged = merge_lora(run, tmp_path / "merged")
    again = {**base, "base": merged}
    train(overrides=recipe(again, 1), out=tmp_path / "round2", quiet=True)
    before = (merged / "model.safetensors").read_bytes()
    with pytest.raises(LmforgeError, match=r"merged.* (is|holds) .*input"):
        merge_lora(tmp_path / "round2", merged)
    assert (merged / "model.safetensors").read_bytes() == before
    load_adapted(tmp_path / "round2")  # its base is whole
