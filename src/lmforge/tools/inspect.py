"""`lmforge inspect`: what a model looks at (attention maps) and what each layer would predict (the
logit lens), for one text, as tensors and as files a person opens.

A GPT shows its causal self-attention and the lens; an encoder (BERT) its self-attention; an
encoder-decoder its encoder and decoder self-attention, the cross-attention from each target token
to the source (a source-target alignment), and the lens of its decoder, for a given translation or
its own greedy one. Imported Hugging Face models are inspected as lmforge runs them. Probabilities
come from the reference formula inside `capture_attention()`; ordinary inference never forms them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmforge.errors import LmforgeError, counted
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.seq2seq_decode import start_token
from lmforge.inference.translate import MAX_LEN_A, MAX_LEN_B, translate_ids, translation_limits
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.outputs import check_target, describe_foreign, foreign_entries, staged_folder
from lmforge.tools.capture import capture, unembedding
from lmforge.tools.lens import LogitLens, lens_table, logit_lens

MAX_TOKENS = 128  # default cap: the HTML page holds L x heads x T x T numbers


@dataclass
class Inspection:
    """What `inspect` returns. tokens: the text's tokens (an encoder-decoder's: the target tokens
    each decoder position predicts); source_tokens: an encoder-decoder's source, else None.
    attention: map name -> (L, nh, Tq, Tk) probabilities ("self"; or "encoder", "decoder",
    "cross" with queries = target positions, keys = source tokens). residual: the decoder's
    residual stream (L + 1, T, C), the embeddings then each block's output (None for an encoder);
    lens: the logit lens over it (None for an encoder or a classifier's backbone)."""

    kind: str
    tokens: list[str]
    ids: list[int]
    attention: dict[str, torch.Tensor]
    source_tokens: list[str] | None = None
    residual: torch.Tensor | None = None
    lens: LogitLens | None = None
    logits: torch.Tensor | None = None  # (T, vocab): the model's own output
    files: list[Path] = field(default_factory=list)
    input_tokens: list[str] | None = None  # an encoder-decoder's decoder inputs: <start>, then tokens[:-1]
    _unembed: Any = field(default=None, repr=False)

    def headline(self) -> str:
        """The line `lmforge inspect` prints first: the kind, the token count, each map's shape."""
        maps = ", ".join(f"{name} {tuple(p.shape)}" for name, p in self.attention.items())
        count = counted(len(self.tokens), "token")
        return f"{self.kind}: {count}; attention (layers, heads, queries, keys): {maps}"

    def lens_logits(self, layer: int) -> torch.Tensor:
        """(T, vocab): the final norm and unembedding applied to the residual after `layer`
        (0 = the embeddings, -1 = the last block: the model's logits)."""
        if self.residual is None or self._unembed is None:
            raise LmforgeError(f"a {self.kind} has no logit lens (no language-model head)")
        layers = len(self.residual)  # the embeddings, then each block
        if isinstance(layer, bool) or not isinstance(layer, int) or not -layers <= layer < layers:
            raise LmforgeError(f"lens_logits({layer!r}): layer must be an integer from 0 (the embeddings)"
                               f" to {layers - 1} (the last block), or negative from the end")  # fmt: skip
        with torch.no_grad():
            return self._unembed(self.residual[layer])


MAX_TOP_K = 100  # 100 x 30 layers x 128 positions: 384,000 entries, ~16 MB of lens.json (~42 bytes each)


def inspect(
    model: str | Path,
    text: str,
    out: str | Path | None = "inspect",
    target: str | None = None,
    max_tokens: int = MAX_TOKENS,
    top_k: int = 5,
) -> Inspection:
    """Attention maps of every layer and head, and the logit lens, for `text` through `model` (a
    run, checkpoint or model directory: GPT, encoder, classifier, encoder-decoder, imported HF).
    Writes into `out` (None: nothing written, tensors only): attention-*.png (a layer x head grid
    per map), attention.html (hover a token to see where it attends; opens offline), lens.png and
    lens.json. `target`: an encoder-decoder's translation to align (default: its greedy one).
    Texts over `max_tokens` tokens (or the model's context) are refused: the maps grow as T^2."""
    if not isinstance(text, str):
        raise LmforgeError(f"inspect takes one text (a str), not {type(text).__name__}")
    if not text.strip():
        raise LmforgeError("inspect needs a non-empty text")
    if max_tokens < 2:
        raise LmforgeError(f"max_tokens={max_tokens}: must be an integer >= 2")
    if not 1 <= top_k <= MAX_TOP_K:  # lens.json holds layers x positions x top_k entries
        raise LmforgeError(f"top_k={top_k}: must be an integer from 1 to {MAX_TOP_K}")
    model_dir = resolve_model_dir(model)
    if out is not None:  # refuse a folder of someone else's files before the work, not after
        check_target(out, [model_dir], _earlier_inspect, None, "inspect")
    net, tokenizer = load_model(model)
    net.float()
    result = inspect_model(net, tokenizer, text, target, max_tokens, top_k)
    if out is not None:
        result.files = write_files(result, out, model_dir, tokenizer)
    return result


def inspect_model(
    net: nn.Module, tokenizer: Any, text: str, target: str | None, max_tokens: int, top_k: int
) -> Inspection:
    """`inspect` on a loaded model (no files)."""
    core = getattr(net, "backbone", net)  # a classifier or span model: look inside its body
    lm = core is net  # a wrapped body's LM head (if any) is not what the model was trained to use
    if target is not None and not isinstance(core, Seq2Seq):
        raise LmforgeError("--target is for encoder-decoder (translation) models")
    limit = min(max_tokens, core.config.block_size)
    if isinstance(core, Seq2Seq):
        return _inspect_seq2seq(core, tokenizer, text, target, limit, top_k)
    encoder = isinstance(core, Encoder)
    if encoder and hasattr(tokenizer, "hf"):
        ids = tokenizer.hf.encode(text).ids  # with [CLS] and [SEP], as the encoder reads a text
    elif hasattr(tokenizer, "encode_prompt"):
        # a Llama's BOS first, as generate reads a prompt and a decoder classifier its text
        ids = tokenizer.encode_prompt(text)
    else:
        ids = tokenizer.encode(text)
    _check_length(len(ids), limit, max_tokens, core.config.block_size, "text")
    if not ids:
        raise LmforgeError("the text encodes to no tokens")
    got = capture(core, ids)
    tokens = [token_text(tokenizer, i) for i in ids]
    if encoder or not lm:
        return Inspection("encoder" if encoder else "gpt", tokens, ids, got.attention)
    assert isinstance(core, GPT)
    unembed = unembedding(core)
    next_ids = torch.tensor([*ids[1:], -1])  # (T,): a GPT's text says nothing after its last token
    lens = logit_lens(got.residual, unembed, next_ids, top_k)
    return Inspection(
        "gpt", tokens, ids, got.attention, None, got.residual, lens, got.logits, [], None, unembed
    )


@torch.inference_mode()
def _chooses_eos(model: Seq2Seq, src: list[int], tgt: list[int], eos: int) -> bool:
    """Whether greedy decoding picks EOS after `tgt` (else decoding's limit forced it there)."""
    logits = model(torch.tensor([src]), torch.tensor([[start_token(model, eos), *tgt]]))[0, -1].float()
    logits[model.suppress_ids] = -torch.inf
    return int(logits.argmax()) == eos


def _inspect_seq2seq(
    model: Seq2Seq, tokenizer: Any, text: str, target: str | None, limit: int, top_k: int
) -> Inspection:
    eos = tokenizer.eos_id
    if eos is None:
        raise LmforgeError("the model's tokenizer has no EOS token (config.json eos_token_id)")
    src = [*tokenizer.encode(text.strip()), eos]
    _check_length(len(src), limit, limit, model.config.block_size, "source (with its EOS)")
    cut = None  # the greedy translation's limit, when its EOS there was forced, not chosen
    if target is None:  # translate's own limit (the same function), and room for --max-tokens
        most = translation_limits(model, [len(src) - 1], max_new_tokens=limit - 1)[0]
        tgt = translate_ids(model, [src[:-1]], eos, beam=1, max_new_tokens=limit - 1)[0]
        cut = most if len(tgt) == most - 1 and not _chooses_eos(model, src, tgt, eos) else None
        if cut is not None and not tgt:
            raise LmforgeError(f"the translation's limit of {most} token leaves nothing to inspect")
    else:
        encode = getattr(tokenizer, "encode_target", tokenizer.encode)
        tgt = encode(target.strip())
    _check_length(len(tgt) + 1, limit, limit, model.config.block_size, "target (with its EOS)")
    inputs = [start_token(model, eos), *tgt]  # decoder inputs; position i predicts outputs[i]
    outputs = [*tgt, eos]
    if cut is not None:  # cut, not ended: no EOS the model did not choose
        if cut < limit - 1:
            why = (
                f"lmforge translate's length limit, {MAX_LEN_A:g} x the source's {len(src)} tokens"
                f" with its EOS + {MAX_LEN_B}"
            )
        elif limit == model.config.block_size:  # limit: min(--max-tokens, the context)
            why = f"the model's context of {limit} tokens, with the start token"
        else:
            why = f"--max-tokens {limit}"
        print(
            f"lmforge: warning: the greedy translation did not end within {cut} tokens ({why}):"
            f" inspecting its first {len(tgt)}, without the EOS forced at the limit",
            file=sys.stderr,
        )
        inputs, outputs = inputs[:-1], tgt
    got = capture(model, inputs, src)
    unembed = unembedding(model)
    lens = logit_lens(got.residual, unembed, torch.tensor(outputs), top_k)
    source_text = getattr(tokenizer, "decode_source", None)
    return Inspection(
        "seq2seq",
        [token_text(tokenizer, i) for i in outputs],
        outputs,
        got.attention,
        [token_text(tokenizer, i, source_text is not None) for i in src],
        got.residual,
        lens,
        got.logits,
        [],
        [token_text(tokenizer, i) for i in inputs],
        unembed,
    )


def _check_length(n: int, limit: int, max_tokens: int, context: int, what: str) -> None:
    if n > limit:
        why = f"the model's context of {context}" if limit == context else f"--max-tokens {max_tokens}"
        raise LmforgeError(
            f"{what} is {n} tokens; inspect takes at most {limit} ({why}; attention maps grow as"
            " tokens squared): give a shorter text"
        )


def token_text(tokenizer: Any, token_id: int, source: bool = False) -> str:
    """How one token reads: its text with its leading space (byte-level BPE, sentencepiece's ▁),
    specials by name."""
    pieces = getattr(tokenizer, "pieces", None)  # Marian: sentencepiece pieces by id
    if pieces is not None:
        return pieces.get(token_id, "<unk>").replace("\u2581", " ")
    text = tokenizer.hf.decode([token_id], skip_special_tokens=False)
    return text if text else (tokenizer.hf.id_to_token(token_id) or f"<{token_id}>")


# --- files ------------------------------------------------------------------------------------
OUR_FILES = ("attention.html", "lens.png", "lens.json", "inspect.json")


def _ours(name: str) -> bool:
    return name in OUR_FILES or (name.startswith("attention-") and name.endswith(".png"))


def _earlier_inspect(folder: Path) -> str | None:
    """None when `folder` is empty or an earlier inspect output, whose inspect.json lists every other
    file in it (by names alone a user's own `lens.json` or `attention-fig.png` was claimed, and the
    replace deleted it); else why not."""
    foreign = foreign_entries(folder, _ours)
    if not foreign:
        others = sorted(p.name for p in folder.iterdir() if p.name != "inspect.json")
        try:
            listed = json.loads((folder / "inspect.json").read_text(encoding="utf-8")).get("files")
        except (OSError, ValueError, AttributeError):  # none, or not inspect's
            listed = [] if not others and not (folder / "inspect.json").exists() else None
        unlisted = others or ["inspect.json"]  # our names without inspect.json, or a foreign one
        foreign = [n for n in others if n not in listed] if isinstance(listed, list) else unlisted
    return describe_foreign(foreign, "inspect") if foreign else None


def write_files(result: Inspection, out: str | Path, model_dir: Path, tokenizer: Any) -> list[Path]:
    """The PNGs, the HTML page and the JSON tables in `out` (replacing an earlier inspect only)."""
    from lmforge.tools.attention_html import attention_page
    from lmforge.tools.plots import attention_grid, lens_heatmap

    names: list[str] = []
    with staged_folder(
        out, inputs=[model_dir], owner=_earlier_inspect, overwrite=None, verb="inspect"
    ) as tmp:
        for name, probs in result.attention.items():
            title, png = f"{name} attention: {_title(result)}", tmp / f"attention-{name}.png"
            if name == "cross":  # queries and keys come from different texts: say which is which
                attention_grid(probs, png, title, "target token (query) down, source token (key) across")
            else:
                attention_grid(probs, png, title)
            names.append(f"attention-{name}.png")
        (tmp / "attention.html").write_text(attention_page(result), encoding="utf-8")
        names.append("attention.html")
        if result.lens is not None:
            inputs = result.input_tokens or result.tokens
            lens_heatmap(result.lens, inputs, lambda i: token_text(tokenizer, i), tmp / "lens.png")
            table = lens_table(result.lens, inputs, lambda i: token_text(tokenizer, i))
            (tmp / "lens.json").write_text(json.dumps(table, ensure_ascii=False, indent=1) + "\n")
            names += ["lens.png", "lens.json"]
        summary = {
            "model": str(model_dir),
            "kind": result.kind,
            "tokens": result.tokens,
            "source_tokens": result.source_tokens,
            "maps": {n: list(p.shape) for n, p in result.attention.items()},
            "files": sorted(names),
        }
        (tmp / "inspect.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n")
    return [Path(out) / n for n in sorted([*names, "inspect.json"])]


def map_tokens(result: Inspection, name: str) -> tuple[list[str], list[str]]:
    """(query tokens, key tokens) of an attention map."""
    if result.source_tokens is None:
        return result.tokens, result.tokens
    if name == "encoder":
        return result.source_tokens, result.source_tokens
    if name == "cross":
        return result.tokens, result.source_tokens
    return result.tokens, result.input_tokens or result.tokens


def _title(result: Inspection) -> str:
    text = "".join(result.source_tokens or result.tokens).strip()
    return text if len(text) <= 60 else text[:57] + "..."
