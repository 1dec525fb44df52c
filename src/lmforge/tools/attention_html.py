"""attention.html: one self-contained page (inline CSS, JS and data; opens offline) where a person
picks a map, a layer and a head, and hovers a token to see where it attends.

Probabilities travel as bytes (round(p * 255), base64): a 30-layer, 9-head model over 128 tokens is
4.4 M numbers, 6 MB as base64 against ~30 MB as JSON; 1/255 is finer than the eye reads a colour.
"""

from __future__ import annotations

import base64
import html
import json
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lmforge.tools.inspect import Inspection


def page_data(result: Inspection) -> dict:
    from lmforge.tools.inspect import map_tokens

    maps = []
    for name, probs in result.attention.items():
        queries, keys = map_tokens(result, name)
        layers, heads, t_q, t_k = probs.shape
        quantized = (probs.clamp(0, 1) * 255).round().to(torch.uint8).contiguous().numpy()
        maps.append(
            {
                "name": name,
                "queries": queries,
                "keys": keys,
                "same": name not in ("cross", "decoder") or result.source_tokens is None,
                "shape": [layers, heads, t_q, t_k],
                "bytes": base64.b64encode(quantized.tobytes()).decode("ascii"),
            }
        )
    return {"kind": result.kind, "maps": maps}


def attention_page(result: Inspection) -> str:
    data = json.dumps(page_data(result), ensure_ascii=False).replace("<", "\\u003c")  # no </script> inside
    title = html.escape("".join(result.source_tokens or result.tokens).strip()[:80])
    return _PAGE.replace("__TITLE__", title).replace("__DATA__", data)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>attention: __TITLE__</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 70em; }
.controls label { margin-right: 1.2em; }
.tokens { font-family: ui-monospace, monospace; font-size: 15px; line-height: 2.1em; margin: .6em 0;
  padding: .5em; border: 1px solid #ddd; border-radius: 4px; }
.tok { padding: 2px 1px; margin: 0 1px; border-radius: 3px; cursor: pointer; white-space: pre; }
.tok.focus { outline: 2px solid #d33; }
.caption { color: #666; font-size: 13px; }
canvas { border: 1px solid #ddd; image-rendering: pixelated; margin-top: .5em; }
</style></head><body>
<h2>attention: <span id="title">__TITLE__</span></h2>
<p class="caption">Hover a token (click to keep it) to colour the tokens it attends to by their
probability in the chosen layer and head; "mean" averages the heads. Below: the whole matrix, one row
per query token.</p>
<div class="controls">
<label>map <select id="map"></select></label>
<label>block <select id="layer"></select></label>
<label>head <select id="head"></select></label>
<span id="readout" class="caption"></span>
</div>
<div id="qcap" class="caption"></div><div id="queries" class="tokens"></div>
<div id="kcap" class="caption"></div><div id="keys" class="tokens"></div>
<canvas id="matrix"></canvas>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const $ = (id) => document.getElementById(id);
let map = null, probs = null, focus = -1, locked = false;

function decode(b64) {
  const raw = atob(b64), out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}
function option(select, value, text) {
  const o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o);
}
function weight(q, k) {  // probability of query q on key k in the chosen layer and head (0..1)
  const [L, H, TQ, TK] = map.shape, layer = +$("layer").value, head = $("head").value;
  const at = (h) => probs[((layer * H + h) * TQ + q) * TK + k] / 255;
  if (head !== "mean") return at(+head);
  let s = 0; for (let h = 0; h < H; h++) s += at(h); return s / H;
}
function spans(box, tokens, role) {
  box.textContent = "";
  tokens.forEach((t, i) => {
    const s = document.createElement("span"); s.className = "tok"; s.textContent = t; s.dataset.i = i;
    if (role === "query") {
      s.onmouseenter = () => { if (!locked) { focus = i; paint(); } };
      s.onclick = () => { locked = !(locked && focus === i); focus = i; paint(); };
    }
    box.appendChild(s);
  });
}
function chooseMap() {
  map = DATA.maps[+$("map").value]; probs = decode(map.bytes); focus = -1; locked = false;
  const [L, H] = map.shape;
  $("layer").textContent = ""; for (let l = 0; l < L; l++) option($("layer"), l, l + 1);  // block 1 first
  $("head").textContent = ""; option($("head"), "mean", "mean");
  for (let h = 0; h < H; h++) option($("head"), h, h);
  spans($("queries"), map.queries, "query");
  if (map.same) {
    $("keys").style.display = "none"; $("kcap").textContent = "";
    $("qcap").textContent = "tokens (hover one: the others light up by how much it attends to them)";
  } else {
    $("keys").style.display = ""; spans($("keys"), map.keys, "key");
    $("qcap").textContent = map.name === "cross" ? "target tokens (hover one)" : "queries (hover one)";
    $("kcap").textContent = map.name === "cross" ? "source tokens it attends to" : "keys it attends to";
  }
  paint();
}
function paint() {
  const keyBox = map.same ? $("queries") : $("keys");
  const [L, H, TQ, TK] = map.shape;
  keyBox.querySelectorAll(".tok").forEach((s) => {
    const w = focus >= 0 ? weight(focus, +s.dataset.i) : 0;
    s.style.background = `rgba(31, 100, 220, ${w.toFixed(3)})`;
    s.style.color = w > 0.55 ? "white" : "";
    s.title = focus >= 0 ? w.toFixed(3) : "";
  });
  $("queries").querySelectorAll(".tok").forEach((s) => s.classList.toggle("focus", +s.dataset.i === focus));
  $("readout").textContent = focus >= 0 ? `query ${focus}: ${JSON.stringify(map.queries[focus])}` +
    (locked ? " (kept; click again to release)" : "") : "";
  const cell = Math.max(2, Math.min(16, Math.floor(640 / Math.max(TQ, TK))));
  const c = $("matrix"); c.width = TK * cell; c.height = TQ * cell;
  const g = c.getContext("2d");
  for (let q = 0; q < TQ; q++) for (let k = 0; k < TK; k++) {
    const w = weight(q, k);
    g.fillStyle = `rgba(31, 100, 220, ${w.toFixed(3)})`; g.fillRect(k * cell, q * cell, cell, cell);
  }
  if (focus >= 0) {
    g.strokeStyle = "#d33"; g.lineWidth = 2; g.strokeRect(1, focus * cell + 1, TK * cell - 2, cell - 2);
  }
}
$("matrix").onmousemove = (e) => {
  if (locked) return;
  const cell = $("matrix").height / map.shape[2], q = Math.floor(e.offsetY / cell);
  if (q >= 0 && q < map.shape[2] && q !== focus) { focus = q; paint(); }
};
DATA.maps.forEach((m, i) => option($("map"), i, m.name));
["layer", "head"].forEach((id) => { $(id).onchange = paint; });
$("map").onchange = chooseMap;
chooseMap();
</script></body></html>
"""
