"""`lmforge audit`: exposure is log2 |R| for a memorized canary and about 1/ln 2 bits on average for
an untrained model; extraction counts a true continuation and not a false one; the verb runs on a
tiny GPT overfit on a canary and a passage in a few seconds."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers.processors import TemplateProcessing

import lmforge
from lmforge import LmforgeError, cli
from lmforge.config import ModelConfig
from lmforge.data.canaries import Canary, CanarySet, make_canaries
from lmforge.formats.directory import write_model_dir
from lmforge.model.gpt import GPT
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools.audit import format_table
from lmforge.tools.audit_exposure import exposures, model_scorer
from lmforge.tools.audit_extract import Documents, extraction, model_greedy, windows

PASSAGE = "the quick brown fox jumps over the lazy dog while seven wise owls hum a tune"
OTHER = "a lazy brown owl hums seven quick tunes over the wise fox and the dog jumps"
SECRET = "4 1 7"


def _hand_scorer(secret_text: str, seed: int = 0) -> object:
    """nll: 0 for the secret, a fixed pseudo-random value in [5, 15) for every other text."""

    def score(texts: list[str]) -> np.ndarray:
        def one(t: str) -> float:
            return (
                0.0
                if t == secret_text
                else 5 + 10 * np.random.default_rng([seed, zlib.crc32(t.encode())]).random()
            )

        return np.asarray([one(t) for t in texts])

    return score


def test_a_secret_ranked_first_has_the_largest_exposure() -> None:
    canaries = CanarySet(length=3, canaries=[Canary(SECRET, f"my secret code is {SECRET}", 1)])
    result = exposures(_hand_scorer(canaries.canaries[0].text), canaries, exact_limit=1000)
    assert result["method"] == "exact" and result["scored"] == 1000
    [row] = result["canaries"]
    assert row["rank"] == 1 and row["exposure"] == pytest.approx(math.log2(1000), abs=1e-3)
    assert result["per_repeat"] == [
        {"repeats": 1, "canaries": 1, "mean": round(math.log2(1000), 3), "max": round(math.log2(1000), 3),
         "min": round(math.log2(1000), 3)}
    ]  # fmt: skip


def test_the_sampled_estimate_extrapolates_past_the_samples() -> None:
    """A space of 10^6 with 500 sampled candidates: the memorized secret beats all of them, so the
    sampled figure stops at log2(501) while the skew-normal fit reaches further."""
    canaries = CanarySet(length=6, canaries=[Canary("4 1 7 0 0 9", "my secret code is 4 1 7 0 0 9", 16)])
    result = exposures(_hand_scorer(canaries.canaries[0].text), canaries, exact_limit=1000, samples=500)
    assert result["method"].startswith("estimated") and result["scored"] == 500
    [row] = result["canaries"]
    assert row["exposure_sampled"] == pytest.approx(math.log2(501), abs=1e-3)
    assert math.log2(501) < row["exposure"] <= math.log2(10**6)


@pytest.fixture(scope="module")
def char_tokenizer() -> Tokenizer:
    return Tokenizer.train_char([PASSAGE, OTHER, "my secret code is 0 1 2 3 4 5 6 7 8 9"])


def _gpt(vocab: int, seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=vocab))


def test_an_untrained_model_gives_about_one_and_a_half_bits(char_tokenizer: Tokenizer) -> None:
    """Unseen secrets sit at uniform random ranks: exposure averages 1/ln 2 = 1.44 bits (P(>= x) =
    2^-x), far below log2 |R| = 9.97, whatever the model's random weights."""
    canaries = make_canaries(20, "1,2", seed=1, length=3)
    model = _gpt(char_tokenizer.vocab_size, seed=0)
    result = exposures(model_scorer(model, char_tokenizer, canaries), canaries, exact_limit=1000)
    values = [row["exposure"] for row in result["canaries"]]
    assert len(values) == 40 and result["max_exposure"] == round(math.log2(1000), 3)
    assert 0.7 < np.mean(values) < 2.3
    assert max(values) < math.log2(1000) - 1


