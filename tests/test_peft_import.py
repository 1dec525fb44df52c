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
        # peft's BD-LoRA and KaSA were blamed on a tensor's shape
        ("use_bdlora", {"target_modules_bd_a": ["o_proj"], "nblocks": 2}, r"use_bdlora=.* \(BD-LoRA"),
        ("kasa_config", {"beta": 1e-4}, r"kasa_config=.* \(KaSA"),
        ("peft_type", "IA3", r"peft_type 'IA3': lmforge merges LoRA adapters only"),
        ("lora_alpha", 0, r"lora_alpha=0 must be a positive number"),
        # a malformed pattern was a traceback at the merge (AttributeError, re.error, ValueError)
        ("alpha_pattern", ["q_proj"], r"json: alpha_pattern=\['q_proj'\] must be an object"),
        ("alpha_pattern", {"q_proj(": 3}, r"json: alpha_pattern: key 'q_proj\(' is not a regular expression"),
        ("alpha_pattern", {"q_proj": "x"}, r"json: alpha_pattern: 'q_proj': 'x' must be a positive number"),
        ("rank_pattern", {"v_proj": None}, r"json: rank_pattern: 'v_proj': None must be a positive number"),
        ("init_lora_weights", "pissa_niter_4", r"init_lora_weights='pissa_niter_4' changed the base weights"),
        # values peft refuses merged without a word (the merge follows the tensors)
        ("target_modules", "q_proj(", r"json: target_modules 'q_proj\(' is not a regular expression"),
        ("exclude_modules", [3], r"json: exclude_modules=\[3\] must be a list of module names or a regex"),
        ("layers_to_transform", ["a"], r"json: layers_to_transform=\['a'\] must be a layer number"),
        ("layers_pattern", 1, r"json: layers_pattern=1 must be a module name or a list of them"),
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


def _deeper(family: str, directory: Path, layers: int) -> Path:
    """`family`'s tiny model with `layers` layers (hf_helpers' has 2), saved with its tokenizer."""
    import transformers

    make_hf_model(family, directory / "two")
    config = transformers.AutoConfig.from_pretrained(directory / "two")
    config.num_hidden_layers = layers
    torch.manual_seed(3)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    shutil.copy(directory / "two" / "tokenizer.json", directory)
    return directory


def _task_adapter(tmp_path: Path, cls: str, task: str, family: str = "bert", **extra: object) -> tuple:
    """(peft's model, the base folder, the adapter folder) of a `cls` task model on `family`'s body."""
    import transformers

    make_hf_model(family, tmp_path / "body")
    options = {"num_labels": 3, "pad_token_id": 0, **extra}
    config = transformers.AutoConfig.from_pretrained(tmp_path / "body", **options)
    torch.manual_seed(0)
    model = getattr(transformers, cls)(config).eval()
    model.save_pretrained(tmp_path / "base")
    shutil.copy(tmp_path / "body" / "tokenizer.json", tmp_path / "base")
    targets = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"]}.get(family, ["query", "value"])
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type=task)
    )
    with torch.no_grad():
        for name, param in wrapped.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    wrapped.save_pretrained(tmp_path / "adapter")
    return wrapped.eval(), tmp_path / "base", tmp_path / "adapter"


@pytest.mark.parametrize(
    ("family", "extra"),
    [
        ("bert", {}),
        ("gpt2", {}),
        ("llama", {}),
        ("bert", {"problem_type": "multi_label_classification"}),  # refused until 2026-12-06
        ("llama", {"num_labels": 1}),  # a reward model's LoRA: refused until 2026-12-06
    ],
)
def test_a_classification_adapter_comes_in_as_the_classifier_peft_adapted(
    family: str, extra: dict[str, object], tmp_path: Path
) -> None:
    """SEQ_CLS on a ...ForSequenceClassification (an encoder's, or a decoder's `score` head, whose
    adapters were refused until 2026-12-06): an lmforge classifier with peft's logits and the
    adapter's own head (modules_to_save), not the base's, read as the base's problem_type says."""
    from lmforge.model.classifier import Classifier

    cls = {"bert": "Bert", "gpt2": "GPT2", "llama": "Llama"}[family] + "ForSequenceClassification"
    reference, base, adapter = _task_adapter(tmp_path, cls, "SEQ_CLS", family, **extra)
    ids = torch.randint(1, VOCAB, (2, 9))
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "out")]) == 0
    ours, _ = lmforge.load(tmp_path / "out")
    assert isinstance(ours, Classifier) and len(ours.labels) == extra.get("num_labels", 3)
    assert ours.problem_type == extra.get("problem_type", "")
    with torch.no_grad():
        theirs = reference(input_ids=ids).logits
        with reference.disable_adapter():
            assert (reference(input_ids=ids).logits - theirs).abs().max() > 1e-2  # the adapter matters
        assert (ours(ids) - theirs).abs().max() < 1e-4
    # the base as an lmforge classifier directory: exported to HF's names, merged all the same
    import_hf(base, tmp_path / "own-base")
    import_hf(adapter, tmp_path / "out-own", base=tmp_path / "own-base")
    own = lmforge.load(tmp_path / "out-own")[0]
    assert own.problem_type == ours.problem_type  # type: ignore[union-attr]
    with torch.no_grad():
        assert (own(ids) - theirs).abs().max() < 1e-4


