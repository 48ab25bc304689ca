"""Run by `make test-wheel` on target/dist: the wheel's tags and metadata, and the sdist's files.

- The wheel is one abi3 wheel for every CPython >= 3.10 (`cp310-abi3`), and `auditwheel show`
  finds it consistent with manylinux_2_17 (manylinux2014), so it installs on glibc 2.17+.
- Its metadata names the distribution, the licence (with the licence files), the extras and the
  README; onnxruntime, fastapi and opentelemetry are only behind extras.
- The sdist holds every file a build from source needs (the three crates, Cargo.lock, the Python
  package, pyproject.toml, README and licences).
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAME = "keel-engine"
DIST_NAME = "keel_engine"


def one(paths: list[Path], what: str) -> Path:
    assert len(paths) == 1, f"expected one {what}, found {[p.name for p in paths]}"
    return paths[0]


def check_wheel(wheel: Path) -> None:
    parts = wheel.name[: -len(".whl")].split("-")
    assert parts[0] == DIST_NAME, wheel.name
    assert parts[2:4] == ["cp310", "abi3"], f"not one abi3 wheel for CPython >= 3.10: {wheel.name}"
    assert "manylinux_2_17_x86_64" in parts[4].split("."), f"not manylinux2014: {wheel.name}"

    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    flat = " ".join(shown.split())
    assert 'consistent with the following platform tag: "manylinux_2_17_x86_64"' in flat, shown

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        version = parts[1]
        info = f"{DIST_NAME}-{version}.dist-info"
        meta = email.parser.Parser().parsestr(z.read(f"{info}/METADATA").decode())
    for f in ("keel/__init__.py", "keel/py.typed", "keel/_native.pyi", "keel/_native.abi3.so"):
        assert f in names, f"{f} missing from the wheel"
    for f in ("LICENSE", "LICENSE-APACHE", "LICENSE-MIT"):
        assert f"{info}/licenses/{f}" in names, f"{f} missing from the wheel"

    assert meta["Name"] == NAME, meta["Name"]
    assert meta["License-Expression"] == "Apache-2.0 OR MIT", meta["License-Expression"]
    assert meta["Requires-Python"] == ">=3.10", meta["Requires-Python"]
    assert meta["Description-Content-Type"].startswith("text/markdown")
    assert "# keel" in meta.get_payload(), "the README is not the long description"
    assert meta.get_all("Project-URL"), "no project URL"
    classifiers = meta.get_all("Classifier") or []
    assert "Programming Language :: Rust" in classifiers, classifiers
    assert "Programming Language :: Python :: 3.10" in classifiers, classifiers
    extras = sorted(meta.get_all("Provides-Extra") or [])
    assert extras == ["fastapi", "neural", "otel", "prometheus"], extras
    requires = meta.get_all("Requires-Dist") or []
    unconditional = [r for r in requires if "extra ==" not in r]
    assert not unconditional, f"dependencies forced on every user: {unconditional}"
    ort = [r for r in requires if r.startswith("onnxruntime")]
    assert ort and all("extra == 'neural'" in r or 'extra == "neural"' in r for r in ort), ort


def check_sdist(sdist: Path, version: str) -> None:
    assert sdist.name == f"{DIST_NAME}-{version}.tar.gz", sdist.name
    top = f"{DIST_NAME}-{version}/"
    with tarfile.open(sdist) as t:
        names = {n[len(top) :] for n in t.getnames() if n.startswith(top)}
    needed = {
        "pyproject.toml",
        "PKG-INFO",
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "LICENSE",
        "LICENSE-APACHE",
        "LICENSE-MIT",
        "bindings/python/Cargo.toml",
    }
    # Every source file of the two crates the wheel is built from, and of the Python package.
    for folder, pattern in (("src", "*.rs"), ("bindings/python/src", "*.rs"), ("python/keel", "*")):
        for f in sorted((ROOT / folder).rglob(pattern)):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".so":
                needed.add(f.relative_to(ROOT).as_posix())
    missing = sorted(needed - names)
    assert not missing, f"the sdist lacks files a build needs: {missing}"
    # Cargo must be able to load the root manifest: its declared targets are shipped too.
    for target in ("benches/bm25.rs", "benches/cache_throughput.rs", "tests/neural.rs"):
        assert target in names, f"{target} (declared in Cargo.toml) missing from the sdist"


def main() -> int:
    dist = Path(sys.argv[1])
    wheel = one(sorted(dist.glob("*.whl")), "wheel")
    sdist = one(sorted(dist.glob("*.tar.gz")), "sdist")
    check_wheel(wheel)
    check_sdist(sdist, wheel.name.split("-")[1])
    print(f"dist OK: {wheel.name}, {sdist.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
