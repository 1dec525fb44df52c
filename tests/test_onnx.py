"""ONNX export (`lmforge export --format onnx`) run in ONNX Runtime: for a GPT, an imported
Llama-family model, an encoder, a classifier, an encoder-decoder and an imported Marian model the
outputs equal PyTorch's within 1e-4 at several batch sizes, sequence lengths and past lengths (the
dynamic axes really are dynamic), and 32 greedy tokens are identical; `generate --runtime onnx`;
bad input is one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hf_helpers import make_hf_model
from marian_helpers import make_marian_model

pytest.importorskip("onnxruntime")

from lmforge.cli import main  # noqa: E402
from lmforge.config import ModelConfig  # noqa: E402
from lmforge.errors import LmforgeError  # noqa: E402
from lmforge.formats.directory import load_model, write_model_dir  # noqa: E402
from lmforge.formats.lmforge_dirs import save_classifier  # noqa: E402
from lmforge.formats.onnx_export import _earlier_export, export_onnx, model_kind  # noqa: E402
from lmforge.inference.generate import generate, generate_ids  # noqa: E402
from lmforge.inference.onnx_runner import (  # noqa: E402
    OnnxModel,
    generate_ids_onnx,
    generate_onnx,
    translate_ids_onnx,
    translate_onnx,
)
from lmforge.inference.translate import translate_ids  # noqa: E402
from lmforge.model.classifier import Classifier  # noqa: E402
from lmforge.model.gpt import GPT  # noqa: E402
from lmforge.model.seq2seq import Seq2Seq  # noqa: E402
from lmforge.tokenization.tokenizer import Tokenizer  # noqa: E402

Exported = Callable[[str], tuple[Path, Path]]
TEXT = "the king doth love the fair lady, and the queen shall speak of it"
ATOL = 1e-4


def _spread(model: torch.nn.Module, std: float = 0.3) -> None:
    """Random weights with well-separated logits, so greedy choices are not near-ties."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def gpt_export(root: Path) -> tuple[Path, Path]:
    """An lmforge GPT (context 48) and its export, made through the CLI: (model dir, export)."""
    tok = Tokenizer.train_char([TEXT + " ABCDEFGHIJKLMNOPQRSTUVWXYZ.!?"])
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    gpt = GPT(config)
    _spread(gpt)
    write_model_dir(root / "gpt", config, gpt.state_dict(), tok)
    assert main(["export", str(root / "gpt"), "--out", str(root / "gpt-onnx"), "--format", "onnx"]) == 0
    return root / "gpt", root / "gpt-onnx"


def _make(kind: str, directory: Path) -> None:
    tok = Tokenizer.train_char([TEXT + " ABCDEFGHIJKLMNOPQRSTUVWXYZ.!?"])
    config = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=48, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    if kind == "s2s":
        s2s = Seq2Seq(ModelConfig(**{**config.__dict__, "arch": "seq2seq"}), tok.pad_id or 0)
        _spread(s2s)
        write_model_dir(directory, s2s.config, s2s.state_dict(), tok)
    elif kind == "classifier":
        save_classifier(Classifier(GPT(config), ["no", "yes", "maybe"]).eval(), directory, tok)
    elif kind == "bert-classifier":  # an encoder's classifier reads a pair's token types
        make_hf_model("bert", directory.with_name("bert-body"))
        encoder, bert_tok = load_model(directory.with_name("bert-body"))
        save_classifier(Classifier(encoder, ["contradiction", "entailment"]).eval(), directory, bert_tok)
    elif kind == "marian":  # sinusoidal positions, post-norm, logits bias, a suppressed pad token
        make_marian_model(directory)
    else:  # llama (rotary, RMSNorm, SwiGLU, grouped-query attention), bert (token types)
        make_hf_model(kind, directory)


@pytest.fixture(scope="module")
def exported(root: Path, gpt_export: tuple[Path, Path]) -> Callable[[str], tuple[Path, Path]]:
    """kind -> (model directory, its ONNX export), each made when first asked for."""
    made = {"gpt": gpt_export}

    def get(kind: str) -> tuple[Path, Path]:
        if kind not in made:
            _make(kind, root / kind)
            made[kind] = (root / kind, export_onnx(root / kind, root / f"{kind}-onnx"))
        return made[kind]

    return get


# Each export takes ~10 s here (torch.export, then onnxscript): make test exports the GPT once;
# the other kinds (two more decoders, an encoder, a classifier, two encoder-decoders) are `slow`.
SLOW = pytest.mark.slow
DECODERS = ["gpt", pytest.param("llama", marks=SLOW)]


