"""A throwaway PostgreSQL cluster on 127.0.0.1 and a free port (initdb + pg_ctl)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator

STOP: dict[str, Callable[[], object]] = {}  # dsn -> stop that cluster now (a test's outage)


def find_bindir() -> str | None:
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return os.path.dirname(on_path)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    for bindir in reversed(candidates):
        if os.path.exists(os.path.join(bindir, "initdb")):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[str]:
    """Yield a DSN; stop the server and delete its files afterwards."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    root = tempfile.mkdtemp(prefix="subcompat-pg-")
    data = os.path.join(root, "data")
    as_root = os.geteuid() == 0
    prefix: list[str] = []
    if as_root:  # initdb refuses root
        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    try:
        subprocess.run(
            [
                *prefix,
                f"{bindir}/initdb",
                "-D",
                data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        opts = (
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        subprocess.run(
            [
                *prefix,
                f"{bindir}/pg_ctl",
                "-D",
                data,
                "-w",
                "-t",
                "60",
                "-o",
                opts,
                "-l",
                os.path.join(root, "log"),
                "start",
            ],
            check=True,
            capture_output=True,
            env=env,
        )
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        STOP[dsn] = lambda: subprocess.run(
            [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, env=env
        )
        yield dsn
    finally:
        subprocess.run(
            [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True, env=env
        )
        shutil.rmtree(root, ignore_errors=True)
