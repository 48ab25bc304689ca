"""One host-shared rate-limit file, opened from the three front doors with their defaults, is one
budget: Python, C and Rust agree on the default key bound (the core's DEFAULT_SHARED_MAX_KEYS),
so they attach to the same state file (its name records the bound) and count together.

The C program (tests/cross/shared_limiter_hit.c) is compiled like tests/c/run.sh does, against
include/keel.h and the debug static library; the Rust one is examples/shared_limiter_hit.rs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import keel

ROOT = Path(__file__).resolve().parents[2]
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def _cargo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cargo", *args], cwd=ROOT, check=True, capture_output=True, text=True)


def _c_door(tmp_path: Path) -> Path:
    _cargo("build", "-p", "keel-capi")
    exe = tmp_path / "shared_limiter_hit"
    cc = os.environ.get("CC") or shutil.which("cc") or "cc"
    subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(ROOT / "include"),
            str(ROOT / "tests/cross/shared_limiter_hit.c"),
            str(TARGET / "debug/libkeel.a"),
            "-lpthread",
            "-ldl",
            "-lm",
            "-o",
            str(exe),
        ],
        check=True,
    )
    return exe


def _hit(cmd: list[str]) -> tuple[int, int]:
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    allowed, remaining = out.split()
    return int(allowed), int(remaining)


def test_rust_c_and_python_share_one_limiter_file_with_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "limits"
    # Ten per hour: no token comes back while the other doors are built and run.
    py = keel.RateLimiter(10, 3600.0, shared_path=path)
    assert py.check("k").remaining == 9

    c_door = _c_door(tmp_path)
    assert _hit([str(c_door), str(path)]) == (1, 8)

    _cargo("build", "-q", "--example", "shared_limiter_hit")
    rust_door = TARGET / "debug/examples/shared_limiter_hit"
    assert _hit([str(rust_door), str(path)]) == (1, 7)

    # Python sees the two requests made by the others, and there is one state file.
    assert py.check("k").remaining == 6
    files = [p.name for p in tmp_path.iterdir() if p.name.startswith("limits")]
    assert files == [py.shared_path.name], files