def test_a_head_saved_whole_onto_a_bare_body_says_which_base_to_give(tmp_path: Path) -> None:
    """peft's classification adapters save their new head whole (modules_to_save): merged onto
    the bare body, the line said only "'classifier.bias' names no tensor of the base model"."""
    _, _, adapter = _task_adapter(tmp_path, "BertForSequenceClassification", "SEQ_CLS")
    with pytest.raises(
        LmforgeError,
        match=r"task_type 'SEQ_CLS': .* but the base is BertModel, the bare body: give the ...ForSequence",
    ):
        import_hf(adapter, tmp_path / "out", base=tmp_path / "body")
    # without a task type (peft's plain PeftModel), the head it saved whole names the base to give
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "task_type": None}))
    with pytest.raises(
        LmforgeError,
        match=r"names no tensor of the base model: a module the adapter trains whole, such as a task head",
    ):
        import_hf(adapter, tmp_path / "out", base=tmp_path / "body")


@pytest.mark.parametrize(
    ("cls", "task", "family", "message"),
    [  # until 2026-12-06 each merged with exit 0: a language model, or a body, its head dropped
        (
            "GPT2LMHeadModel",
            "SEQ_CLS",
            "gpt2",
            r"task_type 'SEQ_CLS': the adapter is for a sequence classifier, but the base is GPT2LMHeadModel,"
            r" the bare body: give the ...ForSequenceClassification it was made on",
        ),
        (
            "BertForTokenClassification",
            "TOKEN_CLS",
            "bert",
            r"task_type 'TOKEN_CLS' \(a label per token, on BertForTokenClassification\): lmforge has no",
        ),
    ],
)
def test_an_adapter_for_a_task_the_import_would_not_make_is_refused(
    tmp_path: Path, cls: str, task: str, family: str, message: str
) -> None:
    _, base, adapter = _task_adapter(tmp_path, cls, task, family)
    with pytest.raises(LmforgeError, match=message):
        import_hf(adapter, tmp_path / "out", base=base)
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_a_task_type_the_base_is_not_is_refused(tmp_path: Path) -> None:
    _, base, adapter = _adapter(tmp_path, "llama", {"target_modules": ["q_proj"]})
    config = json.loads((adapter / "adapter_config.json").read_text())
    for task, message in (
        (
            "SEQ_2_SEQ_LM",
            r"the adapter is for an encoder-decoder, but lmforge imports the base, LlamaForCausalLM, as a",
        ),
        ("QUESTION_ANS", r"task_type 'QUESTION_ANS': the adapter is for a question-answering"),
        ("CAUSAL_LMX", r"task_type 'CAUSAL_LMX' is not a PEFT task type lmforge imports"),
    ):
        (adapter / "adapter_config.json").write_text(json.dumps({**config, "task_type": task}))
        with pytest.raises(LmforgeError, match=message):
            import_hf(adapter, tmp_path / "out", base=base)


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"])
def test_an_adapter_made_on_another_depth_is_refused_naming_both(tmp_path: Path, targets: object) -> None:
    """A 2-layer model's adapter merged into a 3-layer base left its last layer unadapted (exit 0);
    a 3-layer one's into a 2-layer base named a tensor, not the depths. peft saves "all-linear" as
    full module names, which only the depth rule sees."""
    _, two, adapter = _adapter(tmp_path, "llama", {"target_modules": targets})
    three = _deeper("llama", tmp_path / "three", 3)
    said = (  # short names: peft's suffix match would have reached layer 2's
        r"no adapter for the base's 'model.layers.2.self_attn.q_proj', which target_modules names"
        if isinstance(targets, list)
        else r"the adapter has LoRA on every linear layer of layers 0-1 of model.layers \(peft's all-linear"
        r" on a 2-layer model\), the base has 3 layers"
    )
    with pytest.raises(LmforgeError, match=said):
        import_hf(adapter, tmp_path / "out", base=three)
    model = transformers_model(three)
    peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets)).save_pretrained(
        tmp_path / "deep-adapter"
    )
    saved = tmp_path / "deep-adapter" / "adapter_config.json"  # its base named: refused for that first
    saved.write_text(json.dumps({**json.loads(saved.read_text()), "base_model_name_or_path": None}))
    with pytest.raises(
        LmforgeError,
        match=r"reaches layer 2 of model.layers \(a model of at least 3 layers\), the base has 2",
    ):
        import_hf(tmp_path / "deep-adapter", tmp_path / "out", base=two)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "options",
    [
        {"target_modules": ["q_proj", "v_proj"], "exclude_modules": r".*layers\.1\..*"},
        {"target_modules": ["q_proj"], "exclude_modules": ["model.layers.1.self_attn.q_proj"]},
        {"target_modules": ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]},
    ],
    ids=["exclude-regex", "exclude-list", "full-names"],
)
def test_an_adapter_that_leaves_layers_out_on_purpose_merges(tmp_path: Path, options: dict) -> None:
    """Not another depth: exclude_modules, or full names of the first layer's modules alone, left
    layer 1 out (refused as an adapter of a 1-layer model, a helper found); peft's logits."""
    reference, base, adapter = _adapter(tmp_path, "llama", options)
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "out")]) == 0
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        assert (_logits(lmforge.load(tmp_path / "out")[0], ids) - reference(ids).logits).abs().max() < 1e-4


