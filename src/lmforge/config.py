"""Typed run configuration: TOML recipes plus `--section.key=value` overrides.

A recipe is a TOML file with the sections below; every key is optional and falls back to the
dataclass default. Unknown sections or keys, wrong types and impossible combinations raise
`LmforgeError` with a one-line message naming the key (and the file).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError

TASKS = ("lm", "translation", "classification", "chat", "qa")


@dataclass
class DataConfig:
    input: str = ""
    """Text file, folder or glob of .txt/.md/.jsonl(.gz/.xz/.bz2), or a prepared shard directory."""
    tokenizer: str = "char"
    """`char` (one token per character) or `bpe` (byte-level BPE)."""
    vocab_size: int = 4096
    """Target vocabulary size for `bpe`."""
    val_fraction: float = 0.1
    """Share of the token stream held out for validation: the last `val_fraction` of it."""
    text_field: str = "text"
    """Field holding the text in .jsonl inputs."""
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
    labels: str = ""
    """classification: the label names, comma-separated (a record's label is a name or its index)."""
    label_field: str = "label"
    """classification: field holding the label in .jsonl inputs."""
    max_len: int = 128
    """classification: tokens kept per text; chat: tokens kept per conversation; qa: tokens per window,
    question and context together (all at most the model's context)."""
    doc_stride: int = 128
    """qa: tokens each window of a long context shares with the previous one."""


@dataclass
class ModelConfig:
    n_layer: int = 4
    """Transformer blocks (in each stack for seq2seq)."""
    n_head: int = 4
    """Attention heads per block."""
    n_embd: int = 128
    """Model width: the embedding and residual stream size."""
    block_size: int = 64
    """Context length in tokens."""
    vocab_size: int = 0
    """0 takes the tokenizer's vocabulary size."""
    dropout: float = 0.0
    """Dropout probability (attention weights, residual branches, embeddings) while training."""
    bias: bool = True
    """Biases in the linear layers and norms (GPT-2); false for none (Llama)."""
    pos: str = "learned"
    """`learned` absolute positions (GPT-2), `rope` (rotary) or `sinusoidal` (seq2seq only: Marian's
    fixed table, sines in the first half of the dims, cosines in the second)."""
    mlp: str = "gelu"
    """`gelu` (exact), `gelu_tanh` (GPT-2's tanh approximation), `swiglu` (Llama) or `silu` (a plain
    MLP with SiLU, Marian's "swish")."""
    tie_embeddings: bool = True
    """The output layer shares the token embedding's weights."""
    # Options the Hugging Face families need (model/hf.py); the defaults are lmforge's own GPT.
    norm: str = "layernorm"
    """`layernorm` (GPT-2, BERT) or `rmsnorm` (Llama, Mistral, Qwen2)."""
    norm_eps: float = 1e-5
    """Epsilon added inside the norm layers."""
    n_kv_head: int = 0
    """Key/value heads for grouped-query attention; 0 means n_head (plain multi-head attention)."""
    qkv_bias: bool = False
    """Bias on the q, k, v projections even when `bias` is false (Qwen2)."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    mlp_hidden: int = 0
    """MLP hidden width; 0 means 4 x n_embd (gelu) or 8/3 x n_embd rounded up to 64 (swiglu)."""
    type_vocab_size: int = 0
    """Encoder only: token type (segment) embeddings, as BERT's; 0 for none."""
    scale_embedding: bool = False
    """Seq2seq: multiply token embeddings by sqrt(n_embd) (Vaswani et al.; Marian), so that with
    tied weights the embedding is not drowned by the position signal."""
    arch: str = "gpt"
    """`gpt` (decoder only) or `seq2seq` (encoder-decoder; n_layer layers in each stack,
    block_size positions on each side, one embedding shared by both and the output)."""
    # Seq2seq options Marian (opus-mt, model/hf.py) needs; the defaults are lmforge's own seq2seq.
    post_norm: bool = False
    """Seq2seq: post-LayerNorm blocks, norm after each residual (the original Transformer; Marian)."""
    final_norm: bool = True
    """Seq2seq: a LayerNorm at the end of each stack (pre-LN needs it; Marian has none)."""
    logits_bias: bool = False
    """Seq2seq: a fixed, untrained bias added to the output logits (Marian's final_logits_bias)."""


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
    """Learning rate the `cosine` schedule ends at."""
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
    seed: int = 1337
    """Seed of the weight initialisation, data order and dropout."""
    max_bad_steps: int = 5
    """Abort after this many consecutive steps with a non-finite loss or gradient."""
    init_from: str = ""
    """Start from this model, run or Hugging Face directory's weights: its architecture replaces
    [model] (dropout aside) and raw-text data is tokenized with its tokenizer."""
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
    """classification: train.init_from's architecture and tokenizer, random weights (a baseline)."""
    pooling: str = ""
    """classification: `mean`, `cls` or `last` token pooling; "" picks mean for encoders, last
    for decoders."""
    classifier_dropout: float = 0.1
    """classification: dropout before the head (HF's classifier_dropout); the backbone's is
    model.dropout."""
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


@dataclass
class PrepConfig:
    """`lmforge prep`: cleaning stages and their settings (tokenizer and split come from [data])."""

    inputs: str = ""
    """Comma-separated files, folders or globs for `lmforge prep X.toml` (default: data.input)."""
    out: str = ""
    """Output shard directory for `lmforge prep X.toml`."""
    stages: str = "normalize,markup,whitespace,boilerplate,length,exact_dedup,near_dedup,pii"
    """Cleaning stages in order, comma-separated; known: normalize, markup, whitespace, boilerplate,
    length, quality, repetition, exact_dedup, near_dedup, pii, stopwords; "none" for no cleaning."""
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
    """`near_dedup` stage: MinHash LSH bands (FineWeb's 14 x 8 rows: Jaccard threshold ~0.75)."""
    near_dup_rows: int = 8
    """`near_dedup` stage: hashes per band; the threshold is about (1/bands)^(1/rows)."""
    stopwords_file: str = ""
    """Whitespace-separated stop words for the `stopwords` stage (default: a short English list)."""
    pii_kinds: str = "email,iban,card,ssn,ip,phone"
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
    """Tokens per shard file."""
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


# LoRA targets: a Hugging Face name (PEFT's target_modules) or lmforge's -> (lmforge module inside
# a block, the slices of its output rows it adapts); lmforge fuses q, k, v into one attn.qkv.
LORA_TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "q_proj": ("attn.qkv", ("q",)),
    "k_proj": ("attn.qkv", ("k",)),
    "v_proj": ("attn.qkv", ("v",)),
    "o_proj": ("attn.proj", ("all",)),
    "gate_proj": ("mlp.gate", ("all",)),
    "up_proj": ("mlp.up", ("all",)),
    "down_proj": ("mlp.down", ("all",)),
    "attn.qkv": ("attn.qkv", ("q", "k", "v")),
    "attn.proj": ("attn.proj", ("all",)),
    "mlp.gate": ("mlp.gate", ("all",)),
    "mlp.up": ("mlp.up", ("all",)),
    "mlp.down": ("mlp.down", ("all",)),
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
    o_proj, gate_proj, up_proj, down_proj) or lmforge's (attn.qkv = q, k and v; attn.proj,
    mlp.gate, mlp.up, mlp.down)."""
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


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def validate(self) -> Config:
        self.validate_model()
        m, t = self.model, self.train
        _check(
            self.data.tokenizer in ("char", "bpe"),
            f"data.tokenizer={self.data.tokenizer!r} must be 'char' or 'bpe'",
        )
        _check(0.0 < self.data.val_fraction < 1.0, "data.val_fraction must be in (0, 1)")
        _check(t.max_steps > 0 and t.batch_size > 0, "train.max_steps and train.batch_size must be > 0")
        _check(t.micro_batch_size >= 0, "train.micro_batch_size must be >= 0")
        _check(
            t.micro_batch_size == 0 or t.batch_size % t.micro_batch_size == 0,
            f"train.batch_size={t.batch_size} is not divisible by"
            f" train.micro_batch_size={t.micro_batch_size}",
        )
        _check(t.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _check(
            t.schedule in ("cosine", "linear", "constant"),
            f"train.schedule={t.schedule!r} must be cosine, linear or constant",
        )
        _check(t.dtype in ("auto", "fp32", "bf16"), f"train.dtype={t.dtype!r} must be auto, fp32 or bf16")
        _check(t.lr > 0 and 0 <= t.min_lr <= t.lr, "train.lr must be > 0 and 0 <= train.min_lr <= train.lr")
        _check(
            t.eval_interval > 0 and t.log_interval > 0 and t.checkpoint_interval > 0,
            "train.*_interval must be > 0",
        )
        _check(t.eval_batches >= 0, "train.eval_batches must be >= 0")
        for key in ("beta1", "beta2"):  # AdamW raises a bare ValueError only once the run has started
            _check(0 <= getattr(t, key) < 1, f"train.{key}={getattr(t, key)} must be in [0, 1)")
        _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
        _check(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0 (0 disables clipping)")
        _check(0 <= t.seed < 2**63, f"train.seed={t.seed} must be in [0, 2**63)")
        _check(t.keep_checkpoints >= 1, "train.keep_checkpoints must be >= 1")
        e = self.engine
        _check(
            e.name in ("local", "ddp", "fsdp", "deepspeed"),
            f"engine.name={e.name!r} must be local, ddp, fsdp or deepspeed",
        )
        _check(
            e.zero_stage in (1, 2, 3),
            f"engine.zero_stage={e.zero_stage} must be 1, 2 or 3 (stage 0 is engine.name=ddp)",
        )
        _check(e.offload in ("none", "optimizer", "all"), f"engine.offload={e.offload!r}: none|optimizer|all")
        _check(e.backend in ("auto", "gloo", "nccl"), f"engine.backend={e.backend!r}: auto|gloo|nccl")
        _check(e.timeout_s > 0, f"engine.timeout_s={e.timeout_s}: must be > 0")
        _check(
            e.offload != "all" or e.zero_stage == 3,
            "engine.offload='all' offloads parameters too, which needs engine.zero_stage=3",
        )
        _check(self.prep.split in ("hash", "tail"), f"prep.split={self.prep.split!r}: 'hash' or 'tail'")
        _check(self.prep.shard_tokens > 0, "prep.shard_tokens must be > 0")
        _check(self.prep.pii_ip in ("all", "public"), f"prep.pii_ip={self.prep.pii_ip!r}: 'all' or 'public'")
        p = self.prep
        for key in ("workers", "min_chars", "max_chars", "tokenizer_train_mb", "quality_min_words",
                    "canaries"):  # fmt: skip
            _check(getattr(p, key) >= 0, f"prep.{key}={getattr(p, key)} must be >= 0")
        for key in ("near_dup_bands", "near_dup_rows", "max_line_bytes", "canary_length"):
            _check(getattr(p, key) > 0, f"prep.{key}={getattr(p, key)} must be > 0")
        _check(self.data.task in TASKS, f"data.task={self.data.task!r} must be one of {', '.join(TASKS)}")
        _check(
            self.data.task != "classification" or bool(t.init_from),
            "data.task='classification' needs train.init_from (the model to put a head on)",
        )
        _check(
            self.data.task != "qa" or bool(t.init_from),
            "data.task='qa' needs train.init_from (the encoder to put a span head on)",
        )
        _check(self.data.doc_stride >= 0, f"data.doc_stride={self.data.doc_stride} must be >= 0")
        _check(
            self.data.task != "chat" or bool(t.init_from),
            "data.task='chat' needs train.init_from (a chat model: its weights and its chat template)",
        )
        _check(t.max_minutes >= 0 and t.epochs >= 0, "train.max_minutes and train.epochs must be >= 0")
        _check(self.data.max_len > 0, f"data.max_len={self.data.max_len} must be > 0")
        _check(
            0.0 <= t.classifier_dropout < 1.0,
            f"train.classifier_dropout={t.classifier_dropout} must be in [0, 1)",
        )
        _check(
            t.pooling in ("", "mean", "cls", "last"), f"train.pooling={t.pooling!r} must be mean, cls or last"
        )
        _check(  # train.init_from replaces [model] with the model's own (checked when it loads)
            bool(t.init_from) or (self.data.task == "translation") == (m.arch == "seq2seq"),
            f"data.task={self.data.task!r} does not fit model.arch={m.arch!r}"
            " (translation needs seq2seq, lm needs gpt)",
        )
        if not t.init_from:  # train.init_from's model replaces [model]
            check_supported(m, m.arch)
        _check(0.0 <= t.label_smoothing < 1.0, f"train.label_smoothing={t.label_smoothing} must be in [0, 1)")
        _check(t.eval_bleu_sentences >= 0, "train.eval_bleu_sentences must be >= 0")
        _check_lora(self)
        _check_privacy(self)
        return self

    def validate_model(self) -> None:
        m = self.model
        _check(
            m.n_layer > 0 and m.n_head > 0 and m.n_embd > 0, "model.n_layer, n_head and n_embd must be > 0"
        )
        _check(
            m.n_embd % m.n_head == 0, f"model.n_embd={m.n_embd} is not divisible by model.n_head={m.n_head}"
        )
        _check(m.block_size > 0, "model.block_size must be > 0")
        _check(m.vocab_size >= 0, f"model.vocab_size={m.vocab_size} must be >= 0 (0: the tokenizer's)")
        _check(0.0 <= m.dropout < 1.0, f"model.dropout={m.dropout} must be in [0, 1)")
        _check(
            m.pos in ("learned", "rope", "sinusoidal"),
            f"model.pos={m.pos!r} must be 'learned', 'rope' or 'sinusoidal'",
        )
        _check(
            m.pos != "sinusoidal" or m.arch == "seq2seq", "model.pos='sinusoidal' is for model.arch=seq2seq"
        )
        _check(
            m.mlp in ("gelu", "gelu_tanh", "swiglu", "silu"),
            f"model.mlp={m.mlp!r} must be gelu, gelu_tanh, swiglu or silu",
        )
        _check(m.pos != "rope" or (m.n_embd // m.n_head) % 2 == 0, "model.pos='rope' needs an even head size")
        _check_hf_options(m)
        _check(m.arch in ("gpt", "seq2seq"), f"model.arch={m.arch!r} must be 'gpt' or 'seq2seq'")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _check_hf_options(m: ModelConfig) -> None:
    _check(m.norm in ("layernorm", "rmsnorm"), f"model.norm={m.norm!r} must be 'layernorm' or 'rmsnorm'")
    _check(m.norm_eps > 0, f"model.norm_eps={m.norm_eps} must be > 0")
    _check(
        m.n_kv_head == 0 or (m.n_kv_head > 0 and m.n_head % m.n_kv_head == 0),
        f"model.n_kv_head={m.n_kv_head} must divide model.n_head={m.n_head}",
    )
    _check(m.rope_theta > 0, f"model.rope_theta={m.rope_theta} must be > 0")
    _check(m.mlp_hidden >= 0 and m.type_vocab_size >= 0, "model.mlp_hidden and type_vocab_size must be >= 0")


def _check_lora(c: Config) -> None:
    lo = c.lora
    _check(lo.rank >= 1, f"lora.rank={lo.rank} must be >= 1")
    _check(lo.alpha > 0, f"lora.alpha={lo.alpha} must be > 0")
    _check(0.0 <= lo.dropout < 1.0, f"lora.dropout={lo.dropout} must be in [0, 1)")
    targets = [n.strip() for n in lo.targets.split(",") if n.strip()]
    _check(bool(targets), "lora.targets is empty: name the modules to adapt (e.g. q_proj,v_proj)")
    for name in targets:
        _check(
            name in LORA_TARGETS, f"lora.targets: unknown module {name!r} (known: {', '.join(LORA_TARGETS)})"
        )
    if lo.enabled:
        _check(
            bool(c.train.init_from), "lora.enabled needs train.init_from (the base model the adapters sit on)"
        )
        _check(
            c.engine.name != "deepspeed" or c.engine.zero_stage != 3,
            "lora.enabled does not run on DeepSpeed ZeRO-3 (its frozen base is partitioned);"
            " use engine.zero_stage=1 or 2",
        )


def _check_privacy(c: Config) -> None:
    p = c.privacy
    inf = float("inf")
    _check(0 <= p.noise_multiplier < inf, f"privacy.noise_multiplier={p.noise_multiplier} must be >= 0")
    _check(0 < p.max_grad_norm < inf, f"privacy.max_grad_norm={p.max_grad_norm} must be > 0")
    _check(0 <= p.target_epsilon < inf, f"privacy.target_epsilon={p.target_epsilon} must be >= 0")
    _check(0 <= p.delta < 1, f"privacy.delta={p.delta} must be in [0, 1) (0: min(1e-5, 1/N))")
    _check(p.accountant in ("rdp", "prv"), f"privacy.accountant={p.accountant!r} must be 'rdp' or 'prv'")
    if p.enabled:
        _check(
            c.engine.name == "local",
            f"privacy.enabled runs on engine.name=local only, not {c.engine.name!r}"
            " (per-sample gradients and noise are not implemented across ranks)",
        )
        _check(
            (p.noise_multiplier > 0) != (p.target_epsilon > 0),
            "privacy.enabled needs privacy.noise_multiplier or privacy.target_epsilon (one of them, > 0)",
        )
        _check(
            c.data.task == "lm",
            f"privacy.enabled is implemented for data.task='lm' only, not {c.data.task!r}",
        )
        _check(  # torch.func raises on the saved-tensor hooks checkpointing is built on
            not c.train.activation_checkpointing,
            "train.activation_checkpointing does not combine with privacy.enabled (DP-SGD's"
            " per-example gradients come from torch.func, which cannot recompute blocks)",
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise LmforgeError(message)


def _coerce(key: str, value: Any, kind: type, source: str, from_text: bool) -> Any:
    """Convert a TOML or command-line value to the field's type, or fail naming the key."""
    if from_text and kind is not str:
        text = value.strip()
        try:
            if kind is bool:
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                return text.lower() in ("true", "1")
            return kind(text)
        except ValueError:
            raise LmforgeError(f"{source}: {key}={value!r} is not {_TYPE_NAMES[kind]}") from None
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not kind:
        raise LmforgeError(
            f"{source}: {key}={value!r} must be {_TYPE_NAMES[kind]}, not {type(value).__name__}"
        )
    return value


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}
_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _set(config: Config, dotted: str, value: Any, source: str, from_text: bool = False) -> None:
    section_name, _, key = dotted.partition(".")
    sections = {f.name for f in dataclasses.fields(Config)}
    if section_name not in sections or not key:
        raise LmforgeError(
            f"{source}: unknown config key {dotted!r} (sections: {', '.join(sorted(sections))})"
        )
    section = getattr(config, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if key not in fields:
        raise LmforgeError(
            f"{source}: unknown config key {dotted!r} (known in [{section_name}]: {', '.join(fields)})"
        )
    kind = _TYPES[str(fields[key].type)]
    setattr(section, key, _coerce(dotted, value, kind, source, from_text))


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise LmforgeError(f"{path}:{line}: not valid UTF-8 (byte {e.start} of the file)") from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Build a validated Config from an optional TOML recipe and `section.key=value` overrides."""
    config = Config()
    if path is not None:
        path = Path(path)
        try:
            raw = tomllib.loads(_read_utf8(path))
        except FileNotFoundError:
            raise LmforgeError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as e:
            raise LmforgeError(f"{path}: invalid TOML: {e}") from None
        for section_name, values in raw.items():
            if not isinstance(values, dict):
                raise LmforgeError(f"{path}: top-level key {section_name!r} must be a [section]")
            for key, value in values.items():
                _set(config, f"{section_name}.{key}", value, str(path))
    for item in overrides or []:
        dotted, eq, value = item.removeprefix("--").partition("=")
        if not eq:
            raise LmforgeError(f"override {item!r} must look like --section.key=value")
        _set(config, dotted, value, "command line", from_text=True)
    return config.validate()


# Keys a model family cannot honour: they must keep their default, or building it is an error
# (a recipe that sets them would otherwise train something other than it says).
UNSUPPORTED = {
    "gpt": ("post_norm", "final_norm", "logits_bias", "scale_embedding", "type_vocab_size"),
    "seq2seq": ("type_vocab_size",),
    "encoder": ("pos", "final_norm", "logits_bias", "scale_embedding"),
}


def check_buildable(m: ModelConfig, family: str) -> None:
    """A model of `family` (gpt, seq2seq, encoder) can be built from `m` exactly as it says: the
    vocabulary is set and no key it cannot honour differs from its default. Every model's
    constructor calls this, so a recipe, a model directory and an import meet the same check."""
    if m.vocab_size <= 0:
        raise LmforgeError("model.vocab_size must be set (the tokenizer's size) before building a model")
    check_supported(m, family)


def check_supported(m: ModelConfig, family: str) -> None:
    default = ModelConfig()
    for key in UNSUPPORTED[family]:
        value = getattr(m, key)
        if value != getattr(default, key):
            raise LmforgeError(
                f"model.{key}={value!r} is not supported by the {family} model"
                f" (it must stay {getattr(default, key)!r})"
            )


def model_config_from(raw: dict[str, Any], source: str | Path) -> ModelConfig:
    """The ModelConfig in a model directory's config.json (or a classifier's backbone entry):
    its ModelConfig keys, type-checked and validated; other keys (model_type, token ids) are the
    caller's. The one place a model directory's architecture is read."""
    config = Config()
    for f in dataclasses.fields(ModelConfig):
        if f.name in raw:
            _set(config, f"model.{f.name}", raw[f.name], str(source))
    try:
        config.validate_model()
    except LmforgeError as e:
        raise LmforgeError(f"{source}: {e}") from None
    return config.model


def config_to_toml(config: Config) -> str:
    """Serialise a Config as a TOML recipe (scalars only, so a tiny writer suffices)."""
    lines: list[str] = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
            else:
                text = repr(value)
            lines.append(f"{key} = {text}")
        lines.append("")
    return "\n".join(lines)
