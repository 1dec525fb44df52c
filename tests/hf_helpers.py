"""Small random Hugging Face models built offline from transformers' config classes, for parity tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from conftest import make_text
from safetensors.torch import load_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

VOCAB = 320


def tiny_bpe(directory: Path) -> None:
    """A byte-level BPE tokenizer.json (VOCAB tokens, <|endoftext|> among them) in `directory`."""
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([make_text(lines=200)], trainer=trainer)
    hf.save(str(directory / "tokenizer.json"))


def _configs() -> dict[str, Any]:
    import transformers as tf

    common = {"vocab_size": VOCAB, "initializer_range": 0.2, "eos_token_id": 0, "bos_token_id": 0}
    llama_like = {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-6,
    }
    return {
        "gpt2": (
            tf.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64, **common),
            tf.GPT2LMHeadModel,
        ),
        "llama": (
            tf.LlamaConfig(
                **llama_like, rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **common
            ),
            tf.LlamaForCausalLM,
        ),
        "mistral": (tf.MistralConfig(**llama_like, sliding_window=None, **common), tf.MistralForCausalLM),
        "qwen2": (tf.Qwen2Config(**llama_like, tie_word_embeddings=True, **common), tf.Qwen2ForCausalLM),
        "bert": (
            tf.BertConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                max_position_embeddings=64,
                vocab_size=VOCAB,
                initializer_range=0.2,
            ),
            tf.BertModel,
        ),
    }


FAMILY_NAMES = ["gpt2", "llama", "mistral", "qwen2", "bert"]
# prompts of three lengths with tokens repeated in them, for the decoding options that look back
REPEATING_PROMPTS = [[5, 9, 9, 12, 30, 7], [40, 41], [3, 17, 17, 17, 8, 60, 61, 2, 90, 14, 11]]


def make_hf_model(family: str, directory: Path, seed: int = 0) -> torch.nn.Module:
    """Save a random `family` model (+ tokenizer.json) to `directory`; return it (eval, fp32)."""
    config, cls = _configs()[family]
    torch.manual_seed(seed)
    return save_randomised(cls(config).eval(), directory)


def load_whole(cls: Any, directory: Path) -> torch.nn.Module:
    """transformers' `cls.from_pretrained(directory)` in eval mode, asserting that it loaded every
    tensor: none missing, unexpected or of another shape (an export transformers reads whole)."""
    model, info = cls.from_pretrained(directory, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def hf_greedy(hf: torch.nn.Module, prompt: list[int], n: int) -> list[int]:
    """transformers' greedy `generate` of n tokens after `prompt` (no EOS stop), cached."""
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, use_cache=True)
    return out[0, len(prompt) :].tolist()


def assert_same_weights(original: Path, exported: Path) -> None:
    """Two model.safetensors hold the same tensor names and bytes (an export is the import's copy)."""
    a, b = load_file(str(original / "model.safetensors")), load_file(str(exported / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(t, b[n]) for n, t in a.items())


def save_randomised(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    """`model` with its biases and norms moved off their 0/1 start (so their mapping is tested),
    saved to `directory` with the tiny tokenizer.json; returns it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name.lower():
                p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    tiny_bpe(directory)
    return model


def add_bos(directory: Path, bos_id: int = 5, eos_id: int | None = None) -> None:
    """Make `directory`'s tokenizer.json put a BOS before every text, as Llama 3's, Llama 2's and
    Mistral's do (a TemplateProcessing post-processor), and with `eos_id` an EOS after it (a GGUF's
    add_eos_token); ids 5 and 6 are ordinary tokens of the tiny vocabulary, marked special here,
    so they differ from its EOS (0)."""
    raw = json.loads((directory / "tokenizer.json").read_text())
    bos, a, b = {"id": "<s>", "type_id": 0}, {"id": "A", "type_id": 0}, {"id": "B", "type_id": 1}
    tail = [] if eos_id is None else [{"SpecialToken": {"id": "</s>", "type_id": 0}}]
    specials = {"<s>": {"id": "<s>", "ids": [bos_id], "tokens": ["<s>"]}}
    if eos_id is not None:
        specials["</s>"] = {"id": "</s>", "ids": [eos_id], "tokens": ["</s>"]}
    raw["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": bos}, {"Sequence": a}, *tail],
        "pair": [{"SpecialToken": bos}, {"Sequence": a}, {"Sequence": b}, *tail],
        "special_tokens": specials,
    }
    (directory / "tokenizer.json").write_text(json.dumps(raw))
