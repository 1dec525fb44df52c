"""A Hugging Face config.json value of the wrong type is a one-line error naming the file, the key
and what it must be: it was a traceback (a string rope_parameters, a list model_type), a misleading
message (a string head_dim multiplied), or silently true (the string "false")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_helpers import make_hf_model

from lmforge.cli import main

pytest.importorskip("transformers")

CASES = {
    "llama": [
        ({"rope_parameters": "default"}, "'rope_parameters' must be a JSON object, not 'default'"),
        ({"rope_scaling": "yarn"}, "'rope_scaling' must be a JSON object, not 'yarn'"),
        (
            {"rope_parameters": {"rope_type": "default", "rope_theta": "big"}},
            "'rope_parameters.rope_theta' must be a number, not 'big'",
        ),
        ({"rope_scaling": {"type": 2}}, "'rope_scaling.type' must be a string, not 2"),
        ({"model_type": ["llama"]}, "'model_type' must be a string, not ['llama']"),
        ({"sliding_window": "8"}, "'sliding_window' must be a whole number, not '8'"),
        ({"head_dim": "16"}, "'head_dim' must be a whole number, not '16'"),
        ({"hidden_size": "64"}, "'hidden_size' must be a whole number, not '64'"),
        ({"max_position_embeddings": 64.5}, "'max_position_embeddings' must be a whole number, not 64.5"),
        ({"attention_bias": "false"}, "'attention_bias' must be true or false, not 'false'"),
    ],
    "qwen2": [({"use_sliding_window": "false"}, "'use_sliding_window' must be true or false, not 'false'")],
    "gpt2": [
        ({"activation_function": ["gelu"]}, "'activation_function' must be a string, not ['gelu']"),
        ({"scale_attn_weights": "false"}, "'scale_attn_weights' must be true or false, not 'false'"),
    ],
    "bert": [({"hidden_act": ["gelu"]}, "'hidden_act' must be a string, not ['gelu']")],
}


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_config_value_of_the_wrong_type_is_one_line_naming_the_key(
    family: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    hf_dir = tmp_path / "hf"
    make_hf_model(family, hf_dir)
    good = json.loads((hf_dir / "config.json").read_text())
    for change, message in CASES[family]:
        (hf_dir / "config.json").write_text(json.dumps({**good, **change}))
        capsys.readouterr()
        assert main(["import", str(hf_dir), "--out", str(tmp_path / "out")]) == 2, change
        err = capsys.readouterr().err.strip()
        assert err == f"lmforge: error: {hf_dir / 'config.json'}: config key {message}", change
        assert not (tmp_path / "out").exists()


def test_a_list_model_type_is_named_when_loading_too(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every verb that loads a folder reads model_type first (formats/directory.py)."""
    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    good = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**good, "model_type": ["llama"]}))
    capsys.readouterr()
    assert main(["generate", str(hf_dir), "--prompt", "hi", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("config.json: config key 'model_type' must be a string, not ['llama']")
    assert len(err.splitlines()) == 1


def test_the_right_types_still_import(tmp_path: Path) -> None:
    """An integer rope_theta (a float key) and a null sliding_window are as transformers reads them."""
    hf_dir = tmp_path / "hf"
    make_hf_model("qwen2", hf_dir)
    good = json.loads((hf_dir / "config.json").read_text())
    rope = {"rope_type": "default", "rope_theta": 50000}
    (hf_dir / "config.json").write_text(json.dumps({**good, "rope_parameters": rope, "sliding_window": None}))
    assert main(["import", str(hf_dir), "--out", str(tmp_path / "out")]) == 0
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["rope_theta"] == 50000.0
