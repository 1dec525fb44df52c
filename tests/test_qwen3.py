"""Qwen3 (`model_type: qwen3`): per-head RMSNorm on queries and keys before the rotary positions,
and a head size that is not hidden_size / heads (model.head_dim, model.qk_norm), checked against
transformers' Qwen3ForCausalLM on tiny random models: logits, greedy tokens (cached, a left-padded
batch, compiled, beam search), export back, ONNX, training, the plan's counts and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import VOCAB, assert_same_weights, hf_greedy, load_whole, save_randomised

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference import compiled_decode
from lmforge.inference.beam_search import beam_search
from lmforge.inference.generate import generate_ids
from lmforge.model.gpt import GPT
from lmforge.tools import plan_model
from lmforge.train.report import flops_per_token

transformers = pytest.importorskip("transformers")

HEADS, HEAD_DIM = 4, 32  # 4 x 32 = 128 != hidden 64: q_proj is 64 -> 128, o_proj 128 -> 64
PROMPTS = [[5, 9, 9, 12, 30, 7, 44, 3], [40, 41, 17]]  # different lengths: a left-padded batch


def make_qwen3(directory: Path, tie: bool = True, seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    """A random Qwen3ForCausalLM (norms moved off 1) saved with a tiny tokenizer; returned in eval."""
    config = transformers.Qwen3Config(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        head_dim=HEAD_DIM,
        max_position_embeddings=64,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
        tie_word_embeddings=tie,
        initializer_range=0.2,
        eos_token_id=0,
        bos_token_id=0,
    )
    torch.manual_seed(seed)
    return save_randomised(transformers.Qwen3ForCausalLM(config).eval(), directory)


def _check_parity(hf: torch.nn.Module, ours: GPT) -> None:
    """Logits within 1e-4 of transformers'; 12 greedy tokens each alone and as a left-padded batch."""
    ids = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ours(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4
    theirs = [hf_greedy(hf, p, 12) for p in PROMPTS]
    assert generate_ids(ours, PROMPTS, 12, temperature=0.0, eos_id=None) == theirs  # cached, padded
    assert generate_ids(ours, PROMPTS[:1], 12, temperature=0.0, use_cache=False) == theirs[:1]


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_parity_import_export_roundtrip(tie: bool, tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_qwen3(hf_dir, tie)
    model, _ = lmforge.load(hf_dir)
    c = model.config
    assert (c.head_dim, c.qk_norm, c.qkv_bias, c.tie_embeddings) == (HEAD_DIM, True, False, tie)
    assert model.blocks[0].attn.qkv.weight.shape == ((HEADS + 2 * 2) * HEAD_DIM, 64)
    _check_parity(hf, model)

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    assert imported.config == c
    export_hf(ours_dir, back_dir)
    raw = json.loads((back_dir / "config.json").read_text())
    assert (raw["model_type"], raw["architectures"], raw["head_dim"]) == ("qwen3", ["Qwen3ForCausalLM"], 32)
    back = load_whole(transformers.AutoModelForCausalLM, back_dir)
    assert type(back) is transformers.Qwen3ForCausalLM
    _check_parity(back, imported)
    assert_same_weights(hf_dir, back_dir)


def test_beam_search_and_the_compiled_step_give_transformers_tokens(tmp_path: Path) -> None:
    hf = make_qwen3(tmp_path / "hf")
    model, _ = lmforge.load(tmp_path / "hf")
    prompt = PROMPTS[0]
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=8, num_beams=3, do_sample=False)
    assert beam_search(model, prompt, 8, [], 3) == [theirs[0, len(prompt) :].tolist()]
    greedy = hf_greedy(hf, prompt, 20)
    assert generate_ids(model, [prompt], 20, temperature=0, compile=True) == [greedy]
    assert compiled_decode.holds(model)  # the compiled step ran, not eager decoding


def test_a_qwen3_config_json_reads_as_transformers_does(tmp_path: Path) -> None:
    """use_sliding_window absent is false (the window is not the context); head_dim absent is
    Qwen3Config's 128, not hidden_size / heads (so this model's 32-wide weights do not fit);
    attention_bias is refused (Qwen3 would bias o_proj too)."""
    hf_dir = tmp_path / "hf"
    make_qwen3(hf_dir)
    good = json.loads((hf_dir / "config.json").read_text())
    sliding = {k: v for k, v in good.items() if k != "use_sliding_window"} | {"sliding_window": 16}
    no_head_dim = {k: v for k, v in good.items() if k != "head_dim"}
    for raw in (sliding, no_head_dim):  # transformers' own reading
        (hf_dir / "config.json").write_text(json.dumps(raw))
        config = transformers.AutoConfig.from_pretrained(hf_dir)
        assert not config.use_sliding_window and config.head_dim == (128 if raw is no_head_dim else 32)
    (hf_dir / "config.json").write_text(json.dumps(sliding))
    assert lmforge.load(hf_dir)[0].config.block_size == 64
    (hf_dir / "config.json").write_text(json.dumps(no_head_dim))
    with pytest.raises(LmforgeError, match=r"q_proj.weight \(128, 64\).* give \(1024, 64\)"):
        lmforge.load(hf_dir)
    (hf_dir / "config.json").write_text(json.dumps({**good, "attention_bias": True}))
    with pytest.raises(LmforgeError, match="unsupported attention_bias"):
        lmforge.load(hf_dir)


QWEN3_LIKE = dict(
    pos="rope", mlp="swiglu", bias=False, norm="rmsnorm", n_kv_head=2, head_dim=24, qk_norm=True
)


def test_a_recipe_with_head_dim_and_qk_norm_trains_and_exports(tmp_path: Path, corpus: Path) -> None:
    """model.head_dim and model.qk_norm from the command line: it trains, saves, reloads, and
    transformers' Qwen3ForCausalLM computes the same logits from its export."""
    argv = [f"--data.input={corpus}", "--model.n_layer=2", "--model.n_head=4", "--model.n_embd=32"]
    argv += ["--model.block_size=32", "--train.max_steps=3", "--train.batch_size=4", "--train.eval_batches=1"]
    argv += [f"--model.{k}={str(v).lower()}" for k, v in QWEN3_LIKE.items()]
    lmforge.train(None, argv, out=tmp_path / "run", quiet=True)
    ours, _ = lmforge.load(tmp_path / "run")
    assert ours.config.head_dim == 24 and ours.config.qk_norm
    assert ours.blocks[0].attn.proj.weight.shape == (32, 4 * 24)
    export_hf(tmp_path / "run", tmp_path / "hf")
    hf = load_whole(transformers.AutoModelForCausalLM, tmp_path / "hf")
    ids = torch.randint(0, ours.config.vocab_size, (2, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4


def test_train_init_from_a_qwen3_dir(tmp_path: Path, corpus: Path) -> None:
    from lmforge.cli import main

    hf_dir = tmp_path / "hf"
    make_qwen3(hf_dir)
    argv = ["train", "--out", str(tmp_path / "run"), "--init-from", str(hf_dir), f"--data.input={corpus}"]
    argv += ["--train.max_steps=1", "--train.lr=1e-12", "--train.min_lr=0", "--train.batch_size=2"]
    argv += ["--train.eval_batches=1", "--train.warmup_steps=0", "--quiet"]
    assert main(argv) == 0
    start, _ = lmforge.load(hf_dir)
    run, _ = lmforge.load(tmp_path / "run")
    assert run.config == start.config
    for (name, a), b in zip(start.state_dict().items(), run.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_the_plan_counts_the_built_model() -> None:
    c = ModelConfig(vocab_size=97, n_layer=2, n_head=4, n_embd=32, block_size=16, **QWEN3_LIKE)
    model = GPT(c)
    counts = plan_model.count(c)
    assert counts.params == sum(p.numel() for p in model.parameters())
    assert counts.flops_per_token == flops_per_token(model, c.block_size)  # what the step log uses
    # attention's 12 L d T counts the heads' width, 4 x 24, not n_embd (tied: the head counts once)
    matmuls = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert counts.flops_per_token == 6 * matmuls + 12 * c.n_layer * 4 * 24 * c.block_size


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"head_dim": -8}, r"^model.head_dim=-8 must be >= 0 \(0: model.n_embd / model.n_head\)$"),
        (
            {"head_dim": 7, "pos": "rope"},
            r"^model.pos='rope' needs an even head size, not model.head_dim = 7$",
        ),
        ({"arch": "seq2seq", "head_dim": 8}, r"^model.head_dim=8 is not supported by the seq2seq model"),
        ({"arch": "seq2seq", "qk_norm": True}, r"^model.qk_norm=True is not supported by the seq2seq model"),
    ],
)
def test_bad_head_settings_are_one_line(change: dict, error: str) -> None:
    from lmforge.config.model_checks import check_model
    from lmforge.model.seq2seq import Seq2Seq

    c = ModelConfig(vocab_size=97, **change)
    with pytest.raises(LmforgeError, match=error):
        check_model(c)
        Seq2Seq(c, pad_id=0)


