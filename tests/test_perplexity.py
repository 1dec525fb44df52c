"""`lmforge eval`: sliding-window perplexity and bits per byte, checked against transformers' loss
on the same windows (tiny random GPT-2 and Llama, and the real SmolLM2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import make_text
from hf_helpers import add_bos, make_hf_model
from tokenizers import Tokenizer as HFTokenizer

from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.formats.hf_files import import_hf
from lmforge.inference.perplexity import evaluate, windows


def hf_guide_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The windows of Hugging Face's perplexity guide, as (begin, first scored target, end)."""
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        out.append((begin, max(prev_end, begin + 1), end))  # the first label is lost to the shift
        prev_end = end
        if end == n:
            break
    return out


@pytest.mark.parametrize("n,context,stride", [(2, 8, 4), (8, 8, 4), (9, 8, 4), (100, 16, 5), (100, 16, 15),
                                              (33, 32, 1), (500, 64, 32)])  # fmt: skip
def test_windows_score_every_token_once_like_the_hf_guide(n: int, context: int, stride: int) -> None:
    spans = windows(n, context, stride)
    scored = [t for _, first, end in spans for t in range(first, end)]
    assert scored == list(range(1, n))  # every target once, in order
    assert all(end - begin == min(context, n) and begin < first for begin, first, end in spans)
    guide = hf_guide_windows(n, context, stride)
    assert spans[:-1] == guide[:-1]  # the guide's windows, but for the last, which
    assert spans[-1][1:] == guide[-1][1:] and spans[-1][0] == max(0, n - context)  # keeps a full context


def reference(hf_model: torch.nn.Module, ids: list[int], context: int, stride: int) -> tuple[float, int]:
    """(total nll, tokens) from transformers' own loss, window by window as the HF guide does
    (on lmforge's windows, which the test above checks against the guide's)."""
    total, count = 0.0, 0
    stream = torch.tensor(ids)
    for begin, first, end in windows(len(ids), context, stride):
        inputs = stream[begin:end][None]
        labels = inputs.clone()
        labels[:, : first - begin] = -100
        n = int((labels[:, 1:] != -100).sum())  # the labels left after transformers' shift
        with torch.no_grad():
            total += float(hf_model(input_ids=inputs, labels=labels).loss) * n
        count += n
    return total, count


def corpus_file(tmp_path: Path, lines: int = 12) -> tuple[Path, str]:
    text = make_text(seed=3, lines=lines)
    path = tmp_path / "text.txt"
    path.write_text(text)
    return path, text


def test_bits_per_byte_counts_the_text_alone_as_training_does(tmp_path: Path) -> None:
    """The EOS predicted between documents is in the nll (and perplexity) but has no bytes: bits
    per byte leaves it out, as training's val_bpb does (eval read 0.15% higher on two documents)."""
    from lmforge.formats.directory import load_model

    hf_dir = tmp_path / "hf"
    make_hf_model("gpt2", hf_dir)
    docs = ["the king is dead.", "long live the queen!", "sweet lady, speak."]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    net, tokenizer = load_model(hf_dir)
    ids = [i for d in docs for i in [tokenizer.eos_id, *tokenizer.encode(d)]]
    assert len(ids) <= 64  # one window, every target with its whole left context
    ours = evaluate(hf_dir, data, context=len(ids), stride=len(ids) - 1, quiet=True)
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(
            net(torch.tensor([ids]))[0, :-1], torch.tensor(ids[1:]), reduction="none"
        )
    on_eos = torch.tensor(ids[1:]) == tokenizer.eos_id
    nbytes = sum(len(d.encode()) for d in docs)
    assert int(on_eos.sum()) == 2 and ours["bytes"] == nbytes and ours["tokens"] == len(ids) - 1
    assert ours["nll"] == pytest.approx(float(losses.sum()), rel=1e-5)
    assert ours["bpb"] == pytest.approx(float(losses[~on_eos].sum()) / math.log(2) / nbytes, rel=1e-5)


