"""`lmforge export` (`--format hf`): write an lmforge model directory in Hugging Face's layout, which
`transformers.from_pretrained` loads: its config.json, model.safetensors, tokenizer files and, for a
decoder, its chat template and generation defaults; for an encoder-decoder, generation_config.json
with Marian's decoding settings. What may already be at `--out` is hf_files.py's owner check.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.formats.chat_files import read_chat_templates, read_generation_config, write_chat_files
from lmforge.formats.directory import load_model, read_config_json, resolve_model_dir, write_safetensors
from lmforge.formats.hf import export_family
from lmforge.formats.hf_convert import lmforge_to_hf
from lmforge.formats.hf_decoder_heads import score_state_to_hf
from lmforge.formats.hf_files import earlier_output
from lmforge.formats.hf_heads import DROPOUT_KEYS, classifier_state_to_hf
from lmforge.formats.hf_qa import span_state_to_hf
from lmforge.formats.hf_tokenizer_options import prefix_space
from lmforge.formats.hf_tokenizers import tokenizer_sides
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.outputs import staged_folder
from lmforge.tokenization.marian import MarianTokenizer
from lmforge.tokenization.tokenizer import Tokenizer


def export_hf(model_path: str | Path, out: str | Path) -> Path:
    """`lmforge export`: write a run, checkpoint or model directory in HF's layout (see the module
    doc for what may already be at `out`)."""
    source = resolve_model_dir(model_path)
    if (source / "lora.json").is_file():  # a LoRA run: its adapter in PEFT's layout (formats/peft.py)
        from lmforge.formats.peft import export_peft

        return export_peft(source, out)
    owner = earlier_output("export", hf=True)
    with staged_folder(out, inputs=[source], owner=owner, overwrite=None, verb="export", mark=True) as tmp:
        export_into(tmp, model_path)
    return Path(out)


def export_into(out: Path, model_path: str | Path) -> None:
    model, tokenizer = load_model(model_path)
    source = resolve_model_dir(model_path)
    if not isinstance(model, GPT | Encoder | Seq2Seq | SpanModel | Classifier):
        raise LmforgeError(
            f"{model_path}: only decoder, encoder, encoder-decoder, question-answering and"
            f" classifier models export to HF ({type(model).__name__})"
        )
    config = model.config
    kind = "gpt" if isinstance(model, GPT) else "seq2seq" if isinstance(model, Seq2Seq) else "encoder"
    if isinstance(model, Classifier) and not model.encoder:
        kind = "gpt"  # ...ForSequenceClassification of the decoder's family (formats/hf_decoder_heads.py)
    model_type, family = export_family(config, kind)
    body = family.config_out(config)  # raises, before anything is written, if there is no HF equivalent
    labels: dict[str, Any] = {}
    if isinstance(model, SpanModel):  # Bert/DistilBertForQuestionAnswering (formats/hf_qa.py)
        state, architecture = span_state_to_hf(model, family)
    elif isinstance(model, Classifier):  # Bert/DistilBert/GPT2/Llama/...ForSequenceClassification
        to_hf = classifier_state_to_hf if model.encoder else score_state_to_hf
        try:
            state, architecture = to_hf(model, model_type, family)
        except LmforgeError as err:
            raise LmforgeError(f"{model_path}: {err}") from None
        labels = {  # transformers' num_labels is id2label's length: one for a reward model
            "id2label": dict(enumerate(model.labels)),
            "label2id": {label: i for i, label in enumerate(model.labels)},
            # how its pipeline reads the outputs (model/classifier.py's function); none: by their number
            **({"problem_type": model.problem_type} if model.problem_type else {}),
            # the dropout before the label layer, where transformers' class reads one (hf_heads.py)
            **({DROPOUT_KEYS[model_type]: model.drop.p} if model.encoder else {}),
        }
    else:
        state = lmforge_to_hf(family, config, {k: v.float() for k, v in model.state_dict().items()})
        architecture = family.architecture
    write_safetensors(state, out / "model.safetensors", {"format": "pt"})
    raw = read_config_json(source)
    specials = _seq2seq_ids(model, tokenizer) if isinstance(model, Seq2Seq) else _special_ids(tokenizer, raw)
    if isinstance(model, Classifier) and not model.encoder:
        # transformers' decoder classifiers skip trailing pad_token_id: the id the classifier pools by
        # and no other (an invented one, its EOS, changed the logits of a text ending in it); with
        # none (a classifier trained before lmforge gave them one, train/tasks/classification_head.py),
        # transformers reads the last position, and batches one text at a time
        specials["pad_token_id"] = model.pad_id
    hf_config = {
        "architectures": [architecture],
        "model_type": model_type,
        **body,
        **specials,
        **labels,
        "torch_dtype": "float32",
    }
    hf_config["model_type"] = model_type
    (out / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
    if isinstance(model, Seq2Seq):
        _write_seq2seq_files(out, model, tokenizer, specials)
        return
    tokenizer.save(out / "tokenizer.json")
    named = {**_tokenizer_config(tokenizer, config, specials), **tokenizer_sides(source)}
    if isinstance(model, Classifier) and not model.encoder:  # its pad after the text, as lmforge's:
        named["padding_side"] = "right"  # GPT-2's learned positions then match (left shifts them)
    (out / "tokenizer_config.json").write_text(json.dumps(named, indent=2) + "\n")
    if kind == "gpt":  # the source's chat template and generation defaults (eos may be a list) win
        generation = {k: v for k, v in specials.items() if v is not None}
        write_chat_files(out, read_chat_templates(source), {**generation, **read_generation_config(source)})


def _seq2seq_ids(model: Seq2Seq, tokenizer: Tokenizer | MarianTokenizer) -> dict[str, int | None]:
    eos = tokenizer.eos_id
    start = eos if model.start_id is None else model.start_id
    return {
        "pad_token_id": model.pad_id,
        "eos_token_id": eos,
        "forced_eos_token_id": eos,
        "decoder_start_token_id": start,
        "bos_token_id": None,
    }


def _write_seq2seq_files(
    out: Path, model: Seq2Seq, tokenizer: Tokenizer | MarianTokenizer, specials: dict[str, int | None]
) -> None:
    """The tokenizer's files and generation_config.json: never generate the suppressed tokens, and,
    as Marian masks them before the softmax, renormalize (so beam scores match lmforge's)."""
    if isinstance(tokenizer, MarianTokenizer):
        tokenizer.save_dir(out)
    else:
        (out / "tokenizer.json").write_text(_with_source_eos(tokenizer), encoding="utf-8")
        (out / "tokenizer_config.json").write_text(
            json.dumps(_tokenizer_config(tokenizer, model.config), indent=2) + "\n"
        )
    generation: dict[str, Any] = {k: v for k, v in specials.items() if v is not None}
    generation["max_length"] = model.config.block_size
    if model.suppress_ids:
        generation.update(bad_words_ids=[[i] for i in model.suppress_ids], renormalize_logits=True)
    if model.num_beams != 1:
        generation["num_beams"] = model.num_beams
    generation["early_stopping"] = model.early_stopping  # transformers' default is False, lmforge's True
    if model.repetition_penalty != 1.0:
        generation["repetition_penalty"] = model.repetition_penalty
    if model.no_repeat_ngram_size:
        generation["no_repeat_ngram_size"] = model.no_repeat_ngram_size
    if model.length_penalty != 1.0:
        generation["length_penalty"] = model.length_penalty
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")


def _with_source_eos(tokenizer: Tokenizer) -> str:
    """tokenizer.json whose post-processor ends each text with EOS, as lmforge's encoder reads a
    source (`encode_sources`) and Marian's tokenizer writes one: without it, transformers' `tok(text)`
    fed an exported model other ids than lmforge (until 2026-12-07). lmforge's own encoding adds no
    special tokens, so it reads the file as before."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import processors

    hf = HFTokenizer.from_str(tokenizer.hf.to_str())
    if tokenizer.eos_id is None:  # no EOS to end a source with (lmforge's translation refuses it)
        return hf.to_str(pretty=True)
    eos = hf.id_to_token(tokenizer.eos_id)
    ends = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, tokenizer.eos_id)]
    )
    hf.post_processor = ends if hf.post_processor is None else processors.Sequence([hf.post_processor, ends])
    return hf.to_str(pretty=True)


def _special_ids(tokenizer: Tokenizer, raw: dict[str, Any]) -> dict[str, int | None]:
    """BOS is the EOS, as GPT-2's, unless config.json names its own BOS / padding (imported models,
    and classifiers trained on them); padding is else the tokenizer's <|pad|>, BERT's [PAD] or
    RoBERTa's <pad>, the token tokenizer_config.json names."""
    bos, pad = raw.get("bos_token_id"), raw.get("pad_token_id")
    pads = (tokenizer.pad_id, *(tokenizer.hf.token_to_id(t) for t in ("[PAD]", "<pad>")))  # BERT's, RoBERTa's
    fallback = next((i for i in pads if i is not None), None)
    return {
        "bos_token_id": bos if isinstance(bos, int) else tokenizer.eos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": pad if isinstance(pad, int) else fallback,
    }


