"""A throwaway PostgreSQL server for the Python tests: the Debian binaries, a temporary data
directory, a free loopback port, trust authentication. PostgreSQL refuses to run as root, so
when the tests run as root the server runs as `nobody`. Always stopped (`stop`), also on failure
when used as a context manager."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

_BINS = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
# make test-python installs it (Makefile target `postgresql-server`); a missing binary fails.
assert _BINS, "postgresql is not installed (make postgresql-server)"
BIN = _BINS[-1].parent


def _drop_root() -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("nobody")
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keel-pgtest-"))
        os.chmod(self.root, 0o755)
        self.data = self.root / "data"
        self.data.mkdir(mode=0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("nobody")
            os.chown(self.data, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self._run(BIN / "initdb", "-U", "keel", "--auth=trust", "-D", self.data, "--no-sync")

    def _run(self, *args: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(a) for a in args],
            preexec_fn=_drop_root,
            check=True,
            capture_output=True,
            cwd=self.data,
            timeout=60,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c synchronous_commit=on -c max_connections=100"
        )
        log = self.data / "log"
        self._run(BIN / "pg_ctl", "-w", "-o", opts, "-l", log, "-D", self.data, "start")

    def kill(self) -> None:
        """An unclean stop: the postmaster and its backends get SIGQUIT (`-m immediate`), as a
        crash would; the next start replays the WAL."""
        self._run(BIN / "pg_ctl", "-D", self.data, "-m", "immediate", "stop")

    def url(self, db: str, password: str | None = None) -> str:
        user = f"keel:{password}" if password else "keel"
        return f"postgres://{user}@127.0.0.1:{self.port}/{db}"

    def create(self, db: str) -> str:
        self._run(BIN / "createdb", "-h", "127.0.0.1", "-p", self.port, "-U", "keel", db)
        return self.url(db)

    def sql(self, db: str, statement: str) -> str:
        out = self._run(
            BIN / "psql", "-h", "127.0.0.1", "-p", self.port, "-U", "keel", "-d", db,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", statement,
        )  # fmt: skip
        return out.stdout.decode()

    def stop(self) -> None:
        subprocess.run(
            [str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
            preexec_fn=_drop_root,
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
