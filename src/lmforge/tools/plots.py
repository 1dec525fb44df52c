"""The PNGs of `inspect`: every layer x head of an attention map as one grid, and the logit lens as a
heat map (layers x positions, coloured by the probability of the token that comes next)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lmforge.tools.lens import LogitLens, layer_name


def _pyplot():  # noqa: ANN202 (matplotlib's module)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def attention_grid(
    probs: torch.Tensor, path: Path, title: str, axes: str = "query token down, key token across"
) -> None:
    """probs (L, nh, Tq, Tk) -> one image: row = layer, column = head, each panel the Tq x Tk
    matrix (query down, key across), white 0 to dark 1. Drawn as one mosaic so 30 x 9 panels
    cost one imshow, not 270 axes."""
    plt = _pyplot()
    layers, heads, t_q, t_k = probs.shape
    gap = max(1, min(t_q, t_k) // 16)  # pixels between panels
    mosaic = np.full((layers * (t_q + gap) - gap, heads * (t_k + gap) - gap), np.nan)
    for i in range(layers):
        for j in range(heads):
            r, c = i * (t_q + gap), j * (t_k + gap)
            mosaic[r : r + t_q, c : c + t_k] = probs[i, j].numpy()
    panel = min(1.6, max(0.5, 12 / max(heads, 1)))  # inches per panel
    width = heads * panel * max(1.0, t_k / t_q) ** 0.5 + 1.5
    height = layers * panel * max(1.0, t_q / t_k) ** 0.5 + 1.0
    fig, ax = plt.subplots(figsize=(width, height))
    cmap = plt.get_cmap("Blues").with_extremes(bad="white")
    image = ax.imshow(mosaic, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_xticks(
        [j * (t_k + gap) + t_k / 2 - 0.5 for j in range(heads)], [f"head {j}" for j in range(heads)]
    )
    ax.set_yticks(
        [i * (t_q + gap) + t_q / 2 - 0.5 for i in range(layers)], [f"block {i + 1}" for i in range(layers)]
    )
    ax.xaxis.set_ticks_position("top")
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{title}\n(each panel: {axes})", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.02, pad=0.01, label="attention probability")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def lens_heatmap(lens: LogitLens, inputs: list[str], text_of: Callable[[int], str], path: Path) -> None:
    """Rows: the embeddings then each block (top = the last, the model's output); columns: positions,
    labelled by the input token below and the token that comes next above. Colour: that next
    token's probability under the lens; text: the lens's top token (when the grid is small enough)."""
    plt = _pyplot()
    rows, t = lens.next_prob.shape
    probs = lens.next_prob.numpy()[::-1]  # last layer on top
    fig, ax = plt.subplots(figsize=(max(5.0, 0.75 * t + 2), max(3.0, 0.32 * rows + 1.8)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")  # grey: no next token (GPT's last)
    image = ax.imshow(np.ma.masked_invalid(probs), cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    if t <= 40 and rows <= 48:
        for r in range(rows):
            layer = rows - 1 - r
            for c in range(t):
                top = _short(text_of(int(lens.top_ids[layer, c, 0])))
                dark = np.isnan(probs[r, c]) or probs[r, c] < 0.6
                ax.text(c, r, top, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    ax.set_yticks(range(rows), [layer_name(rows - 1 - r) for r in range(rows)], fontsize=7)
    ax.set_xticks(range(t), [_short(s) for s in inputs], rotation=60, ha="right", fontsize=8)
    ax.set_xlabel("input token at each position")
    top_axis = ax.secondary_xaxis("top")
    nexts = [_short(text_of(int(i))) if i >= 0 else "" for i in lens.next_ids]
    top_axis.set_xticks(range(t), nexts, rotation=60, ha="left", fontsize=8)
    top_axis.set_xlabel("token that actually comes next")
    ax.set_title("logit lens: cell text = top prediction at that layer", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02, label="probability of the actual next token")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _short(text: str, width: int = 8) -> str:
    """A token fit for a tick label: visible whitespace, cut to `width` characters."""
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)  # control bytes
    text = "\u2423" + text[1:] if text.startswith(" ") else text  # ␣: a leading space, visible
    return text if len(text) <= width else text[: width - 1] + "\u2026"
