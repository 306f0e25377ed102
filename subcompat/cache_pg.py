"""Stage 4, cache, for a fleet: job verdicts shared through PostgreSQL (chancy's, or any).

Many workers on many machines meet the same new job modules at once; one probe per module
per interpreter build is enough for all of them. The keys are the SQLite cache's
(interpreter build, environment, target), and each row carries the stamps of the files
its verdict depends on, content hashes included: every reader checks them against its own
files, so a worker with other files or another build never uses a verdict that is not
its own.

Layers. A local SQLite :class:`~subcompat.cache.Cache` is always underneath. A job lookup
asks it first, then PostgreSQL; a verdict found there is copied into the local cache,
stamped with the local files. Verdicts are written to both. Extension and interpreter
verdicts stay local: they are keyed on local paths and only speed up a probe.

Single flight. The prober of a target holds a session advisory lock on it (in
subcompat's own key space) until its verdict is written; the others wait on that lock
for a bounded time, then read the verdict, or probe themselves if there is none. A prober
that dies loses its connection, and the server drops its locks with it.

Degradation. Connecting and every statement are bounded (``connect_timeout``,
``statement_timeout``); a failure switches PostgreSQL off in this process for
``RETRY_S`` seconds, with one warning, and the local cache goes on answering.

Schema. One table whose name carries its version (``subcompat_verdicts_v2``: ``TABLE``): another
version of subcompat uses its own table and never alters these rows; chancy's tables
(``chancy_*``) and migrations are never touched. psycopg is imported here, lazily: the
rest of subcompat stays importable without it.
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections.abc import Iterable, Sequence

from subcompat.cache import Cache, CacheError, CacheWarning, job_stamps, valid_stamps
from subcompat.verdict import Verdict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from subcompat.discover import ModuleInfo
    from subcompat.probe import Trial

SCHEMA = 2  # 2: error verdicts are kept, with stamps of failed files and looked-in directories
TABLE = f"subcompat_verdicts_v{SCHEMA}"
LOCK_SPACE = 0x53434D50  # first key of subcompat's advisory locks ("SCMP")
CONNECT_S = 2  # libpq's smallest useful connect_timeout
STATEMENT_MS = 2000  # no job waits on the database longer than this per statement
RETRY_S = 30.0  # after a failure, PostgreSQL is left alone this long
_SCHEMES = ("postgresql://", "postgres://")

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    interp TEXT NOT NULL, env TEXT NOT NULL, target TEXT NOT NULL,
    verdict TEXT NOT NULL, stamps TEXT NOT NULL,
    probes INTEGER NOT NULL, probed_by TEXT NOT NULL, created TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (interp, env, target)
)"""
_COLUMNS = {"interp", "env", "target", "verdict", "stamps", "probes", "probed_by", "created"}

_DOWN_UNTIL: dict[str, float] = {}  # url -> monotonic time before which it is not tried again
_STATE_LOCK = threading.Lock()


def is_url(text: str) -> bool:
    return text.startswith(_SCHEMES)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise CacheError(
            "a postgresql:// cache needs psycopg: pip install 'subcompat[chancy]' (or psycopg)"
        ) from None
    return psycopg


