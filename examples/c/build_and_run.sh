#!/usr/bin/env bash
# Builds libkeel in release mode, compiles examples/c/cache_demo.c against include/keel.h and
# the static library, and runs it. Used by `make demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

CC="${CC:-cc}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
OUT="$TARGET_DIR/c-examples"

cargo build --release -p keel-capi
mkdir -p "$OUT"
"$CC" -std=c11 -Wall -Wextra -Werror -O2 -I include examples/c/cache_demo.c \
    "$TARGET_DIR/release/libkeel.a" -lpthread -ldl -lm -o "$OUT/cache_demo"
"$OUT/cache_demo"
