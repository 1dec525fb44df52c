"""Hugging Face interop: parity of every family with transformers, export back, bit-exact round trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_helpers import FAMILY_NAMES, make_hf_model
from safetensors.torch import load_file

import lmforge
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.hf import export_family
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.generate import generate_ids
from lmforge.model.encoder import Encoder

transformers = pytest.importorskip("transformers")


def _ids(vocab: int, batch: int = 2, t: int = 24) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, t), generator=torch.Generator().manual_seed(1))


def _hf_output(hf: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    out = hf(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _check_parity(hf: torch.nn.Module, ours: torch.nn.Module, vocab: int) -> None:
    ids = _ids(vocab)
    with torch.no_grad():
        expected, got = _hf_output(hf, ids), ours(ids)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4
    if isinstance(ours, Encoder):
        return
    prompt = ids[:1, :5]
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=12, do_sample=False)[0, 5:].tolist()
    mine = generate_ids(ours, [prompt[0].tolist()], 12, temperature=0.0, eos_id=None)[0]
    assert mine == theirs


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_parity_import_export_roundtrip(family: str, tmp_path: Path) -> None:
    hf_dir, ours_dir, back_dir = tmp_path / "hf", tmp_path / "lmforge", tmp_path / "back"
    hf = make_hf_model(family, hf_dir)
    vocab = hf.config.vocab_size

    model, tokenizer = lmforge.load(hf_dir)  # an HF directory loads directly
    _check_parity(hf, model, vocab)
    assert tokenizer.decode(tokenizer.encode("the king speaks")) == "the king speaks"

    import_hf(hf_dir, ours_dir)
    imported, _ = lmforge.load(ours_dir)
    _check_parity(hf, imported, vocab)

    export_hf(ours_dir, back_dir)
    cls = type(hf)
    back, info = cls.from_pretrained(back_dir, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    _check_parity(back.eval(), imported, vocab)

    original, exported = (
        load_file(str(hf_dir / "model.safetensors")),
        load_file(str(back_dir / "model.safetensors")),
    )
    assert original.keys() == exported.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, exported[name]), name
    assert (
        transformers.AutoTokenizer.from_pretrained(back_dir)("the king").input_ids
        == tokenizer.hf.encode("the king").ids
    )


def test_lmforge_model_exports_to_transformers(tmp_path: Path, corpus: Path) -> None:
    """A model lmforge trained (GPT-2 shape) loads in transformers and gives the same logits."""
    lmforge.train(
        None,
        [
            f"--data.input={corpus}",
            "--model.n_layer=1",
            "--model.n_head=2",
            "--model.n_embd=32",
            "--model.block_size=32",
            "--train.max_steps=2",
            "--train.batch_size=4",
            "--train.eval_batches=1",
        ],
        out=tmp_path / "run",
        quiet=True,
    )
    export_hf(tmp_path / "run", tmp_path / "hf")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ours, _ = lmforge.load(tmp_path / "run")
    _check_parity(hf.eval(), ours, ours.config.vocab_size)


def test_a_model_of_no_hf_family_is_refused_naming_both_recipes() -> None:
    """The demo's recipe (rope, gelu, LayerNorm) is neither GPT-2 nor Llama: the line says what
    each needs, so a user knows what to train instead."""
    config = ModelConfig(pos="rope", mlp="gelu", norm="layernorm")
    _, family = export_family(config, "gpt")
    with pytest.raises(LmforgeError) as e:
        family.config_out(config)
    said = str(e.value)
    assert "it has gelu, layernorm, bias=True" in said and "GPT-2 needs learned positions" in said
    assert "\n" not in said


def test_missing_tensor_and_unknown_architecture(tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    state = load_file(str(hf_dir / "model.safetensors"))
    del state["model.layers.1.mlp.up_proj.weight"]
    from safetensors.torch import save_file

    save_file(state, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LmforgeError, match="missing tensor 'model.layers.1.mlp.up_proj.weight'"):
        lmforge.load(hf_dir)
    (hf_dir / "config.json").write_text('{"model_type": "falcon"}')
    with pytest.raises(LmforgeError, match="unknown model_type 'falcon'"):
        lmforge.load(hf_dir)


def test_a_config_lmforge_cannot_follow_is_named(tmp_path: Path) -> None:
    """An older rope_scaling beside rope_parameters' default imported as plain rotary, unsaid
    (transformers scales it: logits 6e-3 apart); 0 or 3 heads were blamed on head_dim."""
    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    good = json.loads((hf_dir / "config.json").read_text())
    cases = [
        ({"rope_scaling": {"type": "longrope", "factor": 2.0}}, "rope type 'longrope'"),
        ({"num_attention_heads": 0}, "num_attention_heads=0"),
        (
            {"num_attention_heads": 3, "head_dim": None},
            r"unsupported hidden_size / num_attention_heads = 64 / 3 without a head_dim",
        ),
    ]
    for change, error in cases:
        (hf_dir / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(LmforgeError, match=error):
            lmforge.load(hf_dir)


def test_a_sliding_window_caps_the_context_only_where_a_layer_slides(tmp_path: Path) -> None:
    """A Qwen2 with use_sliding_window whose layer_types are all full attention (max_window_layers
    covers every layer) was capped at the window; transformers attends the whole context there."""
    hf_dir = tmp_path / "hf"
    make_hf_model("qwen2", hf_dir)
    raw = json.loads((hf_dir / "config.json").read_text())
    context = raw["max_position_embeddings"]
    cases = ((["full_attention"] * 2, context), (["full_attention", "sliding_attention"], 16))
    for layers, expected in cases:
        changed = {**raw, "use_sliding_window": True, "sliding_window": 16, "layer_types": layers}
        (hf_dir / "config.json").write_text(json.dumps(changed))
        model, _ = lmforge.load(hf_dir)
        assert model.config.block_size == expected, layers
    # a Qwen2 or Llama config.json with a sliding_window but no use_sliding_window: transformers'
    # Qwen2Config defaults it to false, and Llama has none (the context was capped at 16)
    for family in ("qwen2", "llama"):
        make_hf_model(family, hf_dir)
        raw = json.loads((hf_dir / "config.json").read_text())
        raw.pop("use_sliding_window", None)
        (hf_dir / "config.json").write_text(json.dumps({**raw, "sliding_window": 16}))
        assert lmforge.load(hf_dir)[0].config.block_size == context, family


def test_an_untied_llama_sequence_classifier_loads_without_an_lm_head(tmp_path: Path) -> None:
    """A Llama's ...ForSequenceClassification (untied, its default) has no lm_head: it was refused
    naming that tensor; now it loads as a classifier (tests/test_hf_decoder_classifiers.py), its
    unread lm_head zero."""
    import transformers

    from lmforge.model.classifier import Classifier

    hf_dir = tmp_path / "hf"
    decoder = make_hf_model("llama", hf_dir)
    config = decoder.config
    config.update({"num_labels": 2, "tie_word_embeddings": False, "architectures": None})
    transformers.LlamaForSequenceClassification(config).save_pretrained(hf_dir)
    model, _ = lmforge.load(hf_dir)
    assert isinstance(model, Classifier) and not model.backbone.lm_head.weight.any()


def test_pytorch_bin_loads_without_unpickling_code(tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    hf = make_hf_model("gpt2", hf_dir)
    (hf_dir / "model.safetensors").unlink()
    torch.save(hf.state_dict(), hf_dir / "pytorch_model.bin")
    model, _ = lmforge.load(hf_dir)
    _check_parity(hf, model, hf.config.vocab_size)
    torch.save({"weights": _Evil()}, hf_dir / "pytorch_model.bin")  # a pickle that would run code
    with pytest.raises(LmforgeError, match="pytorch_model.bin: not a plain state dict"):
        lmforge.load(hf_dir)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("unpickled!",))


def test_train_init_from_hf_dir(tmp_path: Path, corpus: Path) -> None:
    """`train --init-from HF_DIR`: the run takes the HF model's architecture, weights and tokenizer."""
    from lmforge.cli import main

    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    argv = ["train", "--out", str(tmp_path / "run"), "--init-from", str(hf_dir), f"--data.input={corpus}"]
    argv += ["--train.max_steps=1", "--train.lr=1e-12", "--train.min_lr=0", "--train.batch_size=2"]
    argv += ["--train.eval_batches=1", "--train.warmup_steps=0", "--quiet"]
    assert main(argv) == 0
    start, start_tok = lmforge.load(hf_dir)
    run, run_tok = lmforge.load(tmp_path / "run")
    assert run.config == start.config and run_tok.sha256() == start_tok.sha256()
    for (name, a), b in zip(start.state_dict().items(), run.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_raw_text_for_a_bos_tokenizer_is_prepared_as_it_reads_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Llama-style tokenizer puts a BOS before every text: prep writes each document as
    BOS, its ids, EOS (it wrote EOS alone, so the model trained on another layout than eval,
    generate and the model's own pretraining read)."""
    from hf_helpers import add_bos

    from lmforge.cli import main
    from lmforge.data.shards import open_split, read_meta

    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    add_bos(hf_dir, 5)
    docs = [f"the king {i} is dead, long live the queen number {i}." for i in range(40)]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    argv = ["train", "--out", str(tmp_path / "run"), "--init-from", str(hf_dir), f"--data.input={data}"]
    argv += ["--train.max_steps=1", "--train.batch_size=2", "--train.eval_batches=1", "--quiet"]
    assert main(argv) == 0
    meta = read_meta(tmp_path / "run" / "data")
    _, tokenizer = lmforge.load(hf_dir)
    eos = tokenizer.eos_id
    assert meta["document_start"] == [5] and meta["eos_id"] == eos
    assert tokenizer.token_bytes()[5] == 0  # an ordinary token marked BOS is no text byte
    stream = np.concatenate(
        open_split(tmp_path / "run" / "data", "train") + open_split(tmp_path / "run" / "data", "val")
    )
    pieces = np.split(stream, np.flatnonzero(stream == eos) + 1)[:-1]  # each ends with its EOS
    assert len(pieces) == meta["documents"] > 10 and sum(meta["tokens"].values()) == len(stream)
    texts = {tuple(tokenizer.encode(d)) for d in docs}
    for piece in pieces:
        assert piece[0] == 5 and piece[-1] == eos and 5 not in piece[1:]
        assert tuple(int(i) for i in piece[1:-1]) in texts
    # data prepared before 2026-12-06 (no BOS, no document_start) trains with a warning saying so
    old = tmp_path / "run" / "data" / "meta.json"
    old.write_text(
        json.dumps({k: v for k, v in json.loads(old.read_text()).items() if k != "document_start"})
    )
    capsys.readouterr()
    again = [
        "train",
        "--out",
        str(tmp_path / "again"),
        "--init-from",
        str(hf_dir),
        f"--data.input={old.parent}",
    ]
    assert (
        main([*again, "--train.max_steps=1", "--train.batch_size=2", "--train.eval_batches=1", "--quiet"])
        == 0
    )
    assert (
        "its documents start without [5], which the tokenizer puts before a text" in capsys.readouterr().err
    )


def test_cli_import_export_and_hf_dir_in_generate_and_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main

    hf = make_hf_model("qwen2", tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert main(["export", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "generation_config.json").is_file()
    assert main(["generate", str(tmp_path / "hf"), "--prompt", "the king", "--max-new-tokens", "5"]) == 0
    assert capsys.readouterr().out.count("the king") == 1
    out = lmforge.pipeline("text-generation", model=tmp_path / "hf", dtype="fp32")
    text = out("the king", max_new_tokens=6, do_sample=False)[0]["generated_text"]
    _, tokenizer = lmforge.load(tmp_path / "hf")
    prompt = torch.tensor([tokenizer.encode("the king")])
    hf.generation_config.eos_token_id = None
    with torch.no_grad():
        expected = hf.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)[0].tolist()
    assert text == tokenizer.decode(expected)
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_sharded_safetensors(tmp_path: Path) -> None:
    hf = make_hf_model("llama", tmp_path / "one")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    (tmp_path / "one" / "tokenizer.json").rename(tmp_path / "sharded" / "tokenizer.json")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    model, _ = lmforge.load(tmp_path / "sharded")
    _check_parity(hf, model, hf.config.vocab_size)
