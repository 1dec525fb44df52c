"""Marian (opus-mt) interop: the sentencepiece tokenizer, logits and greedy/beam parity with
transformers' MarianMTModel, export back, bit-exact round trip, and the translation entry points."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from marian_helpers import make_marian_model, make_marian_tokenizer, pairs
from safetensors.torch import load_file

import lmforge
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf
from lmforge.inference.seq2seq_decode import beam_decode, greedy_decode
from lmforge.model.seq2seq import Seq2Seq, sinusoidal_table
from lmforge.tokenization.marian import MarianTokenizer

transformers = pytest.importorskip("transformers")
# transformers' MarianTokenizer asks for sacremoses, whose normaliser it then never calls
pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
MAX_NEW = 20


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("marian") / "hf"
    make_marian_model(directory)
    return directory


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [en for en, _ in pairs(3000) if len(en) < 50][:8]


def _hf(directory: Path) -> torch.nn.Module:
    model, info = transformers.MarianMTModel.from_pretrained(directory, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def _hf_generate(
    hf: torch.nn.Module,
    batch: dict,
    beam: int,
    early_stopping: bool | str = True,
    max_new: int = MAX_NEW,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """transformers' output ids with the decoder start, EOS and padding stripped."""
    with torch.no_grad():
        out = hf.generate(
            **batch,
            num_beams=beam,
            do_sample=False,
            max_new_tokens=max_new,
            # the config's forced_eos_token_id (0) ends a row at the limit with EOS, as lmforge does
            early_stopping=early_stopping,
            length_penalty=length_penalty,
        )
    rows = []
    for row in out[:, 1:].tolist():
        row = row[: row.index(0)] if 0 in row else row
        rows.append([i for i in row if i != hf.config.pad_token_id])
    return rows


def _check_parity(hf: torch.nn.Module, ours: Seq2Seq, batch: dict) -> None:
    src = batch["input_ids"]
    tgt = torch.randint(
        0, hf.config.vocab_size - 1, (src.size(0), 9), generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        expected = hf(**batch, decoder_input_ids=tgt).logits
        got = ours(src, tgt)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= 1e-4
    limits = [MAX_NEW] * src.size(0)
    greedy = greedy_decode(ours, src, limits, 0)
    assert greedy == _hf_generate(hf, batch, 1)
    assert len({len(g) for g in greedy}) > 2  # outputs end at varied lengths (EOS and the limit)
    for stopping in (True, False, "never"):
        assert beam_decode(ours, src, limits, 0, 3, early_stopping=stopping) == _hf_generate(
            hf, batch, 3, stopping
        )
    # the model's own early_stopping: an HF Marian without one says transformers' default, False
    assert beam_decode(ours, src, limits, 0, 3) == _hf_generate(hf, batch, 3, ours.early_stopping)


def test_tokenizer_matches_transformers(hf_dir: Path, sentences: list[str]) -> None:
    ours = lmforge.load(hf_dir)[1]
    theirs = transformers.MarianTokenizer.from_pretrained(hf_dir)
    texts = [*sentences, ">>fra<< The house is small.", "Zyxw qôü 123!", ""]
    assert [ours.encode(t) + [ours.eos_id] for t in texts] == theirs(texts).input_ids
    assert ours.unk_id in ours.encode("Zyxw qôü 123!")
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(0, ours.vocab_size, (n,), generator=g).tolist() for n in (1, 5, 17, 30)]
    ids.append(ours.encode_target("Au commencement, Dieu créa les cieux et la terre.") + [ours.eos_id])
    assert [ours.decode(i) for i in ids] == theirs.batch_decode(ids, skip_special_tokens=True)
    assert ours.decode(ids[-1]) == "Au commencement, Dieu créa les cieux et la terre."


def test_special_tokens_typed_in_a_text_are_their_ids_as_transformers(tmp_path: Path) -> None:
    """transformers' MarianTokenizer takes a typed `</s>`, `<unk>`, `<pad>` (and a special token of
    additional_special_tokens that vocab.json holds) as its id, each part between them segmented
    with its own language code; lmforge gave their characters' pieces."""
    make_marian_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    piece = next(p for p in vocab if len(p) == 2 and p.isalpha())  # an ordinary piece, made special
    config["additional_special_tokens"] = ["<eop>", piece]  # <eop>: not in vocab.json
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours = MarianTokenizer(tmp_path)
    theirs = transformers.MarianTokenizer.from_pretrained(tmp_path)
    texts = ["Hello </s> world", "a   <pad>   b", "<unk> x", "Hello</s></s>world", ">>fr<< x </s>>>de<< y"]
    texts += [" </s> ", f"the {piece}{piece}x house"]
    assert [ours.encode(t) + [ours.eos_id] for t in texts] == theirs(texts).input_ids
    assert ours.encode_target("a </s> b") == theirs(text_target="a </s> b").input_ids[:-1]
    # a special token vocab.json lacks: transformers gives it an id past the model's rows, lmforge
    # segments it as text
    assert max(ours.encode("x <eop> y")) < len(vocab) <= theirs("x <eop> y").input_ids[2]