def _decoder_logits(model: GPT, ids: torch.Tensor, mask: torch.Tensor, past_len: int) -> torch.Tensor:
    """PyTorch's logits for the last T = ids.size(1) - past_len positions, the prefix cached."""
    cache = model.new_cache(ids.size(0))
    with torch.no_grad():
        if past_len:
            model(ids[:, :past_len], cache, mask=mask[:, :past_len])
        return model(ids[:, past_len:], cache, mask=mask)


@pytest.mark.parametrize("kind", DECODERS)
def test_decoder_logits_and_cache_match_pytorch_at_several_shapes(kind: str, exported: Exported) -> None:
    source, out = exported(kind)
    model, _ = load_model(source)
    onnx = OnnxModel(out)
    assert onnx.meta["graphs"]["model"]["max_abs_diff"] <= ATOL  # checked at export too
    vocab = model.config.vocab_size
    for batch, past_len, t in [(1, 0, 9), (4, 0, 3), (3, 6, 1), (2, 5, 4)]:
        ids = torch.randint(0, vocab, (batch, past_len + t))
        mask = torch.ones_like(ids)
        mask[0, :2] = 0  # row 0 left-padded
        past = onnx.empty_past(batch)
        if past_len:  # the graph's own present keys/values become the next call's past
            _, past = onnx.decoder_step(ids[:, :past_len].numpy(), mask[:, :past_len].numpy(), past)
        got = onnx.call("model", ids[:, past_len:].numpy(), mask.numpy(), *past)
        want = _decoder_logits(model, ids, mask.bool(), past_len)
        assert got[0].shape == tuple(want.shape) and got[1].shape[2] == past_len + t
        np.testing.assert_allclose(got[0], want.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("kind", DECODERS)
def test_32_greedy_tokens_are_identical(kind: str, exported: Exported) -> None:
    source, out = exported(kind)
    model, _ = load_model(source)
    prompts = [[3, 4, 5, 6, 7], [8, 9], [10, 11, 12]]  # different lengths: a left-padded batch
    for batch in (prompts[:1], prompts):
        want = generate_ids(model, batch, 32, temperature=0)
        got = generate_ids_onnx(OnnxModel(out), batch, 32, temperature=0, stop_at_eos=False)
        assert got == want and all(len(g) == 32 for g in got)


def test_every_stop_id_of_the_model_ends_onnx_decoding_as_it_ends_pytorchs(
    gpt_export: tuple[Path, Path], tmp_path: Path
) -> None:
    """generation_config.json may list several stop ids (a Llama 3's or Qwen2's two): the export
    kept the tokenizer's EOS alone, and the ONNX runtime generated past the other to the cap."""
    import json
    import shutil

    import lmforge

    source = tmp_path / "gpt"
    shutil.copytree(gpt_export[0], source)
    model, tokenizer = load_model(source)
    prompt = "the king"
    free = generate_ids(model, [tokenizer.encode(prompt)], 12, temperature=0)[0]
    (source / "generation_config.json").write_text(json.dumps({"eos_token_id": [tokenizer.eos_id, free[3]]}))
    assert main(["export", str(source), "--out", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    assert json.loads((tmp_path / "onnx" / "onnx.json").read_text())["stop_token_ids"] == [
        tokenizer.eos_id,
        free[3],
    ]
    ours = lmforge.generate(source, prompt, max_new_tokens=12, temperature=0, dtype="fp32", compile=False)
    assert generate_onnx(tmp_path / "onnx", prompt, max_new_tokens=12, temperature=0) == ours
    assert ours[0] == prompt + tokenizer.decode(free[: free.index(free[3])])  # it stopped there


def test_decoding_slides_past_the_context_as_pytorch_does(gpt_export: tuple[Path, Path]) -> None:
    source, out = gpt_export
    model, _ = load_model(source)
    prompt = [[5] * 40]  # 40 + 20 tokens > the context of 48
    assert generate_ids_onnx(OnnxModel(out), prompt, 20, temperature=0, stop_at_eos=False) == generate_ids(
        model, prompt, 20, temperature=0
    )


def test_idle_runtime_threads_do_not_spin(gpt_export: tuple[Path, Path]) -> None:
    """ORT's workers spin between runs by default, taking the cores from what the process does next
    (PyTorch decoded several times slower beside a spinning session in bench_onnx)."""
    _, out = gpt_export
    for session in OnnxModel(out).sessions.values():
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_sampling_with_a_seed_matches_pytorch(gpt_export: tuple[Path, Path]) -> None:
    source, out = gpt_export
    kw = {"max_new_tokens": 24, "temperature": 0.9, "top_k": 20, "top_p": 0.9, "seed": 7}
    assert generate_onnx(out, ["the ki", "a"], **kw) == generate(source, ["the ki", "a"], dtype="fp32", **kw)
    kw["stop"] = ["e", "\n"]  # stop strings end each row alike
    cut = generate_onnx(out, ["the ki", "a"], **kw)
    assert cut == generate(source, ["the ki", "a"], dtype="fp32", **kw)
    assert "e" not in cut[0][6:] + cut[1][1:]


@SLOW
@pytest.mark.parametrize("kind", ["bert", "classifier", "bert-classifier"])
def test_encoder_and_classifier_outputs_match_pytorch(kind: str, exported: Exported) -> None:
    """An encoder's classifier takes token_type_ids (until 2026-12-07 its graph had no such input:
    a cross-encoder's pair read as one text)."""
    source, out = exported(kind)
    model, _ = load_model(source)
    onnx = OnnxModel(out)
    inputs = onnx.meta["graphs"]["model"]["inputs"]
    assert ("token_type_ids" in inputs) == kind.startswith("bert")
    for batch, t in [(1, 5), (3, 11)]:
        ids = torch.randint(0, model.config.vocab_size, (batch, t))
        mask = torch.ones_like(ids)
        mask[-1, -3:] = 0  # right padding
        types = (torch.arange(t) >= t // 2).long().expand(batch, t)
        arrays = [ids.numpy(), mask.numpy(), types.numpy()][: len(inputs)]
        with torch.no_grad():
            want = model(ids, mask, types) if "token_type_ids" in inputs else model(ids, mask)
        [got] = onnx.call("model", *arrays)
        assert got.shape == tuple(want.shape)
        np.testing.assert_allclose(got, want.numpy(), atol=ATOL, rtol=0)
    if kind == "classifier":
        assert onnx.meta["labels"] == ["no", "yes", "maybe"] and onnx.meta["function_to_apply"] == "softmax"


@SLOW
@pytest.mark.parametrize("kind", ["s2s", "marian"])
def test_encoder_decoder_logits_and_32_greedy_tokens(kind: str, exported: Exported) -> None:
    source, out = exported(kind)
    model, _ = load_model(source)
    onnx = OnnxModel(out)
    sources = [list(range(5, 16)), [12, 13, 14]]  # limits 34 and 18 tokens (2 x source + 10)
    want = translate_ids(model, sources, onnx.meta["eos_token_id"], beam=1, max_new_tokens=32)
    assert translate_ids_onnx(onnx, sources, 32) == want
    if kind == "s2s":  # random weights never pick EOS: 31 tokens compared, 17 for the short one,
        assert [len(w) for w in want] == [31, 17]  # then the EOS forced at each limit
    # teacher-forced logits over a cached prefix, at two batch sizes
    for batch, s, past_len, t in [(1, 4, 0, 6), (3, 9, 5, 2)]:
        src = torch.randint(1, model.config.vocab_size - 1, (batch, s))
        src_mask = torch.ones_like(src)
        src_mask[0, -2:] = 0
        enc = onnx.run("encoder", input_ids=src.numpy(), attention_mask=src_mask.numpy())
        names = onnx.meta["graphs"]["encoder"]["outputs"]
        cross = [enc[n] for n in names[1:]]
        tgt = torch.randint(1, model.config.vocab_size - 1, (batch, past_len + t))
        past = onnx.empty_past(batch)
        if past_len:
            past = onnx.call("decoder", tgt[:, :past_len].numpy(), src_mask.numpy(), *cross, *past)[1:]
        got = onnx.call("decoder", tgt[:, past_len:].numpy(), src_mask.numpy(), *cross, *past)[0]
        mask = src_mask.bool()[:, None, None, :]
        with torch.no_grad():
            memory = model.encode(src, mask)
            np.testing.assert_allclose(enc["last_hidden_state"], memory.numpy(), atol=ATOL, rtol=0)
            want_logits = model.decode(tgt, memory, mask)[:, past_len:]
        np.testing.assert_allclose(got, want_logits.numpy(), atol=ATOL, rtol=0)


def test_export_folder_and_cli(gpt_export: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    source, out = gpt_export
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["kind"] == "decoder" and meta["cache"] == {"n_layer": 2, "n_kv_head": 2, "head_size": 16}
    assert meta["source"] == str(source.resolve())  # absolute: its errors name it from anywhere
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "onnx.json", "tokenizer.json"]
    assert _earlier_export(out) is None  # an export may replace its own earlier output
    capsys.readouterr()
    cmd = ["generate", str(out), "--runtime", "onnx", "--prompt", "the k", "--max-new-tokens", "8"]
    assert main([*cmd, "--temperature", "0"]) == 0
    text = capsys.readouterr().out.strip()
    assert text == generate(source, "the k", max_new_tokens=8, temperature=0, dtype="fp32")[0]
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        main([*cmd, "--no-cache"])
    assert "--no-cache does not go with --runtime onnx" in capsys.readouterr().err


def test_bad_input_is_one_line(
    gpt_export: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source, out = gpt_export
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    assert main(["export", str(source), "--out", str(tmp_path / "notes"), "--format", "onnx"]) == 2
    assert "holds files export did not write (mine.txt)" in capsys.readouterr().err
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "onnx.json").write_text('{"format": "lmforge-onnx", "kind": "encoder", "graphs": {}}')
    with pytest.raises(
        LmforgeError,
        match=r"an ONNX export of an encoder model: lmforge\.inference\.onnx_runner\.OnnxModel runs it, not",
    ):
        generate_onnx(tmp_path / "enc", "hi")
    with pytest.raises(LmforgeError, match="onnx.json: missing"):
        generate_onnx(source, "hi")
    with pytest.raises(LmforgeError, match="longer than the model's context of 48"):
        generate_onnx(out, "x" * 60)
    with pytest.raises(LmforgeError, match=r"m: a Linear has no ONNX export \(covered: decoder"):
        model_kind(torch.nn.Linear(2, 2), "m")


def test_the_export_check_scales_with_the_logits() -> None:
    """Rounding differences grow with the activations' scale: a real model's logits reach ~30 and
    differ by up to ~1.3e-3 (SmolLM2-135M), near-zero ones included; a random model's reach ~1 and
    differ by ~1e-6. The check is 1e-4 x (1 + the output's largest |value|), not 1e-4 flat."""
    from lmforge.formats.onnx_export import beyond_tolerance

    logits = np.array([30.0, 0.01, -28.0], dtype=np.float32)
    assert beyond_tolerance(logits + np.float32(1.3e-3), logits)[1] <= 0  # refused under a flat 1e-4
    small = np.array([0.5, -0.2], dtype=np.float32)
    diff, beyond = beyond_tolerance(small + np.float32(5e-4), small)
    assert beyond > 0 and diff == pytest.approx(5e-4, rel=1e-3)


def test_translate_cli_runs_an_encoder_decoder_export(
    exported: Exported, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`lmforge translate EXPORT --runtime onnx` gives PyTorch's greedy translations, in batches
    of any size, a blank line kept blank; beam search and dtypes are the PyTorch path's."""
    from lmforge import translate

    source, out = exported("s2s")
    texts = ["the king", "", "fair lady, and the queen shall speak"]
    want = translate(source, texts, beam=1)
    assert want[0] and want[1] == "" and want[2]
    (tmp_path / "in.txt").write_text("the king\n\n")
    capsys.readouterr()
    argv = ["translate", str(out), "--runtime", "onnx", "--batch-size", "1", texts[2], "--file"]
    assert main([*argv, str(tmp_path / "in.txt")]) == 0
    assert capsys.readouterr().out.split("\n") == [want[2], want[0], "", ""]
    assert translate_onnx(out, texts, batch_size=2) == want
    with pytest.raises(LmforgeError, match=r"sentence 1 is 60 tokens, longer than the model's limit of 47"):
        translate_onnx(out, "x" * 60)
    assert translate_onnx(out, "x" * 60, truncate=True) == translate(source, "x" * 60, beam=1, truncate=True)
    with pytest.raises(SystemExit, match="2"):
        main(["translate", str(out), "--runtime", "onnx", "--beam", "4", "hi"])
    assert "--beam does not go with --runtime onnx" in capsys.readouterr().err
    with pytest.raises(LmforgeError, match=r"an ONNX export, which `lmforge generate .* not a seq2seq model"):
        translate_onnx(exported("gpt")[1], "hi")


def test_a_decoder_with_a_context_under_10_tokens_exports_and_is_checked(tmp_path: Path) -> None:
    """The export's check fed 5 cached + 5 new positions: a model of 8 (an imported Mistral with
    an 8-token sliding window) failed there; its example lengths now fit the context."""
    tok = Tokenizer.train_char([TEXT])
    config = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(tmp_path / "gpt", config, GPT(config).state_dict(), tok)
    out = export_onnx(tmp_path / "gpt", tmp_path / "onnx")
    meta = json.loads((out / "onnx.json").read_text())
    assert meta["block_size"] == 8 and meta["graphs"]["model"]["max_abs_diff"] < ATOL
    prompt = "the ki"
    want = generate(tmp_path / "gpt", prompt, max_new_tokens=2, temperature=0, dtype="fp32")[0]
    assert generate_onnx(out, prompt, max_new_tokens=2, temperature=0) == [want]