@pytest.mark.parametrize("bos", [False, True])
def test_the_model_scorer_is_the_secret_tokens_nll(char_tokenizer: Tokenizer, bos: bool) -> None:
    """A canary is scored as prep plants it: a document of its own, after EOS and, for a
    tokenizer that starts a text with a BOS (Llama's), after that BOS."""
    if bos:  # the pad id stands for a BOS here: the tiny vocabulary has none
        pad = char_tokenizer.pad_id
        char_tokenizer.hf.post_processor = TemplateProcessing(
            single="<|pad|> $A", special_tokens=[("<|pad|>", pad)]
        )
    canaries = make_canaries(1, "1", seed=0, length=3)
    model = _gpt(char_tokenizer.vocab_size, seed=0).eval()
    text = canaries.canaries[0].text
    start = [char_tokenizer.pad_id] if bos else []
    assert char_tokenizer.text_affixes()[0] == start
    ids = [char_tokenizer.eos_id, *start, *char_tokenizer.encode(text)]
    n_ctx = 1 + len(start) + len(char_tokenizer.encode("my secret code is"))
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([ids]))[0, :-1], dim=-1)
    expected = -sum(float(logp[i - 1, ids[i]]) for i in range(n_ctx, len(ids)))
    got = model_scorer(model, char_tokenizer, canaries, batch_size=1)([text, canaries.text([0, 0, 0])])
    assert got[0] == pytest.approx(expected, rel=1e-5)
    if bos:  # data prepared before 2026-12-06 (meta.json without document_start) planted none
        plain = [char_tokenizer.eos_id, *char_tokenizer.encode(text)]
        with torch.no_grad():
            logp = F.log_softmax(model(torch.tensor([plain]))[0, :-1], dim=-1)
        old = -sum(float(logp[i - 1, plain[i]]) for i in range(n_ctx - 1, len(plain)))
        got = model_scorer(model, char_tokenizer, canaries, batch_size=1, start=[])([text])
        assert got[0] == pytest.approx(old, rel=1e-5) and abs(old - expected) > 1e-3


def test_extraction_counts_a_true_continuation_and_not_a_false_one() -> None:
    docs = Documents.from_lists([list(range(10, 40)), list(range(50, 80))], eos=0)
    picked = windows(docs, p=5, k=10, samples=1000, seed=0)
    assert len(picked) == 2 * (31 - 15 + 1)  # every window fits inside one document (EOS included)
    assert all(np.all(np.diff(w[1:]) == 1) for w in picked)  # none crosses into the next document

    def greedy(prompts: np.ndarray) -> np.ndarray:  # knows the first document only
        last = prompts[:, -1:]
        right = last + np.arange(1, 11)[None, :]
        return np.where(prompts[:, -1:] < 40, right, right + 1)

    result = extraction(greedy, picked, p=5, batch_size=7)
    assert result["samples"] == 34 and result["extracted"] == 17 and result["rate"] == 0.5
    assert result["mean_matched"] == 5.0  # 10 tokens agree on half the windows, none on the rest


def test_a_prepared_stream_has_one_document_per_eos() -> None:
    """prep writes each document then EOS: that final EOS closes the last document and starts none,
    so the count is meta.json's (an extra empty one was counted on each side)."""
    docs = Documents.from_stream(np.asarray([5, 6, 0, 7, 0, 8, 9, 0]), eos=0)
    assert len(docs) == 3
    assert [docs.stream[a:b].tolist() for a, b in zip(docs.starts, docs.ends, strict=True)] == [
        [0, 5, 6], [0, 7], [0, 8, 9]
    ]  # fmt: skip
    assert len(Documents.from_stream(np.zeros(0, np.int64), eos=0)) == 0  # an empty split
    assert len(Documents.from_stream(np.asarray([5, 0, 6]), eos=0)) == 2  # a stream cut mid-document


def test_an_empty_split_says_no_documents() -> None:
    part = {"documents": 0, "samples": 0, "extracted": 0, "rate": None, "mean_matched": None}
    result = {"extraction": {"prefix_tokens": 4, "k": 4, "train": part, "heldout": part}}
    assert format_table(result).splitlines()[2:] == ["     train: no documents", "  held-out: no documents"]


