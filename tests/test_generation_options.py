"""Decoding arguments are checked the same by every entry point (generate, translate, the pipelines,
and so the CLI): each bad value is a one-line LmforgeError naming the argument, its value and the
allowed range, unknown pipeline keywords are errors, and the edge values that are allowed work."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lmforge
from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import write_model_dir
from lmforge.formats.lmforge_dirs import save_classifier
from lmforge.inference.generate import generate, generate_ids
from lmforge.inference.options import check_options
from lmforge.inference.translate import eval_translate, translate, translate_ids
from lmforge.model.classifier import Classifier
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.tokenization.tokenizer import Tokenizer

CONTEXT = 16


def _config(**extra: Any) -> ModelConfig:
    return ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=CONTEXT, **extra)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GPT, encoder-decoder and classifier directory sharing one character tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tok = Tokenizer.train_char(["abcdefgh ."])
    torch.manual_seed(0)
    gpt = GPT(_config(vocab_size=tok.vocab_size))
    write_model_dir(root / "gpt", gpt.config, gpt.state_dict(), tok)
    s2s = Seq2Seq(_config(vocab_size=tok.vocab_size, arch="seq2seq"), tok.pad_id or 0)
    write_model_dir(root / "s2s", s2s.config, s2s.state_dict(), tok)
    save_classifier(Classifier(GPT(gpt.config), ["neg", "pos"]), root / "clf", tok)
    return {"gpt": root / "gpt", "s2s": root / "s2s", "clf": root / "clf"}


def _refused(call: Any, *names: str) -> str:
    """The call raises a one-line LmforgeError naming each of `names`; returns the message."""
    with pytest.raises(LmforgeError) as e:
        call()
    message = str(e.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message
    return message


SAMPLING_BAD = [
    ("temperature", -1),
    ("temperature", float("nan")),
    ("temperature", float("inf")),
    ("temperature", "0.5"),
    ("top_p", 0),
    ("top_p", 1.5),
    ("top_p", -0.1),
    ("top_p", float("nan")),
    ("top_k", -3),
    ("top_k", 2.5),
    ("top_k", True),
    ("max_new_tokens", -5),
    ("max_new_tokens", 3.0),
    ("max_new_tokens", False),
    ("seed", 1.5),
    ("seed", "7"),
    ("seed", True),
    ("seed", 2**70),
]
BEAM_BAD = [
    ("beam", 0),
    ("beam", -1),
    ("beam", 1.5),
    ("beam", True),
    ("batch_size", 0),
    ("batch_size", -2),
    ("batch_size", 2.0),
    ("length_penalty", float("nan")),
    ("length_penalty", float("inf")),
    ("length_penalty", "1"),
    ("dtype", "fp16"),
]


def _names_value(name: str, value: Any) -> tuple[str, ...]:
    return (f"{name}={value!r}", "must be")


@pytest.mark.parametrize(("name", "value"), [*SAMPLING_BAD, ("dtype", "fp16"), ("use_cache", 1)])
def test_generate_refuses(dirs: dict[str, Path], tmp_path: Path, name: str, value: Any) -> None:
    _refused(lambda: generate(dirs["gpt"], "abc", **{name: value}), *_names_value(name, value))
    # checked before the model loads: a missing model directory is not what is reported
    _refused(lambda: generate(tmp_path / "missing", "abc", **{name: value}), name)


def test_generate_streams_one_prompt_only(dirs: dict[str, Path], tmp_path: Path) -> None:
    """Several prompts' tokens would interleave on stdout: refused, before the model loads."""
    said = "stream=True writes one prompt's text as it comes; 2 were given"
    _refused(lambda: generate(tmp_path / "missing", ["a", "b"], stream=True), said)
    assert len(generate(dirs["gpt"], ["a"], max_new_tokens=2, stream=True)) == 1  # a list of one streams


@pytest.mark.parametrize(("name", "value"), SAMPLING_BAD)
def test_generate_ids_refuses(name: str, value: Any) -> None:
    model = GPT(_config(vocab_size=12))
    args = {"max_new_tokens": 2, name: value}
    _refused(lambda: generate_ids(model, [[1, 2]], **args), *_names_value(name, value))


