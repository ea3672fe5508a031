"""A throwaway PostgreSQL server on a free loopback port, for the tests and the serve benchmark.

It uses the server binaries of Debian's ``postgresql`` package (``.ci/run`` installs it when missing). ``initdb``
refuses to run as root, so as root the cluster belongs to the unprivileged ``postgres`` user of that package and
every server command runs as that user (``runuser``). The data folder lives in a fresh temporary folder and is
removed when the server stops. Authentication is ``trust`` for the cluster's own user on 127.0.0.1 only.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

USER = "offerlift"


def find_bindir() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl`` (PATH, else the newest Debian version), or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None when it can."""
    if find_bindir() is None:
        return "PostgreSQL server binaries not found (Debian package postgresql; .ci/run installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no unprivileged 'postgres' user to run the server"
        if shutil.which("runuser") is None:
            return "running as root without runuser to start the server as the 'postgres' user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    """One running cluster; `url(db)` is a SQLAlchemy URL (psycopg 3) of one of its databases.

    Args:
        options: extra server settings (``{"fsync": "off"}`` for quick tests; the benchmark keeps the defaults).
    """

    options: dict[str, str] = field(default_factory=dict)
    port: int = 0
    root: Path | None = None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> PostgresServer:
        """initdb, then start the server and wait until it accepts connections (RuntimeError with its log)."""
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        bindir = find_bindir()
        assert bindir is not None
        self.root = Path(tempfile.mkdtemp(prefix="offerlift-pg-"))
        data, logfile = self.root / "data", self.root / "server.log"
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        out = self._run(str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        if out.returncode != 0:
            raise RuntimeError(f"initdb failed: {out.stderr.strip()}")
        self.port = _free_port()
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": str(self.root), **self.options}
        opts = " ".join(f"-c {k}={v}" for k, v in settings.items())
        out = self._run(
            str(bindir / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-o", f"-p {self.port} {opts}", "-w", "start"
        )
        if out.returncode != 0:
            log = logfile.read_text() if logfile.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {out.stderr.strip()} {out.stdout.strip()}\n{log[-2000:]}")
        return self

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL of a database of this server."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files."""
        bindir = find_bindir()
        if self.root is None or bindir is None:
            return
        self._run(str(bindir / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
