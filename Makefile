# keel — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: help dev demo test test-rust test-c test-python lint header bench bench-python bench-rust clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(VENV_STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV_STAMP)

dev: $(VENV_STAMP) ## Build the Python module (release) into the project venv .venv
	$(VENV)/bin/maturin develop --release --quiet

demo: dev ## Run the demos: Python, Rust, then C
	$(VPY) examples/python/cache_demo.py
	cargo run --quiet --release --example cache
	bash examples/c/build_and_run.sh

test: lint test-rust test-c test-python ## Run every suite: lint, Rust, C (ASan), Python
	@echo "make test: all suites passed"

test-rust: ## Rust unit + integration tests (incl. the keel.h drift check)
	cargo test --workspace --exclude keel-python

test-c: ## C programs against include/keel.h under AddressSanitizer
	bash tests/c/run.sh

test-python: dev ## pytest against the module built by maturin
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

bench: bench-rust bench-python ## Run the benchmarks (side by side with the anchors)

bench-python: dev
	$(VPY) bench/python/bench_cache.py

bench-rust:
	cargo bench -p keel --bench cache_throughput

clean: ## Remove build products and the venv
	cargo clean
	rm -rf $(VENV)
