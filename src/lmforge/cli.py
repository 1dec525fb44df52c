"""Command line: each verb calls the Python function of the same name; no logic of its own."""

from __future__ import annotations

import argparse
import sys

from lmforge.errors import LmforgeError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="From raw text to a trained Transformer.")
    verbs = parser.add_subparsers(dest="verb", required=True)
    verbs.add_parser("launch", help="run a verb in N processes: lmforge launch --nproc N train ...")

    p = verbs.add_parser(
        "prep",
        help="clean raw text, train a tokenizer and write token shards (+ report.json)",
        epilog="Any [data]/[prep] key can be set as --section.key=value, e.g. --prep.min_chars=200.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="a TOML recipe, or files, folders, globs (.txt .md .jsonl .csv .parquet; .gz .xz .bz2 .zst)",
    )
    p.add_argument("--out", help="output directory for shards, meta.json, tokenizer.json, report.json")
    p.add_argument("--tokenizer", choices=["char", "bpe"], help="default: char")
    p.add_argument("--vocab-size", type=int, help="BPE vocabulary size (default 4096)")
    p.add_argument("--val-fraction", type=float, help="share of documents for validation (default 0.1)")
    p.add_argument("--text-field", help="field or column holding the text in .jsonl/.csv/.parquet")
    p.add_argument("--stages", help="cleaning stages in order, comma-separated, or 'none' (see README)")
    p.add_argument("--split", choices=["hash", "tail"], help="train/val split (default: by document hash)")
    p.add_argument("--workers", type=int, help="cleaning processes (default: one per core)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or report")
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
    t.add_argument(
        "--init-from", metavar="MODEL_DIR", help="start from a model's weights (lmforge or HF dir)"
    )

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

    c = verbs.add_parser(
        "finetune-classify",
        help="fine-tune a classification head (or the whole model) on labelled JSON lines; report held-out"
        " accuracy and F1",
    )
    c.add_argument("model", help="lmforge or Hugging Face model directory")
    c.add_argument("--train", required=True, help=".jsonl(.gz/.xz) with text and label fields")
    c.add_argument("--labels", required=True, help="comma-separated label names, e.g. negative,positive")
    c.add_argument("--out", help="classifier directory to write (for pipeline('text-classification'))")
    c.add_argument("--text-field", default="text")
    c.add_argument("--label-field", default="label")
    c.add_argument("--val-fraction", type=float, default=0.1, help="share held out for the report")
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--batch-size", type=int, default=32)
    c.add_argument("--lr", type=float, default=5e-5)
    c.add_argument("--head-only", action="store_true", help="freeze the model; train the head only")
    c.add_argument("--from-scratch", action="store_true", help="same-size model with random weights")
    c.add_argument("--pooling", default="", choices=["", "mean", "cls", "last"], help="default: mean or last")
    c.add_argument("--max-len", type=int, default=128, help="tokens kept per text")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    c.add_argument("--quiet", action="store_true")

    tr = verbs.add_parser("translate", help="translate text with an encoder-decoder run or model directory")
    tr.add_argument("model", help="run directory, checkpoint or model directory")
    tr.add_argument("text", nargs="*", help="sentences to translate")
    tr.add_argument("--file", help="translate every line of this file")
    tr.add_argument(
        "--beam",
        type=int,
        help="beam size, 1 = greedy (default: the model's; 1 for lmforge's, 4 for opus-mt)",
    )
    tr.add_argument("--length-penalty", type=float, default=1.0, help="beam score = log p / length**this")
    tr.add_argument("--batch-size", type=int, default=32)
    tr.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"], help="weights dtype")

    e = verbs.add_parser("eval-translate", help="sacreBLEU and chrF of a translation model on a test set")
    e.add_argument("model", help="run directory, checkpoint or model directory")
    e.add_argument("--src", required=True, help="source sentences, one per line")
    e.add_argument("--ref", required=True, help="reference translations, one per line")
    e.add_argument("--beam", type=int, help="beam size (default: the model's, see translate --beam)")
    e.add_argument("--length-penalty", type=float, default=1.0)
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--out", help="write the translations to this file")
    e.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "bf16"], help="weights dtype")
    return parser