@pytest.mark.parametrize(("name", "value"), BEAM_BAD)
def test_translate_and_eval_translate_refuse(
    dirs: dict[str, Path], tmp_path: Path, name: str, value: Any
) -> None:
    src = tmp_path / "src.txt"
    src.write_text("abc\n")
    _refused(lambda: translate(dirs["s2s"], ["abc"], **{name: value}), *_names_value(name, value))
    _refused(lambda: eval_translate(dirs["s2s"], src, src, **{name: value}), *_names_value(name, value))


@pytest.mark.parametrize(
    ("name", "value"),
    [("beam", 0), ("batch_size", 0), ("length_penalty", math.nan), ("max_len_a", -1.0), ("max_len_b", -1)]
    + [("max_new_tokens", -1), ("use_cache", "yes")],
)
def test_translate_ids_refuses(name: str, value: Any) -> None:
    model = Seq2Seq(_config(vocab_size=12, arch="seq2seq"), 1)
    _refused(lambda: translate_ids(model, [[3, 4]], 0, **{name: value}), *_names_value(name, value))


GENERATION_PIPELINE_BAD = [
    *SAMPLING_BAD,
    ("do_sample", "no"),
    ("return_full_text", 1),
    ("truncate_prompt", "yes"),
    ("num_beams", 0),
    ("num_beams", 4),  # a valid beam, but text-generation has no beam search: refused, not ignored
    ("length_penalty", float("nan")),  # checked whatever num_beams is (until 2026-12-07: only with beams)
    ("early_stopping", "sometimes"),
]


@pytest.mark.parametrize(("name", "value"), GENERATION_PIPELINE_BAD)
def test_text_generation_pipeline_refuses(dirs: dict[str, Path], name: str, value: Any) -> None:
    pipe = lmforge.pipeline("text-generation", model=dirs["gpt"], dtype="fp32")
    _refused(lambda: pipe("abc", **{name: value}), f"{name}={value!r}")


@pytest.mark.parametrize(
    ("name", "value"),
    [("top_k", 0), ("top_k", -1), ("top_k", 1.5), ("top_k", True), ("batch_size", 0), ("batch_size", 1.0)],
)
def test_text_classification_pipeline_refuses(dirs: dict[str, Path], name: str, value: Any) -> None:
    pipe = lmforge.pipeline("text-classification", model=dirs["clf"])
    _refused(lambda: pipe("abc", **{name: value}), f"{name}={value!r}")


@pytest.mark.parametrize(
    ("name", "value"),
    [("num_beams", 0), ("num_beams", 2.0), ("length_penalty", math.inf), ("batch_size", 0)]
    + [("max_new_tokens", -1), ("do_sample", True), ("do_sample", "no")],
)
def test_translation_pipeline_refuses(dirs: dict[str, Path], name: str, value: Any) -> None:
    pipe = lmforge.pipeline("translation", model=dirs["s2s"])
    _refused(lambda: pipe("abc", **{name: value}), f"{name}={value!r}")


@pytest.mark.parametrize(
    ("task", "model", "keyword", "hint"),
    [
        ("text-generation", "gpt", "max_time", "max_length"),  # max_length was silently ignored
        ("text-generation", "gpt", "stop_strings", "stop_sequence"),  # generate's name
        ("text-generation", "gpt", "penalty_alpha", "typical_p"),
        ("text-classification", "clf", "return_all_scores", "top_k"),
        ("text-classification", "clf", "max_new_tokens", "batch_size"),
        ("translation", "s2s", "max_length", "max_new_tokens"),
        ("translation", "s2s", "src_lang", "num_beams"),
    ],
)
def test_pipelines_refuse_unknown_keywords(
    dirs: dict[str, Path], task: str, model: str, keyword: str, hint: str
) -> None:
    pipe = lmforge.pipeline(task, model=dirs[model])
    message = _refused(lambda: pipe("abc", **{keyword: 5}), task, keyword, "accepted:", hint)
    assert "text" not in message.split("accepted:")[1].split(", ")  # the input is not an option


