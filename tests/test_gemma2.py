"""Gemma 2 (`model_type: gemma2`, Gemma2ForCausalLM) checked against transformers (eager attention,
fp32) on tiny random models it writes, with soft caps small enough to bite (2 on the attention
scores, 5 on the logits) and the queries, keys and final norm scaled up so that they do: logits past
the sliding window, greedy tokens cached, uncached and in a left-padded batch, both config.json
spellings, export back, fine-tuning with transformers' capped loss, the attention maps `inspect`
records, the paths that apply the head themselves, ONNX, and what is refused (GGUF files:
tests/test_gguf_gemma2.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from hf_helpers import assert_same_weights, hf_greedy, load_whole
from test_gemma3 import gemma_tokenizer

import lmforge
from lmforge.config import ModelConfig
from lmforge.config.model_checks import check_model
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.tools import plan_model
from lmforge.tools.capture import capture
from lmforge.train.losses import lm_token_losses

transformers = pytest.importorskip("transformers")

WINDOW = 6
LAYERS = ["sliding_attention", "full_attention"] * 2  # Gemma2Config's default: every 2nd layer full
PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3, 71, 18, 90], [40, 41, 17]]  # both longer than the window with 20 new
CAPS = {"attn_logit_softcapping": 2.0, "final_logit_softcapping": 5.0}


def bite(hf: torch.nn.Module) -> torch.nn.Module:
    """Norms off 0, queries and keys x4 (scores past the attention cap), the final norm's scale
    x10 (logits past the logit cap; the argmax unchanged); in eval."""
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(4.0)
        hf.model.norm.weight.add_(9.0)
    return hf.eval()


def make_gemma2(directory: Path, seed: int = 0, **changes: Any) -> torch.nn.Module:
    """A random Gemma2ForCausalLM (layer_types left to the class) saved with a Gemma-style tokenizer."""
    directory.mkdir(parents=True)
    shape = dict(vocab_size=gemma_tokenizer(directory), hidden_size=64, intermediate_size=96,
                 num_hidden_layers=len(LAYERS), num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                 query_pre_attn_scalar=24, max_position_embeddings=64, sliding_window=WINDOW,
                 rope_parameters={"rope_type": "default", "rope_theta": 100.0}, eos_token_id=1,
                 bos_token_id=2, pad_token_id=0, attn_implementation="eager", **CAPS)  # fmt: skip
    torch.manual_seed(seed)
    hf = bite(transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**(shape | changes))))
    hf.save_pretrained(directory)
    return hf


def _ids(vocab: int, length: int = 40) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(1))


def _max_difference(ours: torch.nn.Module, hf: torch.nn.Module, length: int = 40) -> float:
    ids = _ids(ours.config.vocab_size, length)
    with torch.no_grad():
        return (ours(ids) - hf(input_ids=ids).logits).abs().max().item()


def _check_parity(hf: torch.nn.Module, ours: GPT) -> None:
    """Logits within 1e-4 over 40 tokens (window 6); 20 greedy tokens cached as a left-padded
    batch of two, and cached and uncached alone."""
    assert _max_difference(ours, hf) <= 1e-4
    theirs = [hf_greedy(hf, p, 20) for p in PROMPTS]
    assert min(len(set(t)) for t in theirs) > 3  # not one token repeated: the test can tell models apart
    assert generate_ids(ours, PROMPTS, 20, temperature=0.0, eos_id=None) == theirs
    assert generate_ids(ours, PROMPTS[:1], 20, temperature=0.0, eos_id=None) == theirs[:1]
    assert generate_ids(ours, PROMPTS[1:], 20, temperature=0.0, eos_id=None, use_cache=False) == theirs[1:]


def _without(model: GPT, **changes: Any) -> GPT:
    other = GPT(dataclasses.replace(model.config, **changes))
    other.load_state_dict(model.state_dict())
    return other.eval()


def test_parity_import_export_roundtrip(tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_gemma2(hf_dir)
    model, _ = lmforge.load(hf_dir)
    c = model.config
    assert (c.sliding_window, c.sliding_window_pattern, c.rope_local_theta, c.rope_theta) == (
        WINDOW,
        2,
        0,
        100,
    )
    assert (c.attn_softcap, c.logit_softcap, c.attn_scale_dim, c.mlp, c.head_dim) == (
        2,
        5,
        24,
        "geglu_tanh",
        32,
    )
    assert c.norm_unit_offset and c.sandwich_norm and c.scale_embedding and c.tie_embeddings and not c.qk_norm
    assert [b.attn.window for b in model.blocks] == [WINDOW, 0, WINDOW, 0]
    _check_parity(hf, model)
    # each cap and the window matter over these tokens: without one, the logits part from transformers'
    for change in ({"attn_softcap": 0.0}, {"logit_softcap": 0.0}, {"sliding_window": c.block_size}):
        assert _max_difference(_without(model, **change), hf) > 0.1, change

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    assert imported.config == c
    export_hf(ours_dir, back_dir)
    raw = json.loads((back_dir / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"]) == ("gemma2", ["Gemma2ForCausalLM"])
    assert (raw["layer_types"], raw["query_pre_attn_scalar"], raw["sliding_window"]) == (LAYERS, 24, WINDOW)
    assert (raw["attn_logit_softcapping"], raw["final_logit_softcapping"]) == (2.0, 5.0)
    back = load_whole(transformers.AutoModelForCausalLM, back_dir)
    assert type(back) is transformers.Gemma2ForCausalLM
    assert back.config.rope_parameters == hf.config.rope_parameters
    _check_parity(back, imported)
    assert_same_weights(hf_dir, back_dir)


def test_transformers_4_spelling_class_defaults_and_null_caps(tmp_path: Path) -> None:
    """Hub files written before transformers 5: no layer_types (even layers slide), rope_theta
    rather than rope_parameters. Absent caps are Gemma2Config's 50 and 30; null ones no cap."""
    hf_dir = tmp_path / "hf"
    hf = make_gemma2(hf_dir)
    new = lmforge.load(hf_dir)[0].config
    raw = json.loads((hf_dir / "config.json").read_text())
    old = {k: v for k, v in raw.items() if k not in ("layer_types", "rope_parameters")} | {
        "rope_theta": 100.0
    }
    (hf_dir / "config.json").write_text(json.dumps(old))
    assert transformers.AutoConfig.from_pretrained(hf_dir).layer_types == LAYERS
    model, _ = lmforge.load(hf_dir)
    assert model.config == new
    assert _max_difference(model, hf) <= 1e-4
    bare = {k: v for k, v in old.items() if k not in (*CAPS, "rope_theta", "sliding_window")}
    (hf_dir / "config.json").write_text(json.dumps(bare))
    c = lmforge.load(hf_dir)[0].config
    assert (c.attn_softcap, c.logit_softcap, c.rope_theta, c.sliding_window) == (50.0, 30.0, 1e4, 4096)
    (hf_dir / "config.json").write_text(json.dumps(old | dict.fromkeys(CAPS)))
    nulls = lmforge.load(hf_dir)[0]
    assert (nulls.config.attn_softcap, nulls.config.logit_softcap) == (0.0, 0.0)
    theirs = load_whole(transformers.AutoModelForCausalLM, hf_dir)  # null caps in transformers too
    assert _max_difference(nulls, theirs) <= 1e-4


