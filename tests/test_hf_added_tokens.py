"""The tokens a Hugging Face folder adds to its vocabulary: GPT-2's slow layout (vocab.json +
merges.txt) with added_tokens.json and special_tokens_map.json, or tokenizer_config.json's
added_tokens_decoder, read at transformers' ids; and tokens past the model's embedding rows, refused
with a note, and a text holding one refused in one line (they were an IndexError traceback)."""

from __future__ import annotations

import json
import lzma
import re
from pathlib import Path

import pytest
import torch
from hf_helpers import make_hf_model

import lmforge
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.formats.hf_files import import_hf

transformers = pytest.importorskip("transformers")
GPT2_FILES = Path(__file__).parent / "fixtures" / "gpt2"
TEXT = "<|user|>hi<think>ok <|endoftext|> done"


def make_slow_gpt2(directory: Path, added: dict[str, int] | None = None) -> None:
    """A tiny random GPT-2 of 50,259 rows beside GPT-2's own vocab.json + merges.txt (no
    tokenizer.json), with `<think>` and `<|user|>` in added_tokens.json, `<|user|>` a special
    token of special_tokens_map.json."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64, vocab_size=50259)
    transformers.GPT2LMHeadModel(config).save_pretrained(directory)
    for name in ("vocab.json", "merges.txt"):
        (directory / name).write_bytes(lzma.decompress((GPT2_FILES / f"{name}.xz").read_bytes()))
    added = {"<think>": 50257, "<|user|>": 50258} if added is None else added
    (directory / "added_tokens.json").write_text(json.dumps(added))
    specials = {"eos_token": "<|endoftext|>", "additional_special_tokens": ["<|user|>"]}
    (directory / "special_tokens_map.json").write_text(json.dumps(specials))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))


def test_added_tokens_json_keeps_its_tokens_whole_at_transformers_ids(tmp_path: Path) -> None:
    """`<|user|>` and `<think>` were split into 5 and 3 byte-level pieces, in the folder read
    directly, after import and in the export; now each is one token at transformers' id."""
    hf_dir, ours, back = tmp_path / "hf", tmp_path / "ours", tmp_path / "back"
    make_slow_gpt2(hf_dir)
    reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
    want = reference(TEXT)["input_ids"]
    assert want[:1] == [50258] and 50257 in want
    import_hf(hf_dir, ours)
    export_hf(ours, back)
    for folder in (hf_dir, ours, back):
        tokenizer = lmforge.load(folder)[1]
        assert tokenizer.encode(TEXT) == want, folder
        # the same specialness as transformers 5 gives them: decoding drops <|endoftext|> only
        assert tokenizer.decode(want) == reference.decode(want, skip_special_tokens=True), folder
    exported = transformers.AutoTokenizer.from_pretrained(back)
    assert exported(TEXT)["input_ids"] == want


def test_added_tokens_decoder_and_ids_that_cannot_be_kept(tmp_path: Path) -> None:
    """tokenizer_config.json's added_tokens_decoder (transformers' newer spelling) comes before
    added_tokens.json; a listed id no token can take (a gap after the vocabulary) is one line,
    where transformers renumbers the token silently."""
    hf_dir = tmp_path / "hf"
    make_slow_gpt2(hf_dir, added={"<old>": 50257})
    decoder = {
        "50257": {"content": "<think>", "special": False, "normalized": True},
        "50258": {"content": "<|user|>", "special": True, "normalized": False},
    }
    (hf_dir / "tokenizer_config.json").write_text(json.dumps({"added_tokens_decoder": decoder}))
    want = transformers.AutoTokenizer.from_pretrained(hf_dir)(TEXT)["input_ids"]
    tokenizer = lmforge.load(hf_dir)[1]
    assert tokenizer.encode(TEXT) == want and want[0] == 50258
    assert tokenizer.decode([50258, 5303]) == "hi"  # special here: dropped, as transformers does
    bad = {"added_tokens_decoder": {"50257": {"content": "<think>", "special": "no"}}}
    (hf_dir / "tokenizer_config.json").write_text(json.dumps(bad))
    with pytest.raises(
        LmforgeError, match=r"tokenizer_config\.json: 'added_tokens_decoder' must map ids to tokens"
    ):
        lmforge.load(hf_dir)
    make_slow_gpt2(hf_dir, added={"<think>": 50257, "<|user|>": 50300})
    with pytest.raises(
        LmforgeError, match=r"added_tokens\.json: token '<\|user\|>' is listed at id 50300, but"
    ):
        lmforge.load(hf_dir)
    (hf_dir / "added_tokens.json").write_text(json.dumps({"<think>": "50257"}))
    with pytest.raises(LmforgeError, match=r"added_tokens\.json: token '<think>' must map to an id"):
        lmforge.load(hf_dir)


