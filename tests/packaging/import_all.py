"""Run by `make test-wheel` with the interpreter of a fresh venv holding only the built wheel.

Checks what a user gets from `pip install keel-engine` with no extra: the package imports from
the installed wheel (not the checkout), every name in `keel.__all__` resolves, and the optional
halves fail with a clear error instead of being required: importing `keel.fastapi` names a
missing module of the `keel-engine[fastapi]` extra, and `keel.Embedder` raises
`OnnxRuntimeUnavailable` (extra `keel-engine[neural]`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import sysconfig
from pathlib import Path


def main() -> int:
    import keel

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    where = Path(keel.__file__).resolve()
    assert site in where.parents, f"keel imported from {where}, not from the venv's {site}"
    native = importlib.import_module("keel._native")
    assert native.__file__.endswith(".abi3.so"), f"not an abi3 module: {native.__file__}"

    missing = [name for name in keel.__all__ if not hasattr(keel, name)]
    assert not missing, f"names in keel.__all__ that do not resolve: {missing}"
    assert len(keel.__all__) >= 40, f"keel.__all__ has only {len(keel.__all__)} names"
    importlib.import_module("keel.eval")

    # Extras are optional: none of them is installed here.
    for dist in ("fastapi", "onnxruntime", "opentelemetry"):
        assert importlib.util.find_spec(dist) is None, f"{dist} was installed with the base wheel"
    try:
        importlib.import_module("keel.fastapi")
    except ModuleNotFoundError as e:
        # The first of fastapi's own dependencies keel.fastapi imports.
        assert e.name in ("anyio", "fastapi", "starlette"), e
    else:
        raise AssertionError("keel.fastapi imported without fastapi installed")

    models = os.environ.get("KEEL_TEST_MODELS")
    assert models, "KEEL_TEST_MODELS is not set (make models)"
    try:
        keel.Embedder(Path(models) / "minilm")
    except keel.OnnxRuntimeUnavailable as e:
        assert "onnxruntime" in str(e), e
    else:
        raise AssertionError("keel.Embedder loaded ONNX Runtime without the neural extra")

    print(
        f"wheel OK: keel {keel.__version__} on Python {sys.version.split()[0]}, "
        f"{len(keel.__all__)} public names, extras optional"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