def test_the_loss_and_fine_tunes_use_the_capped_logits(tmp_path: Path) -> None:
    """lmforge's training loss is transformers' (labels given) on the capped logits; a few steps of
    the whole model and of LoRA adapters train, and each exports with lmforge's logits."""
    hf_dir = tmp_path / "hf"
    hf = make_gemma2(hf_dir)
    model, _ = lmforge.load(hf_dir)
    ids = _ids(model.config.vocab_size, 24)
    with torch.no_grad():
        theirs = hf(input_ids=ids, labels=ids).loss.item()
        ours = lm_token_losses(model, ids[:, :-1], ids[:, 1:]).mean().item()
        uncapped = lm_token_losses(_without(model, logit_softcap=0.0), ids[:, :-1], ids[:, 1:]).mean().item()
    assert abs(ours - theirs) <= 1e-4 and abs(uncapped - theirs) > 0.1

    (tmp_path / "text.txt").write_text(make_text(lines=200))
    common = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={hf_dir}", "--train.max_steps=3"]
    common += ["--train.batch_size=2", "--train.eval_batches=1", "--train.dtype=fp32", "--data.seq_len=16"]
    lmforge.train(None, [*common, "--train.lr=1e-3"], out=tmp_path / "full", quiet=True)
    tuned, _ = lmforge.load(tmp_path / "full")
    assert tuned.config == model.config
    assert not torch.equal(tuned.blocks[0].ln_attn_out.weight, model.blocks[0].ln_attn_out.weight)
    export_hf(tmp_path / "full", tmp_path / "back")
    assert _max_difference(tuned, load_whole(transformers.AutoModelForCausalLM, tmp_path / "back")) <= 1e-4
    lora = [*common, "--lora.enabled=true", "--lora.targets=q_proj,v_proj,o_proj,gate_proj,down_proj"]
    lmforge.train(
        None, [*lora, "--train.lr=5e-2", "--train.warmup_steps=0"], out=tmp_path / "lora", quiet=True
    )
    adapted, _ = lmforge.load(tmp_path / "lora")
    assert _max_difference(adapted, hf) > 1e-2  # it trained
    peft = pytest.importorskip("peft")
    export_hf(tmp_path / "lora", tmp_path / "adapter")  # PEFT's layout, on Gemma's module names
    base = load_whole(transformers.AutoModelForCausalLM, hf_dir)
    assert _max_difference(adapted, peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()) <= 1e-4