@pytest.mark.parametrize("eos", [None, 6])
def test_a_tokenizer_that_adds_a_bos_starts_each_document_with_it(tmp_path: Path, eos: int | None) -> None:
    """Llama 3's, Llama 2's and Mistral's tokenizers put a BOS before a text (their models never
    saw a document start without it): each document follows it, as transformers' tokenizer(text)
    gives, not an EOS; its predictions are in the nll, not in bits per byte."""
    from lmforge.formats.directory import load_model

    hf_dir = tmp_path / "hf"
    hf_model = make_hf_model("llama", hf_dir)
    add_bos(hf_dir, 5, eos)  # with eos: <s> text </s>, as a GGUF's add_eos_token
    docs = ["the king is dead.", "long live the queen!", "sweet lady, speak."]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    tok = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    ids = [i for d in docs for i in tok.encode(d).ids]  # tokenizer(text) for each document
    assert (
        ids[0] == 5
        and ids.count(5) == 3
        and ids.count(eos) == (3 if eos else 0)
        and 0 not in ids
        and len(ids) <= 64
    )
    assert load_model(hf_dir)[1].text_affixes() == ([5], [eos] if eos else [])
    ours = evaluate(hf_dir, data, context=len(ids), stride=len(ids) - 1, quiet=True)
    with torch.no_grad():
        losses = torch.nn.functional.cross_entropy(
            hf_model(torch.tensor([ids])).logits[0, :-1], torch.tensor(ids[1:]), reduction="none"
        )
    on_bos = torch.isin(torch.tensor(ids[1:]), torch.tensor([5, 6 if eos else 5]))
    nbytes = sum(len(d.encode()) for d in docs)
    assert ours["tokens"] == len(ids) - 1 and ours["bytes"] == nbytes
    assert ours["nll"] == pytest.approx(float(losses.sum()), rel=1e-5)
    assert ours["bpb"] == pytest.approx(float(losses[~on_bos].sum()) / math.log(2) / nbytes, rel=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_matches_transformers_loss_on_the_same_windows(family: str, tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    hf_model = make_hf_model(family, hf_dir)
    data, text = corpus_file(tmp_path)
    ids = [0, *HFTokenizer.from_file(str(hf_dir / "tokenizer.json")).encode(text).ids]  # EOS first
    nll, count = reference(hf_model, ids, 64, 24)
    ours = evaluate(hf_dir, data, stride=24, quiet=True)  # context: max_position_embeddings = 64
    assert (ours["tokens"], ours["context"], ours["documents"]) == (count, 64, 1) and count == len(ids) - 1
    assert ours["bytes"] == len(text.encode("utf-8"))
    assert ours["nll_per_token"] == pytest.approx(nll / count, abs=1e-4)
    assert ours["ppl"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert ours["bpb"] == pytest.approx(nll / math.log(2) / len(text.encode("utf-8")), rel=1e-4)
    # the same model imported into an lmforge directory, scored in batches, gives the same figures
    lm_dir = import_hf(hf_dir, tmp_path / "lm")
    again = evaluate(lm_dir, data, stride=24, batch_size=3, quiet=True)
    assert again["nll"] == pytest.approx(ours["nll"], rel=1e-6)
    # a short context scores the same tokens with less left context: a different, still exact, loss
    short = evaluate(hf_dir, data, context=16, stride=15, quiet=True)
    nll16, count16 = reference(hf_model, ids, 16, 15)
    assert short["tokens"] == count16 and short["nll_per_token"] == pytest.approx(nll16 / count16, abs=1e-4)


def test_documents_max_tokens_and_bytes(tmp_path: Path) -> None:
    hf_dir = tmp_path / "hf"
    hf_model = make_hf_model("gpt2", hf_dir)
    tok = HFTokenizer.from_file(str(hf_dir / "tokenizer.json"))
    docs = [make_text(seed=s, lines=4) for s in (1, 2, 3)]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"body": d}) + "\n" for d in [docs[0], "", *docs[1:]]))
    full = evaluate(hf_dir, data, text_field="body", stride=32, quiet=True)
    ids = [i for d in docs for i in [0, *tok.encode(d).ids]]  # EOS before each document
    assert (full["documents"], full["tokens"]) == (3, len(ids) - 1)
    assert full["bytes"] == sum(len(d.encode()) for d in docs)
    nll, count = reference(hf_model, ids, 64, 32)
    assert full["nll_per_token"] == pytest.approx(nll / count, abs=1e-4)
    # a cap inside the second document: its bytes count up to the last kept token
    cap = len(tok.encode(docs[0]).ids) + 1 + 7
    part = evaluate(hf_dir, data, text_field="body", stride=32, max_tokens=cap, quiet=True)
    second = tok.encode(docs[1])
    assert (part["documents"], part["tokens"]) == (2, cap)
    assert part["bytes"] == len(docs[0].encode()) + second.offsets[6][1]
    nll, count = reference(hf_model, ids[: cap + 1], 64, 32)
    assert part["nll_per_token"] == pytest.approx(nll / count, abs=1e-4)


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hf_dir = tmp_path / "hf"
    make_hf_model("gpt2", hf_dir)
    data, _ = corpus_file(tmp_path, lines=2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n')
    cases = {
        "no such file": (hf_dir, tmp_path / "missing.txt", {}),
        "no text to score": (hf_dir, empty, {}),
        "stride=64: must be below context=64": (hf_dir, data, {"stride": 64}),
        "stride=80: must be below context=32": (hf_dir, data, {"context": 32, "stride": 80}),
        "context=65: longer than the model's context of 64": (hf_dir, data, {"context": 65}),
        "max_tokens=0: must be an integer >= 1": (hf_dir, data, {"max_tokens": 0}),
    }
    for message, (model, path, kw) in cases.items():
        with pytest.raises(LmforgeError, match=message):
            evaluate(model, path, quiet=True, **kw)
    bert = tmp_path / "bert"
    make_hf_model("bert", bert)
    with pytest.raises(LmforgeError, match="not a decoder language model"):
        evaluate(bert, data, quiet=True)
    # the CLI: exit 2, one line; a good run prints a summary line and the JSON
    capsys.readouterr()  # (transformers' progress bar of saving the models above)
    assert main(["eval", str(hf_dir), "--data", str(data), "--stride", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: stride=64") and "\n" not in err
    assert main(["eval", str(hf_dir), "--data", str(data), "--max-tokens", "40", "--quiet"]) == 0
    summary, figures = capsys.readouterr().out.strip().split("\n")
    result = json.loads(figures)
    assert result["tokens"] == 40 and f"perplexity {result['ppl']:.4f}" in summary
    assert main(["eval", str(hf_dir), "--data", str(data), "--max-tokens", "40"]) == 0
    assert "eval:" not in capsys.readouterr().err  # stderr is no terminal: no progress bar drawn there


def test_smollm2_matches_transformers(smollm2_reference: tuple, smollm2_dir: Path, tmp_path: Path) -> None:
    hf_model, tokenizer = smollm2_reference
    text = (
        "It is a truth universally acknowledged, that a single man in possession of a good fortune,"
        " must be in want of a wife. However little known the feelings or views of such a man may be"
        " on his first entering a neighbourhood, this truth is so well fixed in the minds of the"
        " surrounding families, that he is considered the rightful property of some one or other of"
        " their daughters.\n\n"
    ) * 3
    data = tmp_path / "austen.txt"
    data.write_text(text)
    ours = evaluate(smollm2_dir, data, context=96, stride=48, quiet=True)
    eos = hf_model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    ids = [eos, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    nll, count = reference(hf_model, ids, 96, 48)
    assert ours["tokens"] == count == len(ids) - 1 and count > 200
    assert ours["nll_per_token"] == pytest.approx(nll / count, abs=1e-4)
    assert ours["bpb"] == pytest.approx(nll / math.log(2) / len(text.encode()), rel=1e-4)
    # the model reads its left context: 8-token windows leave it less to go on (the text repeats)
    short = evaluate(smollm2_dir, data, context=8, stride=7, quiet=True)
    assert short["tokens"] == count and short["nll"] > ours["nll"] * 1.2


def test_a_special_token_string_in_the_text_is_scored_as_prep_encodes_it(tmp_path: Path) -> None:
    # prep encodes documents as ordinary text (data/encode.py): a literal <|endoftext|> in a page
    # is its characters, not the EOS id. eval scores raw text with the same ids prep would write.
    from lmforge.data.prep import prep
    from lmforge.data.shards import open_split
    from lmforge.inference.perplexity import token_stream
    from lmforge.tokenization.tokenizer import Tokenizer

    hf_dir = tmp_path / "hf"
    make_hf_model("gpt2", hf_dir)  # its tokenizer has <|endoftext|> as a special token
    tokenizer = Tokenizer.load(hf_dir)
    text = "good night, sweet prince <|endoftext|> and flights of angels sing thee to thy rest"
    data = tmp_path / "page.txt"
    data.write_text(text)
    prep(data, tmp_path / "prepared", tokenizer, stages="none", val_fraction=0.5, quiet=True)
    shards = [a for split in ("train", "val") for a in open_split(tmp_path / "prepared", split)]
    prepared = [int(i) for a in shards for i in a]
    assert prepared.count(tokenizer.eos_id) == 1  # the document boundary only (prep puts it after)
    ids, *_ = token_stream(tokenizer, iter([text]), None)
    assert ids == [prepared[-1], *prepared[:-1]]  # eval's EOS goes before the document
    result = evaluate(hf_dir, data, quiet=True)
    assert (result["tokens"], result["bytes"]) == (len(prepared) - 1, len(text.encode("utf-8")))
    # a cap inside the document counts its bytes up to the last kept token of the same encoding
    cap = prepared.index(tokenizer.hf.token_to_id("<")) + 2  # past the first pieces of the string
    part = evaluate(hf_dir, data, max_tokens=cap, quiet=True)
    kept = tokenizer.decode(prepared[:cap])
    assert part["tokens"] == cap and part["bytes"] == len(kept.encode("utf-8"))


def test_skipped_inputs_are_listed_then_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Eight bad lines: the first five named, then one line with the total (it stopped at five)."""
    hf_dir = tmp_path / "hf"
    make_hf_model("gpt2", hf_dir)
    data = tmp_path / "docs.jsonl"
    good = json.dumps({"text": make_text(seed=1, lines=4)})
    data.write_text("\n".join([good, *["{oops"] * 8, good]) + "\n")
    capsys.readouterr()
    result = evaluate(hf_dir, data, quiet=True)
    warnings = capsys.readouterr().err.strip().splitlines()
    assert result["documents"] == 2 and len(warnings) == 6, warnings
    assert all(w.startswith(f"lmforge: warning: skipped {data}:") for w in warnings[:5])
    assert warnings[5].startswith("lmforge: warning: skipped 8 inputs in all (8 "), warnings[5]
