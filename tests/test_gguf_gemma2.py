"""Gemma 2's GGUF files (`gemma2`, formats/gguf_arch.py), written as llama.cpp's convert_hf_to_gguf.py
writes them from tiny random transformers models (tests/test_gemma2.py's, caps that bite), imported,
and their logits checked within 1e-4 of the transformers model's and of transformers' own GGUF load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

from hf_helpers import load_whole  # noqa: E402
from test_gemma2 import CAPS, LAYERS, WINDOW, bite  # noqa: E402
from test_gguf_gemma_smollm3 import TOKENS, _meta, difference, write_like_llama_cpp  # noqa: E402

from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.gguf import config_from_metadata  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.formats.hf_files import import_hf  # noqa: E402


def test_a_gguf_file_as_llama_cpps_converter_writes_it(tmp_path: Path) -> None:
    """gemma2 files (convert_hf_to_gguf.py's Gemma2Model: norms stored as 1 + weight, no lm_head, the
    caps and the window as metadata, no rope.freq_base) import with transformers' logits, and with
    its own GGUF load's where that reads the file (Gemma2Config's default caps and scale)."""
    shape = dict(vocab_size=len(TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=len(LAYERS),
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=32,
                 max_position_embeddings=64, sliding_window=WINDOW, attn_implementation="eager",
                 **CAPS)  # fmt: skip
    torch.manual_seed(0)
    hf = bite(transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**shape)))
    keys = {
        "attention.key_length": 32,
        "attention.value_length": 32,
        "attention.sliding_window": WINDOW,
        **CAPS,
    }
    write_like_llama_cpp(hf, tmp_path / "g.gguf", "gemma2", keys)
    import_hf(tmp_path / "g.gguf", tmp_path / "out")
    model, _ = load_model(tmp_path / "out")
    c = model.config
    assert (c.sliding_window, c.sliding_window_pattern, c.attn_softcap, c.logit_softcap, c.rope_theta) == (
        WINDOW, 2, 2.0, 5.0, 1e4)  # fmt: skip
    assert difference(model, hf) < 1e-4
    export_hf(tmp_path / "out", tmp_path / "back")  # the norms back as transformers holds them
    assert difference(load_whole(transformers.AutoModelForCausalLM, tmp_path / "back"), hf) < 1e-4

    default = shape | {"head_dim": 256, "query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0,
                       "final_logit_softcapping": 30.0, "num_attention_heads": 2,
                       "num_key_value_heads": 1}  # fmt: skip
    torch.manual_seed(1)
    hf = bite(transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**default)))
    keys = {"attention.key_length": 256, "attention.value_length": 256, "attention.sliding_window": WINDOW,
            "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0}  # fmt: skip
    write_like_llama_cpp(hf, tmp_path / "d.gguf", "gemma2", keys)
    import_hf(tmp_path / "d.gguf", tmp_path / "d")
    model, _ = load_model(tmp_path / "d")
    loaded = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="d.gguf", dtype=torch.float32
    )
    assert difference(model, hf) < 1e-4 and difference(model, loaded.eval()) < 1e-4


def test_gemma2_metadata_as_llama_cpp_reads_it(tmp_path: Path) -> None:
    """Without the keys: a window of 4096 and caps of 50 and 30; the 46-layer 27B scales attention by
    embedding_length / head_count; a window or cap that is not > 0 is one line."""
    file = tmp_path / "g.gguf"
    c = config_from_metadata(_meta("gemma2", **{"attention.key_length": 256}), set(), file)
    assert (c.sliding_window, c.sliding_window_pattern, c.attn_softcap, c.logit_softcap) == (4096, 2, 50, 30)
    assert (c.attn_scale_dim, c.rope_theta, c.qk_norm, c.norm_unit_offset) == (0, 1e4, False, True)
    big = config_from_metadata(_meta("gemma2", block_count=46, **{"attention.key_length": 256}), set(), file)
    assert big.attn_scale_dim == 32
    window = _meta("gemma2", **{"attention.sliding_window": 0})
    with pytest.raises(
        LmforgeError, match=r"'gemma2\.attention\.sliding_window' is 0, expected a count >= 1$"
    ):
        config_from_metadata(window, set(), file)
    capped = _meta("gemma2", final_logit_softcapping=0.0)
    with pytest.raises(
        LmforgeError, match=r"g\.gguf: GGUF key 'gemma2\.final_logit_softcapping' is 0\.0, expected"
    ):
        config_from_metadata(capped, set(), file)