def transformers_model(directory: Path) -> torch.nn.Module:
    import transformers

    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


def test_each_module_target_modules_names_must_have_its_adapter(tmp_path: Path) -> None:
    _, base, adapter = _adapter(tmp_path, "llama", {"target_modules": ["q_proj", "v_proj"]})
    from safetensors.torch import load_file, save_file

    weights = adapter / "adapter_model.safetensors"
    tensors = {k: v for k, v in load_file(str(weights)).items() if ".layers.1.self_attn.q_proj." not in k}
    save_file(tensors, str(weights))
    with pytest.raises(
        LmforgeError,
        match=r"no adapter for the base's 'model.layers.1.self_attn.q_proj', which target_modules names \(",
    ):
        import_hf(adapter, tmp_path / "out", base=base)


def test_layers_to_transform_adapts_the_layers_it_names_and_merges(tmp_path: Path) -> None:
    """Not a depth mismatch: peft chose layer 1 alone; the merge gives peft's logits."""
    reference, base, adapter = _adapter(
        tmp_path, "llama", {"target_modules": ["q_proj"], "layers_to_transform": [1]}
    )
    assert main(["import", str(adapter), "--base", str(base), "--out", str(tmp_path / "out")]) == 0
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        assert (_logits(lmforge.load(tmp_path / "out")[0], ids) - reference(ids).logits).abs().max() < 1e-4


def test_a_base_model_name_or_path_here_that_differs_from_base_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, base, adapter = _adapter(tmp_path, "llama", {"target_modules": ["q_proj"]})
    other = _deeper("llama", tmp_path / "three", 3)
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(other)})
    )
    with pytest.raises(
        LmforgeError,
        match=rf"base_model_name_or_path {other} is another model than --base {base} \(layers 3 vs 2\): give",
    ):
        import_hf(adapter, tmp_path / "out", base=base)
    make_hf_model("gpt2", tmp_path / "gpt2")
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(tmp_path / "gpt2")})
    )
    with pytest.raises(LmforgeError, match=r"\(model_type 'gpt2' vs 'llama'\): give --base"):
        import_hf(adapter, tmp_path / "out", base=base)
    # a hub name is not fetched: the merge's line says it was not compared
    (adapter / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M"})
    )
    capsys.readouterr()
    import_hf(adapter, tmp_path / "out", base=base)
    assert "base_model_name_or_path 'HuggingFaceTB/SmolLM2-135M' is no folder here, so not compared" in (
        capsys.readouterr().err
    )
