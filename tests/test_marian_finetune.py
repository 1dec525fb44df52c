"""`lmforge train --init-from` an HF Marian (opus-mt shaped) directory: raw pairs are tokenized with
the model's sentencepiece files, the decoder starts from its pad token, and the first training loss
equals transformers' loss for the same batch on the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from lmforge.config import Config  # noqa: E402
from lmforge.data.pair_loader import PairLoader  # noqa: E402
from lmforge.data.pairs import load_split  # noqa: E402
from lmforge.formats.directory import load_model  # noqa: E402
from lmforge.formats.hf_export import export_hf  # noqa: E402
from lmforge.train.loop import train  # noqa: E402
from tests.marian_helpers import make_marian_model, pairs  # noqa: E402


def test_finetune_marian_dir_matches_transformers_loss_and_exports(tmp_path: Path) -> None:
    hf_dir = tmp_path / "opus-mt"
    hf = make_marian_model(hf_dir, eos_bias=0.0)
    generation = hf_dir / "generation_config.json"  # a length_penalty the fine-tuned model keeps
    generation.write_text(json.dumps(json.loads(generation.read_text()) | {"length_penalty": 0.6}))
    short = [(en, fr) for en, fr in pairs(1200) if len(en) < 90 and len(fr) < 90][:240]
    # one document per pair: the 2% validation split by document hash then holds a few pairs
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        "".join(json.dumps({"doc": f"d{i}", "en": en, "fr": fr}) + "\n" for i, (en, fr) in enumerate(short))
    )
    cfg = Config()
    cfg.data.input, cfg.data.task = str(data), "translation"
    t = cfg.train
    t.init_from, t.max_steps, t.batch_size, t.lr, t.warmup_steps = str(hf_dir), 4, 8, 1e-3, 0
    t.eval_interval, t.log_interval, t.eval_bleu_sentences, t.dtype = 4, 1, 4, "fp32"
    run = tmp_path / "run"
    train(cfg, out=run, quiet=True)

    # the first step's loss is transformers' cross-entropy on the same batch, pad as decoder start
    src, tgt = load_split(run / "data", "train")
    pad = hf.config.pad_token_id
    loader = PairLoader(
        src, tgt, 8, 8, 0, pad, seed=t.seed, limit=hf.config.max_position_embeddings, start=pad
    )
    ((s, tgt_in, tgt_out),) = loader.next_step()
    assert (tgt_in[:, 0] == pad).all()
    with torch.no_grad():
        logits = hf(input_ids=s, attention_mask=s != pad, decoder_input_ids=tgt_in).logits
    expected = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=-100).item()
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(expected, rel=1e-4)

    # the trained model keeps Marian's start token, exports to a MarianMTModel and agrees with it
    ours, tokenizer = load_model(run / "model")
    assert ours.start_id == pad and pad in ours.suppress_ids
    assert (ours.num_beams, ours.early_stopping) == (1, False)  # opus-mt's: transformers' defaults
    assert ours.length_penalty == 0.6
    export_hf(run / "model", tmp_path / "back")
    kept = transformers.GenerationConfig.from_pretrained(tmp_path / "back")
    assert (kept.early_stopping, kept.length_penalty) == (False, 0.6)
    back, info = transformers.MarianMTModel.from_pretrained(tmp_path / "back", output_loading_info=True)
    assert not any(info.values())
    assert not torch.equal(back.model.shared.weight, hf.model.shared.weight)  # it trained
    with torch.no_grad():
        theirs = back.eval()(input_ids=s, attention_mask=s != pad, decoder_input_ids=tgt_in).logits
        mine = ours(s, tgt_in)
    assert (theirs - mine).abs().max().item() < 1e-4
