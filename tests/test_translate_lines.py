"""The lines of `translate --file`, `eval-translate` and `classify --file` are the lines sacrebleu
and `wc -l` count: only an LF ends one. A lone CR inside a line split it, so the output had more
lines than the input and eval-translate scored shifted pairs without a word; a CRLF's CR is
stripped, as sacrebleu strips it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.inference.classify import read_texts
from lmforge.inference.translate import eval_translate, read_sentences

SOURCE = b"the cat sat\rit is good\r\nhello there\nthe dog ran far away\nwe are here now\n"
REFERENCE = b"ref one\nref two\nref three\rref three b\nref four\r\n"


@pytest.fixture(scope="module")
def s2s(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random encoder-decoder with a character tokenizer."""
    from conftest import make_text

    from lmforge.config import ModelConfig
    from lmforge.formats.directory import write_model_dir
    from lmforge.model.seq2seq import Seq2Seq
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.train_char([make_text(lines=200) + "\r"])  # the CR is a character it knows
    config = ModelConfig(
        n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=tok.vocab_size, arch="seq2seq"
    )
    torch.manual_seed(0)
    net = Seq2Seq(config, tok.pad_id or 0)
    out = tmp_path_factory.mktemp("s2s") / "model"
    write_model_dir(out, net.config, net.state_dict(), tok)
    return out


def test_a_lone_cr_is_text_in_its_line(tmp_path: Path) -> None:
    src = tmp_path / "src.txt"
    src.write_bytes(SOURCE)
    assert read_sentences(src) == [
        "the cat sat\rit is good",
        "hello there",
        "the dog ran far away",
        "we are here now",
    ]
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"good\rbad\r\n\nfine\n")
    assert read_texts(texts) == ["good\rbad", "fine"]


def test_eval_translate_scores_the_pairs_sacrebleu_reads(
    s2s: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.utils import smart_open

    src, ref, hyp = tmp_path / "src.txt", tmp_path / "ref.txt", tmp_path / "hyp.txt"
    src.write_bytes(SOURCE)
    capsys.readouterr()
    assert main(["translate", str(s2s), "--file", str(src)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("\n") == 4 == SOURCE.count(b"\n")  # what `wc -l` says of the file
    # a reference close to the translations (a random model's), with a lone CR in its third line
    lines = printed.split("\n")[:4]
    lines[2] += "\rand more"
    ref.write_bytes("".join(f"{line}\r\n" for line in lines).encode())
    scored = eval_translate(s2s, src, ref, out=hyp)
    assert scored["sentences"] == 4 and hyp.read_bytes().count(b"\n") == 4
    # sacrebleu's command line, `sacrebleu ref.txt -i hyp.txt`, reads each file so and rstrips each line
    hyps, refs = ([line.rstrip() for line in smart_open(str(f))] for f in (hyp, ref))
    assert len(refs) == 4 and refs[2].endswith("\rand more")
    assert scored["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert scored["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert scored["chrf"] > 50  # the pairs as written, not shifted