@pytest.mark.slow
def test_onnx_export_gives_pytorchs_logits_and_tokens(tmp_path: Path) -> None:
    """The decoder graph with 32-wide heads of a 64-wide model and q/k norms: logits with a cached
    prefix and a left-padded row within 1e-4, and the same greedy tokens."""
    pytest.importorskip("onnxruntime")
    from lmforge.formats.onnx_export import export_onnx
    from lmforge.inference.onnx_runner import OnnxModel, generate_ids_onnx

    make_qwen3(tmp_path / "hf")
    out = export_onnx(tmp_path / "hf", tmp_path / "onnx")
    model, _ = lmforge.load(tmp_path / "hf")
    onnx = OnnxModel(out)
    assert onnx.meta["cache"]["head_size"] == HEAD_DIM
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    _, past = onnx.decoder_step(ids[:, :6].numpy(), mask[:, :6].numpy(), onnx.empty_past(2))
    got = onnx.call("model", ids[:, 6:].numpy(), mask.numpy(), *past)[0]
    cache = model.new_cache(2)
    with torch.no_grad():
        model(ids[:, :6], cache, mask=mask[:, :6].bool())
        want = model(ids[:, 6:], cache, mask=mask.bool())
    assert abs(torch.from_numpy(got) - want).max().item() <= 1e-4
    expected = generate_ids(model, PROMPTS, 12, temperature=0, eos_id=None)
    assert generate_ids_onnx(onnx, PROMPTS, 12, temperature=0, stop_at_eos=False) == expected


