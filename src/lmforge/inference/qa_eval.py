"""`lmforge eval-qa`: exact match and F1 of an extractive QA model on a SQuAD v1.1/v2.0 file.

Every question of the file is answered as the question-answering pipeline answers it
(inference/qa.py: windows with a doc stride, the best span, words kept whole), and scored by
inference/squad_metric.py exactly as the official evaluation scripts score it. On a v2.0 file the
null answer is allowed (`handle_impossible_answer`) unless told otherwise. `out` writes the
predictions as the official scripts read them: {question id: answer text}. `baseline` scores a
baseline that needs no model instead (inference/qa_baseline.py: the SQuAD paper's sliding window).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from lmforge.data.qa_squad import load_squad_json, read_squad
from lmforge.errors import LmforgeError
from lmforge.formats.directory import load_model, resolve_model_dir
from lmforge.inference.qa import QAOptions, answer_questions, check_qa_options, window_sizes
from lmforge.inference.qa_baseline import BASELINES, sliding_window_answer
from lmforge.inference.squad_metric import check_dataset, dataset_version, squad_scores
from lmforge.inference.translate import check_out
from lmforge.model.kinds import describe
from lmforge.model.span import SpanModel
from lmforge.outputs import write_file


def eval_qa(
    model: str | Path | None = None,
    data: str | Path | None = None,
    max_answer_len: int = 15,
    max_seq_len: int | None = None,
    doc_stride: int | None = None,
    handle_impossible_answer: bool | None = None,
    batch_size: int = 32,
    out: str | Path | None = None,
    baseline: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Answer every question of the SQuAD file `data` with the QA model and score the answers:
    {"exact", "f1", "total", ...} in percent, as the official v1.1/v2.0 scripts report them.
    handle_impossible_answer: allow the empty answer (default: when the file is SQuAD v2.0).
    baseline: "sliding-window" answers with the SQuAD paper's word-overlap baseline, no model."""
    if data is None:
        raise LmforgeError("eval-qa needs data (--data FILE: a SQuAD v1.1/v2.0 JSON file)")
    if (model is None) == (baseline is None):
        both = ", not both" if model is not None else ""
        raise LmforgeError(f"eval-qa needs a model or --baseline {BASELINES[0]}{both}")
    if baseline is not None and baseline not in BASELINES:
        raise LmforgeError(f"baseline={baseline!r}: not one of {', '.join(BASELINES)}")
    out_file = check_out(out, {"data": data}, overwrite, model) if out is not None else None
    raw = load_squad_json(data)
    version = dataset_version(raw, str(data))
    check_dataset(raw, version, str(data))  # a duplicate id or a v1.1 question with no gold, before work
    if handle_impossible_answer is None:
        handle_impossible_answer = version == "v2.0"
    options = QAOptions(
        1, max_answer_len, handle_impossible_answer, max_seq_len, doc_stride, True, batch_size
    )
    check_qa_options(options)
    examples = read_squad(data, keep_unanswered=True).examples
    started = time.perf_counter()
    settings: dict[str, Any] = {}  # what the answers were read with, so that a figure can be rerun
    if model is None:  # the baseline never abstains, whatever handle_impossible_answer says
        predictions = {e.id: sliding_window_answer(e.question, e.context) for e in examples}
        handle_impossible_answer = False
    else:
        net, tokenizer = load_model(model)
        if not isinstance(net, SpanModel):
            raise LmforgeError(f"{model}: {describe(net)}, not a question-answering model")
        max_seq_len, doc_stride = window_sizes(net, options)  # one line if the model cannot run them
        settings = {"max_answer_len": max_answer_len, "max_seq_len": max_seq_len, "doc_stride": doc_stride,
                    "batch_size": batch_size}  # fmt: skip
        answers = answer_questions(net, tokenizer, [(e.question, e.context) for e in examples], options)
        predictions = {e.id: (a[0]["answer"] if a else "") for e, a in zip(examples, answers, strict=True)}
    result: dict[str, Any] = {
        "model": str(resolve_model_dir(model)) if model is not None else f"{baseline} baseline",
        "data": str(data),
        **squad_scores(predictions, raw, version=version, source=str(data)),
        "handle_impossible_answer": handle_impossible_answer,
        **settings,
        "seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
    }
    if out_file is not None:
        result["predictions"] = str(out_file)
        write_file(out_file, json.dumps(predictions, indent=1, ensure_ascii=False) + "\n")
    return result
