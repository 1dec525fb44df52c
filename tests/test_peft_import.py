"""`lmforge import ADAPTER --base BASE`: a LoRA adapter made by peft, merged into its base, gives
peft's own logits (PeftModel on the base), for the ways peft shapes an adapter: fused GPT-2
Conv1D (fan_in_fan_out), embeddings, modules_to_save, rsLoRA, rank and alpha patterns; and what
a merge cannot reproduce is refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from hf_helpers import VOCAB, make_hf_model

import lmforge
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.formats.hf_files import import_hf

peft = pytest.importorskip("peft")
pytest.importorskip("transformers")

CASES = {
    # family, peft.LoraConfig keywords
    "llama-all-linear-lm_head": ("llama", {"target_modules": "all-linear", "modules_to_save": ["lm_head"]}),
    "gpt2-conv1d": ("gpt2", {"target_modules": ["c_attn", "c_proj", "c_fc"]}),
    "llama-embedding": ("llama", {"target_modules": ["embed_tokens", "q_proj"]}),
    "qwen2-rslora-patterns": (
        "qwen2",
        {
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"],
            "use_rslora": True,
            "rank_pattern": {"up_proj": 2},
            "alpha_pattern": {r"layers\.1\.self_attn\.q_proj": 3},
        },
    ),
}


def _adapter(tmp_path: Path, family: str, options: dict) -> tuple[torch.nn.Module, Path, Path]:
    """(peft's model, the base folder, the adapter folder): adapters random, not PEFT's zero B."""
    base = tmp_path / "base"
    model = make_hf_model(family, base)
    config = peft.LoraConfig(r=4, lora_alpha=8, **options)
    wrapped = peft.get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    wrapped.save_pretrained(tmp_path / "adapter")
    return wrapped.eval(), base, tmp_path / "adapter"


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_merged_peft_adapter_gives_peft_s_logits(tmp_path: Path, case: str) -> None:
    family, options = CASES[case]
    reference, base, adapter = _adapter(tmp_path, family, options)
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        theirs = reference(ids).logits
        bare = reference.get_base_model()
        with reference.disable_adapter():
            plain = reference(ids).logits
    assert (theirs - plain).abs().max() > 1e-2  # the adapter matters
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "merged")]) == 0
    ours, _ = lmforge.load(tmp_path / "merged")
    assert (_logits(ours, ids) - theirs).abs().max() < 1e-4
    del bare
    # the base as an lmforge model directory: merged in HF's names all the same
    import_hf(base, tmp_path / "own-base")
    import_hf(adapter, tmp_path / "merged-own", base=tmp_path / "own-base")
    assert (_logits(lmforge.load(tmp_path / "merged-own")[0], ids) - theirs).abs().max() < 1e-4


def test_the_base_defaults_to_the_adapter_s_base_model_name_or_path(tmp_path: Path) -> None:
    family, options = CASES["llama-all-linear-lm_head"]
    reference, base, adapter = _adapter(tmp_path, family, options)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M"  # a hub name: not here
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        LmforgeError, match=r"base_model_name_or_path 'HuggingFaceTB/SmolLM2-135M' is no folder here: give"
    ):
        import_hf(adapter, tmp_path / "out")
    config["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    import_hf(adapter, tmp_path / "out")
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        assert (_logits(lmforge.load(tmp_path / "out")[0], ids) - reference(ids).logits).abs().max() < 1e-4
    # loading the adapter folder itself names the import that merges it
    with pytest.raises(LmforgeError, match=r"lmforge import .*adapter --base BASE --out OUT"):
        lmforge.load(adapter)


def test_what_a_plain_merge_cannot_reproduce_is_refused_in_one_line(tmp_path: Path) -> None:
    _, base, adapter = _adapter(tmp_path, "llama", {"target_modules": ["q_proj", "v_proj"]})
    config = json.loads((adapter / "adapter_config.json").read_text())
    for key, value, message in (
        ("use_dora", True, r"use_dora=True \(DoRA"),
        ("peft_type", "IA3", r"peft_type 'IA3': lmforge merges LoRA adapters only"),
        ("lora_alpha", 0, r"lora_alpha=0 must be a positive number"),
        ("init_lora_weights", "pissa_niter_4", r"init_lora_weights='pissa_niter_4' changed the base weights"),
    ):
        (adapter / "adapter_config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(LmforgeError, match=message):
            import_hf(adapter, tmp_path / "out", base=base)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    # GPT-2's output layer is its embedding: peft changed the lookup alone, a merge would change both
    _, tied_base, tied_adapter = _adapter(tmp_path / "tied", "gpt2", {"target_modules": ["wte", "c_attn"]})
    with pytest.raises(
        LmforgeError, match=r"changes 'transformer.wte.weight', which the base ties to its output layer"
    ):
        import_hf(tied_adapter, tmp_path / "out", base=tied_base)
    other = tmp_path / "other"
    make_hf_model("gpt2", other)  # another architecture: its tensors are not the adapter's
    with pytest.raises(
        LmforgeError,
        match=r"adapter_model.safetensors: 'model.layers.0.self_attn.q_proj.weight' names no tensor",
    ):
        import_hf(adapter, tmp_path / "out", base=other)
    named = tmp_path / "named"
    shutil.copytree(adapter, named / "myad")  # peft's save of an adapter not named "default"
    with pytest.raises(
        LmforgeError,
        match=r"named: holds named PEFT adapters in folders of their own \(myad\): give one, e.g. .*/myad$",
    ):
        import_hf(named, tmp_path / "out", base=base)
    with pytest.raises(LmforgeError, match=r"--base .*: is for a PEFT adapter folder"):
        import_hf(base, tmp_path / "out", base=other)
    assert not (tmp_path / "out").exists()
    shutil.rmtree(base)
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "out")]) == 2


def test_a_conv1d_change_is_transposed_whatever_the_saved_fan_in_fan_out(tmp_path: Path) -> None:
    """peft sets fan_in_fan_out per layer (Conv1D on, Linear off) and saves the last value: an
    untied GPT-2 adapted on attn.c_proj and lm_head says false, and c_proj (square) merged
    untransposed, 2.5 off in the logits, exit 0."""
    import transformers
    from safetensors.torch import load_file

    from lmforge.formats.peft_import import CONV1D, merge

    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=VOCAB,
                                     tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["attn.c_proj", "lm_head"])
    )
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name:
                param.add_(torch.randn_like(param) * 0.05)
    wrapped.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["fan_in_fan_out"] is False  # the last layer peft met: lm_head, a Linear
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    assert merge(state, saved, load_file(str(weights)), weights, None, CONV1D["gpt2"]) == 3
    expected = wrapped.merge_and_unload().state_dict()
    for name in (
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.1.attn.c_proj.weight",
        "lm_head.weight",
    ):
        assert (state[name] - expected[name]).abs().max() < 1e-6, name


def test_a_lora_run_as_the_base_is_refused_naming_its_base(tmp_path: Path) -> None:
    """Its model is its base with its adapters merged in: an adapter exported from it, merged
    onto it, counted twice (exit 0)."""
    (tmp_path / "run" / "model").mkdir(parents=True)
    make_hf_model("llama", tmp_path / "base")
    import_hf(tmp_path / "base", tmp_path / "run" / "model-base")
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        shutil.copy(tmp_path / "run" / "model-base" / name, tmp_path / "run" / "model" / name)
    (tmp_path / "run" / "model" / "lora.json").write_text(
        json.dumps({"lora": {}, "base": {"path": str(tmp_path / "run" / "model-base"), "sha256": {}}})
    )
    _, _, adapter = _adapter(tmp_path / "a", "llama", {"target_modules": ["q_proj"]})
    with pytest.raises(
        LmforgeError,
        match=r"a LoRA run, whose model holds its own adapters .*: give the base it trained on, .*base$",
    ):
        import_hf(adapter, tmp_path / "out", base=tmp_path / "run")


def test_a_head_saved_whole_onto_a_bare_body_says_which_base_to_give(tmp_path: Path) -> None:
    """peft's classification adapters save their new head whole (modules_to_save): merged onto
    the bare body, the line said only "'classifier.bias' names no tensor of the base model"."""
    import transformers

    body = tmp_path / "body"
    make_hf_model("bert", body)
    config = transformers.BertConfig.from_pretrained(body, num_labels=2)
    torch.manual_seed(0)
    classifier = transformers.BertForSequenceClassification(config).eval()
    wrapped = peft.get_peft_model(
        classifier, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query"], task_type="SEQ_CLS")
    )
    wrapped.save_pretrained(tmp_path / "adapter")
    with pytest.raises(
        LmforgeError,
        match=r"names no tensor of the base model: a module the adapter trains whole, such as a task head",
    ):
        import_hf(tmp_path / "adapter", tmp_path / "out", base=body)
