"""The GPU half of benchmarks/gpu_check.sh: every task's trained model, on the GPU, decodes and
scores; exported and loaded back it gives the same outputs; on the CPU too. Fails loudly.

    python -m benchmarks.gpu_tasks LM_RUN TRANSLATION_RUN CLASSIFICATION_RUN PAIRS_DIR [DEVICE]

DEVICE defaults to cuda; `cpu` runs the same checks here (a dry run of the script itself).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

import lmforge
from lmforge.data.pairs import read_lines
from lmforge.errors import LmforgeError
from lmforge.formats.hf_export import export_hf
from lmforge.inference.generate import encode_prompts, generate_ids
from lmforge.inference.translate import score, translate_texts


def same_outputs(model: torch.nn.Module, other: torch.nn.Module, *inputs: torch.Tensor) -> float:
    """Largest absolute logit difference between two models on the same inputs (fp32)."""
    with torch.no_grad():
        return float((model(*inputs).float() - other(*inputs).float()).abs().max())


def load_back(run: Path, tmp: str) -> tuple[torch.nn.Module, str]:
    """The run's model exported to Hugging Face's layout and loaded back; a model with no HF
    equivalent (rope, pre-LN seq2seq) is loaded back from its own lmforge model directory."""
    try:
        export_hf(run, Path(tmp) / "hf")
        return lmforge.load(Path(tmp) / "hf")[0], "HF export"
    except LmforgeError as e:
        return lmforge.load(run)[0], f"lmforge dir ({e})"


def check_lm(run: Path) -> None:
    model, tokenizer = lmforge.load(run)
    model = model.to(DEVICE)
    prompt = encode_prompts(tokenizer, ["ROMEO:"])
    ids = generate_ids(model, prompt, max_new_tokens=64, temperature=0.8, top_k=50, seed=1)
    print("lm      sample:", repr(tokenizer.decode(ids[0])[:60]))
    greedy = generate_ids(model, prompt, max_new_tokens=32, temperature=0.0)
    on_cpu = generate_ids(model.cpu(), prompt, max_new_tokens=32, temperature=0.0)
    same = sum(a == b for a, b in zip(greedy[0], on_cpu[0], strict=False))
    print(f"lm      greedy: {same}/32 tokens as on the CPU")
    with tempfile.TemporaryDirectory() as tmp:
        back, how = load_back(run, tmp)
        x = torch.tensor(prompt).to(DEVICE)
        diff = same_outputs(model.to(DEVICE), back.to(DEVICE), x)
    assert diff < 1e-4, diff
    print(f"lm      {how} -> load: max logit diff {diff:.2e}")


def check_translation(run: Path, pairs: Path) -> None:
    model, tokenizer = lmforge.load(run)
    model = model.to(DEVICE)
    src, ref = read_lines(pairs / "test.en")[:200], read_lines(pairs / "test.fr")[:200]
    for beam in (1, 4):
        hyps = translate_texts(model, tokenizer, src, beam=beam)
        s = score(hyps, ref)
        print(f"translation beam {beam}: BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f} on {len(src)} test pairs")
    cpu = translate_texts(model.cpu(), tokenizer, src[:20], beam=1)
    gpu = translate_texts(model.to(DEVICE), tokenizer, src[:20], beam=1)
    agree = sum(a == b for a, b in zip(cpu, gpu, strict=True))
    print(f"translation greedy CPU == GPU on {agree}/20 sentences (fp32; a near-tie may differ)")
    with tempfile.TemporaryDirectory() as tmp:
        back, how = load_back(run, tmp)
        x = torch.randint(4, 100, (2, 7)).to(DEVICE)
        diff = same_outputs(model, back.to(DEVICE), x, x)
    assert diff < 1e-4, diff
    print(f"translation {how} -> load: max logit diff {diff:.2e}")


def check_classification(run: Path) -> None:
    classify = lmforge.pipeline("text-classification", model=run)
    texts = ["a moving, beautifully made film", "a dull, lifeless mess"]
    cpu = classify.probabilities(texts)
    classify.model.to(DEVICE)
    gpu = classify.probabilities(texts)
    assert (cpu - gpu).abs().max() < 1e-3, (cpu, gpu)
    print("classification:", classify(texts), f"| CPU vs GPU max prob diff {(cpu - gpu).abs().max():.1e}")


DEVICE = sys.argv[5] if len(sys.argv) > 5 else "cuda"

if __name__ == "__main__":
    assert DEVICE != "cuda" or torch.cuda.is_available(), "no CUDA GPU"
    lm_run, translation_run, classification_run, pairs_dir = map(Path, sys.argv[1:5])
    check_lm(lm_run)
    check_translation(translation_run, pairs_dir)
    check_classification(classification_run)
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE
    print("every task: trained, evaluated, decoded, exported and loaded back on", where)
