"""Parallel data prep, training through the loop, resume, and the translate / eval-translate /
pipeline front ends, on a tiny synthetic English->French corpus."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lmforge.cli import main
from lmforge.data.pair_loader import PairLoader
from lmforge.data.pairs import load_split, prepare_pairs, read_pairs
from lmforge.errors import LmforgeError
from lmforge.train.loop import train
from lmforge.train.losses import IGNORE
from lmforge.train.metrics import read_metrics

LEXICON = {
    "the": "le", "cat": "chat", "dog": "chien", "eats": "mange", "sees": "voit", "big": "grand",
    "small": "petit", "house": "maison", "is": "est", "red": "rouge", "green": "vert", "and": "et",
    "bird": "oiseau", "sleeps": "dort", "here": "ici", "today": "aujourd'hui",
}  # fmt: skip


def _sentence(rng: random.Random) -> tuple[str, str]:
    words = [rng.choice(list(LEXICON)) for _ in range(rng.randint(2, 7))]
    return " ".join(words).capitalize() + ".", " ".join(LEXICON[w] for w in words).capitalize() + "."


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = random.Random(0)
    rows = []
    for d in range(60):
        for _ in range(8):
            en, fr = _sentence(rng)
            rows.append({"doc": f"doc{d}", "en": en, "fr": fr})
    rows += [rows[0], rows[1]]  # exact duplicates
    rows.append({"doc": "doc1", "en": "   ", "fr": "vide"})  # empty side
    rows.append({"doc": "doc2", "en": "Cat.", "fr": " ".join(["chat"] * 30)})  # length ratio
    rows.append({"doc": "doc3", "en": "dog " * 200, "fr": "chien " * 200})  # too long
    path = tmp_path_factory.mktemp("pairs") / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def prepared(pairs_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prep") / "toy"
    prepare_pairs(pairs_file, out, vocab_size=300, max_tokens=64, val_fraction=0.1, test_fraction=0.1)
    return out


def test_prep_filters_dedups_and_holds_out_whole_documents(
    prepared: Path, tmp_path: Path, pairs_file: Path
) -> None:
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["task"] == "translation" and meta["read"] == 60 * 8 + 5
    assert meta["dropped"]["duplicate"] >= 2 and meta["dropped"]["empty"] == 1
    assert meta["dropped"]["ratio"] == 1 and meta["dropped"]["too_long"] == 1
    docs = {s: set((prepared / f"{s}.docs").read_text().split()) for s in ("train", "val", "test")}
    assert docs["val"] and docs["test"]
    assert (
        not (docs["train"] & docs["val"])
        and not (docs["train"] & docs["test"])
        and not (docs["val"] & docs["test"])
    )
    train_en = set((prepared / "train.en").read_text().splitlines())
    assert not train_en & set((prepared / "test.en").read_text().splitlines())  # no source repeats in test
    src, tgt = load_split(prepared, "train")
    assert len(src) == len(tgt) == meta["pairs"]["train"]
    again = tmp_path / "again"
    prepare_pairs(pairs_file, again, vocab_size=300, max_tokens=64, val_fraction=0.1, test_fraction=0.1)
    for name in ("train.en", "test.fr", "val.docs", "tokenizer.json"):
        assert (again / name).read_bytes() == (prepared / name).read_bytes()  # deterministic


def test_tsv_and_aligned_files_read_as_pairs(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_text("Hello\tBonjour\tpage1\nYes\tOui\n")
    (tmp_path / "b.en").write_text("One\nTwo\n")
    (tmp_path / "b.fr").write_text("Un\nDeux\n")
    got = [(p.src, p.tgt, p.doc) for p in read_pairs([tmp_path / "a.tsv", tmp_path / "b.fr"])]
    assert got == [
        ("Hello", "Bonjour", "page1"),
        ("Yes", "Oui", "a.tsv"),
        ("One", "Un", "b.en#0"),
        ("Two", "Deux", "b.en#0"),
    ]


def test_a_spreadsheets_quoted_tsv_cells_are_unquoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Excel, LibreOffice and Python's csv (excel-tab) quote a cell holding a quote and double its
    quotes, and the cell trained with them. Quotes a raw TSV holds stay text."""
    import csv

    with (tmp_path / "sheet.tsv").open("w", newline="") as f:
        writer = csv.writer(f, dialect="excel-tab")
        writer.writerows([["en", "fr"], ['He said "hi".', "Il a dit « salut »."], ['"Yes."', '"Oui."']])
    (tmp_path / "raw.tsv").write_text('"Hi."\t"Salut."\n"a" and "b"\t"a" et "b"\nx ""y""\tz\n')
    got = [(p.src, p.tgt) for p in read_pairs([tmp_path / "sheet.tsv", tmp_path / "raw.tsv"])]
    assert got == [
        ('He said "hi".', "Il a dit « salut »."),
        ('"Yes."', '"Oui."'),
        ('"Hi."', '"Salut."'),
        ('"a" and "b"', '"a" et "b"'),
        ('x ""y""', "z"),
    ]
    assert capsys.readouterr().err.count("doubled quotes inside are read as spreadsheets write them") == 1


