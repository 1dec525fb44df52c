"""A continuation's first space with a Llama-2-style SentencePiece tokenizer (Metaspace-like
normalizer, a decoder ending in Strip(" ", 1, 0), as Llama 2's, Mistral's and TinyLlama's
tokenizer.json have): the decoder drops a text's first space, so a reply decoded alone lost the
space before its first word ("a bird" + "the the" = "a birdthe the"). /v1/completions (plain,
streamed, echoed, with logprobs' offsets) and `generate` (returned and streamed) now decode the
reply after the prompt's last tokens, as vLLM's detokenizer does; a chat reply and the
text-generation pipeline (transformers 5's decodes the new tokens alone) are as before; byte-level
BPE gives exactly what it gave."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
from test_stream_byte_fallback import forced_model
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

import lmforge
from lmforge.inference.text_stream import StopWatch, TextStream
from lmforge.server.decoding import Row
from lmforge.tokenization.tokenizer import Tokenizer

CORPUS = ["the cat sat on the mat. the dog ran to the park. a bird sang in the tree."] * 50


def llama2_tokenizer() -> Tokenizer:
    """A tokenizer.json laid out as Llama 2's: '▁' prepended and for spaces, byte fallback, a <s>
    before every text, and the decoder's Strip of the text's first space."""
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trained = HFTokenizer(models.BPE(unk_token="<unk>"))
    trained.normalizer = normalizer
    trained.pre_tokenizer = pre_tokenizers.Split("▁", "merged_with_next")  # merges within words
    trained.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=60, show_progress=False))
    learned = json.loads(trained.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]  # plain tokens, as Llama 2's (not special)
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *bytes_, *pieces])}
    merges = [tuple(m) for m in learned["merges"]]
    hf = HFTokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    hf.add_special_tokens(["<unk>", "<s>", "</s>"])
    hf.normalizer = normalizer
    hf.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    hf.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", hf.token_to_id("<s>"))]
    )
    return Tokenizer(hf)


@pytest.fixture(scope="module")
def sp() -> Tokenizer:
    return llama2_tokenizer()


def the(tok: Tokenizer) -> int:
    return int(tok.hf.token_to_id("▁the"))


def test_decode_after_keeps_the_first_space_and_byte_level_is_unchanged(sp: Tokenizer) -> None:
    prompt = sp.encode_prompt("a bird")
    assert sp.decode([the(sp)] * 2) == "the the"  # the decoder alone drops it
    assert sp.decode_after(prompt, [the(sp)] * 2) == " the the" == sp.decode([*prompt, the(sp), the(sp)])[6:]
    assert sp.decode_after(prompt, []) == ""
    assert sp.decode_after([], [the(sp)]) == "the"  # no prompt: a text's start
    assert sp.decode_after([sp.hf.token_to_id("<s>")], [the(sp)]) == "the"  # a prompt of specials only
    # a prompt (token ids) ending in a byte-fallback run the reply goes on: the reply's text alone
    c3, a9 = sp.hf.token_to_id("<0xC3>"), sp.hf.token_to_id("<0xA9>")
    assert sp.decode([*prompt, c3, a9]) == "a birdé"
    assert sp.decode_after([*prompt, c3], [a9, the(sp)]) == sp.decode([a9, the(sp)]) == "\ufffd the"
    assert sp.decode_after([*prompt, c3], [the(sp)]) == " the"  # a run the reply does not go on

    # byte-level BPE and character tokenizers: decode(ids) for any prompt text, any reply ids
    rng = random.Random(0)
    bpe = Tokenizer.train_bpe(["the king é€ and the queen 😀 " * 50], 300)
    char = Tokenizer.train_char(["the king é€ and the queen 😀 "])
    for tok in (bpe, char):
        for _ in range(300):
            text = "".join(rng.choice(" tkéq€😀ng") for _ in range(rng.randint(0, 12)))
            ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randint(0, 8))]
            assert tok.decode_after(tok.encode_prompt(text), ids) == tok.decode(ids), (text, ids)


def test_a_server_row_and_a_stream_keep_it_a_chat_row_does_not(sp: Tokenizer) -> None:
    prompt = sp.encode_prompt("a bird")
    ids = [the(sp)] * 3
    row, chat, out = Row(context=prompt[-5:]), Row(), io.StringIO()
    stream = TextStream(sp, out, context=prompt)
    sent, chat_sent = "", ""
    for token in ids:
        row.ids.append(token)
        chat.ids.append(token)
        sent += row.pending(sp, [])
        chat_sent += chat.pending(sp, [])
        stream(0, token)
    sent += row.settle(sp, [])
    chat_sent += chat.settle(sp, [])
    stream.finish()
    assert sent == out.getvalue() == row.text == " the the the"
    assert chat_sent == "the the the"  # a chat reply decoded alone, as before
    # a stop string is searched in the text the reply adds: its first space included
    watch = StopWatch(sp, 1, [" the"], contexts=[prompt])
    assert watch(0, the(sp)) is True
    assert StopWatch(sp, 1, [" the"])(0, the(sp)) is False  # no context: "the"


@pytest.fixture(scope="module")
def model(sp: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model whose greedy reply to "a bird" is ▁the ▁the ...: ▁bird -> ▁the -> ▁the."""
    bird = sp.hf.token_to_id("▁bird")
    return forced_model(tmp_path_factory.mktemp("sp") / "spllama", sp, [bird, the(sp), the(sp)])