def _add_tokens(directory: Path, tokens: list[str]) -> None:
    """Add `tokens` to directory's tokenizer.json (past the tiny model's 320 rows), as
    PreTrainedTokenizerFast.add_tokens + save_pretrained does."""
    raw = json.loads((directory / "tokenizer.json").read_text())
    start = max(t["id"] for t in raw["added_tokens"]) + 1
    start = max(start, max(raw["model"]["vocab"].values()) + 1)
    for i, token in enumerate(tokens):
        raw["added_tokens"].append(
            {"id": start + i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": True, "special": False}
        )  # fmt: skip
    (directory / "tokenizer.json").write_text(json.dumps(raw))


def test_tokens_past_the_embedding_rows_are_said_and_a_text_holding_one_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tokenizer with two tokens past vocab_size imported with exit 0, unsaid, and `generate` died
    with an IndexError traceback at a prompt naming one. The model still loads (as in transformers
    and vLLM: a pad token added without resizing is never fed), with a note; such a text is one line."""
    hf_dir, ours = tmp_path / "hf", tmp_path / "ours"
    make_hf_model("llama", hf_dir)
    good = tmp_path / "good"
    import_hf(hf_dir, good)  # an lmforge folder to break after the fact (as an older import wrote it)
    _add_tokens(hf_dir, ["<think>", "</think>"])
    note = (
        r"token ids past the model's 320 embedding rows \(vocab_size in .*config\.json\): 320 '<think>', 321"
    )
    import_hf(hf_dir, ours)
    assert re.search(rf"lmforge: note: {hf_dir}/tokenizer\.json: {note}", capsys.readouterr().err)
    _add_tokens(good, ["<think>", "</think>"])
    for folder in (hf_dir, ours, good):
        pipe = lmforge.pipeline("text-generation", model=folder)
        assert re.search(rf"lmforge: note: .*tokenizer\.json: {note}", capsys.readouterr().err)
        pipe("hello there", max_new_tokens=2, do_sample=False)  # no such token: answered
        with pytest.raises(
            LmforgeError, match=r"the text holds token 320 '<think>', past the model's 320 embedding rows"
        ):
            pipe("hello <think> there", max_new_tokens=2, do_sample=False)
    assert main(["generate", str(good), "--prompt", "hi <think>", "--max-new-tokens=2"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .startswith("lmforge: error: the text holds token 320")
    )


def test_every_reader_that_encodes_refuses_a_token_past_the_rows(tmp_path: Path) -> None:
    """Chat fine-tuning's masks, sentence embeddings and QA windows encode through the tokenizers
    library themselves: they gave the IndexError traceback (a 500 from /v1/embeddings) after the
    first fix, which checked Tokenizer.encode alone."""
    from lmforge.data.qa_features import WindowMaker
    from lmforge.inference.chat_masks import encode_chat
    from lmforge.tokenization.tokenizer import Tokenizer

    refused = r"the text holds token \d+ '<think>', past the model's \d+ embedding rows"
    bert = tmp_path / "bert"
    make_hf_model("bert", bert)
    _add_tokens(bert, ["<think>"])
    with pytest.raises(LmforgeError, match=refused):
        lmforge.embed(bert, ["hello <think> there"])
    tokenizer = Tokenizer.load(bert / "tokenizer.json")
    tokenizer.rows, tokenizer.rows_source = tokenizer.vocab_size - 1, str(bert / "tokenizer.json")
    with pytest.raises(LmforgeError, match=refused):
        WindowMaker(tokenizer).windows(0, "what <think>?", "hello there world", 32, 8)
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>ok"}]
    with pytest.raises(LmforgeError, match=refused):
        encode_chat(tokenizer, template, chat, {})


def test_prep_and_eval_encode_a_non_special_added_token_whole(tmp_path: Path) -> None:
    """prep's and eval's encoder (tiktoken, for byte-level BPE) split a non-special added token
    (Qwen3's `<think>`) into its bytes where transformers and the pipeline keep it whole: perplexity
    was scored on another token sequence (37 tokens where transformers gives 33)."""
    from lmforge.data.encode import make_encoder

    make_slow_gpt2(tmp_path / "hf")
    tokenizer = lmforge.load(tmp_path / "hf")[1]
    text = "so <think>ok</think> then"
    want = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"]
    assert 50257 in want and [int(i) for i in make_encoder(tokenizer)[1]([text])[0]] == want
