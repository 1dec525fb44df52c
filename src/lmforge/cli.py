"""Command line: each verb calls the Python function of the same name; no logic of its own."""

from __future__ import annotations

import argparse
import sys

from lmforge.errors import LmforgeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="From raw text to a trained Transformer.")
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("prep", help="train a tokenizer on raw text and write token shards")
    p.add_argument(
        "inputs", nargs="+", help="text files, folders or globs (.txt .md .jsonl, optionally compressed)"
    )
    p.add_argument("--out", required=True, help="output directory for shards, meta.json, tokenizer.json")
    p.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument(
        "--val-fraction",
        type=float,
        help="validation share: of tokens (default 0.1), of documents with --pairs (0.02)",
    )
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl files")
    p.add_argument(
        "--pairs",
        action="store_true",
        help="inputs are sentence pairs (.jsonl, .tsv, aligned NAME.SRC + NAME.TGT): prepare for translation",
    )
    p.add_argument("--src-lang", default="en", help="--pairs: source language (JSONL field, file suffix)")
    p.add_argument("--tgt-lang", default="fr", help="--pairs: target language")
    p.add_argument("--max-tokens", type=int, default=128, help="--pairs: drop pairs with a longer side")
    p.add_argument(
        "--max-ratio", type=float, default=2.5, help="--pairs: drop pairs with a longer length ratio"
    )
    p.add_argument(
        "--test-fraction", type=float, default=0.02, help="--pairs: share of documents held out for test"
    )

    t = verbs.add_parser(
        "train",
        help="train a model from a TOML recipe",
        epilog="Any config key can be overridden as --section.key=value, e.g. --train.max_steps=500.",
    )
    t.add_argument("config", nargs="?", help="TOML recipe (default: built-in defaults + overrides)")
    t.add_argument("--out", help="run directory (default runs/<recipe name>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its latest checkpoint")
    t.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    t.add_argument("--quiet", action="store_true")

    g = verbs.add_parser("generate", help="generate text from a run, checkpoint or model directory")
    g.add_argument("model", help="run directory, checkpoint or model directory")
    g.add_argument("--prompt", action="append", help="prompt text (repeat for a batch); default: none")
    g.add_argument("--max-new-tokens", type=int, default=200)
    g.add_argument("--temperature", type=float, default=0.8, help="0 for greedy")
    g.add_argument("--top-k", type=int, default=50, help="0 disables")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int)
    g.add_argument("--no-cache", action="store_true", help="decode without the KV cache")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"], help="weights dtype")
    g.add_argument("--truncate-prompt", action="store_true", help="keep the last tokens of a too-long prompt")

    tr = verbs.add_parser("translate", help="translate text with an encoder-decoder run or model directory")
    tr.add_argument("model", help="run directory, checkpoint or model directory")
    tr.add_argument("text", nargs="*", help="sentences to translate")
    tr.add_argument("--file", help="translate every line of this file")
    tr.add_argument("--beam", type=int, default=1, help="beam size (1 = greedy)")
    tr.add_argument("--length-penalty", type=float, default=1.0, help="beam score = log p / length**this")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"], help="weights dtype")

    e = verbs.add_parser("eval-translate", help="sacreBLEU and chrF of a translation model on a test set")
    e.add_argument("model", help="run directory, checkpoint or model directory")
    e.add_argument("--src", required=True, help="source sentences, one per line")
    e.add_argument("--ref", required=True, help="reference translations, one per line")
    e.add_argument("--beam", type=int, default=1)
    e.add_argument("--length-penalty", type=float, default=1.0)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--out", help="write the translations to this file")
    e.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"], help="weights dtype")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.verb == "translate":  # argparse leaves sentences given after an option in `extra`
        args.text += [a for a in extra if not a.startswith("--")]
        extra = [a for a in extra if a.startswith("--")]
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and args.verb != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    try:
        if args.verb == "prep" and args.pairs:
            from lmforge.data.pairs import prepare_pairs

            meta = prepare_pairs(
                args.inputs,
                args.out,
                args.src_lang,
                args.tgt_lang,
                args.vocab_size,
                args.max_tokens,
                args.max_ratio,
                args.val_fraction or 0.02,
                args.test_fraction,
            )
            p, d = meta["pairs"], meta["dropped"]
            print(
                f"{args.out}: {meta['read']:,} pairs read -> {p['train']:,} train / {p['val']:,} val /"
                f" {p['test']:,} test; dropped {', '.join(f'{v:,} {k}' for k, v in d.items())};"
                f" vocab {meta['vocab_size']} (shared bpe)"
            )
        elif args.verb == "prep":
            from lmforge.data.shards import prepare_corpus as prep

            meta = prep(
                args.inputs,
                args.out,
                args.tokenizer,
                args.vocab_size,
                args.val_fraction or 0.1,
                args.text_field,
            )
            print(
                f"{args.out}: {meta['documents']} documents -> {meta['tokens']['train']:,} train /"
                f" {meta['tokens']['val']:,} val tokens, vocab {meta['vocab_size']} ({meta['tokenizer']})"
            )
        elif args.verb == "train":
            from lmforge.train.loop import train

            train(args.config, overrides, args.out, args.resume, args.overwrite, args.quiet)
        elif args.verb == "generate":
            from lmforge.generate import generate

            prompts = args.prompt or [""]
            texts = generate(
                args.model,
                prompts,
                args.max_new_tokens,
                args.temperature,
                args.top_k,
                args.top_p,
                args.seed,
                stream=len(prompts) == 1,
                truncate_prompt=args.truncate_prompt,
                use_cache=not args.no_cache,
                dtype=args.dtype,
            )
            if len(prompts) > 1:
                for text in texts:
                    print(text + "\n" + "-" * 40)
        elif args.verb == "translate":
            from lmforge.translate import translate

            for line in translate(
                args.model, args.text, args.file, args.beam, args.batch_size, args.length_penalty, args.dtype
            ):
                print(line)
        elif args.verb == "eval-translate":
            from lmforge.translate import eval_translate

            r = eval_translate(
                args.model,
                args.src,
                args.ref,
                args.beam,
                args.batch_size,
                args.length_penalty,
                args.out,
                args.dtype,
            )
            print(f"{r['sentences']} sentences")
            print(f"{r['bleu_text']}\n  signature: {r['bleu_signature']}")
            print(f"{r['chrf_text']}\n  signature: {r['chrf_signature']}")
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
