"""Fixtures for the voice-bot tests: a home folder, an in-process app, and a real uvicorn
server (subprocess on a free loopback port, always stopped)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

from voicebot.settings import Limits, Settings, create_admin_key, init_home  # noqa: E402

import keel  # noqa: E402

#: Screenshots and logs of the end-to-end tests.
OUTPUT = Path(os.environ.get("TEST_OUTPUT_DIR", ROOT / "target" / "test-output")) / "voicebot"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    init_home(home, Limits(per_ip=(10_000, 60.0), per_key=(10_000, 60.0)))
    return home


@pytest.fixture
def admin_key(home: Path) -> str:
    return create_admin_key(keel.Engine(home / "keel.toml"))


def settings_for(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"word_delay": 0.0, "index_on_start": True}
    values.update(overrides)
    return Settings(home=home, **values)  # type: ignore[arg-type]


@contextlib.contextmanager
def uvicorn_server(
    home: Path, *, workers: int = 1, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[str]:
    """``uvicorn --factory voicebot.app:create_app`` on a free loopback port; yields the base URL
    once ``/readyz`` answers 200, and stops the whole process group afterwards."""
    port = free_port()
    full_env = {
        **os.environ,
        "VOICEBOT_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(EXAMPLES), os.environ.get("PYTHONPATH")])),
        **(env or {}),
    }
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "voicebot.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",  # the app logs each request itself, as JSON
        ],
        env=full_env,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {proc.returncode} (log: {log})")
            try:
                if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not become ready in 60 s")
            time.sleep(0.1)  # polling a readiness probe, not synchronising on time
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]