def test_a_tsv_header_naming_the_languages_is_no_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spreadsheet's export starts `en<TAB>fr`: it trained as a pair."""
    (tmp_path / "h.tsv").write_text("EN\tfr\nHello\tBonjour\nen\tfr\n")
    got = [(p.src, p.tgt) for p in read_pairs(tmp_path / "h.tsv")]
    assert got == [("Hello", "Bonjour"), ("en", "fr")]  # only a first line is a header
    assert (
        capsys.readouterr().err == f"lmforge: {tmp_path / 'h.tsv'}:1: read as a header (EN, fr), not a pair\n"
    )


def test_a_tsv_header_naming_the_languages_the_other_way_round_is_refused(tmp_path: Path) -> None:
    """`fr<TAB>en` over pairs prepared as en -> fr: the columns are swapped (it trained as a pair, and
    the model learnt the reverse direction)."""
    (tmp_path / "h.tsv").write_text("fr\ten\nBonjour\tHello\n")
    message = (
        f"{tmp_path / 'h.tsv'}:1: its header names the columns fr, en: the other way round from"
        " --src-lang en --tgt-lang fr (give --src-lang fr --tgt-lang en, or swap the columns)"
    )
    with pytest.raises(LmforgeError, match=re.escape(message)):
        list(read_pairs(tmp_path / "h.tsv"))


