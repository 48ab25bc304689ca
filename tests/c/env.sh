# Sourced by tests/c/run.sh and tests/c/run_valgrind.sh (with ROOT and WHAT set): the environment
# every C test program needs.
#
# The neural tests load ONNX Runtime from ORT_DYLIB_PATH (keel's core never looks for Python):
# unless the caller set it, point it at the project venv's onnxruntime wheel, found once by the
# same code keel's Python module uses.
if [[ -z "${ORT_DYLIB_PATH:-}" && -x "$ROOT/.venv/bin/python" ]]; then
    ORT_DYLIB_PATH="$("$ROOT/.venv/bin/python" "$ROOT/python/keel/_onnxruntime.py")"
    export ORT_DYLIB_PATH
fi
if [[ -z "${ORT_DYLIB_PATH:-}" ]]; then
    echo "$WHAT FAILED: ORT_DYLIB_PATH is not set and .venv has no onnxruntime wheel (run \`make venv\`)" >&2
    exit 1
fi
export KEEL_TEST_MODELS="${KEEL_TEST_MODELS:-$ROOT/.cache/models}"

CC="${CC:-cc}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
LIB="$TARGET_DIR/debug/libkeel.a"
LIBS=(-lpthread -ldl -lm)