def test_inspects_attention_maps_are_transformers_capped_probabilities(tmp_path: Path) -> None:
    hf = make_gemma2(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    ids = PROMPTS[0] * 2
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor([ids]), output_attentions=True).attentions
    maps = capture(model, ids).attention["self"]  # (L, nh, T, T)
    assert (maps - torch.cat(theirs)).abs().max().item() <= 1e-5


def test_compiled_decoding_and_onnx(tmp_path: Path) -> None:
    """The compiled step caps as eager decoding does, past the window too, with transformers'
    greedy tokens and no step falling back to eager; ONNX exports a Gemma 2 whose layers are all full
    with transformers' logits (windowed ones: tests/test_onnx_windows.py)."""
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.compiled_decode import compiled_step
    from lmforge.inference.onnx_runner import OnnxModel

    windowed = make_gemma2(tmp_path / "windowed")
    model, _ = lmforge.load(tmp_path / "windowed")
    assert generate_ids(model, [PROMPTS[1]], 20, temperature=0.0, compile=True) == [
        hf_greedy(windowed, PROMPTS[1], 20)
    ]
    assert compiled_step(model).eager_steps == 0
    hf = make_gemma2(tmp_path / "hf", layer_types=["full_attention"] * len(LAYERS))
    model, _ = lmforge.load(tmp_path / "hf")
    onnx = OnnxModel(export_onnx(tmp_path / "hf", tmp_path / "onnx"))
    ids = _ids(model.config.vocab_size, 12)
    got = onnx.call("model", ids.numpy(), torch.ones_like(ids).numpy(), *onnx.empty_past(2))[0]
    with torch.no_grad():
        assert abs(torch.from_numpy(got) - hf(input_ids=ids).logits).max().item() <= 1e-4


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (
            {"attn_logit_softcapping": 0},
            r"config key 'attn_logit_softcapping' must be a number > 0 or null, not 0$",
        ),
        (
            {"final_logit_softcapping": "30"},
            r"config key 'final_logit_softcapping' must be a number > 0 or null, not '30'$",
        ),
        ({"use_bidirectional_attention": True}, r"unsupported use_bidirectional_attention=true \("),
        ({"hidden_activation": "gelu"}, r"unsupported hidden_activation='gelu'"),
        ({"layer_types": ["full_attention", *LAYERS[1:]]}, r"unsupported layer_types \['full_attention', "),
        ({"sliding_window": 0}, r"unsupported sliding_window=0 with sliding-window layers$"),
    ],
)
def test_what_lmforge_does_not_compute_is_refused_in_one_line(
    change: dict, error: str, tmp_path: Path
) -> None:
    hf_dir = tmp_path / "hf"
    make_gemma2(hf_dir)
    raw = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(raw | change))
    with pytest.raises(LmforgeError, match=r"^" + str(hf_dir / "config.json") + ": " + error):
        lmforge.load(hf_dir)


GEMMA2_LIKE = dict(
    pos="rope", mlp="geglu_tanh", bias=False, norm="rmsnorm", n_kv_head=2, head_dim=24, norm_unit_offset=True,
    sandwich_norm=True, scale_embedding=True, attn_scale_dim=16, sliding_window=4, sliding_window_pattern=2,
    attn_softcap=50.0, logit_softcap=30.0,
)  # fmt: skip


