"""The verb table: every `lmforge` command, the function it calls, its options, and how its
result prints (cli_show.py). cli.py parses a command line against it; cli_parser.py builds the
parser and the help. The verbs that make models and data are here; those that use a model are in
cli_verbs_use.py."""

from __future__ import annotations

import argparse

from lmforge import cli_show as show
from lmforge.cli_parser import Switch, Verb, opt
from lmforge.cli_verbs_use import DTYPE, MODEL, USE_VERBS

# fmt: off
MAKE_VERBS: dict[str, Verb] = {
    "prep": Verb(
        "lmforge.data.prep:prep",
        "clean raw text, train a tokenizer and write token shards (+ report.json)",
        (
            opt("inputs", "a TOML recipe, or files, folders, globs (.txt .md .html .jsonl .json .csv .tsv"
                " .parquet .warc; .gz .xz .bz2 .zst)", nargs="+"),
            opt("--out", "output directory for shards, meta.json, tokenizer.json, report.json"),
            opt("--tokenizer", "tokenizer to train (--pairs: bpe unless told)", config="data.tokenizer",
                choices=["char", "bpe"]),
            opt("--vocab-size", "BPE vocabulary size", config="data.vocab_size", type=int),
            opt("--val-fraction", "share of documents for validation", config="data.val_fraction",
                type=float),
            opt("--text-field", "field or column holding the text in .jsonl/.json/.csv/.tsv/.parquet",
                alt=False, config="data.text_field"),
            opt("--json-field", "key of a .json object whose array holds the records ({\"data\": [...]})",
                alt=False, config="prep.json_field"),
            opt("--stages", "cleaning stages in order, comma-separated, or 'none'", alt=False,
                config="prep.stages"),
            opt("--split", "train/val split", alt=False, config="prep.split", choices=["hash", "tail"]),
            opt("--html-extractor", "markup stage: strip tags, or keep a web page's main content",
                alt=False, config="prep.html_extractor", choices=["tags", "trafilatura"]),
            opt("--workers", "cleaning processes (0: one per core)", alt=False, config="prep.workers",
                type=int),
            opt("--canaries", "random secrets planted per repeat count in train, for lmforge audit",
                alt=False, config="prep.canaries", type=int),
            opt("--canary-repeats", "copies of each canary, comma-separated", alt=False,
                config="prep.canary_repeats"),
            opt("--canary-seed", "seed of the canaries' secrets and places", alt=False,
                config="prep.canary_seed", type=int),
            opt("--canary-length", "digits of each canary's secret", alt=False, config="prep.canary_length",
                type=int),
            opt("--overwrite", "replace an earlier prep output in --out", action="store_true"),
            opt("--quiet", "no progress bars or report", alt=False, action="store_true"),
            opt("--src-lang", "source language (JSONL field, file suffix)", alt=True),
            opt("--tgt-lang", "target language", alt=True),
            opt("--max-tokens", "drop pairs with a side longer than this (tokens)", alt=True, type=int),
            opt("--max-ratio", "drop pairs whose token-length ratio is above this", alt=True, type=float),
            opt("--test-fraction", "share of documents held out for test", alt=True, type=float),
            opt("--seed", "seed of the train/val/test split", alt=True, type=int),
        ),
        show.show_prep,
        overrides=True,
        config_sections=("data", "prep"),
        switch=Switch(
            "--pairs",
            "lmforge.data.pairs:prepare_pairs",
            "inputs are sentence pairs (.jsonl, .tsv, aligned NAME.SRC + NAME.TGT): prepare them for"
            " translation (prepare_pairs)",
            show.show_pairs,
        ),
    ),
    "train": Verb(
        "lmforge.train.loop:train",
        "train a model from a TOML recipe",
        (
            opt("config", "TOML recipe (default: built-in defaults + overrides)", nargs="?"),
            opt("--out", "run directory (default runs/<recipe name>)"),
            opt("--resume", "continue a run exactly from its latest checkpoint", metavar="RUN_DIR"),
            opt("--overwrite", "replace an existing run in --out", action="store_true"),
            opt("--quiet", "nothing on stdout, not even the last line: the results are in RUN/summary.json",
                action="store_true"),
            opt("--init-from", "start from a model's weights (lmforge or HF dir)", override="train.init_from",
                metavar="MODEL_DIR"),
        ),
        overrides=True,
        config_sections=("data", "model", "train", "engine", "prep", "lora", "privacy"),
        before=show.train_on_tcmalloc,
    ),
    "import": Verb(
        "lmforge.formats.hf_files:import_hf",
        "convert a Hugging Face model directory, a GGUF file, or a PEFT LoRA adapter merged into its base"
        " into an lmforge model directory",
        (
            opt(
                "hf_dir",
                "HF directory (config.json + model.safetensors or .bin + tokenizer files), FILE.gguf, or"
                " a PEFT LoRA adapter folder",
            ),
            opt("--out", "lmforge model directory to write", required=True),
            opt("--base", "with a PEFT LoRA adapter folder (adapter_config.json): the model to merge it"
                " into, HF or lmforge (default: its base_model_name_or_path, where that is a folder here)"),
        ),
        lambda path, kw: print(f"{kw['hf_dir']} -> {path}"),
    ),
    "export": Verb(
        "lmforge.formats.hf_export:export_hf",
        "write a run, checkpoint or model directory in Hugging Face's layout (a LoRA run: its adapter"
        " in PEFT's layout)",
        (
            opt("model", MODEL, dest="model_path"),
            opt("--out", "folder to write: an HF directory (loads with from_pretrained), or with"
                " --format onnx the ONNX graphs, tokenizer and onnx.json", required=True),
        ),
        lambda path, kw: print(f"{kw['model_path']} -> {path}"),
        switch=Switch("--format", "lmforge.formats.onnx_export:export_onnx",
                      "hf: Hugging Face's layout (export_hf); onnx: ONNX graphs for ONNX Runtime, checked"
                      " against PyTorch (export_onnx)",
                      lambda path, kw: print(f"{kw['model_path']} -> {path}"),
                      choices=("hf", "onnx")),
    ),
    "merge-lora": Verb(
        "lmforge.formats.peft:merge_lora",
        "merge a LoRA run's adapters into its base model's weights; write an ordinary model directory",
        (
            opt("model", "LoRA run, checkpoint or model directory", dest="model_path"),
            opt("--out", "model directory to write", required=True),
        ),
        lambda path, kw: print(f"{kw['model_path']} -> {path}"),
    ),
    "finetune-classify": Verb(
        "lmforge.train.classify:finetune_classify",
        "fine-tune a classification head (or the whole model) on labelled JSON lines; report held-out"
        " accuracy and F1 (multi-label: subset accuracy and micro F1; regression: MSE and Pearson's r)",
        (
            opt("model", "lmforge or Hugging Face model directory"),
            opt("--train", ".jsonl(.gz/.xz) with text and label fields", required=True),
            opt("--labels", "comma-separated label names, e.g. negative,positive (a regression of one"
                " output, or a kept multi-label or regression head, may leave them out)"),
            opt("--problem-type", "single_label_classification, multi_label_classification (a list of"
                " labels per text) or regression (a number per text); default: the model's multi-label"
                " or regression head kept, else single-label",
                choices=["", "single_label_classification", "multi_label_classification", "regression"]),
            opt("--out", "run directory to write (its classifier in OUT/model); without it the"
                " model is not kept, only the metrics"),
            opt("--overwrite", "replace an earlier run in --out", action="store_true"),
            opt("--text-field", "field holding the text"),
            opt("--text-pair-field", "field holding each record's second text (NLI's hypothesis):"
                " train a cross-encoder on (text, text_pair) pairs, read through the tokenizer's pair"
                " template"),
            opt("--label-field", "field holding the label"),
            opt("--val-fraction", "share held out for the report", type=float),
            opt("--epochs", "passes over the training examples", type=int),
            opt("--batch-size", "examples per optimizer step", type=int),
            opt("--lr", "peak learning rate", type=float),
            opt("--head-only", "freeze the model; train the head only", action="store_true"),
            opt("--from-scratch", "same-size model with random weights", action="store_true"),
            opt("--pooling", "'' picks mean for encoders, last for decoders",
                choices=["", "mean", "cls", "last"]),
            opt("--dense", "a dense layer before the head: tanh (BERT's pooler, started from an"
                " imported BERT's) or relu (DistilBERT's)", choices=["", "tanh", "relu"]),
            opt("--max-len", "tokens kept per text", type=int),
            opt("--seed", "seed of the split, the head and the data order", type=int),
            opt("--dtype", "training dtype", **DTYPE),
            opt("--quiet", "no progress bars or step lines", action="store_true"),
        ),
        show.show_classify,
    ),
    "plan": Verb(
        "lmforge.tools.plan:plan",
        "compute, memory per rank (every engine, ZeRO stage, offload) and time of a recipe on N devices,"
        " before training it",
        (
            opt("config", "TOML recipe (default: built-in defaults + overrides)", nargs="?"),
            opt("--world-size", "ranks (several nodes: their total)", type=int),
            opt("--device", "h100, h100-pcie, h200, a100-40, a100-80, l4, rtx4090, mi300x or cpu (this"
                " machine): what each rank runs on"),
            opt("--mfu", "model FLOPs utilisation the time assumes", type=float),
            opt("--calibrate", "measure the MFU: real steps of the recipe here, the fastest after the first"
                " (a quiet machine's step)", action="store_true"),
            opt("--calibrate-steps", "steps of the calibration run (the first is not timed)", type=int),
            opt("--json", "print the plan as JSON", action="store_true"),
        ),
        show.show_plan,
        overrides=True,
        config_sections=("data", "model", "train", "engine", "lora", "privacy"),
    ),
    "audit": Verb(
        "lmforge.tools.audit:audit",
        "memorization: exposure of the canaries prep planted (Carlini et al. 2019) and verbatim"
        " extraction of training text against held-out text; a table, then the figures as JSON",
        (
            opt("model", MODEL),
            opt("--data", "a prepared directory (train, val, canaries.json), or files, folders, globs of"
                " training text", nargs="+", required=True),
            opt("--heldout", "held-out text for the extraction baseline (default: a prepared --data's"
                " val split)", nargs="+"),
            opt("--canaries", "canaries.json (default: the one in a prepared --data)"),
            opt("--prefix-tokens", "prompt length of the extraction windows", type=int),
            opt("--k", "true tokens greedy decoding must reproduce", type=int),
            opt("--samples", "extraction windows per side", type=int),
            opt("--candidates", "candidate secrets sampled when the space is over --exact-limit", type=int),
            opt("--exact-limit", "score every candidate when the space is at most this", type=int),
            opt("--batch-size", "rows per forward pass", type=int),
            opt("--seed", "seed of the windows and sampled candidates", type=int),
            opt("--text-field", "field or column holding the text in .jsonl/.json/.csv/.tsv/.parquet"),
            opt("--out", "also write the JSON to this file"),
            opt("--overwrite", "replace an existing --out file", action="store_true"),
            opt("--quiet", "no progress lines", action="store_true"),
        ),
        show.show_audit,
    ),
    "launch": Verb(
        "lmforge.launch:launch",
        "run a verb in N processes (torchrun): lmforge launch --nproc N train ...",
        (
            opt("--nproc", "processes per node (one per GPU), required", type=int),
            opt("--nnodes", "nodes", type=int),
            opt("--node-rank", "this node's rank", type=int),
            opt("--master-addr", "address of node 0 (one node: 127.0.0.1); several nodes: required"),
            opt("--master-port", "port on node 0 (0: a free port, one node only); several nodes: required",
                type=int),
            opt("args", "the verb and its arguments", nargs=argparse.REMAINDER, metavar="VERB ..."),
        ),
        lambda status, _: status,
    ),
}
# fmt: on

# fmt: off
ORDER = ("prep", "train", "generate", "chat", "ask", "import", "export", "merge-lora", "finetune-classify",
         "classify", "eval-classify", "embed", "translate", "eval-translate", "eval", "plan", "inspect",
         "audit", "eval-instruct", "eval-qa", "serve", "launch")  # as `lmforge --help` lists them
# fmt: on
VERBS: dict[str, Verb] = {name: (MAKE_VERBS | USE_VERBS)[name] for name in ORDER}