def test_a_split_left_empty_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Three pairs leave no validation or test pair: `prep --pairs` says so (an empty validation
    split failed in training, which names it itself)."""
    lines = "".join(json.dumps({"en": f"sentence {i}", "fr": f"phrase {i}"}) + "\n" for i in range(3))
    (tmp_path / "three.jsonl").write_text(lines)
    out = tmp_path / "out"
    assert (
        main(["prep", "--pairs", str(tmp_path / "three.jsonl"), "--out", str(out), "--vocab-size", "300"])
        == 0
    )
    assert json.loads((out / "meta.json").read_text())["pairs"] == {"train": 3, "val": 0, "test": 0}
    said = "no val and no test pairs (too few pairs read; training needs validation ones)"
    assert f"lmforge: warning: {out}: {said}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("x.jsonl", '{"en": "a", "fr": "b"}\n{"en": "a"}\n', r"x\.jsonl:2: needs string fields"),
        ("x.jsonl", "{oops\n", r"x\.jsonl:1: not valid JSON"),
        ("x.tsv", "a\tb\nonly one column\n", r"x\.tsv:2: expected 2 or 3"),
    ],
)
def test_bad_pair_input_is_named(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(LmforgeError, match=message):
        prepare_pairs(tmp_path / name, tmp_path / "out", vocab_size=300)


def test_a_byte_order_mark_is_not_part_of_the_first_pair(tmp_path: Path) -> None:
    (tmp_path / "a.tsv").write_bytes(b"\xef\xbb\xbfHello\tBonjour\n")
    assert [(p.src, p.tgt) for p in read_pairs([tmp_path / "a.tsv"])] == [("Hello", "Bonjour")]


@pytest.mark.parametrize(("src_lines", "tgt_lines"), [(3, 2), (2, 3), (4, 2)])
def test_aligned_files_of_different_lengths_are_refused(
    tmp_path: Path, src_lines: int, tgt_lines: int
) -> None:
    """One line more on either side is caught, not dropped (zip alone reads it and stops)."""
    (tmp_path / "x.en").write_text("".join(f"s{i}\n" for i in range(src_lines)))
    (tmp_path / "x.fr").write_text("".join(f"t{i}\n" for i in range(tgt_lines)))
    with pytest.raises(LmforgeError, match=rf"different numbers of lines \({src_lines} and {tgt_lines}\)$"):
        list(read_pairs([tmp_path / "x.en"]))


def test_a_lone_cr_in_aligned_files_is_text_not_a_line_end(tmp_path: Path) -> None:
    """A stray CR inside a sentence ended a line: one in each file shifted every pair between
    them silently (H6), one in a file alone was "different numbers of lines" where `wc -l` says
    equal. Only an LF ends a line now, as `wc -l` and eval-translate count them."""
    src = [f"source {i}" for i in range(8)]
    tgt = [f"cible {i}" for i in range(8)]
    src[1], tgt[6] = "source\r1", "cible\r6"
    (tmp_path / "x.en").write_bytes("".join(f"{line}\n" for line in src).encode())
    (tmp_path / "x.fr").write_bytes("".join(f"{line}\r\n" for line in tgt).encode())  # CRLF too
    got = [(p.src, p.tgt) for p in read_pairs([tmp_path / "x.en"])]
    assert got == [(f"source {i}", f"cible {i}") for i in range(8)]


def test_prep_pairs_trains_the_tokenizer_it_is_told(
    pairs_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`prep --pairs` trains a BPE of --vocab-size unless --tokenizer says char (it was refused)."""
    kinds = {"char": ["--tokenizer", "char"], "bpe": ["--vocab-size", "300"]}
    for kind, given in kinds.items():
        out = tmp_path / kind
        assert main(["prep", "--pairs", str(pairs_file), "--out", str(out), *given]) == 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["tokenizer"] == kind and f"(shared {kind})" in capsys.readouterr().out
        assert meta.get("vocab_target") == (300 if kind == "bpe" else None)  # train checks against it
        chars = set("".join(json.loads(line)["en"] + json.loads(line)["fr"] for line in pairs_file.open()))
        assert (meta["vocab_size"] < len(chars) + 8) == (kind == "char")


def test_too_few_documents_are_split_by_source_sentence(tmp_path: Path) -> None:
    """One document cannot be split three ways: its pairs are, by source, and meta.json says so."""
    lines = "".join(
        json.dumps({"en": f"sentence {i}", "fr": f"phrase {i}", "doc": "one"}) + "\n" for i in range(300)
    )
    (tmp_path / "one.jsonl").write_text(lines)
    meta = prepare_pairs(
        tmp_path / "one.jsonl", tmp_path / "out", vocab_size=300, val_fraction=0.1, test_fraction=0.1
    )
    assert meta["split"]["by"].startswith("source sentence (1 document") and all(meta["pairs"].values())
    assert sum(meta["pairs"].values()) == 300
    train = set((tmp_path / "out" / "train.en").read_text().splitlines())
    assert not train & set((tmp_path / "out" / "val.en").read_text().splitlines())


def test_loader_groups_by_length_and_resumes(prepared: Path) -> None:
    src, tgt = load_split(prepared, "train")
    a = PairLoader(src, tgt, 16, 8, 0, 1, seed=3)
    for _ in range(5):
        a.next_step()
    b = PairLoader(src, tgt, 16, 8, 0, 1, seed=3)
    b.load_state_dict(a.state_dict())
    for x, y in zip(a.next_step(), b.next_step(), strict=True):
        assert all((u == v).all() for u, v in zip(x, y, strict=True))
    src_b, tgt_in, tgt_out = a.next_step()[0]
    assert src_b.shape[0] == 8 and tgt_in.shape == tgt_out.shape
    assert (tgt_in[:, 0] == 0).all()  # EOS starts every decoder input


def _pair_tokens(micro_batches: list) -> list[int]:
    """Source + target tokens (no padding) of every pair in these micro-batches."""
    return [
        int((s != 1).sum() + (y != IGNORE).sum())
        for b in micro_batches
        for s, y in zip(b[0], b[2], strict=True)
    ]


