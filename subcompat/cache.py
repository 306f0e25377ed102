"""Stage 4, cache: verdicts per job module and per extension file, in SQLite.

SQLite because several worker processes may write at once (WAL + busy timeout) and a
half-written file is detectable; JSON in the rows, never pickle. Keys:

- the interpreter (implementation, version, cache tag, ABI flags, build string);
- for a job, the environment it was resolved in (cwd, PYTHONPATH, interpreter path,
  runtime preloads) and the stamps of every file its verdict depends on;
- for an extension, its file's stamp and its distribution version.

A stamp is (size, mtime_ns) plus a content hash: when size or mtime differ, the hash
decides, so a ``touch`` does not throw a verdict away but a rebuilt wheel does.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from subcompat import __version__
from subcompat.discover import ModuleInfo
from subcompat.probe import Trial
from subcompat.verdict import ExtensionVerdict, Verdict

try:  # builtin; ``hashlib`` would initialise OpenSSL first (~2 ms of every start-up)
    from _sha2 import sha256
except ImportError:  # pragma: no cover - a build without it
    from hashlib import sha256

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

SCHEMA = 3
HASH_LIMIT = 64 << 20  # bigger files are keyed on size and mtime only

_SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    interp TEXT NOT NULL, env TEXT NOT NULL, target TEXT NOT NULL,
    verdict TEXT NOT NULL, stamps TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (interp, env, target)
);
CREATE TABLE IF NOT EXISTS extensions (
    interp TEXT NOT NULL, file TEXT NOT NULL,
    stamp TEXT NOT NULL, version TEXT, verdict TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (interp, file)
);
CREATE TABLE IF NOT EXISTS interpreters (
    path TEXT PRIMARY KEY, stamp TEXT NOT NULL, info TEXT NOT NULL
);
"""


def _create_tables(db: sqlite3.Connection) -> None:
    """Statement by statement: ``executescript`` would commit the caller's transaction."""
    for statement in _SCHEMA_SQL.split(";"):
        if statement.strip():
            db.execute(statement)


class CacheWarning(UserWarning):
    pass


_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB


