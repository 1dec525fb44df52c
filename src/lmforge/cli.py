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
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl files")

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

    i = verbs.add_parser(
        "import", help="convert a Hugging Face model directory into an lmforge model directory"
    )
    i.add_argument("hf_dir", help="HF directory: config.json + model.safetensors (or .bin) + tokenizer files")
    i.add_argument("--out", required=True, help="lmforge model directory to write")

    x = verbs.add_parser("export", help="write a run, checkpoint or model directory in Hugging Face's layout")
    x.add_argument("model", help="run, checkpoint or model directory")
    x.add_argument("--out", required=True, help="HF directory to write (loads with from_pretrained)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and args.verb != "train"):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    try:
        if args.verb == "prep":
            from lmforge.data.shards import prepare_corpus as prep

            meta = prep(
                args.inputs, args.out, args.tokenizer, args.vocab_size, args.val_fraction, args.text_field
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
        elif args.verb == "import":
            from lmforge.model.hf_files import import_hf

            print(f"{args.hf_dir} -> {import_hf(args.hf_dir, args.out)}")
        elif args.verb == "export":
            from lmforge.model.hf_files import export_hf

            print(f"{args.model} -> {export_hf(args.model, args.out)}")
    except LmforgeError as e:
        print(f"lmforge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lmforge: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
