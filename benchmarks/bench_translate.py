"""Translation speed: lmforge's Seq2Seq vs HF `MarianMTModel` of the same shape, side by side.

    python -m benchmarks.bench_translate [--rounds 3] [--src-tokens 24] [--new-tokens 32]

Random weights, fp32 on both sides (HF's default; lmforge's `translate` default too). Sentences
per second for greedy and beam 4, at batch 1 and 32. Both decode exactly `new-tokens` tokens
per sentence: HF with `min_new_tokens` (its logits processor bans EOS until then), lmforge with
the same ban as a forward hook on the output layer, so the work is equal. Marian's shape
differs only where the architectures do (post-LN, sinusoidal positions, a logits bias); widths,
depths, heads, MLP size and vocabulary are the same.

`--part same-weights` (also in the default `all`): one random opus-mt-shaped MarianMTModel
(transformer-base 6+6 x 512, swish, scaled embeddings) imported into lmforge (the Marian family of
model/hf.py), so both run the *same* weights; greedy, batch 1 and 32, pad banned on both sides
(HF: `bad_words_ids=[[pad]]`, as opus-mt's generation config), and the outputs checked identical.
"""

from __future__ import annotations

import argparse
import time

import torch

from benchmarks.common import hardware_line, interleaved, timed
from lmforge.config import ModelConfig
from lmforge.inference.seq2seq_decode import beam_decode, greedy_decode
from lmforge.model.seq2seq import Seq2Seq

EOS, PAD = 0, 1
SHAPES = {
    "demo 3+3 x 256, vocab 8000": ModelConfig(
        n_layer=3, n_head=4, n_embd=256, block_size=128, vocab_size=8000, arch="seq2seq"
    ),
    "transformer-base 6+6 x 512, vocab 8000": ModelConfig(
        n_layer=6, n_head=8, n_embd=512, block_size=128, vocab_size=8000, arch="seq2seq"
    ),
}


def hf_marian(cfg: ModelConfig) -> torch.nn.Module:
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(
        vocab_size=cfg.vocab_size,
        d_model=cfg.n_embd,
        encoder_layers=cfg.n_layer,
        decoder_layers=cfg.n_layer,
        encoder_attention_heads=cfg.n_head,
        decoder_attention_heads=cfg.n_head,
        encoder_ffn_dim=4 * cfg.n_embd,
        decoder_ffn_dim=4 * cfg.n_embd,
        max_position_embeddings=cfg.block_size,
        activation_function="gelu",
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        pad_token_id=PAD,
        eos_token_id=EOS,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
    )
    return MarianMTModel(config)


@torch.inference_mode()
def bench_shape(label: str, cfg: ModelConfig, src_tokens: int, new: int, rounds: int) -> None:
    torch.manual_seed(0)
    ours = Seq2Seq(cfg, PAD).eval()
    ours.lm_head.register_forward_hook(
        lambda _m, _i, out: out.index_fill(-1, torch.tensor([EOS]), -torch.inf)
    )
    theirs = hf_marian(cfg).eval()
    print(f"\n{label}: lmforge {ours.num_params():,} parameters, HF Marian {theirs.num_parameters():,}")
    runs = {}
    for batch in (1, 32):
        src = torch.randint(2, cfg.vocab_size, (batch, src_tokens))
        src[:, -1] = EOS
        mask = torch.ones_like(src)
        for beam in (1, 4):

            def run_ours(src: torch.Tensor = src, beam: int = beam) -> float:
                limits = [new] * src.size(0)
                if beam == 1:
                    fn = lambda: greedy_decode(ours, src, limits, EOS)  # noqa: E731
                else:
                    fn = lambda: beam_decode(ours, src, limits, EOS, beam)  # noqa: E731
                return src.size(0) / timed(fn)

            def run_hf(src: torch.Tensor = src, mask: torch.Tensor = mask, beam: int = beam) -> float:
                kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "num_beams": beam}
                return src.size(0) / timed(lambda: theirs.generate(src, attention_mask=mask, **kwargs))

            name = f"{'greedy' if beam == 1 else f'beam {beam}'}, batch {batch}"
            runs[f"lmforge | {name}"], runs[f"HF      | {name}"] = run_ours, run_hf
    for run in runs.values():  # warm up
        run()
    rates = interleaved(runs, rounds)
    print(f"  {'setting':<20} {'lmforge':>12} {'HF Marian':>12} {'ratio':>7}   (sentences/s)")
    for name in [n.split("| ")[1] for n in runs if n.startswith("lmforge")]:
        a, b = rates[f"lmforge | {name}"], rates[f"HF      | {name}"]
        print(f"  {name:<20} {a:12.2f} {b:12.2f} {a / b:6.2f}x")


