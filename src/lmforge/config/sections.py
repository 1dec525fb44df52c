"""The run configuration's sections: one dataclass per TOML [section], each key with its type,
default and docstring (docs/config.md is generated from these, config_doc.py); [model]'s, the
architecture, is model_section.py's.

The whole configuration, which holds one of each, is run_config.py's Config; validation is in
checks.py, reading recipes and overrides in files.py.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

from lmforge.errors import LmforgeError

TASKS = ("lm", "translation", "classification", "chat", "qa")
# data.problem_type: transformers' values ("": train.init_from's kept head, else single-label)
PROBLEM_TYPES = ("", "single_label_classification", "multi_label_classification", "regression")


@dataclass
class DataConfig:
    input: str = ""
    """Text file, folder or glob of .txt/.md/.html/.jsonl/.json/.csv/.tsv/.parquet/.warc (plain or
    .gz/.xz/.bz2/.zst), or a prepared shard directory; for other tasks, their files (translation
    pairs, labelled .jsonl, chat .jsonl, SQuAD .json)."""
    tokenizer: str = "char"
    """`char` (one token per character) or `bpe` (byte-level BPE). Translation pairs prepared by
    `train` get `bpe` unless this is set."""
    vocab_size: int = 4096
    """Target vocabulary size for `bpe`."""
    val_fraction: float = 0.1
    """Share held out for validation: documents whose text hash falls in it (`prep.split = "hash"`, the
    default), or the last `val_fraction` of the token stream (`tail`). Translation pairs prepared by
    `train` hold out 0.02 for validation (and 0.02 for test) unless this is set."""
    text_field: str = "text"
    """Field holding the text in .jsonl inputs (the column in .csv and .parquet ones)."""
    task: str = "lm"
    """`lm` (next-token language modelling), `translation` (sentence pairs, seq2seq model),
    `classification` (labelled text, a classification head on train.init_from's model), `chat`
    (instruction tuning: JSON lines of message lists, loss on the assistant's tokens, rendered with
    train.init_from's chat template) or `qa` (extractive question answering: SQuAD v1.1/v2.0 JSON,
    a span head on train.init_from's encoder)."""
    src_lang: str = "en"
    """translation: source language code (the field / file suffix of the source side)."""
    tgt_lang: str = "fr"
    """translation: target language code."""
    labels: str | list[str] = ""
    """classification: the label names, comma-separated, or a TOML list of names, each whole
    (`["good, mostly", "bad"]`, in a recipe or on the command line); a record's label is a name or
    its index; regression: the outputs' names, empty for one output."""
    label_field: str = "label"
    """classification: field holding the label in .jsonl inputs."""
    text_pair_field: str = ""
    """classification: field holding each record's second text, for a cross-encoder (NLI's
    `hypothesis` beside data.text_field's `premise`, a paraphrase pair): the two read as one input
    through the tokenizer's pair template (token types 0 then 1 on BERT), as transformers'
    `tokenizer(text, text_pair=...)`, cut by longest_first to data.max_len. "": single texts."""
    problem_type: str = ""
    """classification: what the head learns, as transformers' problem_type: `single_label_classification`
    (one label per text, cross-entropy), `multi_label_classification` (a JSON list of labels per text,
    [] for none; a sigmoid per label, binary cross-entropy) or `regression` (a number per text, or a
    list of one per label; squared error). "": train.init_from's multi-label, regression or
    one-output head is kept (its labels, data.labels empty or the same), else single-label."""
    max_len: int = 128
    """classification: tokens kept per text; chat: tokens kept per conversation; qa: tokens per window,
    question and context together (all at most the model's context)."""
    doc_stride: int = -1
    """qa: tokens each window of a long context shares with the previous one (0: none; -1: min(max_len
    // 2, 128), max_len at most the model's context, as transformers' question-answering pipeline
    chooses; the run's config.toml records the value used)."""
    seq_len: int = 0
    """lm: tokens per training window (0: the model's context, model.block_size). Below the context
    of a train.init_from model, it fine-tunes on shorter windows, as transformers' run_clm.py
    block_size does (SmolLM2's context is 8,192 tokens)."""

    def label_names(self) -> list[str]:
        """data.labels as a list: a string split on commas (blanks dropped), a list's names each
        whole (a command line's TOML list too, `--data.labels='["good, mostly", "bad"]'`; a blank
        one is an error); names stripped."""
        listed: object = self.labels if isinstance(self.labels, list) else None
        if isinstance(self.labels, str) and self.labels.strip().startswith("["):
            try:  # names with brackets go in a list too: `["[a]", "b"]`
                listed = tomllib.loads(f"v = {self.labels}")["v"]
            except tomllib.TOMLDecodeError:  # `[negative,positive]` was split into "[negative", ...
                raise LmforgeError(
                    f"data.labels={self.labels}: not a TOML list: quote each name"
                    ' (["good, mostly", "bad"]), or give names split on commas without brackets'
                ) from None
        if not isinstance(listed, list):
            return [name.strip() for name in str(self.labels).split(",") if name.strip()]
        odd = next((n for n in listed if not isinstance(n, str)), None)  # a file's are checked as read
        if odd is not None:
            raise LmforgeError(f"data.labels={self.labels}: {odd!r} is not a name: quote each one")
        if not all(n.strip() for n in listed):
            raise LmforgeError(f"data.labels={self.labels!r}: a blank name in the list")
        return [name.strip() for name in listed]


@dataclass
class TrainConfig:
    max_steps: int = 2000
    """Optimizer steps to train (see train.epochs and train.max_minutes, which set it)."""
    batch_size: int = 12
    """Global batch in sequences per optimizer step: the one source of truth."""
    micro_batch_size: int = 0
    """Sequences per forward pass on each rank; 0 means batch_size / world_size (no accumulation)."""
    lr: float = 1e-3
    """Peak learning rate, reached at the end of warmup."""
    min_lr: float = 1e-4
    """Learning rate the `cosine` schedule ends at (at most lr; unused by `linear` and `constant`)."""
    warmup_steps: int = 100
    """Steps of linear warmup from 0 to lr."""
    schedule: str = "cosine"
    """`cosine` (warmup then cosine to min_lr), `linear` (warmup then linear to 0, as HF's
    get_linear_schedule_with_warmup) or `constant` (warmup then flat)."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (none on biases and norm gains)."""
    beta1: float = 0.9
    """AdamW beta1 (first-moment decay)."""
    beta2: float = 0.99
    """AdamW beta2 (second-moment decay)."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    dtype: str = "auto"
    """`auto` (fp32 or, where the CPU has bf16 units, bf16 autocast: whichever trains this run's
    micro-batch faster, measured at start and cached, see docs/speed.md), `fp32` or `bf16`."""
    compile: str = "auto"
    """Run the training forward under torch.compile: `auto` (on a CPU, where the run is long enough
    to pay for a compile, measured at start and cached; on a GPU, never: see docs/speed.md), `on`
    (always, without measuring: language modelling on the local, DDP or FSDP2 engine, without
    privacy.enabled) or `off`."""
    activation_checkpointing: bool = False
    """Keep only each Transformer block's input for backward and recompute the rest there
    (torch.utils.checkpoint): much less activation memory for about 1/3 more compute per step; the
    same losses and gradients, dropout included. Every model family and engine; not with
    privacy.enabled."""
    eval_interval: int = 250
    """Evaluate on the validation split every this many steps (and at the end)."""
    eval_batches: int = 20
    """Validation size in global batches (evenly spaced windows); 0 evaluates the whole split."""
    log_interval: int = 10
    """Print the step line and write metrics every this many steps."""
    checkpoint_interval: int = 500
    """Write a checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk: the newest ones; older ones are deleted."""
    keep_best: bool = False
    """lm and chat: keep the model of the evaluation with the lowest val_loss in RUN/best and
    export it, not the last step's (nanoGPT's always_save_checkpoint=False, for a run that
    overfits). Translation and QA always export their best BLEU or F1 step."""
    seed: int = 1337
    """Seed of the weight initialisation, data order and dropout."""
    max_bad_steps: int = 5
    """Abort after this many consecutive steps with a non-finite loss or gradient (>= 1)."""
    init_from: str = ""
    """Start from this model, run or Hugging Face directory's weights: its architecture replaces
    [model] (dropout aside; a [model] key set to another value is refused, but a recipe's yields,
    with a note, to an init_from given on the command line) and raw-text data is tokenized with its
    tokenizer."""
    label_smoothing: float = 0.0
    """translation: label smoothing of the training cross-entropy (0.1 in Vaswani et al.)."""
    max_minutes: float = 0.0
    """A wall-clock training budget in minutes: when > 0, the first 10 steps are timed and
    max_steps becomes what fits the budget, evaluations included (never more than max_steps);
    the decay follows, so the cosine still ends at min_lr. 0: train max_steps."""
    epochs: int = 0
    """When > 0, max_steps = epochs x the task's steps per epoch (classification, translation)."""
    head_only: bool = False
    """classification: train only the head, the backbone frozen."""
    from_scratch: bool = False
    """classification, qa: train.init_from's architecture and tokenizer, random weights (a baseline)."""
    pooling: str = ""
    """classification: `mean`, `cls` or `last` token pooling; "" picks mean for encoders, last
    for decoders."""
    classifier_dense: str = ""
    """classification: a dense layer and its activation between the pooling and the head, as
    transformers' classifiers have: `tanh` (BERT's pooler; on an encoder whose pooler was
    pretrained, an imported BERT, it starts from that pooler, and with `pooling = "cls"` the
    classifier is a BertForSequenceClassification, which `lmforge export` writes), `relu`
    (DistilBERT's pre_classifier, a random start); "" none. A classifier given as train.init_from
    with the same dense layer starts from its own."""
    classifier_dropout: float = -1.0
    """classification: dropout before the head; -1 = transformers' for train.init_from: its
    config.json's classifier_dropout (DistilBERT's seq_classif_dropout), else model.dropout on an
    encoder, 0 on a decoder; a classifier's own. The backbone's is model.dropout."""
    eval_bleu_sentences: int = 0
    """translation: validation sentences decoded (greedy) for BLEU at each evaluation; 0 = all."""


@dataclass
class EngineConfig:
    name: str = "local"
    """local (one process, plain PyTorch) | ddp | fsdp (FSDP2 fully_shard per block) | deepspeed.
    Several processes come from the launcher: torchrun, deepspeed or `lmforge launch`."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 1, 2 or 3: shard optimizer state / + gradients / + parameters."""
    offload: str = "none"
    """DeepSpeed: none | optimizer | all (optimizer state, and at stage 3 parameters, in CPU RAM)."""
    deepspeed_config: str = ""
    """A DeepSpeed JSON merged into the generated one, for keys lmforge does not set itself."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, else gloo) | gloo | nccl."""
    timeout_s: int = 1800
    """Seconds a rank waits in a collective for the others before the run fails (torch's default);
    a rank that skips a collective then ends the run with an error instead of a silent hang."""

    def ignored(self) -> list[str]:
        """The keys given another value than their default on an engine that runs without them,
        each with why: DeepSpeed's on another engine (a recipe for DeepSpeed run with
        --engine.name=local, or resumed on it), the process group's on the local engine."""
        default = EngineConfig()
        unused = {
            "zero_stage": "DeepSpeed only",
            "offload": "DeepSpeed only",
            "deepspeed_config": "DeepSpeed only",
        }
        unused = {} if self.name == "deepspeed" else unused
        if self.name == "local":  # one process, no process group
            unused |= {"backend": "several processes only", "timeout_s": "several processes only"}
        changed = [k for k in unused if getattr(self, k) != getattr(default, k)]
        return [f"engine.{k}={getattr(self, k)!r}: {unused[k]}" for k in changed]


@dataclass
class PrepConfig:
    """`lmforge prep`: cleaning stages and their settings (tokenizer and split come from [data])."""

    inputs: str | list[str] = ""
    """Files, folders or globs for `lmforge prep X.toml` (default: data.input): a TOML list of
    strings (`["a,b.txt", "raw/"]`, each one name), or one string split on commas."""
    out: str = ""
    """Output shard directory for `lmforge prep X.toml`."""
    json_field: str = ""
    """The key of a .json object whose array holds the records (`{"version": 1, "data": [...]}`:
    `data`), as `datasets`' `field=`; "": a .json is an array or JSON Lines."""
    stages: str = "normalize,markup,whitespace,boilerplate,length,exact_dedup,near_dedup,pii"
    """Cleaning stages in order, comma-separated; known: normalize, markup, whitespace, boilerplate,
    length, quality, repetition, exact_dedup, near_dedup, pii, stopwords; "none" for no cleaning."""
    html_extractor: str = "tags"
    """`markup` stage: `tags` strips the tags of HTML (a page's menus and footers stay as text);
    `trafilatura` keeps a whole web page's main content only (needs `pip install lmforge[html]`)."""
    trafilatura_timeout: float = 1.0
    """`markup` stage with html_extractor = "trafilatura": seconds a page may take (datatrove's
    default); a page that takes longer is dropped and counted in the report (0: no limit)."""
    min_chars: int = 1
    """`length` stage: the shortest document kept, in characters."""
    max_chars: int = 0
    """Length bounds of a document in characters (0: no upper bound)."""
    quality_min_words: int = 50
    """`quality` stage: the fewest words a document may have (Gopher's min_doc_words)."""
    boilerplate_min_docs: int = 10
    """`boilerplate` stage: see boilerplate_fraction."""
    boilerplate_fraction: float = 0.01
    """A line is boilerplate when in at least max(min_docs, fraction x documents) documents."""
    boilerplate_min_chars: int = 20
    """`boilerplate` stage: only lines of at least this many characters can be boilerplate."""
    near_dup_bands: int = 14
    """`near_dedup` stage: MinHash LSH bands (FineWeb's 14 x 8 rows: Jaccard threshold 0.72)."""
    near_dup_rows: int = 8
    """`near_dedup` stage: hashes per band; the threshold is about (1/bands)^(1/rows)."""
    stopwords_file: str = ""
    """Whitespace-separated stop words for the `stopwords` stage (default: a short English list)."""
    pii_kinds: str = "login,email,iban,imei,card,ssn,ip,phone"
    """`pii` stage: the kinds replaced, comma-separated (see docs/data.md)."""
    pii_ip: str = "all"
    """`pii` stage: `all` replaces every IP address but loopback, unspecified, multicast and
    reserved ones (private and documentation ranges too); `public` only global ones, as datatrove."""
    pii_phone_regions: str = "US,GB,FR,DE,ES,IT,NL,BE,CH,IN,AU,BR"
    """`pii` stage: regions (ISO 3166 codes) whose national phone formats are read; numbers with a
    +country code are found for every country."""
    split: str = "hash"
    """`hash` (a document goes to val when its text hash falls in val_fraction) or `tail` (the last
    val_fraction of the token stream). `hash` falls back to `tail` when one split would be empty."""
    workers: int = 0
    """Cleaning processes (0: one per core)."""
    max_line_bytes: int = 1 << 24
    """Input lines longer than this are skipped and counted in the report."""
    tokenizer_train_mb: int = 0
    """Train the tokenizer on the first N MB of cleaned text (0: all of it)."""
    shard_tokens: int = 100_000_000
    """Tokens per shard file, about: a shard ends with the document that reaches this (the tail
    split, prep.split = "tail", cuts at exactly this). Training reads a split's shards as one
    stream, its windows running across files, so the size changes nothing but the files."""
    canaries: int = 0
    """Random secrets ("my secret code is 7 3 9 1 5 0") planted per repeat count among the training
    documents, for `lmforge audit` to measure memorization (Carlini et al. 2019); 0: none. Recorded
    in canaries.json; see docs/privacy.md."""
    canary_repeats: str = "1,4,16"
    """Comma-separated: how many copies of each canary go into the training split."""
    canary_seed: int = 0
    """Seed of the canaries' secrets and places."""
    canary_length: int = 6
    """Digits per secret: 10^length candidate secrets."""


# LoRA targets: a Hugging Face name (PEFT's target_modules) or lmforge's -> the (lmforge module
# inside a block, slices of its output rows) it adapts; lmforge fuses q, k, v into one attn.qkv and
# k, v of cross-attention into one cross.kv. As PEFT's suffix match on an encoder-decoder (Marian's
# q_proj is also encoder_attn.q_proj), q/k/v_proj reach cross-attention too; o_proj (Marian's
# out_proj) is lmforge's name for both output projections.
LORA_TARGETS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "q_proj": (("attn.qkv", ("q",)), ("cross.q", ("all",))),
    "k_proj": (("attn.qkv", ("k",)), ("cross.kv", ("k",))),
    "v_proj": (("attn.qkv", ("v",)), ("cross.kv", ("v",))),
    "o_proj": (("attn.proj", ("all",)), ("cross.proj", ("all",))),
    "gate_proj": (("mlp.gate", ("all",)),),
    "up_proj": (("mlp.up", ("all",)),),
    "down_proj": (("mlp.down", ("all",)),),
    "attn.qkv": (("attn.qkv", ("q", "k", "v")),),
    "attn.proj": (("attn.proj", ("all",)),),
    "cross.q": (("cross.q", ("all",)),),
    "cross.kv": (("cross.kv", ("k", "v")),),
    "cross.proj": (("cross.proj", ("all",)),),
    "mlp.gate": (("mlp.gate", ("all",)),),
    "mlp.up": (("mlp.up", ("all",)),),
    "mlp.down": (("mlp.down", ("all",)),),
}


