"""The arithmetic of one model shape for `lmforge plan`: parameters, FLOPs per token and activation
bytes, from a ModelConfig alone (no tensor is built).

The shape is listed module by module as lmforge's model code builds it (model/gpt.py,
model/seq2seq.py, model/encoder.py, model/layers.py, model/lora.py, and the task heads of
model/classifier.py and model/span.py), so the parameter count equals the built model's
`sum(p.numel() for p in model.parameters())` (tied weights counted once) and the largest module
equals DeepSpeed's `largest_layer_params` (tests/test_plan.py builds both and compares). The blocks
are identical, so one block is listed (`blocks.*.`) with `repeat` = the layer count: the work is
the same for 2 layers or 10**20, and a huge shape is answered at once ("does not fit").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from lmforge.config import LORA_TARGETS, LoraConfig, ModelConfig
from lmforge.config.model_section import GATED_MLPS as GATED


@dataclass(frozen=True)
class Module:
    """One module's own parameters (not its children's)."""

    name: str
    params: int
    linear: tuple[int, int] | None = None  # (in, out) of an nn.Linear: its weight is a matmul
    shared: bool = False  # its weight is another module's (a tied output layer): counted once
    frozen: bool = False  # requires_grad off (a task model's unused pooler or lm_head): no gradient
    idle: bool = False  # never run while training (a classifier's lm_head): no FLOPs, no gradient
    repeat: int = 1  # identical copies, one per block (`blocks.*.` in the name)


@dataclass(frozen=True)
class Head:
    """What the task trains on the body: `lm` (the output layer over the vocabulary; gpt and
    seq2seq), `classification` (model/classifier.py: a linear map to `labels` on a pooled gpt or
    encoder) or `span` (model/span.py: start and end logits per token on an encoder, for QA)."""

    task: str = "lm"
    encoder: bool = False
    labels: int = 0
    frozen_body: bool = False  # classification's train.head_only: the body gets no gradients


LM = Head()


@dataclass(frozen=True)
class Counts:
    params: int  # unique parameters: the built model's numel, tied weights once
    trainable: int  # what has requires_grad (LoRA: the adapters): gradient buffers
    stepped: int  # trainable and run, so it gets a gradient: torch's AdamW keeps moments for these
    largest_module: int  # the most parameters held directly by one module (DeepSpeed's largest layer)
    flops_per_token: float  # training FLOPs per token (see flops_per_token)
    matmul_trained: int  # weights of matmuls that train (6 FLOPs each per token)
    matmul_frozen: int  # weights of frozen matmuls (4 FLOPs each: no weight gradient)
    persistent: int = 0  # in tensors of at most PERSISTENT elements, which ZeRO-3 keeps whole too


# DeepSpeed's stage3_param_persistence_threshold (its default, which lmforge keeps): ZeRO-3 keeps a
# parameter tensor this small whole on every rank, beside its partition.
PERSISTENT = 100_000


def persistent_params(m: Module, threshold: int = PERSISTENT) -> int:
    """`m`'s parameters in tensors of at most `threshold` elements (a linear's weight and bias apart;
    another module's tensors counted as one, as its norms' gain and bias are equal halves)."""
    if m.linear:
        weight = m.linear[0] * m.linear[1]
        bias = m.params - weight
        return (weight if weight <= threshold else 0) + (bias if 0 < bias <= threshold else 0)
    return m.params if m.params <= threshold else 0


def mlp_hidden(c: ModelConfig) -> int:
    if c.mlp_hidden:
        return c.mlp_hidden
    return 64 * -(-(8 * c.n_embd // 3) // 64) if c.mlp in GATED else 4 * c.n_embd


def _norm(name: str, c: ModelConfig) -> Module:
    # LayerNorm: gain + bias (when model.bias); RMSNorm: gain only
    return Module(name, c.n_embd * (2 if c.norm == "layernorm" and c.bias else 1))


def _linear(name: str, n_in: int, n_out: int, bias: bool) -> Module:
    return Module(name, n_in * n_out + (n_out if bias else 0), (n_in, n_out))


def _attention(p: str, c: ModelConfig) -> list[Module]:
    hs = c.head_size()
    rows = (c.n_head + 2 * (c.n_kv_head or c.n_head)) * hs
    norms = [Module(p + "attn.q_norm", hs), Module(p + "attn.k_norm", hs)] if c.qk_norm else []
    return [
        _linear(p + "attn.qkv", c.n_embd, rows, c.bias or c.qkv_bias),
        _linear(p + "attn.proj", c.n_head * hs, c.n_embd, c.bias),
        *norms,
    ]


def _mlp(p: str, c: ModelConfig) -> list[Module]:
    f = mlp_hidden(c)
    gate = [_linear(p + "mlp.gate", c.n_embd, f, c.bias)] if c.mlp in GATED else []
    return [*gate, _linear(p + "mlp.up", c.n_embd, f, c.bias), _linear(p + "mlp.down", f, c.n_embd, c.bias)]


def _blocks(p: str, c: ModelConfig, cross: bool) -> list[Module]:
    """The n_layer identical blocks as one block repeated (`{p}blocks.*.`)."""
    return [replace(m, repeat=c.n_layer) for m in _block(p + "blocks.*.", c, cross)]


def _block(p: str, c: ModelConfig, cross: bool) -> list[Module]:
    middle: list[Module] = []
    if cross:  # the decoder block of an encoder-decoder: cross-attention, then its own norm
        middle = [
            _linear(p + "cross.q", c.n_embd, c.n_embd, c.bias),
            _linear(p + "cross.kv", c.n_embd, 2 * c.n_embd, c.bias),
            _linear(p + "cross.proj", c.n_embd, c.n_embd, c.bias),
            _norm(p + "ln_3", c),
        ]
    sandwich = [_norm(p + "ln_attn_out", c), _norm(p + "ln_mlp_out", c)] if c.sandwich_norm else []
    return [_norm(p + "ln_1", c), *_attention(p, c), _norm(p + "ln_2", c), *middle, *_mlp(p, c), *sandwich]


def modules(c: ModelConfig, head: Head = LM) -> list[Module]:
    """Every module with parameters, as model/gpt.py, model/seq2seq.py or model/encoder.py builds
    them, with the task's head (a classifier or span model holds its body as `backbone`)."""
    if head.task == "lm":
        return _decoder(c)
    body = _encoder(c) if head.encoder else _decoder(c)
    # what the task's forward never calls, and so freezes (model/span.py, model/classifier.py): the
    # encoder's pooler, a decoder's output layer (the classifier pools hidden states; tied, it is
    # the embedding, counted once as `wte`)
    unused = "pooler" if head.encoder else "lm_head"
    body = [
        replace(
            m,
            name="backbone." + m.name,
            idle=m.name == unused,
            frozen=head.frozen_body or (m.name == unused and not m.shared),
        )
        for m in body
    ]
    if head.task == "span":
        return [*body, _linear("qa_outputs", c.n_embd, 2, True)]
    # finetune-classify's head: biased on an encoder, none on a decoder (transformers' `score`)
    return [*body, _linear("head", c.n_embd, head.labels, head.encoder)]