@pytest.fixture(scope="module")
def memorized(char_tokenizer: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GPT overfit on (EOS, canary, EOS, PASSAGE) for 300 steps (~ seconds), saved."""
    tok = char_tokenizer
    eos = [tok.eos_id]
    stream = torch.tensor((eos + tok.encode(f"my secret code is {SECRET}") + eos + tok.encode(PASSAGE)) * 4)
    model = _gpt(tok.vocab_size, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        starts = torch.randint(0, len(stream) - 65, (16,), generator=gen)
        batch = torch.stack([stream[s : s + 65] for s in starts.tolist()])  # (16, 65)
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = tmp_path_factory.mktemp("memorized")
    write_model_dir(folder / "model", model.config, model.state_dict(), tok)
    (folder / "train.txt").write_text(PASSAGE)
    (folder / "heldout.txt").write_text(OTHER)
    canaries = CanarySet(length=3, canaries=[Canary(SECRET, f"my secret code is {SECRET}", 4)])
    canaries.canaries.append(Canary("9 9 0", "my secret code is 9 9 0", 1))  # never trained on
    canaries.save(folder / "canaries.json")
    return folder


def test_a_memorized_canary_and_passage_are_found(memorized: Path) -> None:
    result = lmforge.audit(
        memorized / "model", memorized / "train.txt", heldout=memorized / "heldout.txt",
        canaries=memorized / "canaries.json", prefix_tokens=10, k=20, samples=20, quiet=True,
    )  # fmt: skip
    ex = result["exposure"]
    assert ex["method"] == "exact" and ex["candidates"] == 1000
    by_secret = {row["secret"]: row for row in ex["canaries"]}
    assert by_secret[SECRET]["rank"] == 1 and by_secret[SECRET]["exposure"] == pytest.approx(
        math.log2(1000), abs=1e-3
    )
    assert by_secret["9 9 0"]["exposure"] < 8
    e = result["extraction"]
    assert e["train"]["extracted"] == e["train"]["samples"] == 20 and e["train"]["rate"] == 1.0
    assert e["heldout"]["extracted"] == 0 and e["heldout"]["samples"] == 20


def test_model_greedy_is_generate(memorized: Path) -> None:
    model, tok = lmforge.load(memorized / "model")
    prompt = np.asarray([[tok.eos_id, *tok.encode(PASSAGE[:9])]])
    out = model_greedy(model, 20)(prompt)
    assert tok.decode(out[0].tolist()) == PASSAGE[9:29]


def test_the_cli_prints_a_table_then_json(
    memorized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "audit.json"
    argv = ["audit", str(memorized / "model"), "--data", str(memorized / "train.txt"), "--canaries",
            str(memorized / "canaries.json"), "--prefix-tokens", "10", "--k", "20", "--samples", "5",
            "--out", str(out), "--quiet"]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("canary exposure, bits (of 9.966: 1,000 candidates; every candidate scored)")
    assert any("held-out: no held-out text" in line for line in printed)
    assert json.loads(printed[-1]) == json.loads(out.read_text())


def test_bad_settings_are_one_line(memorized: Path) -> None:
    with pytest.raises(LmforgeError, match="prefix_tokens=50 \\+ k=50 is over the model's context of 64"):
        lmforge.audit(memorized / "model", memorized / "train.txt", quiet=True)
    with pytest.raises(LmforgeError, match="samples=0: must be an integer >= 1"):
        lmforge.audit(memorized / "model", memorized / "train.txt", samples=0, quiet=True)
    with pytest.raises(
        LmforgeError, match="candidates=10: at least 100 sampled secrets for the skew-normal fit"
    ):
        lmforge.audit(memorized / "model", memorized / "train.txt", candidates=10, quiet=True)  # fitted 10
    with pytest.raises(LmforgeError, match="is data .*: writing it would overwrite an input"):
        lmforge.audit(memorized / "model", memorized / "train.txt", out=memorized / "train.txt", quiet=True)
    train = memorized / "train.txt"
    same = re.escape(f"heldout {train}: also given as data; the held-out baseline must be text the model")
    with pytest.raises(LmforgeError, match=f"^{same}"):  # every gap would vanish
        lmforge.audit(memorized / "model", [train], heldout=str(train), prefix_tokens=10, k=20, quiet=True)
    inside = re.escape(f"heldout {train}: overlaps data {memorized}; the held-out baseline must be")
    with pytest.raises(LmforgeError, match=f"^{inside}"):  # a file of the data's folder
        lmforge.audit(memorized / "model", memorized, heldout=str(train), prefix_tokens=10, k=20, quiet=True)


def test_an_input_without_documents_is_one_line_naming_it(
    memorized: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Not a table saying that no document is long enough, with documents 0 in the JSON."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    argv = ["audit", str(memorized / "model"), "--data", str(empty), "--prefix-tokens", "10", "--k", "20"]
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"lmforge: error: data {empty}: no documents to audit (skipped {empty}: empty file)"
    ]
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"text": ""}\n')
    why = re.escape(f"heldout {blank}: no documents to audit (skipped {blank}:1: empty text ('text'))")
    with pytest.raises(LmforgeError, match=f"^{why}$"):
        lmforge.audit(
            memorized / "model", memorized / "train.txt", heldout=blank, prefix_tokens=10, k=20, quiet=True
        )


def _bench_memorization(*args: str) -> subprocess.CompletedProcess:
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "benchmarks.bench_memorization", *args, "--steps", "1"]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)


def test_bench_memorization_without_a_val_chapter_is_one_line_before_any_work(tmp_path: Path) -> None:
    """3 chapters of Moby Dick: none goes to val, so the dedup run's val split held no Moby Dick
    (or nothing: then prep refused the canaries with a traceback). The line names the file and the
    chapters that do; with those, the corpus is accepted (the next check, --passages, is reached)."""
    few = _bench_memorization("--chapters", "3", "--out", str(tmp_path / "a"))
    assert few.returncode == 1 and few.stdout == "" and not (tmp_path / "a").exists()
    [line] = few.stderr.splitlines()
    found = re.fullmatch(
        r"bench_memorization: data/moby_dick\.jsonl\.xz: none of the first 3 chapters falls in prep's val"
        r" split \(text hash, val_fraction 0\.1\), which .* need: use --chapters (\d+) or more",
        line,
    )
    assert found, line
    enough = _bench_memorization("--chapters", found[1], "--passages", "1000", "--out", str(tmp_path / "b"))
    assert enough.returncode == 1 and "Traceback" not in enough.stderr
    assert re.fullmatch(
        r"bench_memorization: data/austen\.jsonl\.xz: \d+ passages .* use --passages \d+ or fewer\n",
        enough.stderr,
    ), enough.stderr
