"""Qwen2 and Qwen3 config.json files as transformers 4 wrote them: no `layer_types`, which
Qwen2Config and Qwen3Config derive from `use_sliding_window`, `sliding_window` and
`max_window_layers` (layer i slides when i >= it). A file whose max_window_layers covers every
layer slides in none, and lmforge attends its whole context as transformers does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import VOCAB, hf_greedy, load_whole, save_randomised

import lmforge
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.generate import generate_ids

transformers = pytest.importorskip("transformers")

WINDOW, CONTEXT = 8, 64
PROMPT = [5, 9, 12, 30]


def make_old_qwen(directory: Path, family: str, **keys: object) -> torch.nn.Module:
    """A random Qwen2/Qwen3ForCausalLM with use_sliding_window and a window of 8, its config.json
    rewritten without layer_types (transformers 4's) and with `keys`; returned in eval."""
    config_class, model_class = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM),
    }[family]
    config = config_class(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=CONTEXT, use_sliding_window=True,
        sliding_window=WINDOW, max_window_layers=28, initializer_range=0.2, eos_token_id=0, bos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    save_randomised(model_class(config).eval(), directory)
    raw = {k: v for k, v in json.loads((directory / "config.json").read_text()).items() if k != "layer_types"}
    (directory / "config.json").write_text(json.dumps({**raw, **keys}))
    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


@pytest.mark.parametrize("family", ["qwen2", "qwen3"])
def test_max_window_layers_over_every_layer_keeps_the_whole_context(family: str, tmp_path: Path) -> None:
    """It was capped at the window (block_size 8 of 64, no note): greedy tokens parted from
    transformers' past the window. Now logits and tokens equal transformers', imported and
    exported back."""
    hf_dir, ours, back = tmp_path / "hf", tmp_path / "ours", tmp_path / "back"
    hf = make_old_qwen(hf_dir, family)
    assert hf.config.layer_types == ["full_attention"] * 2  # transformers 5's reading
    import_hf(hf_dir, ours)
    model, _ = lmforge.load(ours)
    assert model.config.block_size == CONTEXT
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(ids) - hf(input_ids=ids).logits).abs().max().item() <= 1e-4
    assert generate_ids(model, [PROMPT], 20, temperature=0.0, eos_id=None)[0] == hf_greedy(hf, PROMPT, 20)
    export_hf(ours, back)
    again = load_whole(transformers.AutoModelForCausalLM, back)
    with torch.no_grad():
        assert (again(input_ids=ids).logits - hf(input_ids=ids).logits).abs().max().item() <= 1e-4
    assert lmforge.load(back)[0].config == model.config


def test_layers_from_max_window_layers_on_slide(tmp_path: Path) -> None:
    """max_window_layers 1 of 2 layers: layer 1 slides, so the context is the window (within it,
    sliding attention is causal attention); no use_sliding_window, or a null window: none slides;
    use_sliding_window without a sliding_window key: Qwen2Config's 4096."""
    hf_dir = tmp_path / "hf"
    make_old_qwen(hf_dir, "qwen2")
    raw = json.loads((hf_dir / "config.json").read_text())
    cases = [
        ({"max_window_layers": 1}, WINDOW),
        ({"max_window_layers": 0}, WINDOW),
        ({"max_window_layers": 1, "use_sliding_window": False}, CONTEXT),
        ({"max_window_layers": 1, "sliding_window": None}, CONTEXT),
        ({"max_window_layers": 2}, CONTEXT),
    ]
    for change, expected in cases:
        (hf_dir / "config.json").write_text(json.dumps({**raw, **change}))
        layers = transformers.AutoConfig.from_pretrained(hf_dir).layer_types
        assert ("sliding_attention" in layers) == (expected == WINDOW), change
        assert lmforge.load(hf_dir)[0].config.block_size == expected, change
    # no sliding_window key: Qwen2Config's 4096 (the context was the 5000 positions)
    unsaid = {k: v for k, v in raw.items() if k != "sliding_window"} | {"max_window_layers": 1}
    (hf_dir / "config.json").write_text(json.dumps({**unsaid, "max_position_embeddings": 5000}))
    assert transformers.AutoConfig.from_pretrained(hf_dir).sliding_window == 4096
    assert lmforge.load(hf_dir)[0].config.block_size == 4096
    (hf_dir / "config.json").write_text(json.dumps({**raw, "max_window_layers": "28"}))
    with pytest.raises(lmforge.LmforgeError, match=r"config key 'max_window_layers' must be a whole number"):
        lmforge.load(hf_dir)