def _encoder(c: ModelConfig) -> list[Module]:
    """model/encoder.py: token, position (always learned) and token-type embeddings, their norm,
    the post-norm blocks (the decoder's parameters), BERT's pooler."""
    out = [Module("wte", c.vocab_size * c.n_embd), Module("wpe", c.block_size * c.n_embd)]
    if c.type_vocab_size:
        out.append(Module("wtt", c.type_vocab_size * c.n_embd))
    out.append(_norm("ln_e", c))
    out += _blocks("", c, False)
    return [*out, _linear("pooler", c.n_embd, c.n_embd, True)]


def _decoder(c: ModelConfig) -> list[Module]:
    out = [Module("wte", c.vocab_size * c.n_embd)]
    stacks = [("", False)] if c.arch == "gpt" else [("encoder.", False), ("decoder.", True)]
    for prefix, cross in stacks:
        if c.pos == "learned":
            out.append(Module(prefix + "wpe", c.block_size * c.n_embd))
        out += _blocks(prefix, c, cross)
        if c.arch == "gpt" or c.final_norm:
            out.append(_norm(prefix + "ln_f", c))
    head = _linear("lm_head", c.n_embd, c.vocab_size, False)
    out.append(Module(head.name, head.params, head.linear, shared=c.tie_embeddings))
    return out