def _set_wal(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """WAL is persistent in the file; switching to it needs a moment with no other reader, and
    SQLite reports "locked" at once instead of waiting, so back off and try again."""
    deadline = time.monotonic() + patience
    delay = 0.005
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Only a damaged file is moved aside; busy, locked or I/O errors are someone else's write."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def default_dir() -> Path:
    env = os.environ.get("SUBCOMPAT_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("subcompat", appauthor=False))


@dataclass(frozen=True)
class Stamp:
    path: str
    size: int
    mtime_ns: int
    digest: str | None

    @classmethod
    def of(cls, path: str) -> Stamp | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(path, st.st_size, st.st_mtime_ns, _digest(path, st.st_size))

    def still_valid(self) -> bool | Stamp:
        """True if unchanged; a refreshed Stamp if only size/mtime moved; False if changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        if st.st_size == self.size and st.st_mtime_ns == self.mtime_ns:
            return True
        if self.digest is None or st.st_size != self.size:
            return False
        if _digest(self.path, st.st_size) != self.digest:
            return False
        return Stamp(self.path, st.st_size, st.st_mtime_ns, self.digest)

    def to_json(self) -> list[Any]:
        return [self.path, self.size, self.mtime_ns, self.digest]

    @classmethod
    def from_json(cls, data: list[Any]) -> Stamp:
        return cls(str(data[0]), int(data[1]), int(data[2]), data[3])


def _digest(path: str, size: int) -> str | None:
    if size > HASH_LIMIT:
        return None
    try:
        with open(path, "rb") as fh:
            import hashlib

            return hashlib.file_digest(fh, "blake2b").hexdigest()[:32]
    except OSError:
        return None


def environment_key(
    python: str | None, preload: Iterable[str] = (), sys_path: Iterable[str] | None = None
) -> str:
    """Where targets are resolved: a job verdict is only valid in the same place."""
    raw = json.dumps(
        [
            os.path.realpath(os.getcwd()),
            os.environ.get("PYTHONPATH", ""),
            os.path.abspath(python) if python else sys.executable,
            sorted(preload),
            list(sys_path) if sys_path is not None else None,
        ]
    )
    return sha256(raw.encode()).hexdigest()[:24]


class Cache:
    """The verdict cache; every method degrades to a miss, never to a traceback."""

    FILENAME = "cache.sqlite3"

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory else default_dir()
        self.path = self.dir / self.FILENAME
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    # -- connection ---------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            self._quarantine(exc)
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            _set_wal(db)
            # One write transaction taken up front: two processes creating the cache at once
            # queue on the lock instead of failing with "database is locked".
            db.execute("BEGIN IMMEDIATE")
            try:
                self._ensure_schema(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        _create_tables(db)
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('writer', ?)", (__version__,))
        elif row[0] != str(SCHEMA):
            warnings.warn(
                f"subcompat cache {self.path} has schema {row[0]}, expected {SCHEMA}: rebuilt",
                CacheWarning,
                stacklevel=5,
            )
            for table in ("jobs", "extensions", "interpreters"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.execute("DELETE FROM meta")
            _create_tables(db)
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))

    def _quarantine(self, exc: Exception) -> None:
        """Move a corrupt cache aside (kept for inspection) and start a new one."""
        if self._db is not None:
            self._db.close()
            self._db = None
        aside = self.path.with_name(f"{self.FILENAME}.corrupt-{int(time.time() * 1000)}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(aside) + suffix))
        warnings.warn(
            f"subcompat cache {self.path} was unreadable ({exc}); moved to {aside.name} and rebuilt",
            CacheWarning,
            stacklevel=4,
        )

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._connect().execute(sql, args).fetchall()
                except sqlite3.DatabaseError as exc:
                    if attempt == 2 or not _is_corrupt(exc):
                        raise
                    self._quarantine(exc)
        return []

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- jobs ---------------------------------------------------------------
    def get_job(self, interp: str, env: str, target: str) -> Verdict | None:
        rows = self._run(
            "SELECT verdict, stamps FROM jobs WHERE interp=? AND env=? AND target=?",
            (interp, env, target),
        )
        if not rows:
            return None
        try:
            verdict = Verdict.from_json(json.loads(rows[0][0]))
            stamps = [Stamp.from_json(s) for s in json.loads(rows[0][1])]
        except (ValueError, KeyError, TypeError, IndexError):
            self._run("DELETE FROM jobs WHERE interp=? AND env=? AND target=?", (interp, env, target))
            return None
        refreshed = False
        for i, stamp in enumerate(stamps):
            state = stamp.still_valid()
            if state is False:
                return None
            if isinstance(state, Stamp):
                stamps[i] = state
                refreshed = True
        if refreshed:
            self._run(
                "UPDATE jobs SET stamps=? WHERE interp=? AND env=? AND target=?",
                (json.dumps([s.to_json() for s in stamps]), interp, env, target),
            )
        return verdict

    def put_job(self, interp: str, env: str, verdict: Verdict) -> None:
        stamps = []
        for path in (*verdict.files, *verdict.dist_stamps):
            stamp = Stamp.of(path)
            if stamp is None:
                return  # a file vanished while probing: don't cache what can't be checked
            stamps.append(stamp.to_json())
        self._run(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
            (interp, env, verdict.target, json.dumps(verdict.to_json()), json.dumps(stamps), time.time()),
        )

    # -- extensions -----------------------------------------------------------
    def put_extensions(self, interp: str, verdicts: Iterable[ExtensionVerdict]) -> None:
        for ev in verdicts:
            stamp = Stamp.of(ev.file)
            if stamp is None:
                continue
            self._run(
                "INSERT OR REPLACE INTO extensions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    interp,
                    ev.file,
                    json.dumps(stamp.to_json()),
                    ev.version,
                    json.dumps(ev.to_json()),
                    time.time(),
                ),
            )

    def get_extension(self, interp: str, info: ModuleInfo) -> ExtensionVerdict | None:
        if not info.file:
            return None
        rows = self._run(
            "SELECT stamp, version, verdict FROM extensions WHERE interp=? AND file=?",
            (interp, info.file),
        )
        if not rows:
            return None
        stamp_json, version, verdict_json = rows[0]
        try:
            stamp = Stamp.from_json(json.loads(stamp_json))
            ev = ExtensionVerdict.from_json(json.loads(verdict_json))
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        if info.version is not None and version != info.version:
            return None
        if stamp.still_valid() is False:
            return None
        return ev

    def recall(self, interp: str):  # -> Callable[[ModuleInfo], Trial | None]
        """A probe hook: a cached extension verdict, as the trial that produced it."""

        def recall(info: ModuleInfo) -> Trial | None:
            ev = self.get_extension(interp, info)
            if ev is None:
                return None
            status = (
                "ok"
                if ev.verdict == "compatible"
                else (ev.verdict if ev.verdict in ("crash", "timeout") else "failed")
            )
            error = None if status == "ok" else {"type": "ImportError", "msg": ev.message or ev.reason}
            return Trial(
                "extension", ev.module, status, error, file=ev.file, cached=True, shared_gil=ev.shared_gil
            )

        return recall

    # -- interpreters ---------------------------------------------------------
    def get_interpreter(self, python: str) -> dict[str, Any] | None:
        rows = self._run("SELECT stamp, info FROM interpreters WHERE path=?", (python,))
        if not rows or rows[0][0] != _interp_stamp(python):
            return None
        try:
            return json.loads(rows[0][1])
        except ValueError:
            return None

    def put_interpreter(self, python: str, info: dict[str, Any]) -> None:
        self._run(
            "INSERT OR REPLACE INTO interpreters VALUES (?, ?, ?)",
            (python, _interp_stamp(python), json.dumps(info)),
        )

    # -- maintenance ----------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        jobs = self._run("SELECT target, verdict FROM jobs ORDER BY target")
        exts = self._run("SELECT file, verdict FROM extensions ORDER BY file")
        size = self.path.stat().st_size if self.path.exists() else 0
        return {
            "path": str(self.path),
            "schema": SCHEMA,
            "size_bytes": size,
            "jobs": [
                {"target": t, "verdict": json.loads(v).get("verdict"), "python": json.loads(v).get("python")}
                for t, v in jobs
            ],
            "extensions": [
                {"file": f, "module": json.loads(v).get("module"), "verdict": json.loads(v).get("verdict")}
                for f, v in exts
            ],
        }

    def clear(self) -> int:
        n = len(self._run("SELECT 1 FROM jobs")) + len(self._run("SELECT 1 FROM extensions"))
        self._run("DELETE FROM jobs")
        self._run("DELETE FROM extensions")
        self._run("DELETE FROM interpreters")
        return n


def _interp_stamp(python: str) -> str:
    parts = []
    for p in (
        python,
        os.path.realpath(python),
        os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg"),
    ):
        try:
            st = os.stat(p)
            parts.append(f"{p}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{p}:-")
    return "|".join(parts)
