"""The served models, loaded once at start and looked up by id (the directory's name). A request
names a model by id only; no path from a request is ever opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.autotune import to_inference_dtype
from lmforge.inference.chat import ChatSpec
from lmforge.inference.compile_choice import rows_through_step, step_for_serving
from lmforge.model.classifier import Classifier
from lmforge.model.encoder import Encoder
from lmforge.model.gpt import GPT
from lmforge.model.kinds import describe
from lmforge.model.seq2seq import Seq2Seq
from lmforge.model.span import SpanModel
from lmforge.tokenization.tokenizer import Tokenizer

KINDS = {
    GPT: "text-generation",
    Seq2Seq: "translation",
    Classifier: "text-classification",
    SpanModel: "question-answering",
    Encoder: "feature-extraction",  # sentence embeddings: POST /v1/embeddings
}


@dataclass
class ServedModel:
    id: str
    directory: Path
    kind: str  # text-generation, translation, text-classification, question-answering, feature-extraction
    net: torch.nn.Module
    tokenizer: Tokenizer
    chat: ChatSpec | None = None  # text-generation models with a chat template
    pipeline: Any = None  # the other tasks: lmforge's pipeline object (embeddings: the Embedder)
    step: Any = None  # text generation: the compiled step a lone request decodes through, if any
    step_rows: int = 1  # the most rows that decode one at a time through it (compile_choice)
    decoding: str = ""  # text generation: its dtype and how it decodes, said at start

    @property
    def context(self) -> int:
        """The most tokens a request may give (an embedder's: the length it cuts texts to)."""
        if self.kind == "feature-extraction":
            return int(self.pipeline.context)
        return int(self.net.config.block_size)

    def card(self, created: int) -> dict[str, Any]:
        """The /v1/models entry: OpenAI's fields, and what the model can do."""
        return {"id": self.id, "object": "model", "created": created, "owned_by": "lmforge",
                "task": self.kind, "chat": self.chat is not None, "context_length": self.context}  # fmt: skip


def load_one(path: str | Path, dtype: str, compile: bool | str = False) -> ServedModel:
    directory = resolve_model_dir(path)
    net, tokenizer = load_model(directory)
    kind = next((k for cls, k in KINDS.items() if isinstance(net, cls)), None)
    if kind is None:
        raise LmforgeError(f"{path}: {describe(net)}, which serve does not know how to serve")
    served = ServedModel(model_id(path), directory, kind, net, tokenizer)
    if isinstance(net, GPT):
        served.net = to_inference_dtype(net, dtype)[0]
        # LongRoPE (Phi-3.5, Phi-4-mini): rows decode in caches they keep, which a switch of tables at
        # the original context would make stale; vLLM takes the long factors at every length instead
        long = served.net.config.block_size > served.net.config.rope_original_context
        long_rope = long and served.net.rotate_long_throughout()
        spec = ChatSpec.read(directory, tokenizer)
        served.chat = spec if spec.has_template() else None
        served.step, said = step_for_serving(served.net, compile)
        if served.step is not None:
            served.step_rows = rows_through_step(served.net)
            said += f"; so do up to {served.step_rows} rows at once, one by one" * (served.step_rows > 1)
        served.decoding = f"{str(served.net.wte.weight.dtype).removeprefix('torch.')}, {said}"
        served.decoding += "; LongRoPE's long factors at every length, as vLLM" * long_rope
        if served.net.wte.weight.dtype == torch.bfloat16:  # bf16 products round by the batch's shape
            served.decoding += "; in bf16 a reply can change with what else decodes (--dtype fp32 keeps it)"
    elif isinstance(net, Seq2Seq):  # the pipeline loads its own copy: call shapes stay the pipeline's
        from lmforge.pipelines.translation import TranslationPipeline

        served.pipeline = TranslationPipeline(directory, dtype=dtype)
        served.pipeline.truncate_option = '"truncation": true'  # the request's field, not the keyword
        served.net = served.pipeline.model
    elif isinstance(net, Classifier):
        from lmforge.pipelines.text_classification import TextClassificationPipeline

        served.pipeline = TextClassificationPipeline(directory)
        served.net = served.pipeline.model
    elif isinstance(net, Encoder):  # texts cut where sentence-transformers cuts them, not at 256 for all
        from lmforge.inference.embeddings import Embedder

        served.pipeline = Embedder(directory, max_length=None)
        served.net = served.pipeline.net
    else:
        from lmforge.pipelines.question_answering import QuestionAnsweringPipeline

        served.pipeline = QuestionAnsweringPipeline(directory)
        served.net = served.pipeline.model
    return served


def load_models(
    paths: list[str | Path], dtype: str = "auto", compile: bool | str = False
) -> dict[str, ServedModel]:
    """id -> model for every directory; two directories with the same name are an error. compile:
    text generation's compiled step (compile_choice.step_for_serving)."""
    if not paths:
        raise LmforgeError("serve: give at least one model directory")
    seen: dict[str, Path] = {}  # checked before any model loads (and compiles: a minute each)
    for path in paths:
        name, directory = model_id(path), resolve_model_dir(path)
        if name in seen and directory.resolve() == seen[name].resolve():
            raise LmforgeError(f"{path}: given twice (as {seen[name]}); serve each model once")
        if name in seen:
            raise LmforgeError(
                f"{path}: its id {name!r} is already taken by {seen[name]}; serve directories with"
                " different names"
            )
        seen[name] = directory
    return {model_id(path): load_one(path, dtype, compile) for path in paths}


def model_id(path: str | Path) -> str:
    """A served model's id: its folder's name."""
    return Path(path).resolve().name or str(path)
