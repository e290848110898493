# Two entry points work on a fresh machine (Python 3.11, no venv): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= outputs/ctal-demo

.PHONY: setup demo test test-slow benchmark clean

# torch is pinned and installed first, from the machine's local CPU wheel (pip's configured index); an unpinned or
# later torch requirement would pull a multi-GB CUDA build. Elsewhere add --index-url https://download.pytorch.org/whl/cpu.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[testing]"
	touch $@

setup: $(VENV)/.installed

# Main job: pre-train a small CTAL on the embedded (synthesised) demo corpus.
demo: setup
	$(BIN)/python examples/run_pretraining.py \
		--dataset demo --train_split train --eval_split validation \
		--config_name examples/configs/ctal-demo.json \
		--tokenizer_vocab_size 1000 \
		--output_dir $(DEMO_DIR) \
		--max_steps 600 \
		--per_device_train_batch_size 8 \
		--learning_rate 1e-3 \
		--warmup_steps 50 \
		--logging_steps 25 \
		--save_steps 300 \
		--eval_strategy steps --eval_steps 300 \
		--seed 0

test: setup
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: setup
	$(BIN)/python -m pytest -m slow -q

benchmark: setup
	$(BIN)/python benchmarks/feature_extraction.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
