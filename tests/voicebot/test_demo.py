"""``make demo`` without a human: the demo script sets a fresh home up (keyring, config, admin
key, indexed documents), starts the server, waits for readiness, prints the page URL, the key and
a curl example, asks one question through the server, and exits 0 (``--exit-after-ready``)."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from conftest import EXAMPLES, free_port


def test_the_demo_sets_up_starts_answers_and_prints_the_key(tmp_path: Path):
    home = tmp_path / "demo-home"
    port = free_port()
    path = os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "DEMO_EXIT_AFTER_READY": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "voicebot.demo", "--home", str(home), "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert f"http://127.0.0.1:{port}/" in out
    key = re.search(r"admin key: (keel_live_\S+)", out)
    assert key, out
    assert f"Bearer {key.group(1)}" in out and "curl -N" in out
    assert "12 added" in out  # the bundled documents
    counts = re.search(r"one question asked: (\{.*\})", out)
    assert counts and "'token'" in counts.group(1) and "'audio'" in counts.group(1), out
    assert stat.S_IMODE((home / "keyring").stat().st_mode) == 0o600

    # A second run keeps the keyring and the index: nothing is re-indexed.
    keyring = (home / "keyring").read_bytes()
    again = subprocess.run(
        [sys.executable, "-m", "voicebot.demo", "--home", str(home), "--setup-only"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert "12 unchanged" in again.stdout
    assert (home / "keyring").read_bytes() == keyring