def _lock_key(interp: str, env: str, target: str) -> int:
    """The second advisory-lock key, a signed 32-bit hash (a collision only makes one wait)."""
    from hashlib import blake2b

    digest = blake2b(f"{interp}|{env}|{target}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


class FleetCache:
    """A :class:`Cache` with a shared PostgreSQL table above it; the same methods."""

    def __init__(
        self,
        url: str,
        local: Cache,
        *,
        wait: float = 35.0,
        who: str = "",
        warn: Callable[[str], Any] | None = None,
    ) -> None:
        self.url = url
        self.warn = warn  # where the outage warning goes (default: a CacheWarning)
        self.local = local
        self.wait = wait  # longest wait for another process's probe of one target
        self.who = who or _whoami()
        self._psycopg = _psycopg()
        self._conn: Any = None
        self._held: set[int] = set()
        self._lock = threading.RLock()

    # -- connection -----------------------------------------------------------
    @property
    def path(self) -> str:
        return f"{redact(self.url)} (local: {self.local.path})"

    def open(self, create: bool = True) -> bool:
        self.local.open(create=create)
        return self._db() is not None

    def close(self) -> None:
        with self._lock:
            self._drop()
        self.local.close()

    def _db(self) -> Any:
        """The connection, or None while PostgreSQL is off for this process."""
        if self._conn is not None:
            return self._conn
        with _STATE_LOCK:
            if time.monotonic() < _DOWN_UNTIL.get(self.url, 0.0):
                return None
        try:
            conn = self._psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=CONNECT_S,
                options=f"-c statement_timeout={STATEMENT_MS}",
                application_name=f"subcompat:{os.getpid()}",  # whose claims these are
                client_encoding="utf8",  # text as str even in an SQL_ASCII database
            )
            _ensure_schema(conn)
        except CacheError as exc:
            self._down(str(exc))
            return None
        except self._psycopg.Error as exc:
            self._down(_one_line(exc))
            return None
        with _STATE_LOCK:
            _DOWN_UNTIL.pop(self.url, None)
        self._conn = conn
        return conn

    def _down(self, why: str) -> None:
        """Off for RETRY_S in this process; one warning per outage."""
        self._drop()
        with _STATE_LOCK:
            first = self.url not in _DOWN_UNTIL
            _DOWN_UNTIL[self.url] = time.monotonic() + RETRY_S
        message = f"verdict store {redact(self.url)}: {why}; using the local cache"
        if first and self.warn is not None:
            self.warn(message)
        elif first:
            warnings.warn(message, CacheWarning, stacklevel=4)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._held.clear()  # the server releases session locks with the connection
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _run(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]] | None:
        """One statement's rows, or None when PostgreSQL is off or just failed."""
        with self._lock:
            conn = self._db()
            if conn is None:
                return None
            try:
                cur = conn.execute(sql, args)
                return cur.fetchall() if cur.description else []
            except self._psycopg.Error as exc:
                self._down(_one_line(exc))
                return None

    # -- jobs ---------------------------------------------------------------
    def get_job(self, interp: str, env: str, target: str) -> Verdict | None:
        hit = self.local.get_job(interp, env, target)
        return hit if hit is not None else self._get_shared(interp, env, target)

    def _get_shared(self, interp: str, env: str, target: str) -> Verdict | None:
        rows = self._run(
            f"SELECT verdict, stamps FROM {TABLE} WHERE interp=%s AND env=%s AND target=%s",
            (interp, env, target),
        )
        if not rows:
            return None
        verdict = _verdict(rows[0][0], target)
        if verdict is None or valid_stamps(rows[0][1]) is None:
            return None
        self.local.put_job(interp, env, verdict)  # stamped with this host's files
        return verdict

    def put_job(self, interp: str, env: str, verdict: Verdict) -> None:
        self.local.put_job(interp, env, verdict)
        stamps = job_stamps(verdict)
        if stamps is None:
            return
        self._run(
            f"INSERT INTO {TABLE} AS t (interp, env, target, verdict, stamps, probes, probed_by)"
            " VALUES (%s, %s, %s, %s, %s, 1, %s) ON CONFLICT (interp, env, target) DO UPDATE SET"
            " verdict=EXCLUDED.verdict, stamps=EXCLUDED.stamps, probes=t.probes + 1,"
            " probed_by=EXCLUDED.probed_by, created=now()",
            (interp, env, verdict.target, json.dumps(verdict.to_json()), json.dumps(stamps), self.who),
        )

    # -- single flight ----------------------------------------------------------
    def claim(self, interp: str, env: str, targets: Sequence[str]) -> tuple[list[str], list[str]]:
        """(targets to probe here, claimed; targets another process probes or has probed
        since this one looked: ``wait_for`` them)."""
        mine, others = [], []
        for target in targets:
            key = _lock_key(interp, env, target)
            rows = self._run("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, key))
            if rows is None:  # no store: probe it here
                mine.append(target)
            elif not rows[0][0]:
                others.append(target)
            elif self._run(  # claimed: but the verdict may have landed since our lookup
                f"SELECT 1 FROM {TABLE} WHERE interp=%s AND env=%s AND target=%s", (interp, env, target)
            ):
                self._run("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, key))
                others.append(target)
            else:
                self._held.add(key)
                mine.append(target)
        return mine, others

    def wait_for(self, interp: str, env: str, target: str) -> Verdict | None:
        """Another process's verdict, after waiting (bounded) for its probe; None: probe it
        here (holding the claim unless the wait ran out or the store went away)."""
        key = _lock_key(interp, env, target)
        with self._lock:
            conn = self._db()
            if conn is None:
                return None
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL statement_timeout = {int(self.wait * 1000)}")
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_SPACE, key))
                self._held.add(key)
            except self._psycopg.errors.QueryCanceled:
                pass  # the prober is still at it: probe locally rather than wait longer
            except self._psycopg.Error as exc:
                self._down(_one_line(exc))
                return None
        hit = self._get_shared(interp, env, target)
        if hit is not None:
            self.release(interp, env, target)
        return hit

    def release(self, interp: str, env: str, target: str) -> None:
        key = _lock_key(interp, env, target)
        if key in self._held:
            self._held.discard(key)
            self._run("SELECT pg_advisory_unlock(%s, %s)", (LOCK_SPACE, key))

    # -- everything else is local ---------------------------------------------------
    def put_extensions(self, interp: str, verdicts: Iterable[Any]) -> None:
        self.local.put_extensions(interp, verdicts)

    def get_extension(self, interp: str, info: ModuleInfo) -> Any:
        return self.local.get_extension(interp, info)

    def recall(self, interp: str) -> Callable[[ModuleInfo], Trial | None]:
        return self.local.recall(interp)

    def get_interpreter(self, python: str) -> dict[str, Any] | None:
        return self.local.get_interpreter(python)

    def put_interpreter(self, python: str, info: dict[str, Any]) -> None:
        self.local.put_interpreter(python, info)

    # -- maintenance ------------------------------------------------------------
    def job_rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = self._run(f"SELECT interp, env, target, verdict, stamps FROM {TABLE} ORDER BY target")
        return self.local.job_rows() if rows is None else [tuple(r) for r in rows]

    def put_job_row(self, row: Sequence[str]) -> bool:
        """An imported row: kept only where there is none (a verdict probed here wins)."""
        self.local.put_job_row(row)
        done = self._run(
            f"INSERT INTO {TABLE} (interp, env, target, verdict, stamps, probes, probed_by)"
            " VALUES (%s, %s, %s, %s, %s, 0, %s) ON CONFLICT DO NOTHING RETURNING 1",
            (*row, f"import by {self.who}"),
        )
        return bool(done)

    def summary(self) -> dict[str, Any]:
        out = self.local.summary()
        rows = self._run(f"SELECT count(*), coalesce(sum(probes), 0) FROM {TABLE}")
        out["store"] = {
            "url": redact(self.url),
            "usable": rows is not None,
            "jobs": rows[0][0] if rows else 0,
            "probes": int(rows[0][1]) if rows else 0,
        }
        return out

    def clear(self) -> int:
        n = self.local.clear()
        rows = self._run(f"DELETE FROM {TABLE} RETURNING 1")
        return n + len(rows or [])


def _ensure_schema(conn: Any) -> None:
    """Create the table once (concurrent creators queue on a transaction lock); a table of
    that name with other columns is not ours: the store stays off, nothing is altered."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (LOCK_SPACE,))
        found = {
            name
            for (name,) in conn.execute(
                "SELECT column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = %s",
                (TABLE,),
            ).fetchall()
        }
        if not found:
            conn.execute(_CREATE)
        elif found != _COLUMNS:
            raise CacheError(f"table {TABLE} exists with other columns (not subcompat's); left as it is")


def _verdict(text: Any, target: str) -> Verdict | None:
    try:
        verdict = Verdict.from_json(json.loads(text))
    except Exception:
        return None
    return verdict if verdict.target == target else None


def _one_line(exc: BaseException) -> str:
    return " ".join((str(exc) or type(exc).__name__).split())


def _whoami() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"
