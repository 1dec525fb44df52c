"""BertForQuestionAnswering in and out: lmforge's span model gives transformers' start/end logits
(within 1e-4) read directly, after `lmforge import` and after `lmforge export`, on tiny random models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import lmforge
from lmforge.errors import LmforgeError
from lmforge.model.span import SpanModel

transformers = pytest.importorskip("transformers")
FIXTURE = Path(__file__).parent / "fixtures" / "bert-qa"  # built by transformers (build.py there)
PAIRS = [
    ("Who kept the crown?", "The old king of the northern valley kept his crown in a tower of grey stone."),
    ("Which river?", "The river Aubrac floods every autumn; the farmers move their sheep to the hills."),
]


def random_bert_qa(directory: Path, seed: int) -> Path:
    """A fresh random BertForQuestionAnswering saved by the installed transformers (the fixture's
    tokenizer), its biases and norms randomised too."""
    shutil.copytree(FIXTURE, directory, ignore=shutil.ignore_patterns("*.py", "golden.json", "model.*"))
    config = transformers.BertConfig.from_pretrained(FIXTURE)
    torch.manual_seed(seed)
    model = transformers.BertForQuestionAnswering(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    return directory


def logits_of(model: torch.nn.Module, hf: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(start, end, mask) on two padded question/context pairs."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(FIXTURE)
    batch = tokenizer([q for q, _ in PAIRS], [c for _, c in PAIRS], padding=True, return_tensors="pt")
    with torch.no_grad():
        if hf:
            out = model(**batch)
            return out.start_logits, out.end_logits, batch.attention_mask.bool()
        logits = model(batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return logits[..., 0], logits[..., 1], batch.attention_mask.bool()


def assert_same(ours: SpanModel, theirs: torch.nn.Module) -> None:
    start, end, mask = logits_of(ours, hf=False)
    hf_start, hf_end, _ = logits_of(theirs, hf=True)
    assert (start - hf_start)[mask].abs().max().item() <= 1e-4
    assert (end - hf_end)[mask].abs().max().item() <= 1e-4


@pytest.mark.parametrize("seed", [None, 1, 2])
def test_import_and_export_keep_transformers_logits(tmp_path: Path, seed: int | None) -> None:
    source = FIXTURE if seed is None else random_bert_qa(tmp_path / "hf", seed)
    reference = transformers.AutoModelForQuestionAnswering.from_pretrained(source).eval()
    direct, _ = lmforge.load(source)  # an HF directory loads as it is
    assert isinstance(direct, SpanModel)
    assert_same(direct, reference)

    imported = lmforge.import_hf(source, tmp_path / "imported")
    assert json.loads((imported / "config.json").read_text())["model_type"] == "lmforge-qa"
    model, _ = lmforge.load(imported)
    assert isinstance(model, SpanModel)
    assert_same(model, reference)

    exported = lmforge.export_hf(imported, tmp_path / "exported")
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == ["BertForQuestionAnswering"] and config["model_type"] == "bert"
    back, info = transformers.AutoModelForQuestionAnswering.from_pretrained(
        exported, output_loading_info=True
    )
    assert isinstance(back, transformers.BertForQuestionAnswering)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # no pooler, nothing left random
    assert_same(model, back.eval())


def test_missing_or_misshapen_span_head_is_one_line(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "hf"
    shutil.copytree(FIXTURE, directory, ignore=shutil.ignore_patterns("*.py", "golden.json"))
    state = load_file(str(directory / "model.safetensors"))
    save_file(
        {k: v for k, v in state.items() if k != "qa_outputs.bias"}, str(directory / "model.safetensors")
    )
    with pytest.raises(LmforgeError, match="missing tensor 'qa_outputs.bias'"):
        lmforge.load(directory)
    state["qa_outputs.weight"] = torch.zeros(3, state["qa_outputs.weight"].shape[1])
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(LmforgeError, match=r"'qa_outputs.weight' has shape \(3, 32\), expected \(2, 32\)"):
        lmforge.load(directory)