def test_pipeline_constructor_refuses_unknown_keywords_and_bad_values(dirs: dict[str, Path]) -> None:
    _refused(
        lambda: lmforge.pipeline("text-generation", model=dirs["gpt"], device=0), "device=0", "run on the CPU"
    )
    # transformers' CPU device and torch dtypes are taken (they were unknown keywords)
    kw = {"do_sample": False, "max_new_tokens": 3}
    fp32 = lmforge.pipeline("text-generation", model=dirs["gpt"], dtype="fp32")("abc", **kw)
    for extra in (
        {"device": "cpu"},
        {"device": -1},
        {"device": torch.device("cpu")},
        {"device": "cpu:0"},
    ):
        assert (
            lmforge.pipeline("text-generation", model=dirs["gpt"], dtype=torch.float32, **extra)("abc", **kw)
            == fp32
        )
    torch_fp32 = lmforge.pipeline("text-generation", model=dirs["gpt"], torch_dtype=torch.float32)
    assert torch_fp32("abc", **kw) == fp32
    assert (
        lmforge.pipeline("translation", model=dirs["s2s"], torch_dtype=torch.bfloat16).model.wte.weight.dtype
        == torch.bfloat16
    )
    _refused(lambda: lmforge.pipeline("translation", model=dirs["s2s"], dtype=torch.float16), "fp32 or bf16")
    assert lmforge.pipeline("text-generation", model=dirs["gpt"], dtype="float32")("abc", **kw) == fp32
    _refused(
        lambda: lmforge.pipeline("translation", model=dirs["s2s"], dtype="fp32", torch_dtype="fp32"),
        "give one",
    )
    _refused(lambda: lmforge.pipeline("text-classification", model=dirs["clf"], dtype=torch.float32), "dtype")
    _refused(lambda: lmforge.pipeline("translation", model=dirs["s2s"], dtype="fp16"), "dtype='fp16'")
    _refused(lambda: lmforge.pipeline("text-classification", model=dirs["clf"], batch_size=0), "batch_size=0")
    _refused(lambda: lmforge.pipeline("text-generation", model=dirs["gpt"])(["abc", 3]), "item 2")


def test_transformers_input_names_and_a_missing_input_or_model(dirs: dict[str, Path]) -> None:
    """text_inputs= / inputs= (transformers' names) raised a TypeError, as did no input or no model."""
    generate = lmforge.pipeline("text-generation", model=dirs["gpt"])
    kw = {"do_sample": False, "max_new_tokens": 3}
    assert generate(text_inputs="abc", **kw) == generate("abc", **kw)
    labels = lmforge.pipeline("text-classification", model=dirs["clf"])
    assert labels(inputs=["abc", "h."]) == labels(["abc", "h."])
    _refused(lambda: generate(**kw), "text-generation needs a text")
    _refused(lambda: labels(), "text-classification needs a text")
    _refused(lambda: lmforge.pipeline("text-generation"), "give both the task and a model directory")
    _refused(lambda: lmforge.pipeline(model=dirs["gpt"]), "lmforge downloads no default model")
    _refused(lambda: lmforge.pipeline(5, model=dirs["gpt"]), "task=5", "a name")  # were TypeErrors
    _refused(lambda: lmforge.pipeline("text-generation", model=5), "model=5", "a directory path")
    assert lmforge.pipeline("sentiment-analysis", model=dirs["clf"])("abc") == labels("abc")  # an alias
    assert labels("abc " * 40, truncation=True) == labels("abc " * 40)  # always cut: transformers' keyword
    assert labels("abc " * 40, truncation="longest_first") == labels("abc " * 40)  # and its strategy
    _refused(lambda: labels("abc", truncation=False), "truncation=False", "always cuts")


def test_edge_values_are_accepted() -> None:
    torch.manual_seed(0)
    model = GPT(_config(vocab_size=12)).eval()
    prompts = [[1, 2, 3], [4]]
    assert generate_ids(model, prompts, 0, temperature=0, top_k=0, top_p=1) == [[], []]
    greedy = generate_ids(model, prompts, 5, temperature=0)
    assert [len(g) for g in greedy] == [5, 5]
    # top_p=1 and top_k=0 sample from the whole distribution, reproducibly with a seed
    sampled = [generate_ids(model, prompts, 5, temperature=1, top_k=0, top_p=1, seed=s) for s in (1, 1)]
    assert sampled[0] == sampled[1]
    # a tiny top_p keeps only the most likely token: sampling becomes greedy
    assert generate_ids(model, prompts, 5, temperature=1.0, top_p=1e-9, seed=2) == greedy
    # numpy integers and floats are numbers like any other
    assert generate_ids(model, prompts, np.int64(5), temperature=np.float32(0), top_k=np.int64(0)) == greedy
    check_options(seed=-1, beam=None, num_beams=1, length_penalty=-2.0, top_p=1)


