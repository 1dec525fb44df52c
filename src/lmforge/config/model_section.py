"""The [model] section: the architecture a model is built with, each key with its type, default
and docstring (docs/config.md is generated from these, config_doc.py; the checks of its values
are model_checks.py's)."""

from __future__ import annotations

from dataclasses import dataclass, field

GATED_MLPS = ("swiglu", "geglu_tanh")  # model.mlp kinds with a gate projection beside the up one


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
    """`gelu` (exact), `gelu_tanh` (GPT-2's tanh approximation), `swiglu` (Llama), `geglu_tanh` (a
    gated MLP as SwiGLU with GELU's tanh approximation on the gate: Gemma's) or `silu` (a plain MLP
    with SiLU, Marian's "swish")."""
    tie_embeddings: bool = True
    """The output layer shares the token embedding's weights."""
    # Options the Hugging Face families need (model/hf.py); the defaults are lmforge's own GPT.
    norm: str = "layernorm"
    """`layernorm` (GPT-2, BERT) or `rmsnorm` (Llama, Mistral, Qwen2, Qwen3)."""
    norm_eps: float = 1e-5
    """Epsilon added inside the norm layers."""
    n_kv_head: int = 0
    """Key/value heads for grouped-query attention; 0 means n_head (plain multi-head attention)."""
    qkv_bias: bool = False
    """Bias on the q, k, v projections even when `bias` is false (Qwen2)."""
    head_dim: int = 0
    """Size of each attention head; 0 means n_embd / n_head (Qwen3's is larger)."""
    qk_norm: bool = False
    """RMSNorm over each query and key head before the rotary positions (Qwen3, Gemma 3)."""
    norm_unit_offset: bool = False
    """RMSNorm weights stored as offsets from 1: every RMSNorm (q/k norms included) scales by
    (1 + weight), computed in fp32 and cast to the input's dtype after (Gemma); new weights start at 0."""
    sandwich_norm: bool = False
    """Decoder: a norm on each sublayer's output too, before the residual add: x + ln(attn(ln(x))),
    then x + ln(mlp(ln(x))), four norms a block (Gemma 2 and 3)."""
    attn_scale_dim: int = 0
    """Attention scores divided by sqrt(this) rather than sqrt(the head size) (Gemma's
    query_pre_attn_scalar); 0: the head size."""
    attn_softcap: float = 0.0
    """Decoder: attention scores capped softly before the mask and softmax, cap * tanh(score /
    cap) (Gemma 2's attn_logit_softcapping, 50); the attention then takes a route that forms the
    scores (never the fused kernel). 0: uncapped."""
    logit_softcap: float = 0.0
    """Decoder: the output logits capped softly, cap * tanh(logit / cap), for decoding and for the
    training loss alike (Gemma 2's final_logit_softcapping, 30). 0: uncapped."""
    sliding_window: int = 0
    """Decoder: each sliding-window layer's query attends itself and the sliding_window - 1 tokens
    before it (Gemma 3's local layers); 0: every layer attends the whole context."""
    sliding_window_pattern: int = 0
    """With sliding_window: every Nth layer (the Nth, 2Nth, ...) attends the whole context and the
    others slide (Gemma 3: 6); 0: every layer slides."""
    nope_interval: int = 0
    """Decoder with pos='rope': every Nth layer (the Nth, 2Nth, ...) has no positional encoding at
    all (NoPE: its queries and keys are not rotated; SmolLM3: 4, its no_rope_layer_interval); 1:
    no layer rotates; 0: every layer does."""
    rope_theta: float = 10000.0
    """Rotary base frequency."""
    rope_local_theta: float = 0.0
    """With sliding_window: the sliding-window layers' rotary base, without scaling (rope_type
    applies to the full-attention layers; Gemma 3's rope_local_base_freq); 0: they rotate as the others."""
    rope_partial_factor: float = 1.0
    """With pos='rope': the share of each head's dimensions that rotate: the first
    int(head size x this) turn, the rest pass through unrotated (Phi-4-mini: 0.75; transformers'
    partial_rotary_factor); 1: all of them."""
    rope_type: str = "default"
    """Rotary frequencies `default`, or scaled to a longer context than trained at: `linear` (all
    divided by rope_factor), `llama3` (Llama 3.1-3.3's: the long wavelengths divided by rope_factor,
    the short kept, those between interpolated), `yarn` (YaRN: Qwen2.5's and Qwen3's long
    contexts; the dimensions turning slowly over rope_original_context divided by rope_factor, the
    fast ones kept, a ramp between, and the attention scaled), `longrope` (LongRoPE: Phi-3-128k,
    Phi-3.5, Phi-4-mini; each frequency divided by its rope_short_factor entry while a sequence
    is at most rope_original_context long, by its rope_long_factor entry past it, and the
    attention scaled), or `dynamic` (dynamic NTK, transformers' "dynamic": plain up to
    rope_original_context, past it a base that grows with each new length; model/rope_scaling.py)."""
    rope_factor: float = 1.0
    """Scaled rotary (rope_type linear, llama3, yarn or dynamic): the factor the context was stretched by."""
    rope_low_freq_factor: float = 1.0
    """rope_type llama3: wavelengths over rope_original_context / this are divided by rope_factor."""
    rope_high_freq_factor: float = 4.0
    """rope_type llama3: wavelengths under rope_original_context / this are kept."""
    rope_original_context: int = 8192
    """rope_type llama3, yarn, longrope or dynamic: the context the model was first trained at
    (dynamic: transformers' max_position_embeddings, past which its base grows)."""
    rope_attention_factor: float = 0.0
    """rope_type yarn or longrope: what the rotary cos and sin are multiplied by (transformers'
    attention_factor); 0: YaRN's 0.1 ln(rope_factor) + 1, LongRoPE's
    sqrt(1 + ln(rope_factor) / ln(rope_original_context)) (1 where rope_factor <= 1)."""
    rope_short_factor: list[float] = field(default_factory=list)
    """rope_type longrope: one divisor per rotary frequency (half the rotated dimensions), used
    while a sequence is at most rope_original_context tokens long."""
    rope_long_factor: list[float] = field(default_factory=list)
    """rope_type longrope: one divisor per rotary frequency, used once a sequence is longer than
    rope_original_context (the whole sequence then rotates with them)."""
    rope_beta_fast: float = 32.0
    """rope_type yarn: dimensions turning more than this many times over rope_original_context are
    kept (transformers' beta_fast)."""
    rope_beta_slow: float = 1.0
    """rope_type yarn: dimensions turning fewer than this many times over rope_original_context are
    divided by rope_factor (transformers' beta_slow)."""
    rope_truncate: bool = True
    """rope_type yarn: round the ramp's ends out to whole dimensions (transformers' truncate)."""
    mlp_hidden: int = 0
    """MLP hidden width; 0 means 4 x n_embd (gelu) or 8/3 x n_embd rounded up to 64 (swiglu)."""
    type_vocab_size: int = 0
    """Encoder only: token type (segment) embeddings, as BERT's; 0 for none."""
    scale_embedding: bool = False
    """Multiply token embeddings by sqrt(n_embd) (Vaswani et al.; Marian), so that with tied weights
    the embedding is not drowned by the position signal. A decoder (Gemma) multiplies by the
    factor rounded to its weights' dtype, as transformers' Gemma does; seq2seq by the exact factor."""
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

    def head_size(self) -> int:
        return self.head_dim or self.n_embd // self.n_head

    def rotary_dims(self) -> int:
        """The dimensions of each head that rotate (rope_partial_factor): the first ones."""
        hs = self.head_size()
        return hs if self.rope_partial_factor == 1.0 else int(hs * self.rope_partial_factor)

    def layer_window(self, layer: int) -> int:
        """The tokens layer `layer` (from 0) attends back over, itself included; 0: the whole context."""
        pattern = self.sliding_window_pattern
        full = pattern > 0 and (layer + 1) % pattern == 0
        return 0 if full else self.sliding_window

    def layer_nope(self, layer: int) -> bool:
        """Whether layer `layer` (from 0) has no rotary positions (nope_interval)."""
        return self.nope_interval > 0 and (layer + 1) % self.nope_interval == 0
