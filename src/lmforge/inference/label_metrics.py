"""The figures of multi-label and regression classifiers, shared by training's validation
(train/tasks/classification.py) and `lmforge eval-classify` (inference/classify.py).

Each kind has two steps: `*_counts` turns one batch into a float64 vector of sums, which add over
batches and ranks (an all-reduce), and `*_scores` turns the total into the figures:

- multi-label, a label predicted where its sigmoid is above 0.5 (its logit above 0): micro F1
  (2TP / (2TP + FP + FN) over every (text, label) pair, sklearn's f1_score(average="micro")) and
  subset accuracy (a text counts when all its labels are right, sklearn's accuracy_score);
- regression, on the raw outputs: the mean squared error over every output (transformers'
  MSELoss) and Pearson's correlation of outputs and targets, all outputs flattened together.
"""

from __future__ import annotations

import math

import torch


def multi_label_counts(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """logits, targets (B, labels) -> [TP, FP, FN, texts with every label right, texts] (float64)."""
    predicted, gold = logits.float() > 0, targets > 0.5
    return torch.tensor(
        [
            float((predicted & gold).sum()),
            float((predicted & ~gold).sum()),
            float((~predicted & gold).sum()),
            float((predicted == gold).all(-1).sum()),
            float(len(gold)),
        ],
        dtype=torch.float64,
    )


def multi_label_scores(counts: torch.Tensor) -> dict[str, float]:
    """{"accuracy": subset accuracy, "f1": micro F1} from multi_label_counts' sums (0 with none)."""
    tp, fp, fn, exact, texts = counts.tolist()
    return {"accuracy": exact / max(texts, 1.0), "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0}


def regression_counts(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """outputs (B, outputs), targets of the same numbers ((B,) for one output) -> [n, sum x,
    sum y, sum x^2, sum y^2, sum xy, sum (x - y)^2] (float64), x the outputs, y the targets."""
    x, y = outputs.double().flatten(), targets.double().flatten()
    return torch.stack([torch.tensor(float(len(x)), dtype=torch.float64), x.sum(), y.sum(),
                        (x * x).sum(), (y * y).sum(), (x * y).sum(), ((x - y) ** 2).sum()])  # fmt: skip


def regression_scores(sums: torch.Tensor) -> dict[str, float]:
    """{"mse", "pearson"} from regression_counts' sums; Pearson is NaN where the outputs or the
    targets do not vary (as scipy's pearsonr)."""
    n, sx, sy, sxx, syy, sxy, sse = sums.tolist()
    n = max(n, 1.0)
    cov, vx, vy = sxy - sx * sy / n, sxx - sx * sx / n, syy - sy * sy / n
    pearson = cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan
    return {"mse": sse / n, "pearson": max(-1.0, min(1.0, pearson)) if pearson == pearson else pearson}