@torch.inference_mode()
def bench_same_weights(src_tokens: int, new: int, rounds: int) -> None:
    from lmforge.formats.hf import MARIAN
    from lmforge.formats.hf_convert import hf_to_lmforge

    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=6, n_head=8, n_embd=512, block_size=128, vocab_size=8000, arch="seq2seq")
    theirs = hf_marian(cfg)
    theirs.config.activation_function, theirs.config.scale_embedding = "swish", True
    theirs = type(theirs)(theirs.config).eval()  # rebuilt with opus-mt's activation and scale
    config = MARIAN.config_in(theirs.config.to_dict(), "benchmark")
    ours = Seq2Seq(config, PAD, PAD, [PAD]).eval()
    state, _ = hf_to_lmforge(MARIAN, config, theirs.state_dict(), ours.state_dict(), "benchmark")
    ours.load_state_dict(state, strict=False)
    ours.lm_head.register_forward_hook(
        lambda _m, _i, out: out.index_fill(-1, torch.tensor([EOS]), -torch.inf)
    )
    print(f"\nsame weights, opus-mt shape 6+6 x 512, vocab 8000 ({ours.num_params():,} parameters), greedy")
    runs, outputs = {}, {}
    for batch in (1, 32):
        src = torch.randint(2, cfg.vocab_size - 2, (batch, src_tokens))
        src[:, -1] = EOS

        def run_ours(src: torch.Tensor = src, batch: int = batch) -> float:
            start = time.perf_counter()
            outputs[("lmforge", batch)] = greedy_decode(ours, src, [new] * src.size(0), EOS)
            return src.size(0) / (time.perf_counter() - start)

        def run_hf(src: torch.Tensor = src, batch: int = batch) -> float:
            kwargs = {"max_new_tokens": new, "min_new_tokens": new, "do_sample": False, "num_beams": 1}
            start = time.perf_counter()
            out = theirs.generate(src, attention_mask=torch.ones_like(src), bad_words_ids=[[PAD]], **kwargs)
            outputs[("HF", batch)] = out[:, 1:].tolist()
            return src.size(0) / (time.perf_counter() - start)

        runs[f"lmforge | greedy, batch {batch}"], runs[f"HF      | greedy, batch {batch}"] = run_ours, run_hf
    for run in runs.values():  # warm up
        run()
    rates = interleaved(runs, rounds)
    same = all(outputs[("lmforge", b)] == outputs[("HF", b)] for b in (1, 32))
    print(f"  {'setting':<20} {'lmforge':>12} {'HF Marian':>12} {'ratio':>7}   (sentences/s)")
    for name in [n.split("| ")[1] for n in runs if n.startswith("lmforge")]:
        a, b = rates[f"lmforge | {name}"], rates[f"HF      | {name}"]
        print(f"  {name:<20} {a:12.2f} {b:12.2f} {a / b:6.2f}x")
    print(f"  identical outputs (token ids): {same}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src-tokens", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shape", choices=list(SHAPES), action="append", help="default: all")
    parser.add_argument("--part", choices=["all", "shapes", "same-weights"], default="all")
    args = parser.parse_args()
    print(
        f"translation, {args.src_tokens}-token sources, {args.new_tokens} new tokens each, fp32,"
        " random weights"
        f" | {hardware_line()}"
    )
    if args.part in ("all", "shapes"):
        for label in args.shape or list(SHAPES):
            bench_shape(label, SHAPES[label], args.src_tokens, args.new_tokens, args.rounds)
    if args.part in ("all", "same-weights"):
        bench_same_weights(args.src_tokens, args.new_tokens, args.rounds)


if __name__ == "__main__":
    main()