def _tokenizer_config(
    tokenizer: Tokenizer, config: Any, specials: dict[str, int | None] | None = None
) -> dict[str, Any]:
    ids = specials or {"eos_token_id": tokenizer.eos_id, "bos_token_id": tokenizer.eos_id}
    pad = ids.get("pad_token_id", tokenizer.pad_id)
    names = {"eos_token": ids["eos_token_id"], "bos_token": ids["bos_token_id"], "pad_token": pad}
    out: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": config.block_size,
    }
    if getattr(config, "type_vocab_size", 0) < 2:  # transformers 4's PreTrainedTokenizerFast returns
        out["model_input_names"] = ["input_ids", "attention_mask"]  # token_type_ids by default, which
        # DistilBERT's forward refuses (`model(**tokenizer(text))` was a TypeError)
    else:  # and transformers 5's none: a BERT cross-encoder read a pair's second text as type 0
        out["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    if prefix_space(tokenizer.hf):  # transformers 5 builds Qwen2's tokenizer from this over tokenizer.json
        out["add_prefix_space"] = True
    out.update({k: tokenizer.hf.id_to_token(i) for k, i in names.items() if i is not None})
    out.update({k: v for k, v in tokenizer.encoder_specials().items() if k not in out})
    # BERT's names, else RoBERTa's: transformers' QA pipeline keeps cls_token answerable (the null answer)
    for key, tokens in (
        ("cls_token", ("[CLS]", "<s>")),
        ("sep_token", ("[SEP]", "</s>")),
        ("mask_token", ("[MASK]", "<mask>")),
        ("unk_token", ("[UNK]", "<unk>")),
        ("pad_token", ("[PAD]", "<pad>")),
    ):
        found = next((t for t in tokens if tokenizer.hf.token_to_id(t) is not None), None)
        if found is not None and key not in out:  # never another pad than config.json's id
            out[key] = found
    return out