def test_a_qwen3_gguf_imports_with_its_norms_and_head_size(tmp_path: Path) -> None:
    """llama.cpp's qwen3 layout (`attn_q_norm`, `attn_k_norm`, the head size in
    `attention.key_length`, rows not permuted), written from a Qwen3ForCausalLM's own weights:
    the import computes its logits. (transformers' GGUF loader reads no key_length for qwen3 and
    takes Qwen3Config's 128, so the model itself is the reference here.)"""
    gguf = pytest.importorskip("gguf")
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from lmforge.formats.gguf import convert_gguf

    tokens = ["<|endoftext|>", *bytes_to_unicode().values(), "ĠĠ"]
    hf = make_qwen3(tmp_path / "hf", vocab=len(tokens))

    def write(path: Path, sized: bool) -> Path:  # sized: the head size in the metadata
        writer = gguf.GGUFWriter(str(path), "qwen3")
        writer.add_block_count(2)
        writer.add_context_length(64)
        writer.add_embedding_length(64)
        writer.add_feed_forward_length(96)
        writer.add_head_count(HEADS)
        writer.add_head_count_kv(2)
        if sized:
            writer.add_key_length(HEAD_DIM)
            writer.add_value_length(HEAD_DIM)
            writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_rope_freq_base(1000.0)
        writer.add_layer_norm_rms_eps(1e-6)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types([3] + [1] * (len(tokens) - 1))
        writer.add_token_merges(["Ġ Ġ"])
        writer.add_eos_token_id(0)
        names = {
            "input_layernorm": "attn_norm",
            "self_attn.q_proj": "attn_q",
            "self_attn.k_proj": "attn_k",
            "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output",
            "self_attn.q_norm": "attn_q_norm",
            "self_attn.k_norm": "attn_k_norm",
            "post_attention_layernorm": "ffn_norm",
            "mlp.gate_proj": "ffn_gate",
            "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down",
        }
        top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
        for name, tensor in hf.state_dict().items():
            if name == "lm_head.weight":  # tied: no output.weight
                continue
            layer, module = name.split(".")[2], ".".join(name.split(".")[3:-1])
            writer.add_tensor(top.get(name) or f"blk.{layer}.{names[module]}.weight", tensor.numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path

    model, _, _ = convert_gguf(write(tmp_path / "q.gguf", sized=True))
    assert (model.config.head_dim, model.config.qk_norm, model.config.qkv_bias) == (HEAD_DIM, True, False)
    ids = torch.randint(0, len(tokens), (2, 20), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (model(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4
    # without key_length the head size is embedding_length / head_count: the error named the
    # Hugging Face tensors' shapes, not the key
    with pytest.raises(
        LmforgeError, match=r"tensor 'blk.0.attn_q.weight' has \d+ rows, .* qwen3.attention.key_length"
    ):
        convert_gguf(write(tmp_path / "unsized.gguf", sized=False))


def test_a_head_dim_restated_as_n_embd_over_n_head_is_the_same_model() -> None:
    """train.init_from an export whose head_dim is n_embd / n_head (kept as 0) refused
    --model.head_dim=16 as differing from 0, though it is the same head size."""
    from lmforge.config import load_config
    from lmforge.train.run_inputs import adopt_model_config

    shape = ["--model.n_embd=64", "--model.n_head=4"]
    own = ModelConfig(n_embd=64, n_head=4)
    cfg = load_config(None, [*shape, "--model.head_dim=16"])
    adopt_model_config(cfg, own)
    assert cfg.model.head_size() == 16
    with pytest.raises(LmforgeError, match=r"model.head_dim=32 \(on the command line\) differs from the 0"):
        adopt_model_config(load_config(None, [*shape, "--model.head_dim=32"]), own)


def test_the_plan_and_start_up_lines_show_the_head_size_and_norms(capsys: pytest.CaptureFixture) -> None:
    """'gpt 2L x 4H x 64' hid a head size apart from n_embd / n_head, so the parameters did not
    follow from the line."""
    from lmforge.cli import main
    from lmforge.model.kinds import heads_note

    assert heads_note(0, False) == "" and heads_note(32, True) == " (32, q/k norms)"
    shape = ["--model.vocab_size=100", "--model.n_layer=2", "--model.n_head=4", "--model.n_embd=64"]
    qwen3 = [
        *shape,
        "--model.head_dim=32",
        "--model.qk_norm=true",
        "--model.pos=rope",
        "--model.norm=rmsnorm",
    ]
    assert main(["plan", *qwen3]) == 0
    assert "  model    gpt 2L x 4H (32, q/k norms) x 64," in capsys.readouterr().out