def test_generate_returns_and_streams_the_space(model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kw = {"max_new_tokens": 2, "temperature": 0.0, "compile": False, "dtype": "fp32"}
    assert lmforge.generate(model, "a bird", **kw) == ["a bird the the"]
    assert lmforge.generate(model, "a bird", stream=True, **kw) == ["a bird the the"]
    assert capsys.readouterr().out == "a bird the the\n"
    assert lmforge.generate(model, "a bird", stop=" the", **kw) == ["a bird"]


def test_completions_keep_the_space_plain_streamed_echoed(model: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lmforge.server.app import create_app
    from lmforge.server.models import load_models

    body = {"model": "spllama", "prompt": "a bird", "max_tokens": 2, "temperature": 0, "logprobs": 0}
    with TestClient(create_app(load_models([model], dtype="fp32"))) as api:
        plain = api.post("/v1/completions", json=body).json()["choices"][0]
        echoed = api.post("/v1/completions", json={**body, "echo": True}).json()["choices"][0]
        events = api.post("/v1/completions", json={**body, "stream": True}).text
    assert plain["text"] == " the the"
    assert plain["logprobs"]["tokens"] == [" the", " the"]
    assert plain["logprobs"]["text_offset"] == [0, 4]  # each token's text starts there
    assert echoed["text"] == "a bird the the"
    assert echoed["logprobs"]["text_offset"][-2:] == [6, 10]
    chunks = [json.loads(line[6:]) for line in events.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["text"] for c in chunks) == " the the"


def test_a_llama_generates_like_vllm_and_its_pipeline_stays_transformers(
    sp: Tokenizer, tmp_path: Path
) -> None:
    """A random Llama with the tokenizer, greedy: `generate` gives decode(prompt + reply) (vLLM's
    text, transformers 4's pipeline's), while pipeline("text-generation") keeps giving what the
    installed transformers' pipeline gives (transformers 5 decodes the new tokens alone)."""
    transformers = pytest.importorskip("transformers")
    import torch

    from lmforge import pipeline

    directory = tmp_path / "llama"
    sp.save_dir(directory.mkdir() or directory)
    theirs_tok = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    theirs_tok.save_pretrained(directory)
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=sp.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    transformers.LlamaForCausalLM(config).save_pretrained(directory)
    prompt = sp.encode_prompt("the cat")
    net = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    out = net.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=False)[0].tolist()
    reply = out[len(prompt) :]
    assert sp.hf.id_to_token(reply[0]).startswith("▁")  # a reply whose first token starts a word
    whole = theirs_tok.decode(out, skip_special_tokens=True)
    assert lmforge.generate(directory, "the cat", max_new_tokens=6, temperature=0.0, dtype="fp32") == [whole]
    assert whole.startswith("the cat ")

    ours = pipeline("text-generation", directory, dtype="fp32")
    theirs = transformers.pipeline("text-generation", model=str(directory), dtype=torch.float32)
    for full in (True, False):
        kw = {"max_new_tokens": 6, "do_sample": False, "return_full_text": full}
        assert ours("the cat", **kw) == theirs("the cat", **kw), full
