"""Where this interpreter's ``onnxruntime`` wheel keeps its shared library.

The Rust core never runs Python to look for ONNX Runtime: keel's Python front door knows its
interpreter, finds the wheel here (with ``importlib.util.find_spec``, which does not import
onnxruntime) and passes the path down before the first model loads. ``ORT_DYLIB_PATH``, when set,
still wins. Run as a script (``python python/keel/_onnxruntime.py``), it prints the path, which
is how the Makefile and tests/c/run.sh point the Rust and C tests at the venv's wheel.
"""

from __future__ import annotations

import glob
import importlib.util
import os


def wheel_library() -> str | None:
    """The ``onnxruntime`` wheel's ``capi/libonnxruntime`` library (the newest name first), or
    None when the package is not installed."""
    try:
        spec = importlib.util.find_spec("onnxruntime")
    except (ImportError, ValueError):
        return None
    dirs = list(spec.submodule_search_locations or []) if spec else []
    found = [
        path
        for d in dirs
        for pattern in ("libonnxruntime.so*", "libonnxruntime*.dylib")
        for path in glob.glob(os.path.join(d, "capi", pattern))
        if os.path.isfile(path)
    ]
    return sorted(found, reverse=True)[0] if found else None


if __name__ == "__main__":
    print(wheel_library() or "")