def _launch(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lmforge launch",
        description="Run an lmforge verb in several processes (torchrun), e.g. for --engine.name=ddp.",
    )
    parser.add_argument("--nproc", type=int, required=True, help="processes per node (one per GPU)")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--node-rank", type=int, default=0)
    parser.add_argument("--master-addr", default="127.0.0.1", help="address of node 0")
    parser.add_argument("--master-port", type=int, default=0, help="default: a free port (one node)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the verb and its arguments")
    a = parser.parse_args(argv)
    from lmforge.launch import launch

    return launch(a.nproc, a.args, a.nnodes, a.node_rank, a.master_addr, a.master_port)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the deepspeed launcher appends --local_rank=N; the same number is in $LOCAL_RANK
    argv = [a for a in argv if not a.startswith(("--local_rank=", "--local-rank="))]
    if argv[:1] == ["launch"]:
        try:
            return _launch(argv[1:])
        except LmforgeError as e:
            print(f"lmforge: error: {e}", file=sys.stderr)
            return 2
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.verb == "translate":  # argparse leaves sentences given after an option in `extra`
        args.text += [a for a in extra if not a.startswith("--")]
        extra = [a for a in extra if a.startswith("--")]
    overrides = [a for a in extra if a.startswith("--") and "." in a.split("=")[0]]
    unknown = [a for a in extra if a not in overrides]
    if unknown or (overrides and args.verb not in ("train", "prep")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or overrides)}")
    try:
        if args.verb == "prep" and args.pairs:
            from lmforge.data.pairs import prepare_pairs

            if not args.out:
                raise LmforgeError("prep --pairs: give the output directory with --out")
            meta = prepare_pairs(
                args.inputs,
                args.out,
                args.src_lang,
                args.tgt_lang,
                args.vocab_size or 4096,
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
            from lmforge.data.prep import prep

            options = {"stages": args.stages, "split": args.split, "workers": args.workers}
            meta = prep(
                args.inputs,
                args.out,
                args.tokenizer,
                args.vocab_size,
                args.val_fraction,
                args.text_field,
                quiet=args.quiet,
                overrides=overrides,
                **options,
            )
            print(
                f"{meta['out']}: {meta['documents']} documents -> {meta['tokens']['train']:,} train /"
                f" {meta['tokens']['val']:,} val tokens, vocab {meta['vocab_size']} ({meta['tokenizer']})"
            )
        elif args.verb == "train":
            from lmforge.train.loop import train

            if args.init_from:
                overrides = [*overrides, f"--train.init_from={args.init_from}"]
            train(args.config, overrides, args.out, args.resume, args.overwrite, args.quiet)
        elif args.verb == "generate":
            from lmforge.inference.generate import generate

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
            from lmforge.formats.hf_files import import_hf

            print(f"{args.hf_dir} -> {import_hf(args.hf_dir, args.out)}")
        elif args.verb == "export":
            from lmforge.formats.hf_files import export_hf

            print(f"{args.model} -> {export_hf(args.model, args.out)}")
        elif args.verb == "finetune-classify":
            from lmforge.train.classify import finetune_classify

            result = finetune_classify(
                args.model,
                args.train,
                args.labels,
                args.out,
                args.text_field,
                args.label_field,
                args.val_fraction,
                args.epochs,
                args.batch_size,
                args.lr,
                args.head_only,
                args.from_scratch,
                args.pooling,
                args.max_len,
                args.seed,
                args.dtype,
                args.quiet,
            )
            print(
                f"held-out accuracy {result['accuracy']:.4f} | macro F1 {result['f1']:.4f}"
                f" | {result['heldout_examples']} examples | {result['seconds']:.0f}s training"
            )
        elif args.verb == "translate":
            from lmforge.inference.translate import translate

            for line in translate(
                args.model, args.text, args.file, args.beam, args.batch_size, args.length_penalty, args.dtype
            ):
                print(line)
        elif args.verb == "eval-translate":
            from lmforge.inference.translate import eval_translate

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
