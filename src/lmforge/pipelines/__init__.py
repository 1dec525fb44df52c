"""`pipeline(task, model=...)`: the applications, with Hugging Face's call and output shapes.

    >>> from lmforge import pipeline
    >>> pipeline("text-generation", model="runs/demo")("ROMEO:", max_new_tokens=20)
    [{'generated_text': 'ROMEO: ...'}]

Each task is one module of this package; TASKS maps a task name to "module:Class", imported only
when that task is asked for. Unknown keywords, to pipeline() or to a call, are errors naming them
(as transformers' generate does), and every value is checked by inference/options.py.
"""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

from lmforge.errors import LmforgeError
from lmforge.inference.options import check_keywords

TASKS: dict[str, str] = {
    "text-generation": "lmforge.pipelines.text_generation:TextGenerationPipeline",
    "text-classification": "lmforge.pipelines.text_classification:TextClassificationPipeline",
    "translation": "lmforge.pipelines.translation:TranslationPipeline",
    "question-answering": "lmforge.pipelines.question_answering:QuestionAnsweringPipeline",
    "feature-extraction": "lmforge.pipelines.feature_extraction:FeatureExtractionPipeline",
}

ALIASES = {"sentiment-analysis": "text-classification"}  # transformers' other names for a task

# transformers' task name for a direction: translation_XX_to_YY (its languages go to the pipeline)
DIRECTION = re.compile(r"translation_([^_\s]+)_to_([^_\s]+)")


def pipeline(task: str | None = None, model: str | Path | None = None, **kwargs: Any) -> Any:
    """Build the pipeline for `task` around a model, run or checkpoint directory."""
    if task is None or model is None:  # transformers would fetch a default model from its hub
        raise LmforgeError(
            "pipeline(task, model=DIR): give both the task and a model directory (a run, a checkpoint,"
            " an lmforge or Hugging Face model folder); lmforge downloads no default model"
        )
    if not isinstance(task, str):
        raise LmforgeError(f"pipeline(task={task!r}): the task is a name, such as 'text-generation'")
    if not isinstance(model, str | Path):
        raise LmforgeError(f"pipeline({task!r}, model={model!r}): give the model as a directory path")
    task = ALIASES.get(task, task)
    direction = DIRECTION.fullmatch(task)
    if direction:  # as transformers: translation_en_to_fr is translation with src_lang, tgt_lang
        for key, lang in zip(("src_lang", "tgt_lang"), direction.groups(), strict=True):
            if kwargs.get(key) is None:  # None: not given
                kwargs[key] = lang
            if kwargs[key] != lang:
                raise LmforgeError(f"pipeline({task!r}, {key}={kwargs[key]!r}): two {key}s; give one")
        task = "translation"
    if task not in TASKS:
        known = ", ".join(sorted([*TASKS, *ALIASES, "translation_XX_to_YY"]))
        raise LmforgeError(f"unknown pipeline task {task!r} (known: {known})")
    module, name = TASKS[task].split(":")
    cls = getattr(importlib.import_module(module), name)
    accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
    kwargs = _as_transformers_says(task, kwargs, accepted)
    # a call's keyword given here is every call's default, as transformers' pipeline() takes them
    # (pipeline("translation", model=..., num_beams=2)); refused until 2026-12-08. Checked at the call.
    params = list(inspect.signature(cls.__call__).parameters.values())[2:]  # past self and the input
    called = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
              and p.name not in ("question", "context")]  # fmt: skip  # inputs, not options
    check_keywords(kwargs, [*accepted, *called], f"pipeline({task!r})")  # a one-line error, not a TypeError
    pipe = cls(model, **{k: v for k, v in kwargs.items() if k in accepted})
    pipe.call_defaults = {k: v for k, v in kwargs.items() if k not in accepted}
    return pipe


TORCH_DTYPES = {"float32": "fp32", "bfloat16": "bf16"}  # torch.float32 or "float32" -> lmforge's name


def _as_transformers_says(task: str, kwargs: dict[str, Any], accepted: list[str]) -> dict[str, Any]:
    """transformers' device and dtype keywords in lmforge's terms: the CPU (device="cpu", -1,
    torch.device("cpu")) is where every pipeline runs, so it is taken and dropped, another device
    is one line; torch_dtype (transformers' older name) is dtype, and a torch dtype its name."""
    kwargs = dict(kwargs)
    if "device" in kwargs:
        device = kwargs.pop("device")
        if device is not None and device != -1 and str(device).split(":")[0] != "cpu":  # cpu:0 too
            raise LmforgeError(
                f"pipeline({task!r}, device={device!r}): lmforge's pipelines run on the CPU;"
                " give device='cpu' or leave it out"
            )
    if "torch_dtype" in kwargs:
        if "dtype" in kwargs:
            raise LmforgeError(
                f"pipeline({task!r}): dtype and torch_dtype (its older name) both given; give one"
            )
        kwargs["dtype"] = kwargs.pop("torch_dtype")
    dtype = kwargs.get("dtype")
    if "dtype" in accepted and dtype is not None and (not isinstance(dtype, str) or dtype in TORCH_DTYPES):
        name = str(dtype).removeprefix("torch.")
        if name not in TORCH_DTYPES:
            raise LmforgeError(
                f"pipeline({task!r}, dtype={dtype}): lmforge computes in fp32 or bf16"
                " (torch.float32, torch.bfloat16, or 'fp32', 'bf16', 'auto')"
            )
        kwargs["dtype"] = TORCH_DTYPES[name]
    return kwargs