def test_ranks_share_each_global_batch_evenly(prepared: Path) -> None:
    """2 ranks together see the 1-rank loader's global batch, pair for pair, and the batch (sorted
    by length) is dealt out in turn: the ranks' token counts differ by at most the spread of one
    pair's, so neither waits on the other (contiguous halves fail this)."""
    src, tgt = load_split(prepared, "train")
    whole = PairLoader(src, tgt, 16, 16, 0, 1, seed=3)
    ranks = [PairLoader(src, tgt, 16, 4, 0, 1, rank=r, world_size=2, seed=3) for r in range(2)]
    for _ in range(20):
        everything = _pair_tokens(whole.next_step())
        a, b = (_pair_tokens(r.next_step()) for r in ranks)
        assert sorted(a + b) == sorted(everything)
        assert abs(sum(a) - sum(b)) <= max(everything) - min(everything)


TINY = [
    "--model.n_layer=1",
    "--model.n_head=2",
    "--model.n_embd=32",
    "--model.block_size=48",
    "--model.dropout=0.1",
    "--train.batch_size=16",
    "--train.micro_batch_size=8",
    "--train.warmup_steps=2",
    "--train.log_interval=2",
    "--train.eval_interval=60",
    "--train.checkpoint_interval=60",
    "--train.keep_checkpoints=5",
    "--train.label_smoothing=0.1",
    "--train.lr=3e-3",
]


def _overrides(prepared: Path, steps: int) -> list[str]:
    return [f"--data.input={prepared}", "--data.task=translation", "--model.arch=seq2seq", *TINY,
            f"--train.max_steps={steps}"]  # fmt: skip


@pytest.fixture(scope="module")
def run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "toy"
    summary = train(None, _overrides(prepared, 120), out=out, quiet=True)
    assert summary["task"] == "translation" and summary["best_step"] in (60, 120)
    return out