def test_edge_values_work_through_every_entry_point(dirs: dict[str, Path]) -> None:
    assert generate(dirs["gpt"], "abc", max_new_tokens=0, temperature=0, top_k=0, top_p=1) == ["abc"]
    text = generate(dirs["gpt"], ["abc", ""], max_new_tokens=3, temperature=0, top_p=1.0, dtype="fp32")
    assert text[0].startswith("abc") and len(text) == 2
    gen = lmforge.pipeline("text-generation", model=dirs["gpt"], dtype="fp32")
    assert gen("abc", max_new_tokens=0) == [{"generated_text": "abc"}]
    greedy = gen("abc", max_new_tokens=4, do_sample=False, num_beams=1)[0]["generated_text"]
    assert greedy == gen("abc", max_new_tokens=4, temperature=0, top_k=0, top_p=1)[0]["generated_text"]
    assert greedy == generate(dirs["gpt"], "abc", max_new_tokens=4, temperature=0, dtype="fp32")[0]
    # batch_size, as transformers' pipeline takes it: rows decoded in parts, the same texts, seeded too
    texts = ["abc", "de", "fghij", "k", "lm"]
    whole = gen(texts, max_new_tokens=6, seed=3, num_return_sequences=2, stop_sequence="e")
    assert (
        gen(texts, max_new_tokens=6, seed=3, num_return_sequences=2, stop_sequence="e", batch_size=3) == whole
    )
    in_parts = lmforge.pipeline("text-generation", model=dirs["gpt"], dtype="fp32", batch_size=1)
    assert in_parts(texts, max_new_tokens=6, seed=3, num_return_sequences=2, stop_sequence="e") == whole
    _refused(lambda: gen("abc", batch_size=0), "batch_size=0")
    _refused(lambda: lmforge.pipeline("text-generation", model=dirs["gpt"], batch_size=2.0), "batch_size=2.0")

    tr = lmforge.pipeline("translation", model=dirs["s2s"])
    assert tr(["abc", "de"], max_new_tokens=0) == [{"translation_text": ""}] * 2
    full = tr("abc", num_beams=1, do_sample=False)[0]["translation_text"]
    assert tr("abc", num_beams=1, length_penalty=0.0, batch_size=1)[0]["translation_text"] == full
    assert translate(dirs["s2s"], "abc", beam=1) == [full]
    two = tr("abc", max_new_tokens=2, num_beams=2)[0]["translation_text"]
    assert len(two) <= 1  # at most 2 new tokens, the EOS forced at the second; one character each

    clf = lmforge.pipeline("text-classification", model=dirs["clf"])
    every = clf("abc", top_k=None)
    assert sorted(r["label"] for r in every) == ["neg", "pos"]
    assert clf("abc", top_k=5) == every  # more than there are labels: all of them, as transformers
    assert clf(["abc", "de"], batch_size=1) == clf(["abc", "de"])
    assert clf([]) == []

    # top_k at construction is every call's default, as transformers' pipeline(..., top_k=None)
    every_call = lmforge.pipeline("text-classification", model=dirs["clf"], top_k=None)
    assert every_call("abc") == [every]  # a string nested, as transformers (tests/test_hf_classifiers.py)
    assert every_call(["abc", "de"]) == clf(["abc", "de"], top_k=None)
    assert every_call("abc", top_k=1) == clf("abc", top_k=1)  # a call's own top_k wins
    _refused(lambda: lmforge.pipeline("text-classification", model=dirs["clf"], top_k=0), "top_k=0")


def test_an_empty_list_gives_an_empty_list_everywhere(dirs: dict[str, Path]) -> None:
    """As transformers' pipelines do: no inputs, no outputs (it was `max() arg is an empty sequence`)."""
    assert generate(dirs["gpt"], [], max_new_tokens=3) == []
    assert generate_ids(GPT(_config(vocab_size=12)), [], 3) == []
    assert lmforge.pipeline("text-generation", model=dirs["gpt"])([], max_new_tokens=3) == []
    assert lmforge.pipeline("translation", model=dirs["s2s"])([]) == []
    assert lmforge.pipeline("text-classification", model=dirs["clf"])([]) == []
    assert lmforge.translate(dirs["s2s"], []) == []  # it was "nothing to translate"
    _refused(lambda: translate(dirs["gpt"], []), "not a translation")  # the model is still checked