def test_a_recipe_with_the_caps_builds_what_the_plan_counts_and_exports_as_gemma2(tmp_path: Path) -> None:
    from lmforge.formats.directory import write_model_dir
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char(["abcdefgh"])
    c = ModelConfig(vocab_size=tok.vocab_size, n_layer=2, n_head=4, n_embd=32, block_size=16, **GEMMA2_LIKE)
    model = GPT(c)
    assert plan_model.count(c).params == sum(p.numel() for p in model.parameters())
    uncapped = dataclasses.replace(c, attn_softcap=0.0, logit_softcap=0.0)
    assert plan_model.count(c).flops_per_token == plan_model.count(uncapped).flops_per_token  # elementwise
    write_model_dir(tmp_path / "run", c, model.state_dict(), tok)
    export_hf(tmp_path / "run", tmp_path / "hf")
    back = load_whole(transformers.AutoModelForCausalLM, tmp_path / "hf")
    assert type(back) is transformers.Gemma2ForCausalLM
    assert _max_difference(model.eval(), back, 16) <= 1e-4
    # a cap makes a model Gemma's: a Llama-shaped one with a cap has no Hugging Face equivalent
    llama = ModelConfig(vocab_size=tok.vocab_size, pos="rope", mlp="swiglu", bias=False, norm="rmsnorm",
                        logit_softcap=30.0)  # fmt: skip
    write_model_dir(tmp_path / "llama", llama, GPT(llama).state_dict(), tok)
    with pytest.raises(
        LmforgeError, match=r"make it Gemma 2 \(gemma2\), which also needs model\.mlp='geglu_tanh'"
    ):
        export_hf(tmp_path / "llama", tmp_path / "no")
    assert not (tmp_path / "no").exists()
    # a dynamic-NTK Gemma would be written with its grown context as max_position_embeddings
    dynamic = dataclasses.replace(c, rope_type="dynamic", rope_factor=2.0, rope_original_context=8)
    write_model_dir(tmp_path / "dynamic", dynamic, model.state_dict(), tok)
    needs = r"which also needs model\.rope_type in default, linear, llama3, yarn"
    with pytest.raises(LmforgeError, match=needs):
        export_hf(tmp_path / "dynamic", tmp_path / "no")
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"attn_softcap": -1.0}, r"^model\.attn_softcap=-1\.0 must be a number >= 0 \(0: uncapped\)$"),
        (
            {"logit_softcap": float("nan")},
            r"^model\.logit_softcap=nan must be a number >= 0 \(0: uncapped\)$",
        ),
    ],
)
def test_bad_caps_are_one_line(change: dict, error: str) -> None:
    with pytest.raises(LmforgeError, match=error):
        check_model(ModelConfig(vocab_size=97, **change))


def test_a_seq2seq_and_an_encoder_refuse_the_caps() -> None:
    from lmforge.model.encoder import Encoder
    from lmforge.model.seq2seq import Seq2Seq

    with pytest.raises(LmforgeError, match=r"^model.attn_softcap=2.0 is not supported by the seq2seq model"):
        Seq2Seq(ModelConfig(vocab_size=97, arch="seq2seq", attn_softcap=2.0), pad_id=0)
    with pytest.raises(LmforgeError, match=r"^model.logit_softcap=2.0 is not supported by the encoder model"):
        Encoder(ModelConfig(vocab_size=97, logit_softcap=2.0))


def test_the_paths_that_apply_the_head_themselves_cap_its_logits(tmp_path: Path) -> None:
    """Serving's prefill and prompt log-probabilities, perplexity and inspect's logit lens run
    lm_head on hidden states of their own; each gives the forward's capped logits."""
    from lmforge.inference.batching import DecodeBatch, Sequence
    from lmforge.inference.perplexity import score
    from lmforge.server.prompt_logprobs import score_prompt
    from lmforge.tools.capture import unembedding

    make_gemma2(tmp_path / "hf")
    model, tokenizer = lmforge.load(tmp_path / "hf")
    ids = _ids(model.config.vocab_size, 20)[0]
    with torch.no_grad():
        logits = model(ids[None])[0]  # (T, vocab), capped
        nll = float(lm_token_losses(model, ids[None, :-1], ids[None, 1:]).double().sum())
        lens = unembedding(model)(capture(model, ids.tolist()).residual[-1])
    assert (lens - logits).abs().max().item() <= 1e-4
    assert abs(score(model, ids.tolist(), 20, 20).nll - nll) <= 1e-3
    batch = DecodeBatch(model)
    batch.add([Sequence(ids.tolist())])
    assert batch.logits is not None and (batch.logits[0] - logits[-1]).abs().max().item() <= 1e-4
    scored = [t.logprob for t in score_prompt(model, tokenizer, ids.tolist(), 0)[1:]]
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[1:, None])[:, 0]
    assert (torch.tensor(scored) - logp).abs().max().item() <= 1e-4
    assert logits.abs().max().item() < 5.0 < _without(model, logit_softcap=0.0)(ids[None]).abs().max().item()