def test_resume_continues_exactly(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Resuming from the step-60 checkpoint (dropout on, so RNG state matters) ends with the same
    weights and best-BLEU bookkeeping as the uninterrupted run; the last line names the step the
    exported model is."""
    other = tmp_path / "resumed"
    shutil.copytree(run, other)
    for name in ("checkpoints/step_00000120", "model", "summary.json"):
        path = other / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    summary = train(resume=other)
    done = capsys.readouterr().out.strip().splitlines()[-1]
    best = f"best val_bleu {summary['best_bleu']:.4f}; the scores are the last step's)"
    assert done.startswith("done: ") and done.endswith(f"(step {summary['best_step']}'s, {best}")
    a = load_file(str(run / "checkpoints" / "step_00000120" / "model.safetensors"))
    b = load_file(str(other / "checkpoints" / "step_00000120" / "model.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert summary["best_step"] == json.loads((run / "summary.json").read_text())["best_step"]


def test_a_translation_pipeline_names_its_direction(run: Path) -> None:
    """transformers' translation_XX_to_YY: the run records en->fr (data.src_lang/tgt_lang), so
    that direction and plain "translation" run it, and another is refused in one line."""
    from lmforge import pipeline

    assert json.loads((run / "model" / "config.json").read_text())["source_lang"] == "en"
    same = pipeline("translation", model=run)("The cat sleeps.")
    assert pipeline("translation_en_to_fr", model=run)("The cat sleeps.") == same
    assert pipeline("translation", model=run, src_lang="en")("The cat sleeps.") == same
    refusal = r"translates en to fr, not fr to en \(pipeline\(\"translation_en_to_fr\"\), or \"translation\""
    with pytest.raises(LmforgeError, match=refusal):
        pipeline("translation_fr_to_en", model=run)
    with pytest.raises(LmforgeError, match="not en to de"):
        pipeline("translation", model=run, tgt_lang="de")
    with pytest.raises(LmforgeError, match="two tgt_langs; give one"):
        pipeline("translation_en_to_fr", model=run, tgt_lang="de")
    with pytest.raises(LmforgeError, match=r"unknown pipeline task 'translation_en'.*translation_XX_to_YY"):
        pipeline("translation_en", model=run)


def test_a_tsv_trained_model_names_no_direction(pairs_file: Path, tmp_path: Path) -> None:
    """A .tsv's columns carry no language names (data.src_lang/tgt_lang default to en/fr), so the
    run records none, and any translation_XX_to_YY is taken rather than refused wrongly."""
    from lmforge import pipeline

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    tsv = tmp_path / "toy.tsv"
    tsv.write_text("".join(f"{r['en']}\t{r['fr']}\t{r['doc']}\n" for r in rows if r["en"].strip()))
    prepare_pairs(tsv, tmp_path / "prep", vocab_size=300, max_tokens=64, val_fraction=0.1, test_fraction=0.1)
    train(None, _overrides(tmp_path / "prep", 2), out=tmp_path / "run", quiet=True)
    assert "source_lang" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert pipeline("translation_de_to_en", model=tmp_path / "run")("The cat sleeps.")


def test_a_config_whose_languages_are_not_the_datas_is_refused(prepared: Path, tmp_path: Path) -> None:
    """Pairs prepared en -> fr trained as fr -> en read the sources as BLEU's references and
    labelled the model fr -> en: one line naming both directions, before any training."""
    swapped = [*_overrides(prepared, 2), "--data.src_lang=fr", "--data.tgt_lang=en"]
    message = (
        f"{prepared / 'meta.json'}: pairs prepared en -> fr, but the config says data.src_lang='fr',"
        " data.tgt_lang='en': give --data.src_lang=en --data.tgt_lang=fr"
    )
    with pytest.raises(LmforgeError, match=re.escape(message)):
        train(None, swapped, out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_translate_cli_and_pipeline_shape_match_hf(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["translate", str(run), "The cat sleeps.", "The dog is big.", "--beam", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    from lmforge import pipeline

    ours = pipeline("translation_en_to_fr", model=run)
    one, many = ours("The cat sleeps."), ours(["The cat sleeps.", "The dog is big."])

    def shape(x: object) -> object:
        if isinstance(x, list):
            return [shape(v) for v in x]
        if isinstance(x, dict):
            return {k: type(v).__name__ for k, v in x.items()}
        return type(x).__name__

    # transformers 4.x's TranslationPipeline (Text2TextGenerationPipeline): a string gives a list
    # of one dict; a list of strings gives one dict per string, flattened when each has one result.
    assert shape(one) == [{"translation_text": "str"}]
    assert shape(many) == [{"translation_text": "str"}] * 2
    transformers = pytest.importorskip("transformers")
    if int(transformers.__version__.split(".")[0]) >= 5:
        return  # transformers 5 removed the translation pipeline; nothing live to compare with
    from tokenizers import Tokenizer as HFTok

    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=HFTok.from_file(str(run / "model" / "tokenizer.json")),
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
    )
    cfg = transformers.MarianConfig(
        vocab_size=tok.vocab_size, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id,
    )  # fmt: skip
    hf = transformers.pipeline("translation_en_to_fr", model=transformers.MarianMTModel(cfg), tokenizer=tok)
    assert shape(one) == shape(hf("The cat sleeps.", max_new_tokens=3))
    assert shape(many) == shape(hf(["The cat sleeps.", "The dog is big."], max_new_tokens=3))


@pytest.mark.parametrize("beam", [1, 3])
def test_a_blank_line_translates_to_a_blank_line(run: Path, tmp_path: Path, beam: int) -> None:
    """From EOS alone the model would invent a sentence; a blank source keeps its line, blank."""
    from lmforge import translate

    alone = translate(run, ["The cat sleeps."], beam=beam)
    assert translate(run, ["", "The cat sleeps.", " \t"], beam=beam) == ["", *alone, ""]
    src, ref, hyp = tmp_path / "src.en", tmp_path / "ref.fr", tmp_path / "hyp.fr"
    src.write_text("The cat sleeps.\n\nThe dog is big.\n")
    ref.write_text("Le chat dort.\n\nLe chien est grand.\n")
    assert main(["eval-translate", str(run), "--src", str(src), "--ref", str(ref), "--beam", str(beam),
                 "--out", str(hyp)]) == 0  # fmt: skip
    assert hyp.read_text().split("\n")[1] == ""


def test_a_translation_holding_a_line_break_keeps_one_line_per_sentence(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A model can emit a line break (a byte-level vocabulary has one): written as it is, the
    translation took two lines and every later line of --out (or of translate's output) stood
    beside the wrong source. The API keeps the text as the model made it."""
    import lmforge.inference.translate as translation

    made = ["Le chat\ndort.", "Le chien\r\nest grand.", "Bien."]
    monkeypatch.setattr(translation, "translate_encoded", lambda *a, **k: list(made))
    src, ref, hyp = tmp_path / "src.en", tmp_path / "ref.fr", tmp_path / "hyp.fr"
    src.write_text("The cat sleeps.\nThe dog is big.\nGood.\n")
    ref.write_text("Le chat dort.\nLe chien est grand.\nBien.\n")
    assert main(["eval-translate", str(run), "--src", str(src), "--ref", str(ref), "--out", str(hyp)]) == 0
    assert hyp.read_text() == "Le chat dort.\nLe chien est grand.\nBien.\n"
    out = capsys.readouterr()
    assert "BLEU = 100.00" in out.out  # sacreBLEU reads the line break as a space
    warned = "lmforge: warning: 2 translations held a line break, written as a space"
    assert f"{warned} to keep one line per sentence (the first: sentence 1)" in out.err
    assert main(["translate", str(run), "--file", str(src)]) == 0
    assert capsys.readouterr().out == "Le chat dort.\nLe chien est grand.\nBien.\n"
    assert translation.translate(run, ["a", "b", "c"]) == made


def test_a_sentence_over_the_limit_is_named_or_cut_when_asked(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A source longer than the context (less its EOS) stops with its line named; --truncate
    (truncate=True, the pipeline's truncation=True) translates its first tokens and says so."""
    from lmforge import pipeline, translate
    from lmforge.inference.translate import load_translator, translate_ids

    net, tok = load_translator(run, "fp32")
    limit = net.config.block_size - 1
    long = " ".join(["The cat sleeps."] * 12)
    ids = tok.encode(long)
    assert len(ids) > limit
    expected = tok.decode(translate_ids(net, [ids[:limit]], tok.eos_id)[0]).strip()
    short = translate(run, ["The dog is big."])[0]
    with pytest.raises(
        LmforgeError, match=rf"sentence 2 is {len(ids)} tokens, longer than the model's limit of {limit}"
    ):
        translate(run, ["The dog is big.", long])
    capsys.readouterr()
    assert translate(run, ["The dog is big.", long, long], truncate=True) == [short, expected, expected]
    warned = f"lmforge: warning: 2 sentences longer than the model's limit of {limit} tokens cut to it"
    assert capsys.readouterr().err == f"{warned} (the first: sentence 2, {len(ids)} tokens)\n"
    greedy = {"truncation": True, "num_beams": 1}  # the pipeline's default is transformers' 4 beams
    assert pipeline("translation", model=run)(long, **greedy) == [{"translation_text": expected}]
    with pytest.raises(LmforgeError, match=r"shorten it, or truncation=True cuts"):  # the pipeline's own name
        pipeline("translation", model=run)(long)
    beamed = tok.decode(translate_ids(net, [ids[:limit]], tok.eos_id, beam=2)[0]).strip()
    assert translate(run, long, beam=2, truncate=True) == [beamed]
    src, ref = tmp_path / "src.en", tmp_path / "ref.fr"
    src.write_text(f"The dog is big.\n{long}\n")
    ref.write_text("Le chien est grand.\nLe chat dort.\n")
    argv = ["eval-translate", str(run), "--src", str(src), "--ref", str(ref)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"sentence 2 is {len(ids)} tokens" in err and "(--truncate) cuts such sentences" in err
    assert main([*argv, "--truncate", "--out", str(tmp_path / "hyp.fr")]) == 0
    assert (tmp_path / "hyp.fr").read_text() == f"{short}\n{expected}\n"
    assert "2 sentences (1 cut to the model's limit by --truncate)" in capsys.readouterr().out
    from lmforge import eval_translate

    assert eval_translate(run, src, ref, truncate=True)["truncated"] == 1
    src.write_text(f"The dog is big.\n{short}\n")
    assert eval_translate(run, src, ref)["truncated"] == 0


def test_eval_translate_bleu_equals_sacrebleu(
    run: Path, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    hyp = tmp_path / "hyp.fr"
    src, ref = prepared / "test.en", prepared / "test.fr"
    assert main(["eval-translate", str(run), "--src", str(src), "--ref", str(ref), "--out", str(hyp)]) == 0
    assert sum(len(h.split()) for h in hyp.read_text().splitlines()) > 50  # it translates: not a 0 == 0
    out = capsys.readouterr().out
    printed = float(re.search(r"BLEU = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    expected = sacrebleu.corpus_bleu(hyp.read_text().splitlines(), [ref.read_text().splitlines()])
    assert printed == pytest.approx(round(expected.score, 2), abs=0.006)
    assert "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:" in out and "chrF2 = " in out
    assert main(["eval-translate", str(run), "--src", str(src), "--ref", str(hyp)]) == 0
    assert "BLEU = 100.00" in capsys.readouterr().out  # its own output as reference: a perfect score


@pytest.mark.parametrize(
    "engine",  # `make test` runs ZeRO-2; the others are slow (test_tasks_on_engines.py says why)
    [
        pytest.param(e, marks=() if e == "deepspeed-2" else pytest.mark.slow)
        for e in ("ddp", "fsdp", "deepspeed-2", "deepspeed-3")
    ],
)
def test_distributed_engines_train_translation_like_local(
    prepared: Path, tmp_path: Path, engine: str
) -> None:
    """The translation task through the same loop on 2 ranks of each engine gives the local
    engine's losses, validation loss and BLEU in fp32 (global batch 12 = 2 ranks x 3 x 2
    accumulation), with an evaluation mid-run, after which training goes on sharded. The
    validation batches split unevenly over the ranks (6 and 5): the sharded engines must still
    join every weight gather, decode BLEU with whole weights, and agree on when to save the best
    model (a collective). A rank that skips a collective fails the run after engine.timeout_s
    instead of hanging. The engine's mid-run checkpoint then resumes on the local engine."""
    name, _, stage = engine.partition("-")
    if name == "deepspeed":
        pytest.importorskip("deepspeed")
    assert -(-len(load_split(prepared, "val")[0]) // 3) % 2 == 1  # an odd number of val batches
    options = [f"--engine.name={name}", "--engine.timeout_s=60"]
    if name == "deepspeed":
        options.append(f"--engine.zero_stage={stage}")
    if stage == "3":  # every parameter partitioned and gathered at each use (see test_engines.ZERO3)
        options.append(
            f"--engine.deepspeed_config={Path(__file__).parent / 'fixtures' / 'zero3-partition-all.json'}"
        )
    base = [*_overrides(prepared, 6), "--model.dropout=0.0", "--train.dtype=fp32", "--train.log_interval=1",
            "--train.eval_interval=3", "--train.checkpoint_interval=3", "--train.batch_size=12",
            "--train.micro_batch_size=3"]  # fmt: skip
    runs = {}
    for label, launcher in (("local", []), (engine, ["launch", "--nproc=2"])):
        out = tmp_path / label
        args = [*launcher, "train", "--quiet", *base, *(options if launcher else ["--engine.name=local"])]
        result = subprocess.run(
            [sys.executable, "-m", "lmforge", *args, "--out", str(out)],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        runs[label] = read_metrics(out)
    local, other = runs["local"], runs[engine]
    assert len(local) == len(other) == 6 and "val_bleu" in local[2] and "val_bleu" in local[-1]
    for a, b in zip(local, other, strict=True):
        for key in ("loss", "val_loss", "val_bleu"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)
    # the engine's step-3 checkpoint resumes on the local engine: the same steps 4-6
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / engine, resumed)
    for name in ("checkpoints/step_00000006", "model", "summary.json", "metrics.jsonl"):
        path = resumed / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    summary = train(None, ["--engine.name=local"], resume=resumed, quiet=True)
    assert summary["best_step"] == json.loads((tmp_path / engine / "summary.json").read_text())["best_step"]
    again = {r["step"]: r for r in read_metrics(resumed)}
    for b in other[3:]:
        assert again[b["step"]]["loss"] == pytest.approx(b["loss"], rel=1e-5), b["step"]
