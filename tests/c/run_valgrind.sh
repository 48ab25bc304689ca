#!/usr/bin/env bash
# Runs the C test programs under valgrind memcheck: the second half of the C test story (run.sh is
# the first, under AddressSanitizer). ASan and valgrind cannot be combined, so this builds every
# tests/c/*.c a second time WITHOUT sanitizers against the same debug staticlib
# (target/debug/libkeel.a) and runs each with
#   valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
# A run passes only with 0 memcheck errors, 0 definitely-lost blocks, a zero exit and the final
# "N passed, 0 failed" line. Suppressions (tests/c/valgrind.supp, if present) are each commented
# with why the report is not keel's.
#
# The tests run with KEEL_TEST_REDUCED=1: test_neural.c then opens each model once and shares it
# between its tests (a model load takes tens of seconds under valgrind); the others ignore it.
# `bash tests/c/run_valgrind.sh test_threads` runs one program.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if ! command -v valgrind >/dev/null 2>&1; then
    echo "C valgrind tests FAILED: valgrind is not installed (apt-get install valgrind)" >&2
    exit 1
fi

WHAT="C valgrind tests"
# shellcheck source=tests/c/env.sh
source "$ROOT/tests/c/env.sh"
OUT="$TARGET_DIR/c-tests-valgrind"
CFLAGS=(-std=c11 -Wall -Wextra -Werror -g -O0 -I include)
VALGRIND=(valgrind --tool=memcheck --error-exitcode=1 --leak-check=full
          --errors-for-leak-kinds=definite --show-leak-kinds=definite --track-origins=yes
          --num-callers=30 --quiet)
if [[ -f tests/c/valgrind.supp ]]; then
    VALGRIND+=(--suppressions=tests/c/valgrind.supp)
fi

cargo build -p keel-capi
mkdir -p "$OUT"

failed=0
only="${1:-}"
for src in tests/c/*.c; do
    name="$(basename "$src" .c)"
    [[ -n "$only" && "$name" != "$only" ]] && continue
    exe="$OUT/$name"
    echo "== $name (valgrind)"
    if ! "$CC" "${CFLAGS[@]}" "$src" "$LIB" "${LIBS[@]}" -o "$exe"; then
        echo "FAILED to compile $src" >&2
        failed=1
        continue
    fi
    start=$SECONDS
    if output="$(KEEL_TEST_REDUCED=1 "${VALGRIND[@]}" "$exe")"; then status=0; else status=$?; fi
    printf '%s\n' "$output"
    echo "   ($((SECONDS - start)) s)"
    if [[ $status -ne 0 ]] || ! tail -n 1 <<<"$output" | grep -Eq '^[1-9][0-9]* passed, 0 failed$'; then
        echo "FAILED: $name under valgrind (exit status $status; memcheck errors or definite leaks are above)" >&2
        failed=1
    fi
done

if [[ $failed -ne 0 ]]; then
    echo "C valgrind tests FAILED" >&2
    exit 1
fi
echo "C valgrind tests passed"
