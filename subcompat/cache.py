"""Stage 4, cache: verdicts per job module and per extension file, in SQLite.

SQLite because several worker processes may write at once (WAL + busy timeout) and a
half-written file is detectable; JSON in the rows, never pickle. Keys:

- the interpreter (implementation, version, cache tag, ABI flags, build string);
- for a job, the environment it was resolved in (cwd, PYTHONPATH, interpreter path,
  runtime preloads) and the stamps of every file its verdict depends on;
- for an extension, its file's stamp and its distribution version.

A job row names its culprit and extension lists by digest; each list is kept once in
``lists`` (the ~1,500 modules of pandas share one), and read once per run. An export
writes every verdict whole.

A stamp is (size, mtime_ns) plus a content hash: when size or mtime differ, the hash
decides, so a ``touch`` does not throw a verdict away but a rebuilt wheel does. A
directory (where a module found missing was looked for: installing it there must
re-probe) is stamped by the hash of its names.

Failures. The cache only saves time, so none of its failures stops a run:

- a location that cannot hold it (the directory cannot be created or is not this user's,
  the database is a directory, a FIFO or read-only): for a directory the caller named,
  ``Cache(dir).open()`` raises :class:`CacheError` (the CLI: one error line, exit 2); for
  the default one ($SUBCOMPAT_CACHE_DIR, else the user cache dir) one :class:`CacheWarning`
  and the run goes on without a cache;
- a file that is not this version's cache (not SQLite, damaged, another schema, another
  program's tables, a symlink): renamed, with its -wal/-shm/-journal, to
  ``cache.sqlite3.<why>-<ms>.bak``, never altered in place; one warning, a fresh cache;
- trouble in the middle of a run (disk full, I/O error, locked beyond the busy timeout):
  one warning, then every get is a miss and every put does nothing. Only SQLITE_CORRUPT
  and SQLITE_NOTADB move a file aside: a busy file is someone else's write;
- a row whose JSON does not decode to well-typed values is a miss.

Symlinks. The directory is created 0o700. An existing one is used if this user owns it
and not everyone may write to it; if its last component is a symlink, this user must own
the link too (``~/.cache -> /data/cache`` works, a link planted by someone else does not).
Earlier components are the user's choice, as in any path they name. Inside it nothing is
followed: SQLite resolves a symlinked database (and would add our tables to the target),
so the database and its -wal, -shm and -journal files are ``lstat``-ed first and a symlink
among them is renamed aside (renaming a link never touches its target). The database file
is created here with O_CREAT|O_EXCL|O_NOFOLLOW, so no file is created through a dangling
link (SQLite opens the side files with O_NOFOLLOW itself). What is left is a race inside
that private directory against a process of the same user, which could do worse anyway.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from subcompat import __version__
from subcompat.discover import ModuleInfo
from subcompat.probe import Interpreter, Trial
from subcompat.verdict import ExtensionVerdict, Verdict

try:  # builtin; ``hashlib`` would initialise OpenSSL first (~2 ms of every start-up)
    from _sha2 import sha256
except ImportError:  # pragma: no cover - a build without it
    from hashlib import sha256

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    _T = TypeVar("_T")

SCHEMA = 6  # 5: a job row names its culprit and extension lists, kept once in ``lists``;
# 6: and its files' stamps, each kept once there too
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
CREATE TABLE IF NOT EXISTS lists (digest TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
_TABLES = frozenset({"meta", "jobs", "extensions", "interpreters", "lists"})
#: the Verdict fields a job row stores as the digest of a ``lists`` row: each module of
#: pandas names the same ~55 culprits and ~60 extensions (87 KB a row when inline)
_LISTED = {"culprits": "Culprit", "degraded": "Culprit", "extensions": "ExtensionVerdict"}
_SIDE_FILES = ("", "-wal", "-shm", "-journal")  # the database and what SQLite keeps beside it
_MAGIC = b"SQLite format 3\x00"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_LOCATION_CODES = {3, 8, 14, 23}  # SQLITE_PERM, SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_AUTH


class CacheWarning(UserWarning):
    """The cache was set aside or switched off; the run goes on."""


class CacheError(Exception):
    """A cache directory the caller named cannot be used; the message is one line."""


class _Unusable(Exception):
    """This location cannot hold the cache."""


class _NotOurs(Exception):
    """The file is not this version's cache: ``(kind, why)``, and it is moved aside."""