@dataclass
class LoraConfig:
    """[lora]: low-rank adapters (LoRA, Hu et al. 2021) on train.init_from's model, as PEFT makes
    them; off by default. See docs/lora.md."""

    enabled: bool = False
    """Train LoRA adapters instead of the whole model: the base weights are frozen, only the
    adapters (and lora.also_train) train, and checkpoints hold only those. Needs train.init_from."""
    rank: int = 8
    """Rank r of each adapter pair (A: r x in, B: out x r)."""
    alpha: float = 16.0
    """Scaling numerator: the adapter's output is multiplied by alpha / rank (PEFT's lora_alpha)."""
    dropout: float = 0.0
    """Dropout on the adapters' input (PEFT's lora_dropout)."""
    targets: str = "q_proj,v_proj"
    """Comma-separated modules to adapt in every block: Hugging Face names (q_proj, k_proj, v_proj,
    o_proj, gate_proj, up_proj, down_proj; in an encoder-decoder q/k/v_proj also adapt
    cross-attention, as PEFT's do on Marian, and o_proj both output projections) or lmforge's
    (attn.qkv = q, k and v; attn.proj, cross.q, cross.kv = k and v, cross.proj, mlp.gate, mlp.up,
    mlp.down)."""
    also_train: str = ""
    """Comma-separated modules trained whole beside the adapters (PEFT's modules_to_save), e.g.
    `head` for classification's new head; "" trains the adapters only."""


@dataclass
class PrivacyConfig:
    """[privacy]: differentially private training (DP-SGD, Abadi et al. 2016): each example's
    gradient clipped, Gaussian noise added once per optimizer step, epsilon at delta reported as
    training goes. Off by default; the local engine only. See docs/privacy.md."""

    enabled: bool = False
    """Train with DP-SGD. train.grad_clip is then not applied: privacy.max_grad_norm clips each
    example's gradient instead."""
    noise_multiplier: float = 0.0
    """Noise standard deviation as a multiple of max_grad_norm; 0: computed from target_epsilon."""
    max_grad_norm: float = 1.0
    """Each example's gradient (all trained parameters together) is scaled down to this L2 norm."""
    target_epsilon: float = 0.0
    """The epsilon to reach at train.max_steps: sets the noise multiplier (give this or
    noise_multiplier, not both)."""
    delta: float = 0.0
    """The delta of (epsilon, delta)-DP; 0: min(1e-5, 1/N), N the training examples (delta should
    stay below 1/N)."""
    accountant: str = "rdp"
    """Privacy accounting: `rdp` (Renyi DP, Mironov 2017) or `prv` (privacy random variables,
    Gopi et al. 2021: tighter, slower), both Opacus'."""