def test_translate_ids_max_new_tokens_caps_each_sentence() -> None:
    torch.manual_seed(0)
    model = Seq2Seq(_config(vocab_size=12, arch="seq2seq"), 1).eval()
    sources = [[3, 4, 5], [6]]
    full = translate_ids(model, sources, 0, beam=1)
    for beam in (1, 3):
        capped = translate_ids(model, sources, 0, beam=beam, max_new_tokens=2)
        assert all(len(c) <= 1 for c in capped)  # the EOS counts, forced at the limit as transformers'
    assert translate_ids(model, sources, 0, beam=1, max_new_tokens=3) == [f[:2] for f in full]


def test_prompt_longer_than_the_context(dirs: dict[str, Path]) -> None:
    long = "abcdefgh" * 3  # 24 characters, one token each
    _refused(lambda: generate(dirs["gpt"], long), "prompt is 24 tokens", f"context of {CONTEXT}", "truncate")
    _refused(lambda: generate(dirs["gpt"], ["ab", long]), "prompt 2 is 24 tokens")
    assert generate(dirs["gpt"], long, max_new_tokens=2, truncate_prompt=True)[0].startswith(long)
    gen = lmforge.pipeline("text-generation", model=dirs["gpt"])
    _refused(lambda: gen(long), "prompt is 24 tokens", f"context of {CONTEXT}")
    assert gen(long, max_new_tokens=1, truncate_prompt=True)[0]["generated_text"].startswith(long)
    _refused(lambda: translate(dirs["s2s"], long), "sentence 1 is 24 tokens", "limit of 15")