def _create_tables(db: sqlite3.Connection) -> None:
    """Statement by statement: ``executescript`` would commit the caller's transaction."""
    for statement in _SCHEMA_SQL.split(";"):
        if statement.strip():
            db.execute(statement)


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


def _schema_state(db: sqlite3.Connection) -> str:
    """Whose file this is, asked before anything is written: "new" (no tables yet), "ready"
    or "incomplete" (ours); raises _NotOurs for anything else."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        return "new"
    schema = _schema_of(db) if "meta" in tables else None
    if schema != str(SCHEMA):
        why = f"has schema {schema}, expected {SCHEMA}" if schema is not None else "holds other tables"
        raise _NotOurs("foreign", why)
    return "ready" if _TABLES <= tables else "incomplete"


def _schema_of(db: sqlite3.Connection) -> object:
    try:
        row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such column" not in str(exc):
            raise
        return None  # another program's table called meta
    return row[0] if row else None


def _initialise(db: sqlite3.Connection) -> None:
    """Create the tables in one write transaction, taken up front: two processes creating
    the cache at once queue on the lock instead of failing with "database is locked"."""
    db.execute("BEGIN IMMEDIATE")
    try:
        state = _schema_state(db)  # again: another process may have been first
        _create_tables(db)
        if state == "new":
            db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
            db.execute("INSERT OR REPLACE INTO meta VALUES ('writer', ?)", (__version__,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _checkpoint_on_close(db: sqlite3.Connection, on: bool) -> None:
    """Until the file is known to be ours, closing must not fold its WAL into it (the
    default); Python < 3.12 cannot say so, and the rows survive the fold anyway."""
    setconfig = getattr(db, "setconfig", None)
    if setconfig is not None:
        setconfig(sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, not on)


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if code is not None else None


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """Only a damaged file is moved aside; busy, locked or I/O errors are someone else's write."""
    code = _code(exc)
    if code is not None:
        return code in _CORRUPT_CODES
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _dir_problem(path: Path) -> str | None:
    """Why ``path`` may not hold the cache, or None (see the module docstring)."""
    link, st = os.lstat(path), os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    uid = os.getuid() if hasattr(os, "getuid") else None
    if uid is None:  # Windows: ACLs, not modes
        return None
    if stat.S_ISLNK(link.st_mode) and link.st_uid != uid:
        return f"is a symlink owned by another user (uid {link.st_uid})"
    if st.st_uid != uid:
        return f"belongs to another user (uid {st.st_uid})"
    if st.st_mode & stat.S_IWOTH:
        return "is writable by every user"
    if not os.access(path, os.W_OK | os.X_OK):
        return "is not writable"
    return None


def _file_problem(name: str, st: os.stat_result) -> str | None:
    """Why SQLite must not open this database (or side) file, which is not a symlink."""
    if not stat.S_ISREG(st.st_mode):
        return f"{name} is not a regular file"
    if not os.access(name, os.W_OK) and os.path.lexists(name):
        return f"{name} is read-only"  # (a side file gone since its lstat is no problem:
    return None  # the last connection of another process removes the -wal and -shm)


