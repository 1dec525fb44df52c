"""Gemma 3's text models (`model_type: gemma3_text`, Gemma3ForCausalLM) checked against transformers
on tiny random models it writes: sliding-window layers with their own rotary base beside full ones
(prompts longer than the window), (1 + weight) norms, sandwich norms, GeGLU, the scaled embedding
and attention; logits, greedy tokens (cached, uncached, a left-padded batch), both config.json
spellings, export back, fine-tuning, the tokenizer and chat template, and the paths refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_text
from hf_helpers import assert_same_weights, hf_greedy, load_whole
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

import lmforge
from lmforge.config import ModelConfig
from lmforge.config.model_checks import check_model
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.chat import ChatSpec
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.tools import plan_model

transformers = pytest.importorskip("transformers")

WINDOW = 6
LAYERS = ["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"]
SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3, 71, 18, 90], [40, 41, 17]]  # both longer than the window with 20 new
# Gemma 3's chat template as its tokenizer_config.json gives it (images aside)
TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]"
    "['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}{%- else -%}{%- set"
    ' first_user_prefix = "" -%}{%- set loop_messages = messages -%}{%- endif -%}{%- for message in'
    " loop_messages -%}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{"
    ' raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}{%- endif'
    " -%}{%- if (message['role'] == 'assistant') -%}{%- set role = \"model\" -%}{%- else -%}{%- set role ="
    " message['role'] -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if"
    " loop.first else \"\") }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}{%- if"
    " add_generation_prompt -%}{{'<start_of_turn>model\n'}}{%- endif -%}"
)


def gemma_tokenizer(directory: Path) -> int:
    """A Gemma-style tokenizer.json (SentencePiece BPE: spaces as '▁', byte fallback to <0xNN>
    tokens, <bos> before every text) with its tokenizer_config.json; returns its size."""
    trained = HFTokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizers.Replace(" ", "▁")
    trainer = trainers.BpeTrainer(vocab_size=140, special_tokens=SPECIALS, show_progress=False)
    trained.train_from_iterator([make_text(lines=200)], trainer=trainer)
    learned = json.loads(trained.to_str())["model"]
    pieces = [t for t in sorted(learned["vocab"], key=learned["vocab"].get) if t not in SPECIALS]
    vocab = {t: i for i, t in enumerate([*SPECIALS, *(f"<0x{b:02X}>" for b in range(256)), *pieces])}
    hf = HFTokenizer(
        models.BPE(
            vocab, [tuple(m) for m in learned["merges"]], unk_token="<unk>", fuse_unk=True, byte_fallback=True
        )
    )
    hf.normalizer = normalizers.Replace(" ", "▁")
    hf.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    hf.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    hf.save(str(directory / "tokenizer.json"))
    named = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False, **named}
    config["chat_template"] = TEMPLATE
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return hf.get_vocab_size()


def make_gemma3(directory: Path, seed: int = 0, head: str = "ForCausalLM", **changes: Any) -> torch.nn.Module:
    """A random Gemma3ForCausalLM (or another Gemma3 `head` class) with its norms moved off 0, saved
    with a Gemma-style tokenizer; in eval."""
    directory.mkdir(parents=True)
    vocab = gemma_tokenizer(directory)
    shape = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": len(LAYERS),
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 32,  # 4 x 32 heads of a 64-wide model
        "query_pre_attn_scalar": 24,  # not the head size: the scale is tested
        "max_position_embeddings": 64,
        "sliding_window": WINDOW,
        "layer_types": LAYERS,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0},
        },
        "eos_token_id": 1,
        "bos_token_id": 2,
        "pad_token_id": 0,
    }
    torch.manual_seed(seed)
    hf = getattr(transformers, f"Gemma3{head}")(transformers.Gemma3TextConfig(**(shape | changes))).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(directory)
    (directory / "generation_config.json").write_text(json.dumps({"bos_token_id": 2, "eos_token_id": [1, 6]}))
    return hf


def _max_difference(ours: torch.nn.Module, hf: torch.nn.Module, length: int = 40) -> float:
    ids = torch.randint(0, ours.config.vocab_size, (2, length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (ours(ids) - hf(input_ids=ids).logits).abs().max().item()


def _check_parity(hf: torch.nn.Module, ours: GPT) -> None:
    """Logits within 1e-4 over 40 tokens (window 6); 20 greedy tokens cached as a left-padded
    batch, and cached and uncached alone."""
    assert _max_difference(ours, hf) <= 1e-4
    theirs = [hf_greedy(hf, p, 20) for p in PROMPTS]
    assert len(set(theirs[0])) > 3  # not one token repeated: the test can tell models apart
    assert generate_ids(ours, PROMPTS, 20, temperature=0.0, eos_id=None) == theirs
    assert generate_ids(ours, PROMPTS[:1], 20, temperature=0.0, eos_id=None) == theirs[:1]
    assert generate_ids(ours, PROMPTS[1:], 20, temperature=0.0, eos_id=None, use_cache=False) == theirs[1:]


def test_parity_import_export_roundtrip(tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_gemma3(hf_dir)
    model, _ = lmforge.load(hf_dir)
    c = model.config
    assert (c.sliding_window, c.sliding_window_pattern, c.rope_local_theta, c.rope_theta) == (
        WINDOW,
        3,
        100,
        5000,
    )
    assert (c.rope_type, c.rope_factor, c.attn_scale_dim, c.mlp, c.head_dim) == (
        "linear",
        2.0,
        24,
        "geglu_tanh",
        32,
    )
    assert c.norm_unit_offset and c.sandwich_norm and c.scale_embedding and c.qk_norm and c.tie_embeddings
    assert [b.attn.window for b in model.blocks] == [WINDOW, WINDOW, 0, WINDOW]
    _check_parity(hf, model)
    # the window matters over these tokens: one as wide as the context parts from transformers'
    unwindowed = GPT(dataclasses.replace(c, sliding_window=c.block_size))
    unwindowed.load_state_dict(model.state_dict())
    assert _max_difference(unwindowed.eval(), hf) > 1e-2

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    assert imported.config == c
    export_hf(ours_dir, back_dir)
    raw = json.loads((back_dir / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"]) == ("gemma3_text", ["Gemma3ForCausalLM"])
    assert (raw["layer_types"], raw["query_pre_attn_scalar"], raw["sliding_window"]) == (LAYERS, 24, WINDOW)
    back = load_whole(transformers.AutoModelForCausalLM, back_dir)
    assert type(back) is transformers.Gemma3ForCausalLM
    assert back.config.rope_parameters == hf.config.rope_parameters
    _check_parity(back, imported)
    assert_same_weights(hf_dir, back_dir)
    text = "Gemma  reads\tthis: café ☃ 日本"
    theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert transformers.AutoTokenizer.from_pretrained(back_dir)(text).input_ids == theirs(text).input_ids


def test_a_transformers_4_config_reads_the_same(tmp_path: Path) -> None:
    """Hub files written before transformers 5: sliding_window_pattern (layer i full when
    (i + 1) % N == 0), rope_theta, rope_local_base_freq and rope_scaling (the full layers'), no
    layer_types or rope_parameters. Both transformers and lmforge read them as the new spelling."""
    hf_dir = tmp_path / "hf"
    hf = make_gemma3(hf_dir)
    new = lmforge.load(hf_dir)[0].config
    raw = json.loads((hf_dir / "config.json").read_text())
    old = {
        k: v for k, v in raw.items() if k not in ("layer_types", "rope_parameters", "_sliding_window_pattern")
    }
    old |= {"sliding_window_pattern": 3, "rope_theta": 5000.0, "rope_local_base_freq": 100.0}
    old["rope_scaling"] = {"rope_type": "linear", "factor": 2.0}
    (hf_dir / "config.json").write_text(json.dumps(old))
    config = transformers.AutoConfig.from_pretrained(hf_dir)
    assert config.layer_types == LAYERS and config.rope_parameters == hf.config.rope_parameters
    model, _ = lmforge.load(hf_dir)
    assert model.config == new
    assert _max_difference(model, hf) <= 1e-4
    # the class defaults where keys are absent: pattern 6 (the 4 layers all slide), thetas 1e6 / 1e4
    legacy = (
        "sliding_window_pattern",
        "rope_theta",
        "rope_local_base_freq",
        "rope_scaling",
        "query_pre_attn_scalar",
    )
    bare = {k: v for k, v in old.items() if k not in legacy}
    (hf_dir / "config.json").write_text(json.dumps(bare))
    c = lmforge.load(hf_dir)[0].config
    assert (c.sliding_window_pattern, c.rope_theta, c.rope_local_theta, c.rope_type) == (
        6,
        1e6,
        1e4,
        "default",
    )
    assert c.attn_scale_dim == 256  # Gemma3TextConfig's query_pre_attn_scalar, not the head size


def test_the_tokenizer_and_chat_template_are_transformers(tmp_path: Path) -> None:
    make_gemma3(tmp_path / "hf")
    _, tokenizer = lmforge.load(tmp_path / "hf")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    for text in ("Hello there, my lord", "  two  spaces\tand a tab\nnew line", "café ☃ 日本 — ok", ""):
        ids = theirs(text).input_ids
        assert tokenizer.encode_prompt(text) == ids
        assert ids[0] == 2  # <bos>
        assert tokenizer.decode(ids) == theirs.decode(ids, skip_special_tokens=True) == text
    assert tokenizer.eos_id == 1
    spec = ChatSpec.read(tmp_path / "hf", tokenizer)
    assert spec.stops == [1, 6]  # <eos> and <end_of_turn> (generation_config.json's list)
    for messages in (
        [{"role": "user", "content": "Hi there "}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Who are you?"},
            {"role": "assistant", "content": "A model."},
            {"role": "user", "content": "café?"},
        ],
    ):
        text = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert spec.render(messages) == text
        assert (
            tokenizer.encode(text)
            == theirs.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
        )


def test_full_and_lora_fine_tunes_run_and_export(tmp_path: Path) -> None:
    """A few steps from the Gemma directory, the whole model and LoRA adapters: both train; the full
    run exports as a Gemma3ForCausalLM, the adapters as PEFT's on it, each with lmforge's logits."""
    hf_dir = tmp_path / "hf"
    make_gemma3(hf_dir)
    (tmp_path / "text.txt").write_text(make_text(lines=200))
    common = [f"--data.input={tmp_path / 'text.txt'}", f"--train.init_from={hf_dir}", "--train.max_steps=3"]
    common += ["--train.batch_size=2", "--train.eval_batches=1", "--train.dtype=fp32", "--data.seq_len=16"]
    lmforge.train(None, [*common, "--train.lr=1e-3"], out=tmp_path / "full", quiet=True)
    tuned, _ = lmforge.load(tmp_path / "full")
    start, _ = lmforge.load(hf_dir)
    assert tuned.config == start.config
    assert not torch.equal(tuned.blocks[0].ln_attn_out.weight, start.blocks[0].ln_attn_out.weight)
    export_hf(tmp_path / "full", tmp_path / "back")
    assert _max_difference(tuned, load_whole(transformers.AutoModelForCausalLM, tmp_path / "back")) <= 1e-4
    lora = [*common, "--lora.enabled=true", "--lora.targets=q_proj,v_proj,o_proj,gate_proj,down_proj"]
    lmforge.train(
        None, [*lora, "--train.lr=5e-2", "--train.warmup_steps=0"], out=tmp_path / "lora", quiet=True
    )
    adapted, _ = lmforge.load(tmp_path / "lora")
    assert (
        _max_difference(adapted, load_whole(transformers.AutoModelForCausalLM, hf_dir)) > 1e-2
    )  # it trained
    peft = pytest.importorskip("peft")
    export_hf(tmp_path / "lora", tmp_path / "adapter")  # PEFT's layout, on Gemma's module names
    base = load_whole(transformers.AutoModelForCausalLM, hf_dir)
    assert _max_difference(adapted, peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()) <= 1e-4


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"final_logit_softcapping": 30.0}, r"unsupported final_logit_softcapping=30.0 \(Gemma 3 has none"),
        ({"attn_logit_softcapping": 50.0}, r"unsupported attn_logit_softcapping=50.0"),
        ({"use_bidirectional_attention": True}, r"unsupported use_bidirectional_attention=true"),
        ({"hidden_activation": "gelu"}, r"unsupported hidden_activation='gelu'"),
        ({"layer_types": ["full_attention", *LAYERS[1:]]}, r"unsupported layer_types \['full_attention', "),
        ({"layer_types": LAYERS[:3]}, r"'layer_types' must list 4 entries \(num_hidden_layers\)"),
        ({"sliding_window": None}, r"unsupported sliding_window=None with sliding-window layers"),
        ({"rope_parameters": {"rope_type": "default"}}, r"'rope_parameters' must hold 'full_attention'"),
    ],
)
def test_what_lmforge_does_not_compute_is_refused_in_one_line(
    change: dict, error: str, tmp_path: Path
) -> None:
    hf_dir = tmp_path / "hf"
    make_gemma3(hf_dir)
    raw = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps(raw | change))
    with pytest.raises(LmforgeError, match=r"^" + str(hf_dir / "config.json") + ": .*" + error):
        lmforge.load(hf_dir)


def test_compiled_decoding_slides_as_transformers(tmp_path: Path) -> None:
    """The compiled step takes every cache length, inside the window and past it (no step falls
    back to eager), with transformers' greedy tokens (the ONNX export: tests/test_onnx_windows.py)."""
    from lmforge.inference.compiled_decode import compiled_step

    hf = make_gemma3(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    prompt = PROMPTS[1]  # 3 tokens: the first steps fit the window of 6, the later ones slide
    compiled = generate_ids(model, [prompt], 20, temperature=0.0, compile=True)[0]
    assert compiled == hf_greedy(hf, prompt, 20)
    assert compiled_step(model).eager_steps == 0
    # gemma3 GGUF files import since 2026-12-07: tests/test_gguf_gemma_smollm3.py


GEMMA_LIKE = dict(
    pos="rope", mlp="geglu_tanh", bias=False, norm="rmsnorm", n_kv_head=2, head_dim=24, qk_norm=True,
    norm_unit_offset=True, sandwich_norm=True, scale_embedding=True, attn_scale_dim=16, sliding_window=4,
    sliding_window_pattern=2, rope_local_theta=100.0,
)  # fmt: skip


def test_a_recipe_with_gemmas_keys_builds_what_the_plan_counts() -> None:
    c = ModelConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16, **GEMMA_LIKE)
    model = GPT(c)
    assert plan_model.count(c).params == sum(p.numel() for p in model.parameters())
    assert all(not b.ln_attn_out.weight.detach().any() for b in model.blocks)  # (1 + 0): the identity scale
    assert [b.attn.window for b in model.blocks] == [4, 0]


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"sliding_window": -1}, r"^model.sliding_window=-1 must be >= 0$"),
        (
            {"sliding_window_pattern": 6},
            r"^model.sliding_window_pattern=6 changes nothing without model.sliding_window$",
        ),
        (
            {"rope_local_theta": 1e4, "pos": "rope"},
            r"^model.rope_local_theta=10000.0 changes nothing without",
        ),
        (
            {"norm_unit_offset": True},
            r"^model.norm_unit_offset=true is for model.norm='rmsnorm', not 'layernorm'$",
        ),
        ({"attn_scale_dim": -2}, r"^model.attn_scale_dim=-2 must be >= 0$"),
        ({"mlp": "geglu"}, r"^model.mlp='geglu' must be gelu, gelu_tanh, swiglu, geglu_tanh or silu$"),
    ],
)
def test_bad_gemma_keys_are_one_line(change: dict, error: str) -> None:
    with pytest.raises(LmforgeError, match=error):
        check_model(ModelConfig(vocab_size=97, **change))


def test_a_seq2seq_refuses_the_decoders_keys() -> None:
    from lmforge.model.seq2seq import Seq2Seq

    with pytest.raises(LmforgeError, match=r"^model.sliding_window=4 is not supported by the seq2seq model"):
        Seq2Seq(ModelConfig(vocab_size=97, arch="seq2seq", sliding_window=4), pad_id=0)