def test_sinusoidal_table_is_transformers_bit_for_bit() -> None:
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    for n, dim in ((64, 64), (40, 512)):
        assert torch.equal(
            sinusoidal_table(n, dim), MarianSinusoidalPositionalEmbedding(n, dim).create_weight()
        )


def test_parity_import_export_roundtrip(hf_dir: Path, sentences: list[str], tmp_path: Path) -> None:
    hf = _hf(hf_dir)
    batch = dict(
        transformers.MarianTokenizer.from_pretrained(hf_dir)(sentences, return_tensors="pt", padding=True)
    )

    model, _ = lmforge.load(hf_dir)  # an HF Marian directory loads directly
    assert isinstance(model, Seq2Seq) and model.start_id == model.pad_id == hf.config.pad_token_id
    _check_parity(hf, model, batch)

    import_hf(hf_dir, tmp_path / "ours")
    imported, _ = lmforge.load(tmp_path / "ours")
    _check_parity(hf, imported, batch)

    export_hf(tmp_path / "ours", tmp_path / "back")
    _check_parity(_hf(tmp_path / "back"), imported, batch)
    original, exported = (
        load_file(str(hf_dir / "model.safetensors")),
        load_file(str(tmp_path / "back" / "model.safetensors")),
    )
    assert original.keys() == exported.keys()
    for name, tensor in original.items():
        assert torch.equal(tensor, exported[name]), name
    back_tok = transformers.MarianTokenizer.from_pretrained(tmp_path / "back")
    assert back_tok(sentences).input_ids == [list(r[r != hf.config.pad_token_id]) for r in batch["input_ids"]]


def test_pad_token_is_never_generated(hf_dir: Path, sentences: list[str]) -> None:
    """The check above can fail: this random model favours its pad token, which Marian masks."""
    model, tokenizer = lmforge.load(hf_dir)
    src = torch.tensor([tokenizer.encode(sentences[0]) + [tokenizer.eos_id]])
    assert model.pad_id not in greedy_decode(model, src, [MAX_NEW], 0)[0]
    model.suppress_ids = []
    assert model.pad_id in greedy_decode(model, src, [MAX_NEW], 0)[0]