def lora_adapters(c: ModelConfig, spec: LoraConfig, base: list[Module] | None = None) -> list[Module]:
    """The A (rank x in) and B (rows x rank) matrices model/lora.py adds on each targeted slice
    of `base` (default: the language model's modules)."""
    hs = c.head_size()
    kv = (c.n_kv_head or c.n_head) * hs
    wanted: dict[str, set[str]] = {}
    for name in (n.strip() for n in spec.targets.split(",") if n.strip()):
        for local, slices in LORA_TARGETS[name]:
            wanted.setdefault(local, set()).update(slices)
    out = []
    for m in modules(c) if base is None else base:
        local = ".".join(m.name.split(".")[-2:])  # blocks.*.attn.qkv -> attn.qkv
        if m.linear is None or local not in wanted or "blocks." not in m.name:
            continue
        n_in, n_out = m.linear
        if local == "cross.kv":  # cross-attention's k and v: halves of its rows
            rows = {"k": n_out // 2, "v": n_out // 2}
        else:
            rows = {"q": c.n_head * hs, "k": kv, "v": kv, "all": n_out}
        for s in sorted(wanted[local]):
            params = spec.rank * (n_in + rows[s])
            out.append(Module(f"{m.name}.lora.{s}", params, (n_in, rows[s]), repeat=m.repeat))
    return out


def count(
    c: ModelConfig,
    lora: LoraConfig | None = None,
    seq_len: int = 0,
    head: Head = LM,
    persistence: int = PERSISTENT,
) -> Counts:
    """Parameters, trainable parameters and FLOPs per token of model `c` with the task's `head`
    (and LoRA adapters when `lora.enabled`), at `seq_len` tokens per sequence (0: the context);
    `persistence`: ZeRO-3's threshold for tensors kept whole."""
    base = modules(c, head)
    adapters = lora_adapters(c, lora, base) if lora is not None and lora.enabled else []
    also = [n.strip() for n in lora.also_train.split(",") if n.strip()] if adapters and lora else []

    def trains(m: Module) -> int:  # copies that train: LoRA freezes all but lora.also_train's
        if adapters:
            return trained_copies(m, also)
        return 0 if m.frozen else m.repeat

    def weights(m: Module) -> int:  # one copy's matmul weights
        return m.linear[0] * m.linear[1] if m.linear else 0

    own = [m for m in base if not m.shared]
    extra = sum(m.params * m.repeat for m in adapters)
    run = [m for m in base if m.linear and not m.idle]  # the matmuls a training step computes
    trained = extra + sum(weights(m) * trains(m) for m in run)
    frozen = sum(weights(m) * (m.repeat - trains(m)) for m in run)
    return Counts(
        params=sum(m.params * m.repeat for m in own) + extra,
        trainable=extra + sum(m.params * trains(m) for m in own),
        stepped=extra + sum(m.params * trains(m) for m in own if not m.idle),
        largest_module=max(m.params for m in base),
        flops_per_token=_seq2seq_flops(c, base, trains, extra)
        if c.arch == "seq2seq"
        else flops_per_token(c, trained, frozen, seq_len),
        matmul_trained=trained,
        matmul_frozen=frozen,
        persistent=sum(persistent_params(m, persistence) * m.repeat for m in [*own, *adapters]),
    )


def trained_copies(m: Module, names: list[str]) -> int:
    """How many of `m`'s copies lie in the modules `names` (lora.also_train: `head`, `blocks`,
    `blocks.3`, `blocks.3.mlp`, ...)."""
    if "*" not in m.name:
        return m.repeat if any(m.name == n or m.name.startswith(n + ".") for n in names) else 0
    before, _, after = m.name.partition("*")  # "blocks.", ".attn.qkv"
    picked: set[int] = set()
    for n in names:
        if before.startswith(n + "."):  # `blocks` (or a parent): every block
            return m.repeat
        index, _, rest = n.removeprefix(before).partition(".") if n.startswith(before) else ("", "", "")
        inside = not rest or after[1:] == rest or after[1:].startswith(rest + ".")
        if index.isdigit() and int(index) < m.repeat and inside:  # one block, or a part of it
            picked.add(int(index))
    return len(picked)


def flops_per_token(c: ModelConfig, trained: int, frozen: int, seq_len: int = 0) -> float:
    """Training FLOPs per token as PaLM's appendix B counts them (Chowdhery et al. 2022):
    6 N + 12 L d T, where N is the weights of the matmuls (embedding lookups are free, a tied
    output layer is a matmul and counts), L the layers, d the heads' width
    (n_head x head size: n_embd but for an explicit model.head_dim) and T the sequence length
    (Kaplan et al. 2020 count the attention term as 6 L d T, forward + backward of QK^T only).
    A frozen weight (LoRA's base) costs 4, not 6: no weight gradient. lmforge's training log
    counts the same (train/report.py). An encoder-decoder passes each token through one stack:
    half the weights, and its attention term is 1.5x (self-attention in both, cross in one):
    see _seq2seq_flops."""
    t = min(seq_len or c.block_size, c.block_size)
    return 6 * trained + 4 * frozen + 12 * c.n_layer * c.n_head * c.head_size() * t


def _seq2seq_flops(c: ModelConfig, base: list[Module], trains: Callable[[Module], int], extra: int) -> float:
    """model/seq2seq.py's count, which the training log uses: 3 N + 2 N_frozen + 18 L d T, N every
    trained weight but the position tables (and the untied input embedding: only the output matmul
    costs) with `extra` adapter weights, N_frozen the frozen rest (LoRA's base)."""
    skip = ("encoder.wpe", "decoder.wpe") + (() if c.tie_embeddings else ("wte",))
    counted = [m for m in base if not m.shared and m.name not in skip]
    trained = extra + sum(m.params * trains(m) for m in counted)
    frozen = sum(m.params * (m.repeat - trains(m)) for m in counted)
    return 3 * trained + 2 * frozen + 18 * c.n_layer * c.n_embd * c.block_size


def activation_bytes(
    c: ModelConfig, tokens: int, seq_len: int, width: int, cpu: bool, head: Head = LM
) -> dict[str, int]:
    """Bytes autograd keeps for backward in one micro-batch of `tokens` tokens (sequences of
    `seq_len`), with `width` bytes per element, counted from what each op saves in lmforge's
    blocks (as Korthikanti et al. 2022, sec. 4.1, count them), and the gradients a language
    model's loss holds beside them at the start of backward:

    per token and block: the block input, both norms' inputs and outputs, q/k/v, the attention
    output (4 C + the q,k,v rows + n_head x head size; with model.qk_norm the normed q, k and
    the q,k,v rows again), and the MLP's hidden activations (2 F; SwiGLU 4 F); the
    decoder of an encoder-decoder adds its cross-attention (4 C, and 2 C per source token).
    On the route that forms the attention matrix (bmm: a `cpu`'s, and every device's with
    model.attn_softcap, model/attention.py) the attention probabilities (heads x T x T per
    sequence) are kept too: softmax's fp32 output, and under bf16 autocast the bf16 copy the
    second matmul saves (4 bytes each in fp32, 6 in bf16); GPU SDPA (flash) keeps none. Gemma 2's
    soft caps, cap * tanh(x / cap), add tanh's output in the compute dtype: model.attn_softcap
    `width` bytes per attention score, model.logit_softcap `width` per logit (the division and
    multiplication by the cap keep nothing).
    With model.dropout > 0 (the QA recipes' 0.1) each dropout keeps its mask: two per block and
    token (C each) and the embeddings' (C); on the bmm route also one per attention probability,
    and the second matmul saves the dropped probabilities. A GPU's fused dropout keeps one byte
    per element; a CPU's multiplies by a noise tensor of its input's dtype and keeps that: fp32
    for the probabilities (4 + 4 + width bytes each: measured on MiniLM, 8 x 384 in bf16, autograd
    saved 1,112 MiB, 54 MiB of noise per layer), `width` in the blocks, fp32 for the embeddings.
    The output: for a language model cross-entropy's fp32 log-softmax (4 bytes per logit), and the
    two fp32 gradients its backward holds beside it before any block's backward has freed anything
    (8 more: the step's peak; measured 12 bytes per logit in fp32 and bf16, and without them the
    plan fell 25% short of GPT-2 small's peak on an H200); for a span model (QA) two logits per
    token (`width`, then fp32 and masked); for a classifier the pooled hidden states (C per token)
    and the label logits.
    With activation checkpointing per block (train.activation_checkpointing) only each block's
    input is kept, and one block's activations are rebuilt at a time during backward, beside the
    gradients of its backward.
    """
    hs = c.head_size()
    qkv = (c.n_head + 2 * (c.n_kv_head or c.n_head)) * hs
    f = mlp_hidden(c)
    per_token = 4 * c.n_embd + c.n_head * hs + qkv + (4 if c.mlp in GATED else 2) * f
    if c.sandwich_norm:  # the two sublayer outputs' norms: their inputs and outputs
        per_token += 4 * c.n_embd
    if c.qk_norm:  # Qwen3: the normed q, k before their weights, and the heads concatenated again
        per_token += qkv + (c.n_head + (c.n_kv_head or c.n_head)) * hs
    sequences = max(tokens // max(seq_len, 1), 1)
    # a capped attention takes the bmm route on every device: the fused kernels never form the scores
    formed = cpu or c.attn_softcap > 0
    matrix = c.n_head * seq_len * seq_len * sequences if formed else 0
    # per probability (the bmm route): softmax's fp32 output, the dropout's mask (a CPU's fp32
    # noise, a GPU's byte), what the second bmm saves (a new tensor when dropped or cast to bf16;
    # in plain fp32 it is softmax's output itself), and the capped scores (tanh's output)
    dropout = c.dropout > 0
    per_probability = 4 + (4 if cpu else 1) * dropout + (width if dropout or width != 4 else 0)
    per_probability += width if c.attn_softcap else 0  # until 2026-12-07 left out
    residual_mask = (width if cpu else 1) * 2 * c.n_embd * tokens if dropout else 0
    block = per_token * tokens * width + matrix * per_probability + residual_mask
    layers = c.n_layer
    if c.arch == "seq2seq":  # the encoder's blocks on the sources, the decoder's on the targets
        cross = (4 * c.n_embd + 2 * c.n_embd) * tokens * width + matrix * per_probability
        total_blocks = layers * block + layers * (block + cross)
        biggest = block + cross
        layers *= 2
    else:
        total_blocks = layers * block
        biggest = block
    loss_backward = 0  # gradients that exist only in the loss's backward, before the blocks'
    if head.task == "span":
        out = tokens * 2 * (width + 8)
    elif head.task == "classification":
        out = tokens * c.n_embd * width + sequences * head.labels * (width + 4)
    else:  # the logits in the compute dtype are not kept: log-softmax keeps its own fp32 output
        out = tokens * c.vocab_size * (4 + (width if c.logit_softcap else 0))  # and the capped logits
        loss_backward = tokens * c.vocab_size * 8
    if head.encoder:  # the embeddings' LayerNorm input (its output is the first block's input)
        out += tokens * c.n_embd * width
    if c.dropout > 0:  # the embeddings' dropout (its input is fp32)
        out += tokens * c.n_embd * (4 if cpu else 1)
    inputs = tokens * c.n_embd * width  # each block's input, all that checkpointing keeps
    # With checkpointing the peak comes in the backward of a rebuilt block, where its activations
    # meet the gradients flowing through it: d(MLP hidden) before and after the activation (2 F;
    # SwiGLU 3 F), d(q, k, v) and the residual's (C), and on the bmm route d(probabilities) and
    # d(scores) (the compute dtype, then softmax's fp32). Left out, the plan fell 7% (55 MiB) short
    # of a local run's measured peak RSS (benchmarks/bench_plan.py --checkpointing); without
    # checkpointing the same buffers are small next to every block's activations, so not added.
    rebuilt = ((3 if c.mlp in GATED else 2) * f + qkv + c.n_embd) * tokens * width + matrix * (width + 4)
    return {
        "activations": total_blocks + out + loss_backward,
        # the loss's gradients are gone before the first block is rebuilt
        "activations_checkpointed": layers * inputs + out + max(loss_backward, biggest + rebuilt),
        "loss_backward": loss_backward,  # the two moments' own parts, for buffers that meet only one
        "rebuilt": biggest + rebuilt,
    }


def position_tables(m: ModelConfig) -> int:
    """Bytes of the model's fixed position tables, fp32 buffers: rotary cos and sin (block_size x
    head size each, one per stack) or seq2seq's sinusoids (block_size x n_embd per stack)."""
    stacks = 2 if m.arch == "seq2seq" else 1
    if m.pos == "rope":
        return stacks * 2 * 4 * m.block_size * m.head_size()
    return stacks * 4 * m.block_size * m.n_embd if m.pos == "sinusoidal" else 0
