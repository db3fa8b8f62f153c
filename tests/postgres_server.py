"""A throwaway PostgreSQL server from Debian's server binaries, for tests (no Docker, no pytest plugin).

``initdb`` refuses to run as root, so as root the cluster is created and run as the ``postgres`` system user in a
directory that user owns. The server listens on 127.0.0.1 on a free port, with trust authentication.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def find_bindir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bindir: Path
    root: Path
    port: int
    user: str = "rlhf"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=self.root)

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.root / "data"), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-sync")
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.root / "data"), "-o", options, "-l", str(self.root / "log"), "-w",
                  "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found: `apt-get install postgresql` (make test does this as root), "
            "or set RLHF_TEST_POSTGRES=skip to run only the SQLite half of the suite"
        )
    root = Path(tempfile.mkdtemp(prefix="rlhf-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(bindir=bindir, root=root, port=_free_port())
    for attempt in range(3):  # a port taken between choosing and binding: try another
        try:
            return server.start()
        except subprocess.CalledProcessError as exc:
            if attempt == 2:
                log = (root / "log").read_text() if (root / "log").exists() else ""
                raise RuntimeError(f"PostgreSQL did not start: {exc.stderr}\n{log}") from None
            shutil.rmtree(root / "data", ignore_errors=True)
            server.port = _free_port()
            time.sleep(0.2)
    return server