def _create_private(path: Path) -> None:
    """The database file, 0o600, made here: O_EXCL never creates through a symlink."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _looks_like_sqlite(path: Path) -> bool:
    """An empty file is a new database; anything else starts with SQLite's magic."""
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | _NOFOLLOW)) as fh:
        head = fh.read(len(_MAGIC))
    return not head or head == _MAGIC


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
        """The file as it is now; its content hash read once per file version in this
        process (the same extension files recur in every target of a big package)."""
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            return None
        size = _size(st)
        version = (path, size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if version in _DIGESTS:
            digest = _DIGESTS[version]
        else:
            digest = _DIGESTS[version] = _digest(path, size, stat.S_ISDIR(st.st_mode))
        return cls(path, size, st.st_mtime_ns, digest)

    def still_valid(self) -> bool | Stamp:
        """True if unchanged; a refreshed Stamp if only size/mtime moved; False if changed."""
        try:
            st = os.stat(self.path)
        except (OSError, ValueError):  # ValueError: a NUL in a path read from a bad row
            return False
        size = _size(st)
        if size == self.size and st.st_mtime_ns == self.mtime_ns:
            return True
        if self.digest is None or size != self.size:
            return False
        if _digest(self.path, size, stat.S_ISDIR(st.st_mode)) != self.digest:
            return False
        return Stamp(self.path, size, st.st_mtime_ns, self.digest)

    def to_json(self) -> list[Any]:
        return [self.path, self.size, self.mtime_ns, self.digest]

    @classmethod
    def from_json(cls, data: list[Any]) -> Stamp:
        if not isinstance(data, list) or len(data) != 4:
            raise ValueError(f"not a stamp: {data!r:.80}")
        digest = data[3]
        return cls(str(data[0]), int(data[1]), int(data[2]), digest if isinstance(digest, str) else None)


#: (path, size, mtime, inode, ctime) -> content hash: a file rewritten in place moves ctime
_DIGESTS: dict[tuple[str, int, int, int, int], str | None] = {}


def _size(st: os.stat_result) -> int:
    """A file's size; 0 for a directory (its listing's hash tells whether it changed)."""
    return 0 if stat.S_ISDIR(st.st_mode) else st.st_size


def _digest(path: str, size: int, is_dir: bool = False) -> str | None:
    """A file's content hash; for a directory (where a missing module was looked for),
    the hash of its names, ``__pycache__`` aside: an import writing bytecode is no change."""
    if is_dir:
        try:
            names = sorted(n for n in os.listdir(path) if n != "__pycache__")
        except (OSError, ValueError):
            return None
        return str(sha256("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest()[:32])
    if size > HASH_LIMIT:
        return None
    try:
        with open(path, "rb") as fh:
            import hashlib

            return hashlib.file_digest(fh, "blake2b").hexdigest()[:32]
    except (OSError, ValueError):
        return None


_ATOMS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "None": (type(None),),
}


def _well_typed(obj: object) -> bool:
    """Every field fits its (string) annotation: ``from_json`` copies whatever a row holds.
    The annotations are parsed once per class (a warm check of a big package reads
    ~100,000 culprits)."""
    return all(_fits(getattr(obj, name), options) for name, options in _spec(type(obj)))


#: per class, per field: the parsed options of its annotation, each ("tuple", options) |
#: ("atom", types, is_bool) | ("record", class name) | ("any",)
_SPECS: dict[type, list[tuple[str, list[tuple[Any, ...]]]]] = {}


def _spec(cls: type) -> list[tuple[str, list[tuple[Any, ...]]]]:
    spec = _SPECS.get(cls)
    if spec is None:
        fields = dataclasses.fields(cls)
        spec = _SPECS[cls] = [(f.name, _parse(str(f.type))) for f in fields]
    return spec


_CHECKED: set[object] = set()  # records (frozen, equal by value) already found well typed


def _well_typed_record(value: object) -> bool:
    """``_well_typed`` for a record inside another, once per distinct value (the culprits
    of a big package recur in every one of its modules' verdicts)."""
    try:
        if value in _CHECKED:
            return True
    except TypeError:  # a field holds something unhashable: not what from_json makes
        return _well_typed(value)
    if not _well_typed(value):
        return False
    if len(_CHECKED) > 200_000:
        _CHECKED.clear()
    _CHECKED.add(value)
    return True


def _parse(annotation: str) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for option in (o.strip() for o in annotation.split("|")):
        if option.startswith("tuple[") and option.endswith(", ...]"):
            out.append(("tuple", _parse(option[6:-6])))
        elif option in _ATOMS:
            out.append(("atom", _ATOMS[option], option == "bool"))
        elif option[:1].isupper():  # one of our dataclasses
            out.append(("record", option))
        else:
            out.append(("any",))  # an annotation this check does not know
    return out


_STRINGS = [("atom", (str,), False)]  # the parsed ``tuple[str, ...]``


def _fits(value: object, options: list[tuple[Any, ...]]) -> bool:
    for option in options:
        kind = option[0]
        if kind == "atom":
            if isinstance(value, option[1]) and (option[2] or not isinstance(value, bool)):
                return True
        elif kind == "tuple":
            if not isinstance(value, tuple):
                continue
            shared = _SHARED.get(id(value)) is value
            if shared and id(value) in _CHECKED_LISTS:
                return True
            if option[1] == _STRINGS:  # a verdict's files: ~85 a module, checked in one pass
                if all(isinstance(item, str) for item in value):
                    return True
                continue
            if all(_fits(item, option[1]) for item in value):
                if shared:
                    _CHECKED_LISTS.add(id(value))
                return True
        elif kind == "record":
            if type(value).__name__ == option[1] and _well_typed_record(value):
                return True
        else:
            return True
    return False


def _decode(from_json: Callable[[Any], _T], text: Any) -> _T | None:
    """A row's JSON through ``from_json``, or None: a malformed row is a miss, not a traceback."""
    try:
        value = from_json(json.loads(text))
    except Exception:  # bad JSON, wrong shapes, even nesting deep enough for RecursionError
        return None
    return value if _well_typed(value) else None


#: a list of culprits or extension verdicts, as JSON text -> its records, checked once: the
#: modules of one package name the same ~55 culprits (a warm check of pandas decoded 200,000)
_RECORD_LISTS: dict[str, tuple[Any, ...]] = {}
_SHARED: dict[int, tuple[Any, ...]] = {}  # id -> those lists (held: an id is not reused)
_CHECKED_LISTS: set[int] = set()  # ids of shared lists found well typed
_LISTS_READ: dict[str, tuple[Any, ...]] = {}  # "Class:digest" of a ``lists`` row -> its records


def _shared_records(cls: Any, items: Any, key: str = "") -> tuple[Any, ...]:
    """``items`` decoded, one object for equal lists: ``key`` names them (a digest), else
    their repr does (json.loads keeps the order to_json wrote)."""
    if not items:
        return ()
    key = key or f"{cls.__name__}:{items!r}"
    hit = _RECORD_LISTS.get(key)
    if hit is None:
        if len(_RECORD_LISTS) >= 4096:
            _RECORD_LISTS.clear()
            _SHARED.clear()
            _CHECKED_LISTS.clear()
            _LISTS_READ.clear()
        hit = _RECORD_LISTS[key] = tuple(cls.from_json(item) for item in items)
        _SHARED[id(hit)] = hit
    return hit


def _stamp_digest(body: str) -> str:
    digest: str = sha256(f"Stamp:{body}".encode()).hexdigest()[:32]
    return digest


def _decode_stamps(text: Any) -> list[Stamp] | None:
    try:
        data = json.loads(text)
        return [Stamp.from_json(item) for item in data] if isinstance(data, list) else None
    except Exception:
        return None


def job_stamps(verdict: Verdict) -> list[list[Any]] | None:
    """The stamps of every file a job verdict depends on; None if one is gone."""
    stamps = []
    for path in (*verdict.files, *verdict.dist_stamps):
        stamp = Stamp.of(path)
        if stamp is None:
            return None
        stamps.append(stamp.to_json())
    return stamps


def valid_stamps(text: Any) -> list[Stamp] | None:
    """Stamps from a row or a file, if every one still matches this host's files (by
    content hash when size or mtime differ: another host's mtimes are not ours)."""
    stamps = _decode_stamps(text)
    if stamps is None or any(s.still_valid() is False for s in stamps):
        return None
    return stamps


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
    key: str = sha256(raw.encode()).hexdigest()[:24]
    return key


class Cache:
    """The verdict cache; every method degrades to a miss, never to a traceback."""

    FILENAME = "cache.sqlite3"

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, timeout: float = 30.0) -> None:
        self.explicit = bool(directory)  # named by the caller: unusable is an error, not a warning
        self.dir = Path(directory) if directory else default_dir()
        self.path = self.dir / self.FILENAME
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._problem: str | None = None  # why the cache is off for the rest of this run
        self._create = True
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the database file
        self._lock = threading.Lock()
        self._ext_rows: dict[tuple[str, str], tuple[ExtensionVerdict, Stamp]] = {}  # written here
        self._stamp_states: dict[Any, bool | Stamp] = {}
        self._stamp_refs: dict[str, str] = {}  # a stamp's JSON -> its ``lists`` digest, written
        self._digests: dict[tuple[str, tuple[int, ...]], tuple[tuple[Any, ...], str]] = {}

    # -- connection ---------------------------------------------------------
    def open(self, create: bool = True) -> bool:
        """Connect now; True if the cache can be used. With ``create=False`` a missing cache
        stays missing. An unusable directory the caller named raises CacheError; the default
        one warns and the cache stays off."""
        with self._lock:
            self._create = create
            return self._connection(strict=self.explicit) is not None

    def _connection(self, strict: bool = False) -> sqlite3.Connection | None:
        if self._db is None and self._problem is None:
            try:
                self._db = self._connect()
            except _Unusable as exc:
                if strict:
                    raise CacheError(f"cannot use the cache in {self.dir}: {exc}") from None
                self._disable(f"cannot use the cache in {self.dir}: {exc}")
            except (sqlite3.Error, OSError) as exc:
                self._disable(f"cache {self.path}: {_one_line(exc)}")
        return self._db

    def _disable(self, why: str) -> None:
        """Off for the rest of this run, said once."""
        self._close_db()
        self._problem = why
        warnings.warn(f"{why}; going on without a cache", CacheWarning, stacklevel=5)

    def _connect(self) -> sqlite3.Connection | None:
        try:
            if not self._create and not os.path.lexists(self.path):
                return None
            self._prepare_dir()
            for _ in range(3):  # each round moves one bad file aside
                if not self._create and not os.path.lexists(self.path):
                    return None
                try:
                    self._inspect()
                    return self._open()
                except _NotOurs as exc:
                    self._move_aside(*exc.args)
                except sqlite3.DatabaseError as exc:
                    if _code(exc) in _LOCATION_CODES:
                        raise _Unusable(_one_line(exc)) from None
                    if not _is_corrupt(exc):
                        raise
                    self._move_aside("corrupt", f"was unreadable ({_one_line(exc)})")
        except OSError as exc:
            raise _Unusable(_one_line(exc)) from None
        raise _Unusable(f"{self.path} turned bad again after being moved aside twice")

    def _prepare_dir(self) -> None:
        """Create the directory private; use an existing one only if it is this user's."""
        try:
            self.dir.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as exc:  # a file where a directory should be
            raise _Unusable(f"{exc.filename} is not a directory") from None
        try:
            self.dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        problem = _dir_problem(self.dir)
        if problem:
            raise _Unusable(f"{self.dir} {problem}")

    def _inspect(self) -> None:
        """Look before SQLite does: it follows symlinks and opens whatever is there."""
        if self._create:
            _create_private(self.path)
        for suffix in _SIDE_FILES:
            name = f"{self.path}{suffix}"
            try:
                st = os.lstat(name)
            except FileNotFoundError:
                continue
            if not suffix:
                self._ident = (st.st_dev, st.st_ino)
            if stat.S_ISLNK(st.st_mode):
                what = f"comes with a symlink {os.path.basename(name)}" if suffix else "is a symlink"
                raise _NotOurs("symlink", f"{what} (never followed)")
            problem = _file_problem(name, st)
            if problem:
                raise _Unusable(problem)
        if not _looks_like_sqlite(self.path):
            raise _NotOurs("corrupt", "is not an SQLite database")

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
        try:
            _checkpoint_on_close(db, False)
            state = _schema_state(db)  # before anything is written: a foreign file stays as found
            _set_wal(db, self.timeout)
            # WAL's own safe setting: a power cut may lose the last verdicts (re-probed),
            # never corrupt the file; FULL synced each of a cold pandas' 1,500 writes
            db.execute("PRAGMA synchronous=NORMAL")
            if state != "ready":
                _initialise(db)
            _checkpoint_on_close(db, True)
        except BaseException:
            db.close()
            raise
        return db

    def _move_aside(self, kind: str, why: str) -> None:
        """Rename the database and its side files, kept for inspection; a file that someone
        replaced since we looked at it is left alone (the next round looks again)."""
        self._close_db()
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and self._ident != (st.st_dev, st.st_ino):
            return
        aside = self._aside_path(kind)
        for suffix in _SIDE_FILES:
            try:
                os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:  # absent, or removed meanwhile by another connection
                pass
        self._ident = None
        warnings.warn(
            f"cache {self.path} {why}: moved to {aside.name}, starting a fresh one",
            CacheWarning,
            stacklevel=6,
        )

    def _aside_path(self, kind: str) -> Path:
        stamp = int(time.time() * 1000)
        while os.path.lexists(self.path.with_name(f"{self.FILENAME}.{kind}-{stamp}.bak")):
            stamp += 1  # never replace an earlier one
        return self.path.with_name(f"{self.FILENAME}.{kind}-{stamp}.bak")

    def _run(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement, or no rows once the cache is off: a damaged file is moved aside
        once, any other failure switches the cache off for the rest of the run."""
        with self._lock:
            for attempt in (1, 2):
                db = self._connection()
                if db is None:
                    return []
                try:
                    return db.execute(sql, args).fetchall()
                except sqlite3.Error as exc:
                    if attempt == 2 or not _is_corrupt(exc):
                        self._disable(f"cache {self.path}: {_one_line(exc)}")
                        return []
                    try:
                        self._move_aside("corrupt", f"was unreadable ({_one_line(exc)})")
                    except OSError as err:
                        self._disable(f"cache {self.path}: cannot move it aside: {_one_line(err)}")
                        return []
        return []

    def close(self) -> None:
        with self._lock:
            self._close_db()
            self._stamp_states.clear()
            self._stamp_refs.clear()

    def _close_db(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except sqlite3.Error:
                pass

    # -- jobs ---------------------------------------------------------------
    def get_job(self, interp: str, env: str, target: str) -> Verdict | None:
        rows = self._run(
            "SELECT verdict, stamps FROM jobs WHERE interp=? AND env=? AND target=?",
            (interp, env, target),
        )
        if not rows:
            return None
        verdict = self._verdict_of(rows[0][0])
        if verdict is None or verdict.target != target:
            return None
        try:
            items = json.loads(rows[0][1])
            states = [self._stamp_state(item) for item in items]
        except Exception:  # not JSON, not a list of stamps
            return None
        if False in states:
            return None
        if any(isinstance(state, Stamp) for state in states):  # moved, same content
            stamps = [
                self._stamp_ref(s.to_json()) if isinstance(s, Stamp) else item
                for s, item in zip(states, items, strict=True)
            ]
            self._run(
                "UPDATE jobs SET stamps=? WHERE interp=? AND env=? AND target=?",
                (json.dumps(stamps), interp, env, target),
            )
        return verdict

    def _stamp_state(self, item: Any) -> bool | Stamp:
        """``still_valid()`` of the stamp ``item`` is or refers to (``_stamp_ref``), once per
        distinct stamp while this cache is open: the modules of one package depend on the
        same files (a warm pandas: 126,000 stamps, 2,000 distinct). Closing forgets, so a
        long-lived worker sees later edits. Raises for an item that is not a stamp."""
        key = tuple(item) if isinstance(item, list) else item
        state = self._stamp_states.get(key)
        if state is None:
            stamp = Stamp.from_json(self._stamp_body(item) if isinstance(item, str) else item)
            state = self._stamp_states[key] = stamp.still_valid()
        return state

    def _stamp_ref(self, item: list[Any]) -> str:
        """The digest a job row names a file's stamp by, the stamp kept once in ``lists``:
        a package's modules depend on the same files, and decoding every module's copy of
        them was a third of a warm check of pandas."""
        body = json.dumps(item, separators=(",", ":"))
        digest = self._stamp_refs.get(body)
        if digest is None:
            digest = _stamp_digest(body)
            self._run("INSERT OR IGNORE INTO lists VALUES (?, ?)", (digest, body))
            if len(self._stamp_refs) >= 100_000:
                self._stamp_refs.clear()
            self._stamp_refs[body] = digest
        return digest

    def _stamp_body(self, digest: str) -> Any:
        """The stamp ``digest`` refers to; raises when it is missing or not what was kept."""
        rows = self._run("SELECT body FROM lists WHERE digest=?", (digest,))
        if not rows or _stamp_digest(rows[0][0]) != digest:
            raise KeyError(f"no stamp {digest}")
        return json.loads(rows[0][0])

    def put_job(self, interp: str, env: str, verdict: Verdict) -> None:
        stamps = job_stamps(verdict)
        if stamps is None:
            return  # a file vanished while probing: don't cache what can't be checked
        self._run(
            "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?, ?)",
            (
                interp,
                env,
                verdict.target,
                self._row_json(verdict),
                json.dumps([self._stamp_ref(stamp) for stamp in stamps]),
                time.time(),
            ),
        )

    # -- the lists a job row names ------------------------------------------------
    def _row_json(self, verdict: Verdict) -> str:
        """The verdict's JSON with each of its ``_LISTED`` lists as a ``lists`` digest."""
        data = dataclasses.replace(verdict, culprits=(), degraded=(), extensions=()).to_json()
        for name in _LISTED:
            data[name] = self._list_digest(name, getattr(verdict, name))
        return json.dumps(data)

    def _list_digest(self, name: str, items: tuple[Any, ...]) -> str:
        """Where ``items`` is kept, written once per distinct list this process meets."""
        key = (name, tuple(map(id, items)))
        known = self._digests.get(key)
        if known is not None:
            return known[1]
        body = json.dumps([item.to_json() for item in items], separators=(",", ":"))
        digest: str = sha256(f"{_LISTED[name]}:{body}".encode()).hexdigest()[:32]
        self._run("INSERT OR IGNORE INTO lists VALUES (?, ?)", (digest, body))
        self._digests[key] = (items, digest)  # holds the items: their ids are not reused
        return digest

    def _verdict_of(self, text: Any) -> Verdict | None:
        """A job row's verdict, its lists looked up (inline lists, as an import writes
        them, are read too); None for a row that does not decode or names a missing list."""
        return _decode(self._decode_verdict, text)

    def _decode_verdict(self, data: Any) -> Verdict:
        return Verdict.from_json(data, self._records)

    def _records(self, cls: Any, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, str):
            return _shared_records(cls, value)
        key = f"{cls.__name__}:{value}"  # content-addressed: the same in every cache file
        hit = _LISTS_READ.get(key)
        if hit is None:
            rows = self._run("SELECT body FROM lists WHERE digest=?", (value,))
            if not rows:
                raise KeyError(f"no list {value}")
            hit = _LISTS_READ[key] = _shared_records(cls, json.loads(rows[0][0]), key)
        return hit

    # -- single flight: one process, nothing to share (see cache_pg.FleetCache) ----
    def claim(self, interp: str, env: str, targets: Sequence[str]) -> tuple[list[str], list[str]]:
        return list(targets), []

    def wait_for(self, interp: str, env: str, target: str) -> Verdict | None:
        return None

    def release(self, interp: str, env: str, target: str) -> None:
        pass

    # -- export / import --------------------------------------------------------
    def job_rows(self) -> list[tuple[str, str, str, str, str]]:
        """Rows to export, each verdict whole (its lists inline); one that does not decode
        is left out."""
        rows = self._run("SELECT interp, env, target, verdict, stamps FROM jobs ORDER BY target")
        out = []
        for interp, env, target, text, stamps in rows:
            verdict = self._verdict_of(text)
            try:
                inline = [self._stamp_body(s) if isinstance(s, str) else s for s in json.loads(stamps)]
            except Exception:  # not JSON, a stamp missing: left out like a verdict that does not decode
                continue
            if verdict is not None:
                out.append((interp, env, target, json.dumps(verdict.to_json()), json.dumps(inline)))
        return out

    def put_job_row(self, row: Sequence[str]) -> bool:
        """An imported row: kept only where there is none (a verdict probed here wins)."""
        if self._run("SELECT 1 FROM jobs WHERE interp=? AND env=? AND target=?", tuple(row[:3])):
            return False
        self._run("INSERT OR IGNORE INTO jobs VALUES (?, ?, ?, ?, ?, ?)", (*row, time.time()))
        return self._db is not None

    # -- extensions -----------------------------------------------------------
    def put_extensions(self, interp: str, verdicts: Iterable[ExtensionVerdict]) -> None:
        """Each extension's verdict, keyed by its file's stamp. A row this process wrote
        already, with the same verdict for the file as it is now, is not written again
        (1,485 pandas modules share the same ~60 extensions)."""
        for ev in verdicts:
            stamp = Stamp.of(ev.file)
            if stamp is None:
                continue
            key = (interp, ev.file)
            if self._ext_rows.get(key) == (ev, stamp):  # ``is`` first: the same record object
                continue
            self._ext_rows[key] = (ev, stamp)
            row = (json.dumps(ev.to_json()), json.dumps(stamp.to_json()))
            self._run(
                "INSERT OR REPLACE INTO extensions VALUES (?, ?, ?, ?, ?, ?)",
                (
                    interp,
                    ev.file,
                    row[1],
                    ev.version,
                    row[0],
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
        stamp = _decode(Stamp.from_json, stamp_json)
        ev = _decode(ExtensionVerdict.from_json, verdict_json)
        if stamp is None or ev is None:
            return None
        if info.version is not None and version != info.version:
            return None
        if stamp.still_valid() is False:
            return None
        return ev

    def recall(self, interp: str) -> Callable[[ModuleInfo], Trial | None]:
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
                "extension",
                ev.module,
                status,  # type: ignore[arg-type]  # one of TrialStatus, as built above
                error,  # type: ignore[arg-type]  # a raw dict: Trial.__post_init__ parses it
                file=ev.file,
                cached=True,
                shared_gil=ev.shared_gil,
            )

        return recall

    # -- interpreters ---------------------------------------------------------
    def get_interpreter(self, python: str) -> dict[str, Any] | None:
        rows = self._run("SELECT stamp, info FROM interpreters WHERE path=?", (python,))
        if not rows or rows[0][0] != _interp_stamp(python):
            return None
        interp = _decode(Interpreter.from_json, rows[0][1])
        return interp.to_json() if interp is not None else None

    def put_interpreter(self, python: str, info: dict[str, Any]) -> None:
        self._run(
            "INSERT OR REPLACE INTO interpreters VALUES (?, ?, ?)",
            (python, _interp_stamp(python), json.dumps(info)),
        )

    # -- maintenance ----------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ``cache show`` prints; rows that do not decode are left out. ``usable`` is
        false when there is no cache (see ``open(create=False)``) or it is switched off."""
        jobs = [
            (target, self._verdict_of(v))
            for target, v in self._run("SELECT target, verdict FROM jobs ORDER BY target")
        ]
        exts = [
            _decode(ExtensionVerdict.from_json, v)
            for (v,) in self._run("SELECT verdict FROM extensions ORDER BY file")
        ]
        return {
            "path": str(self.path),
            "schema": SCHEMA,
            "usable": self._db is not None,
            "size_bytes": self._size(),
            "jobs": [
                {"target": v.target, "verdict": v.verdict, "python": v.python}
                for target, v in jobs
                if v is not None and v.target == target
            ],
            "extensions": [{"file": e.file, "module": e.module, "verdict": e.verdict} for e in exts if e],
        }

    def _size(self) -> int:
        try:
            return os.lstat(self.path).st_size if self._db is not None else 0
        except OSError:
            return 0

    def clear(self) -> int:
        """How many verdicts were removed (0 if the cache is missing or switched off)."""
        n = len(self._run("SELECT 1 FROM jobs")) + len(self._run("SELECT 1 FROM extensions"))
        for table in ("jobs", "extensions", "interpreters", "lists"):
            self._run(f"DELETE FROM {table}")
        return n if self._db is not None else 0


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