def test_pipeline_and_cli_translate_marian_dir(
    hf_dir: Path, sentences: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main

    hf = _hf(hf_dir)
    tokenizer = transformers.MarianTokenizer.from_pretrained(hf_dir)
    with torch.no_grad():
        out = hf.generate(
            **tokenizer(sentences, return_tensors="pt", padding=True), num_beams=1, do_sample=False
        )
    expected = tokenizer.batch_decode(out, skip_special_tokens=True)
    # lmforge stops at 2 x source + 10 tokens (EOS included), transformers at max_length (forcing an
    # EOS there): compare the sentences that end with EOS before either limit.
    short = [
        i
        for i, row in enumerate(out.tolist())
        if 0 in row and row.index(0) <= min(2 * len(tokenizer(sentences[i]).input_ids) + 10, out.size(1) - 2)
    ]
    assert len(short) >= 3
    got = lmforge.pipeline("translation_en_to_fr", model=hf_dir)(sentences, num_beams=1)
    with pytest.raises(LmforgeError, match="translates en to fr, not fr to en"):  # tokenizer_config.json's
        lmforge.pipeline("translation_fr_to_en", model=hf_dir)
    three = tmp_path / "eng-fra"  # some opus-mt name ISO 639-3 codes: not comparable with en, fr
    shutil.copytree(hf_dir, three)
    names = json.loads((three / "tokenizer_config.json").read_text()) | {"source_lang": "eng"}
    (three / "tokenizer_config.json").write_text(json.dumps(names | {"target_lang": "fra"}))
    assert lmforge.pipeline("translation_en_to_fr", model=three)(sentences[:1])
    assert all(set(g) == {"translation_text"} for g in got)
    assert [got[i]["translation_text"] for i in short] == [expected[i] for i in short]

    assert main(["translate", str(hf_dir), sentences[short[0]]]) == 0
    assert capsys.readouterr().out.strip() == expected[short[0]]
    src, ref = tmp_path / "test.en", tmp_path / "test.fr"
    src.write_text("".join(sentences[i] + "\n" for i in short))
    ref.write_text("".join(expected[i] + "\n" for i in short))
    result = lmforge.eval_translate(hf_dir, src, ref)
    assert result["sentences"] == len(short) and result["chrf"] == pytest.approx(100.0)


def test_cli_import_export_and_unsupported_config(hf_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    from lmforge.cli import main

    assert main(["import", str(hf_dir), "--out", str(tmp_path / "ours")]) == 0
    assert (tmp_path / "ours" / "source.spm").is_file()
    assert main(["export", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    generation = json.loads((tmp_path / "back" / "generation_config.json").read_text())
    pad = json.loads((hf_dir / "config.json").read_text())["pad_token_id"]
    assert generation["bad_words_ids"] == [[pad]] and generation["decoder_start_token_id"] == pad

    bad = tmp_path / "bad"
    shutil.copytree(hf_dir, bad)
    raw = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**raw, "decoder_layers": 3}))
    with pytest.raises(LmforgeError, match="encoder_layers=2 != decoder_layers=3"):
        lmforge.load(bad)


def test_pytorch_bin_with_every_tied_copy_and_position_table(
    hf_dir: Path, sentences: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """opus-mt's pytorch_model.bin files hold the embedding under four names and the sinusoidal
    tables; some hold no `model.shared.weight`. Each loads, with nothing reported unused."""
    import shutil

    hf = _hf(hf_dir)
    batch = dict(
        transformers.MarianTokenizer.from_pretrained(hf_dir)(sentences, return_tensors="pt", padding=True)
    )
    state = hf.state_dict()
    assert "model.encoder.embed_positions.weight" in state and "lm_head.weight" in state
    for drop in ((), ("model.shared.weight",)):
        directory = tmp_path / f"bin{len(drop)}"
        shutil.copytree(hf_dir, directory)
        (directory / "model.safetensors").unlink()
        torch.save({k: v.clone() for k, v in state.items() if k not in drop}, directory / "pytorch_model.bin")
        capsys.readouterr()
        model, _ = lmforge.load(directory)
        assert "not loaded" not in capsys.readouterr().err
        _check_parity(hf, model, batch)


def test_lmforge_seq2seq_without_marian_shape_is_refused_on_export(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from lmforge.cli import main
    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.tokenization.tokenizer import Tokenizer

    tokenizer = Tokenizer.train_char(["the house is small"])
    config = ModelConfig(
        n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=tokenizer.vocab_size, arch="seq2seq"
    )
    assert tokenizer.pad_id is not None
    write_model_dir(tmp_path / "own", config, Seq2Seq(config, tokenizer.pad_id).state_dict(), tokenizer)
    assert main(["export", str(tmp_path / "own"), "--out", str(tmp_path / "hf")]) == 2
    assert "has no Marian equivalent" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_default_beam_comes_from_the_generation_config(
    hf_dir: Path, sentences: list[str], tmp_path: Path
) -> None:
    """opus-mt's generation_config.json says num_beams 4, which transformers' generate uses when a
    call gives none; so does lmforge's translate (and eval-translate), through import and export.
    transformers 4.x's TranslationPipeline searches with its own 4 beams whatever the file says (its
    _default_generation_config wins), and so does lmforge's pipeline (until 2026-12-07 the file's)."""
    import json
    import shutil

    directory = tmp_path / "beams"
    shutil.copytree(hf_dir, directory)
    generation = json.loads((directory / "generation_config.json").read_text())
    (directory / "generation_config.json").write_text(json.dumps({**generation, "num_beams": 3}))
    assert lmforge.load(hf_dir)[0].num_beams == 1 and lmforge.load(directory)[0].num_beams == 3

    translator = lmforge.pipeline("translation_en_to_fr", model=directory)
    default, beam3, beam4, greedy = (translator(sentences, num_beams=n) for n in (None, 3, 4, 1))
    assert default == beam4 != beam3 != greedy
    assert lmforge.translate(directory, sentences) == [d["translation_text"] for d in beam3]
    assert lmforge.pipeline("translation_en_to_fr", model=hf_dir)(sentences) == default  # the file names none

    import_hf(directory, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["num_beams"] == 3
    assert lmforge.pipeline("translation_en_to_fr", model=tmp_path / "ours")(sentences, num_beams=3) == beam3
    export_hf(tmp_path / "ours", tmp_path / "back")
    assert json.loads((tmp_path / "back" / "generation_config.json").read_text())["num_beams"] == 3
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "back").num_beams == 3


def test_early_stopping_comes_from_the_generation_config(
    hf_dir: Path, sentences: list[str], tmp_path: Path
) -> None:
    """transformers ends opus-mt's beam search with early_stopping=False (its default: the file
    does not say), searching on after K finished hypotheses while a live beam can still beat
    them; lmforge's own models keep True. Capped rows tell them apart (a helper's 7 of 28)."""
    hf = _hf(hf_dir)
    texts = [en for en, _ in pairs(3000) if len(en) < 50][:28]
    batch = dict(
        transformers.MarianTokenizer.from_pretrained(hf_dir)(texts, return_tensors="pt", padding=True)
    )
    theirs = {s: _hf_generate(hf, batch, 4, s, max_new=8) for s in (True, False)}
    assert theirs[True] != theirs[False]  # else this test could not tell the settings apart
    model, tokenizer = lmforge.load(hf_dir)
    assert model.early_stopping is False
    translator = lmforge.pipeline("translation", model=hf_dir)
    for stopping in (None, True, False):
        got = translator(texts, num_beams=4, max_new_tokens=8, early_stopping=stopping)
        expected = theirs[False if stopping is None else stopping]
        assert [d["translation_text"] for d in got] == [tokenizer.decode(e).strip() for e in expected], (
            stopping
        )

    import_hf(hf_dir, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["early_stopping"] is False
    assert lmforge.load(tmp_path / "ours")[0].early_stopping is False
    export_hf(tmp_path / "ours", tmp_path / "back")
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "back").early_stopping is False

    generation = json.loads((hf_dir / "generation_config.json").read_text())
    shutil.copytree(hf_dir, tmp_path / "never")
    (tmp_path / "never" / "generation_config.json").write_text(
        json.dumps({**generation, "early_stopping": "never"})
    )
    assert lmforge.load(tmp_path / "never")[0].early_stopping == "never"
    (tmp_path / "never" / "generation_config.json").write_text(
        json.dumps({**generation, "early_stopping": None})
    )
    assert lmforge.load(tmp_path / "never")[0].early_stopping is False  # null: transformers' default
    (tmp_path / "never" / "generation_config.json").write_text(
        json.dumps({**generation, "early_stopping": 1})
    )
    with pytest.raises(LmforgeError, match=r"generation_config.json: early_stopping=1 must be true, false"):
        lmforge.load(tmp_path / "never")
    with pytest.raises(LmforgeError, match=r"early_stopping='yes': must be True, False, \"never\" or None"):
        translator(texts[:1], num_beams=4, early_stopping="yes")


def test_an_exported_seq2seq_with_its_own_tokenizer_ends_a_source_with_eos(tmp_path: Path) -> None:
    """lmforge reads a source as its ids and EOS (Marian's tokenizer writes one); an exported
    Marian-shaped model trained with lmforge's own tokenizer wrote a tokenizer.json without it, so
    transformers' `tok(text)` fed the model other ids than lmforge did."""
    import transformers

    from lmforge.config import ModelConfig
    from lmforge.data.pair_loader import encode_sources
    from lmforge.formats.directory import load_model, write_model_dir
    from lmforge.formats.hf_export import export_hf
    from lmforge.tokenization.tokenizer import Tokenizer

    tokenizer = Tokenizer.train_char(["the house is small", "la maison est petite"])
    shape = {
        "pos": "sinusoidal",
        "post_norm": True,
        "final_norm": False,
        "mlp": "silu",
        "tie_embeddings": True,
    }
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=tokenizer.vocab_size,
                         arch="seq2seq", bias=True, norm_eps=1e-5, logits_bias=True, **shape)  # fmt: skip
    torch.manual_seed(0)
    model = Seq2Seq(config, tokenizer.pad_id or 0)
    write_model_dir(tmp_path / "own", config, model.state_dict(), tokenizer)
    export_hf(tmp_path / "own", tmp_path / "hf")
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the house"
    ids = hf_tokenizer(text).input_ids
    ours = encode_sources([tokenizer.encode(text)], tokenizer.eos_id, model.pad_id)[0].tolist()  # padded
    assert ids == ours[: len(ids)] == [*tokenizer.encode(text), tokenizer.eos_id]
    assert set(ours[len(ids) :]) <= {model.pad_id}
    assert hf_tokenizer.decode(hf_tokenizer(text).input_ids, skip_special_tokens=True) == text
    back, back_tokenizer = load_model(tmp_path / "hf")  # lmforge reads its export's source as before
    assert back_tokenizer.encode(text) == tokenizer.encode(text)