def test_translate_inputs_are_named(dirs: dict[str, Path], tmp_path: Path) -> None:
    _refused(lambda: translate(dirs["s2s"]), "nothing to translate")  # neither texts nor file
    _refused(lambda: translate(dirs["s2s"], ["abc", None]), "item 2")  # type: ignore[list-item]
    _refused(lambda: translate(dirs["s2s"], file=tmp_path / "missing.txt"), "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    _refused(lambda: translate(dirs["s2s"], file=tmp_path / "empty.txt"), "empty.txt", "empty")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    _refused(lambda: translate(dirs["s2s"], file=tmp_path / "latin1.txt"), "latin1.txt", "UTF-8")
    _refused(lambda: translate(dirs["s2s"], file=tmp_path), str(tmp_path), "folder")
    (tmp_path / "a.txt").write_text("abc\nde\n")
    (tmp_path / "b.txt").write_text("abc\n")
    _refused(
        lambda: eval_translate(dirs["s2s"], tmp_path / "a.txt", tmp_path / "b.txt"),
        "a.txt has 2",
        "b.txt has 1",
    )
    _refused(
        lambda: eval_translate(dirs["s2s"], tmp_path / "empty.txt", tmp_path / "b.txt"), "empty.txt", "empty"
    )


def test_eval_translate_out_never_overwrites_an_input(dirs: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("sacrebleu")
    src, ref = tmp_path / "test.en", tmp_path / "test.fr"
    src.write_text("abc\nde\n")
    ref.write_text("cba\ned\n")
    (tmp_path / "link.en").symlink_to(src)
    before = {p: p.read_bytes() for p in (src, ref)}
    for out, culprit in [
        (src, "src="),
        (ref, "ref="),
        (tmp_path / "link.en", "src="),  # the same file by another name
        (tmp_path / "sub" / ".." / "test.fr", "ref="),
        (dirs["s2s"] / "config.json", "the model's file"),
    ]:
        _refused(lambda out=out: eval_translate(dirs["s2s"], src, ref, out=out), f"out={out}", culprit)
    assert {p: p.read_bytes() for p in (src, ref)} == before
    _refused(lambda: eval_translate(dirs["s2s"], src, ref, out=tmp_path), "a folder")
    _refused(lambda: eval_translate(dirs["s2s"], src, ref, out=tmp_path / "no" / "hyp"), "does not exist")
    # any other existing file is the user's: replaced by the translations only with overwrite
    hyp = tmp_path / "hyp.fr"
    hyp.write_text("old\n")
    _refused(lambda: eval_translate(dirs["s2s"], src, ref, out=hyp), "exists: give --overwrite")
    assert hyp.read_text() == "old\n"
    result = eval_translate(dirs["s2s"], src, ref, out=hyp, overwrite=True)
    assert result["sentences"] == 2 and len(hyp.read_text().splitlines()) == 2
    assert hyp.read_text() != "old\n"


def test_the_cli_reports_the_same_errors(
    dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", str(dirs["gpt"]), "--temperature", "-1"]) == 2
    assert "temperature=-1.0: must be a finite number >= 0" in capsys.readouterr().err
    assert main(["generate", str(dirs["gpt"]), "--top-p", "0", "--max-new-tokens", "3"]) == 2
    assert "top_p=0.0" in capsys.readouterr().err
    src = tmp_path / "s.txt"
    src.write_text("abc\n")
    argv = ["eval-translate", str(dirs["s2s"]), "--src", str(src), "--ref", str(src), "--out", str(src)]
    assert main(argv) == 2
    assert "overwrite an input" in capsys.readouterr().err and src.read_text() == "abc\n"
    assert main(["translate", str(dirs["s2s"]), "abc", "--beam", "0"]) == 2
    assert "beam=0: must be an integer >= 1" in capsys.readouterr().err
    assert main(["translate", str(dirs["s2s"])]) == 2  # no sentences: still an error on the command line
    assert capsys.readouterr().err.strip() == "lmforge: error: nothing to translate: give some text or --file"


def test_a_model_of_another_kind_is_named_in_words() -> None:
    """The message names what the directory holds: 'a question-answering model (SpanModel)', not
    'a SpanModel' (nor 'a Encoder')."""
    from serve_helpers import QA_FIXTURE

    with pytest.raises(LmforgeError, match=r"bert-qa: a question-answering model \(SpanModel\), not a"):
        generate(QA_FIXTURE, "hi", max_new_tokens=1)


@pytest.mark.parametrize(
    ("call", "kind", "tail"),
    [
        (lambda d: generate(d["clf"], "ab", max_new_tokens=1), r"a classifier \(Classifier\)", "$"),
        (lambda d: generate(d["s2s"], "ab", max_new_tokens=1), r"an encoder-decoder", r" \(try translate\)$"),
        (lambda d: lmforge.pipeline("text-generation", model=d["s2s"]), "encoder-decoder", "text-generation"),
        (lambda d: lmforge.chat(d["clf"]), r"a classifier", ", so it cannot chat$"),
    ],
)
def test_every_decoding_entry_point_refuses_another_kind_alike(
    dirs: dict[str, Path], call: Any, kind: str, tail: str
) -> None:
    """One message for every verb that decodes: 'DIR: KIND, not a decoder language model[, why]'."""
    message = _refused(lambda: call(dirs), "not a decoder language model")
    assert re.search(kind, message) and re.search(tail, message), message


def test_a_hint_names_only_a_keyword_the_pipeline_takes(dirs: dict[str, Path]) -> None:
    """max_length -> max_new_tokens is a pointer for the decoders; a classifier takes neither."""
    pipe = lmforge.pipeline("text-classification", model=dirs["clf"])
    message = _refused(lambda: pipe("abc", max_length=3), "unknown keyword max_length", "accepted: top_k")
    assert "max_new_tokens" not in message
    message = _refused(lambda: lmforge.pipeline("translation", model=dirs["s2s"])("abc", max_length=3))
    assert "(for max_length use max_new_tokens, which counts only new tokens)" in message


def test_not_a_classifier_suggests_finetune_classify_only_where_it_starts_from(dirs: dict[str, Path]) -> None:
    _refused(
        lambda: lmforge.pipeline("text-classification", model=dirs["gpt"]), "a decoder", "finetune-classify"
    )
    message = _refused(
        lambda: lmforge.pipeline("text-classification", model=dirs["s2s"]), "an encoder-decoder"
    )
    assert message.endswith("not a classifier"), message


def test_an_evaluations_out_never_replaces_a_runs_own_files(tmp_path: Path) -> None:
    """eval-qa/eval-instruct/audit RUN --out RUN/config.toml --overwrite would break the run's
    resume: the run's own files are inputs too, as its model directory's are."""
    from lmforge.inference.translate import check_out

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    for name in ("config.toml", "summary.json"):
        (run / name).write_text("x")
        own = rf"is the model's file {re.escape(str(run / name))}: writing it"
        with pytest.raises(LmforgeError, match=own):
            check_out(run / name, {}, overwrite=True, model=run)
    new = run / "eval.json"  # a new file beside them: fine
    assert check_out(new, {}, overwrite=True, model=run) == new
