"""`lmforge inspect`: attention probabilities equal transformers' (eager attention) on imported GPT-2,
BERT, Llama and Marian models; rows sum to 1; the causal upper triangle is 0; the logit lens's last
layer is the model's logits; the default attention path forms no probabilities; files and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hf_helpers import add_bos, make_hf_model

from lmforge.cli import main
from lmforge.config import ModelConfig
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, write_model_dir
from lmforge.formats.hf_files import import_hf
from lmforge.model import attention as attention_module
from lmforge.model.attention import capture_attention
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.tokenization.tokenizer import Tokenizer
from lmforge.tools.inspect import inspect

TEXT = "the king doth love the fair lady, and the queen shall speak"


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """family -> (the HF directory transformers saved, lmforge's import of it)."""
    root = tmp_path_factory.mktemp("inspect")
    out = {}
    for family in ("gpt2", "bert", "llama"):
        make_hf_model(family, root / f"hf-{family}")
        out[family] = (root / f"hf-{family}", import_hf(root / f"hf-{family}", root / family))
    return out


def _transformers(hf_dir: Path, causal_lm: bool) -> torch.nn.Module:
    import transformers

    cls = transformers.AutoModelForCausalLM if causal_lm else transformers.AutoModel
    return cls.from_pretrained(hf_dir, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_attention_equals_transformers_eager(family: str, imported: dict) -> None:
    hf_dir, ours = imported[family]
    got = inspect(ours, TEXT, out=None)
    probs = got.attention["self"]  # (L, nh, T, T)
    ref = _transformers(hf_dir, family != "bert")
    with torch.no_grad():
        theirs = ref(torch.tensor([got.ids]), output_attentions=True).attentions
    assert probs.shape == (len(theirs), *theirs[0].shape[1:]) and probs.shape[-1] == len(got.ids) > 8
    torch.testing.assert_close(probs, torch.stack([a[0] for a in theirs]), atol=1e-5, rtol=0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
    upper = torch.triu(torch.ones(probs.shape[-2:], dtype=torch.bool), diagonal=1)
    if family == "bert":  # bidirectional: every key is seen
        assert (probs[..., upper] > 0).all()
    else:  # causal: nothing above the diagonal, exactly
        assert (probs[..., upper] == 0).all()


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_logit_lens_last_layer_is_the_models_logits(family: str, imported: dict) -> None:
    hf_dir, ours = imported[family]
    got = inspect(ours, TEXT, out=None, top_k=3)
    model, _ = load_model(ours)
    with torch.no_grad():
        logits = model(torch.tensor([got.ids]))[0]  # the default (fast) attention route
        hf_logits = _transformers(hf_dir, True)(torch.tensor([got.ids])).logits[0]
    n_layer = model.config.n_layer
    assert got.residual is not None and got.residual.shape[0] == n_layer + 1  # embeddings + each block
    torch.testing.assert_close(got.lens_logits(-1), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.lens_logits(-1), hf_logits, atol=1e-4, rtol=0)
    lens = got.lens
    assert lens is not None and lens.top_ids.shape == (n_layer + 1, len(got.ids), 3)
    assert lens.top_ids[-1, :, 0].tolist() == logits.argmax(-1).tolist()
    # the next token's rank and probability, read off the full distribution, at every layer
    for layer in (0, n_layer):
        probs = got.lens_logits(layer).softmax(-1)
        for t in range(len(got.ids) - 1):
            p = probs[t, got.ids[t + 1]]
            assert lens.next_prob[layer, t] == pytest.approx(float(p), abs=1e-6)
            assert lens.next_rank[layer, t] == int((probs[t] > p).sum())
    assert lens.next_rank[:, -1].eq(-1).all() and lens.next_prob[:, -1].isnan().all()  # no next token


def test_a_text_starts_with_the_bos_its_tokenizer_adds(tmp_path: Path) -> None:
    """A Llama 3's tokenizer puts a BOS before a text; the model reads it first (its attention
    sink): inspect shows the text as generate and transformers' tokenizer(text) give it."""
    import transformers

    hf_dir = tmp_path / "hf"
    make_hf_model("llama", hf_dir)
    add_bos(hf_dir, 5)
    got = inspect(hf_dir, TEXT, out=None)
    assert (
        got.ids
        == transformers.PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))(TEXT).input_ids
    )
    assert got.ids[0] == 5 and got.ids[1:] == load_model(hf_dir)[1].encode(TEXT)


def test_default_attention_forms_no_probabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast routes stay the default: only inside capture_attention() does the reference formula
    (the one that forms the probability matrix) run."""
    calls = []
    real = attention_module.reference_attention
    monkeypatch.setattr(
        attention_module, "reference_attention", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    model = GPT(ModelConfig(n_layer=3, n_head=2, n_embd=16, block_size=16, vocab_size=30)).eval()
    idx = torch.randint(0, 30, (1, 12))
    with torch.no_grad():
        fast = model(idx)
        assert calls == []
        with capture_attention() as probs:
            captured = model(idx)
        assert len(calls) == 3 and [tuple(p.shape) for p in probs] == [(1, 2, 12, 12)] * 3
        calls.clear()
        model(idx)
        assert calls == []  # capture ends with its block
    torch.testing.assert_close(captured, fast, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from marian_helpers import make_marian_model

    directory = tmp_path_factory.mktemp("marian")
    make_marian_model(directory)
    return directory


def test_marian_cross_attention_equals_transformers(marian_dir: Path) -> None:
    """An encoder-decoder inspected straight from its HF directory: encoder, decoder and cross
    attention (target tokens x source tokens) equal transformers' eager ones; the lens ends at the logits."""
    import transformers

    got = inspect(marian_dir, "The house is small.", out=None, target="La maison est petite.")
    model, tokenizer = load_model(marian_dir)
    src = torch.tensor([[*tokenizer.encode("The house is small."), tokenizer.eos_id]])
    tgt = torch.tensor([[model.start_id, *tokenizer.encode_target("La maison est petite.")]])
    assert got.ids == [*tgt[0, 1:].tolist(), tokenizer.eos_id] and len(got.source_tokens) == src.size(1)
    ref = transformers.MarianMTModel.from_pretrained(marian_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        out = ref(input_ids=src, decoder_input_ids=tgt, output_attentions=True)
        logits = model(src, tgt)[0]
    for name, theirs in (
        ("encoder", out.encoder_attentions),
        ("decoder", out.decoder_attentions),
        ("cross", out.cross_attentions),
    ):
        torch.testing.assert_close(
            got.attention[name], torch.stack([a[0] for a in theirs]), atol=1e-5, rtol=0
        )
    assert got.attention["cross"].shape[-2:] == (tgt.size(1), src.size(1))
    torch.testing.assert_close(got.lens_logits(-1), logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.logits, out.logits[0], atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A char-level GPT and encoder-decoder written by lmforge (context 24)."""
    root = tmp_path_factory.mktemp("tiny")
    tok = Tokenizer.train_char([TEXT + " ABCDEFGHIJKLMNOPQRSTUVWXYZ.!?"])
    config = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=24, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    write_model_dir(root / "gpt", config, GPT(config).state_dict(), tok)
    s2s = Seq2Seq(ModelConfig(**{**config.__dict__, "arch": "seq2seq"}), tok.pad_id or 0)
    write_model_dir(root / "s2s", s2s.config, s2s.state_dict(), tok)
    return root


def test_seq2seq_own_translation_and_maps(tiny_dirs: Path) -> None:
    got = inspect(tiny_dirs / "s2s", "the king", out=None)  # its own greedy translation
    _, tokenizer = load_model(tiny_dirs / "s2s")
    s, t = len(got.source_tokens), len(got.tokens)
    assert s == len("the king") + 1 and got.ids[-1] == tokenizer.eos_id  # source chars + EOS; target + EOS
    assert got.attention["encoder"].shape == (2, 2, s, s)
    assert got.attention["decoder"].shape == (2, 2, t, t) and got.attention["cross"].shape == (2, 2, t, s)
    for probs in got.attention.values():
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
    assert (got.attention["decoder"].triu(1) == 0).all()


def test_cli_writes_pictures_page_and_tables(
    tiny_dirs: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from PIL import Image

    out = tmp_path / "gpt-inspect"
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king doth love", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["attention-self.png", "attention.html", "inspect.json", "lens.json", "lens.png"]
    for png in ("attention-self.png", "lens.png"):
        with Image.open(out / png) as image:
            assert image.size[0] > 200 and image.size[1] > 100
    page = (out / "attention.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page  # offline
    data = json.loads(page.split('id="data">')[1].split("</script>")[0])
    assert data["maps"][0]["shape"] == [2, 2, 18, 18] and data["maps"][0]["queries"][:3] == ["t", "h", "e"]
    lens = json.loads((out / "lens.json").read_text())
    assert len(lens["layers"]) == 3 and lens["layers"][0]["name"] == "embed"
    first = lens["layers"][-1]["positions"][0]
    assert first["token"] == "t" and first["next_token"] == "h" and first["next_rank"] >= 0
    assert 0 < first["next_prob"] < 1 and len(first["top"]) == 5
    assert lens["layers"][-1]["positions"][-1]["next_token"] is None
    printed = capsys.readouterr().out
    assert printed.startswith("gpt: 18 tokens; attention (layers, heads, queries, keys): self (2, 2, 18, 18)")
    assert str(out) in printed
    # an earlier inspect is replaced; a folder of someone else's files is not touched
    assert main(["inspect", str(tiny_dirs / "s2s"), "the king", "--out", str(out)]) == 0
    assert "attention-cross.png" in {p.name for p in out.iterdir()}
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king", "--out", str(tmp_path / "mine")]) == 2
    assert "inspect did not write (notes.txt)" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    # files named as inspect names its own are still the user's unless an inspect.json lists them
    # (the replace deleted a user's attention-fig.png and overwrote their lens.json)
    figs = tmp_path / "figs"
    figs.mkdir()
    (figs / "attention-fig.png").write_text("my figure")
    (figs / "lens.json").write_text('{"my": "results"}')
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king", "--out", str(figs)]) == 2
    assert "inspect did not write (attention-fig.png, lens.json)" in capsys.readouterr().err
    (figs / "inspect.json").write_text('{"files": ["lens.json"]}')  # one of them listed: still refused
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king", "--out", str(figs)]) == 2
    assert "inspect did not write (attention-fig.png)" in capsys.readouterr().err
    (figs / "inspect.json").write_text("not json")
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king", "--out", str(figs)]) == 2
    assert sorted(p.read_text() for p in figs.iterdir()) == ["my figure", "not json", '{"my": "results"}']
    (figs / "attention-fig.png").unlink()
    (figs / "lens.json").unlink()
    capsys.readouterr()
    assert main(["inspect", str(tiny_dirs / "gpt"), "the king", "--out", str(figs)]) == 2  # its own JSON
    assert "inspect did not write (inspect.json)" in capsys.readouterr().err


def test_long_text_and_bad_input_are_one_line(tiny_dirs: Path, capsys: pytest.CaptureFixture) -> None:
    too_long = r"text is 30 tokens; inspect takes at most 24 \(the model's context"
    with pytest.raises(LmforgeError, match=too_long):
        inspect(tiny_dirs / "gpt", "the king doth love the fair la", out=None)
    with pytest.raises(LmforgeError, match=r"text is 8 tokens; inspect takes at most 5 \(--max-tokens 5"):
        inspect(tiny_dirs / "gpt", "the king", out=None, max_tokens=5)
    with pytest.raises(LmforgeError, match="source \\(with its EOS\\) is 26 tokens"):
        inspect(tiny_dirs / "s2s", "the king doth love the fa", out=None)
    with pytest.raises(LmforgeError, match="--target is for encoder-decoder"):
        inspect(tiny_dirs / "gpt", "the king", out=None, target="x")
    assert main(["inspect", str(tiny_dirs / "gpt"), "   "]) == 2
    assert capsys.readouterr().err.strip() == "lmforge: error: inspect needs a non-empty text"
    with pytest.raises(LmforgeError, match=r"^inspect takes one text \(a str\), not list$"):
        inspect(tiny_dirs / "gpt", ["the", "king"], out=None)  # type: ignore[arg-type]
    got = inspect(tiny_dirs / "gpt", "the king", out=None)
    for layer in (3, -4, 1.5):  # 2 blocks: layers 0 (the embeddings) to 2
        with pytest.raises(LmforgeError, match=rf"^lens_logits\({layer}\): layer must be an integer from 0"):
            got.lens_logits(layer)  # type: ignore[arg-type]


def test_a_translation_cut_by_max_tokens_gets_no_eos_it_did_not_choose(
    tiny_dirs: Path, capsys: pytest.CaptureFixture
) -> None:
    """The greedy translation stopped by --max-tokens before its EOS: decoding forces an EOS at the
    limit (as transformers' forced_eos_token_id); inspected as cut, without that EOS (its last
    position predicts its own last token), and a warning says so."""
    full = inspect(tiny_dirs / "s2s", "the king", out=None)
    _, tokenizer = load_model(tiny_dirs / "s2s")
    assert full.ids[-1] == tokenizer.eos_id and len(full.ids) > 9  # ends, after more than 8 tokens
    capsys.readouterr()
    cut = inspect(tiny_dirs / "s2s", "the king", out=None, max_tokens=9)  # the source's 8 + EOS fit
    assert cut.ids == full.ids[:7] and cut.input_tokens is not None and len(cut.input_tokens) == 7
    assert cut.attention["cross"].shape[2] == 7
    err = capsys.readouterr().err
    assert (
        "did not end within 8 tokens (--max-tokens 9): inspecting its first 7, without the EOS forced" in err
    )


def test_a_translation_cut_by_translates_length_limit_gets_no_eos_it_did_not_choose(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A model that never ends (EOS's logit bias -30) is cut by translate's own length limit (2 x the
    source with its EOS + 10, 38 tokens here), far below --max-tokens and the context of 64: the
    warning names that limit and no EOS is appended (its last position predicts its own last token)."""
    from marian_helpers import make_marian_model

    from lmforge.inference.translate import translate_ids

    make_marian_model(tmp_path, eos_bias=-30.0)
    model, tokenizer = load_model(tmp_path)
    src = tokenizer.encode("The house is small.")
    ours = translate_ids(model, [src], tokenizer.eos_id, beam=1)[0]  # what lmforge translate decodes
    most = 2 * (len(src) + 1) + 10
    assert len(ours) == most - 1 < 64 - 1 and tokenizer.eos_id not in ours  # then the forced EOS
    capsys.readouterr()
    got = inspect(tmp_path, "The house is small.", out=None)
    assert got.ids == ours and got.input_tokens is not None and len(got.input_tokens) == most - 1
    assert got.attention["cross"].shape[2] == most - 1 and got.lens is not None
    err = capsys.readouterr().err
    assert f"did not end within {most} tokens (lmforge translate's length limit, 2 x the source's" in err
    assert "without the EOS forced at the limit" in err


def test_headline_counts_tokens_with_the_noun_agreeing(tiny_dirs: Path) -> None:
    one = inspect(tiny_dirs / "gpt", "t", out=None)
    assert one.headline() == "gpt: 1 token; attention (layers, heads, queries, keys): self (2, 2, 1, 1)"
    assert inspect(tiny_dirs / "gpt", "th", out=None).headline().startswith("gpt: 2 tokens; ")


def test_a_translation_cut_by_the_models_context_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A context of 20 positions, below --max-tokens (128) and translate's limit (2 x 7 + 10): the
    warning names the context, not --max-tokens the user did not give."""
    from marian_helpers import make_marian_model

    make_marian_model(tmp_path, eos_bias=-30.0)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 20}))
    capsys.readouterr()
    got = inspect(tmp_path, "The house is small.", out=None)
    assert len(got.tokens) == 18  # and the EOS forced at the 19th
    err = capsys.readouterr().err
    assert "did not end within 19 tokens (the model's context of 20 tokens, with the start token)" in err
