"""Every failure path of the cache: one warning (default location) or one error line and
exit 2 (a --cache-dir the user named), never a traceback, and nothing of the user's lost.

Real SQLite files and the real CLI throughout; a ``check`` runs against a Python 3.11
(answers "unsupported" without probing) when there is one.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from subcompat.cache import SCHEMA, Cache, CacheError, CacheWarning
from subcompat.discover import ModuleInfo
from subcompat.verdict import ExtensionVerdict, Verdict

DB = Cache.FILENAME
PY311 = shutil.which("python3.11", path="/usr/bin:/usr/local/bin")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def run(*args: str, cwd: Path, default_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI; ``default_dir`` is $SUBCOMPAT_CACHE_DIR (the default location)."""
    env = {k: v for k, v in os.environ.items() if k != "SUBCOMPAT_CACHE_DIR"}
    if default_dir is not None:
        env["SUBCOMPAT_CACHE_DIR"] = str(default_dir)
    return subprocess.run(
        [sys.executable, "-m", "subcompat", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def check(tmp_path: Path, *extra: str, default_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``subcompat check`` that writes the cache (the interpreter row) and finishes fast."""
    (tmp_path / "jobmod.py").write_text("import json\n")
    python = PY311 or sys.executable
    return run(
        "check",
        "jobmod",
        "--python",
        python,
        "--format",
        "json",
        *extra,
        cwd=tmp_path,
        default_dir=default_dir,
    )


def check_ran(proc: subprocess.CompletedProcess[str]) -> bool:
    """The check went on to its verdict (unsupported on 3.11, compatible otherwise)."""
    expected = 3 if PY311 else 0
    return proc.returncode == expected and json.loads(proc.stdout)["modules"][0]["target"] == "jobmod"


def one_line(proc: subprocess.CompletedProcess[str], kind: str) -> str:
    """Exactly one ``subcompat: <kind>: ...`` line on stderr, and no traceback anywhere."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"subcompat: {kind}: "), proc.stderr
    return lines[0]


@contextmanager
def one_warning(match: str) -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert len(messages) == 1 and match in messages[0], messages


@contextmanager
def no_warning() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def asides(directory: Path, kind: str = "") -> list[Path]:
    return sorted(
        p for p in directory.iterdir() if p.name.startswith(f"{DB}.{kind}") and p.name.endswith(".bak")
    )


def make_cache(directory: Path) -> Path:
    """A real cache with one job row, closed (its WAL folded in)."""
    cache = Cache(directory)
    cache.put_job("interp", "env", Verdict("jobs.kept", "compatible", "3.13.0"))
    cache.close()
    return directory / DB


def make_foreign_db(path: Path, wal: bool = False, meta: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE users (name TEXT)")
    db.execute("INSERT INTO users VALUES ('ada'), ('grace')")
    if meta:  # a table called meta, but not ours
        db.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    return db


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def tables(path: Path) -> set[str]:
    return {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}


# -- a location that cannot hold the cache ---------------------------------------------


def test_unwritable_default_location_warns_and_the_check_goes_on(tmp_path):
    (tmp_path / "file").write_text("a regular file, not a directory")
    proc = check(tmp_path, default_dir=tmp_path / "file" / "cache")
    assert "cannot use the cache" in one_line(proc, "warning")
    assert check_ran(proc)


def test_unwritable_explicit_location_is_one_error_line(tmp_path):
    (tmp_path / "file").write_text("a regular file, not a directory")
    proc = check(tmp_path, "--cache-dir", str(tmp_path / "file" / "cache"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert "is not a directory" in one_line(proc, "error")


@pytest.mark.parametrize("action", ["show", "clear"])
def test_cache_path_that_is_a_directory(tmp_path, action):
    (tmp_path / DB / "inside").mkdir(parents=True)
    explicit = run("cache", action, "--cache-dir", str(tmp_path), cwd=tmp_path)
    assert explicit.returncode == 2 and "is not a regular file" in one_line(explicit, "error")
    default = run("cache", action, cwd=tmp_path, default_dir=tmp_path)
    assert default.returncode == 0 and "is not a regular file" in one_line(default, "warning")
    assert (tmp_path / DB / "inside").is_dir() and asides(tmp_path) == []


def test_check_with_a_directory_for_the_default_cache_file_goes_on(tmp_path):
    (tmp_path / "c" / DB).mkdir(parents=True)
    proc = check(tmp_path, default_dir=tmp_path / "c")
    assert "is not a regular file" in one_line(proc, "warning") and check_ran(proc)


@pytest.mark.skipif(IS_ROOT, reason="root writes to a 0444 file anyway (the directory variant runs as root)")
def test_read_only_cache_file(tmp_path):
    db = make_cache(tmp_path / "c")
    db.chmod(0o444)
    before = db.read_bytes()
    explicit = check(tmp_path, "--cache-dir", str(db.parent))
    assert explicit.returncode == 2 and "read-only" in one_line(explicit, "error")
    default = check(tmp_path, default_dir=db.parent)
    assert "read-only" in one_line(default, "warning") and check_ran(default)
    assert db.read_bytes() == before


def test_unusable_location_through_the_api_raises_only_when_named(tmp_path):
    (tmp_path / DB).mkdir()  # as unwritable as a file gets for root
    with pytest.raises(CacheError, match="is not a regular file"):
        Cache(tmp_path).open()
    lazy = Cache(tmp_path)  # no open(): the first get warns, nothing raises
    with one_warning("is not a regular file"):
        assert lazy.get_job("i", "e", "t") is None
        lazy.put_job("i", "e", Verdict("t", "compatible", "3.13.0"))


# -- symlinks: never followed ------------------------------------------------------------


def test_symlinked_db_never_gets_our_tables(tmp_path):
    victim = tmp_path / "elsewhere.sqlite3"
    make_foreign_db(victim).close()
    before = victim.read_bytes()
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / DB).symlink_to(victim)
    proc = check(tmp_path, "--cache-dir", str(cache_dir))
    assert "is a symlink" in one_line(proc, "warning") and check_ran(proc)
    assert victim.read_bytes() == before and tables(victim) == {"users"}
    [link] = asides(cache_dir, "symlink")
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert not (cache_dir / DB).is_symlink() and "jobs" in tables(cache_dir / DB)


@pytest.mark.parametrize("suffix", ["-wal", "-shm"])
def test_symlinked_wal_or_shm_is_moved_aside_not_followed(tmp_path, suffix):
    db = make_cache(tmp_path / "c")
    kept = db.read_bytes()
    victim = tmp_path / "victim"
    victim.write_bytes(b"someone else's file\n" * 100)
    Path(f"{db}{suffix}").symlink_to(victim)
    proc = run("cache", "show", "--format", "json", "--cache-dir", str(db.parent), cwd=tmp_path)
    assert proc.returncode == 0 and f"symlink {DB}{suffix}" in one_line(proc, "warning")
    assert json.loads(proc.stdout)["usable"] is False and not db.exists()  # show creates nothing
    assert victim.read_bytes() == b"someone else's file\n" * 100
    [aside] = asides(db.parent, "symlink")
    assert aside.read_bytes() == kept  # the database went aside with its companion
    assert os.readlink(f"{aside}{suffix}") == str(victim)


@pytest.mark.parametrize("name", [DB, f"{DB}-wal", f"{DB}-journal"])
def test_dangling_symlink_in_the_cache_dir_creates_nothing(tmp_path, name):
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    target = tmp_path / "planted" / "target"
    target.parent.mkdir()
    (cache_dir / name).symlink_to(target)
    proc = check(tmp_path, "--cache-dir", str(cache_dir))
    assert "symlink" in one_line(proc, "warning") and check_ran(proc)
    assert not target.exists() and list(target.parent.iterdir()) == []
    [link] = [p for p in cache_dir.iterdir() if p.is_symlink()]
    assert ".symlink-" in link.name and os.readlink(link) == str(target)
    assert stat.S_ISREG(os.lstat(cache_dir / DB).st_mode)


@pytest.mark.skipif(not IS_ROOT, reason="planting a symlink owned by another user needs root (lchown)")
def test_cache_dir_symlink_planted_by_another_user_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "c"
    link.symlink_to(real)
    os.lchown(link, 65534, 65534)
    proc = check(tmp_path, "--cache-dir", str(link))
    assert proc.returncode == 2 and "symlink owned by another user" in one_line(proc, "error")
    default = check(tmp_path, default_dir=link)
    assert "symlink owned by another user" in one_line(default, "warning") and check_ran(default)
    assert list(real.iterdir()) == []


@pytest.mark.skipif(not IS_ROOT, reason="a directory owned by another user needs root (chown)")
def test_cache_dir_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)
    proc = check(tmp_path, "--cache-dir", str(theirs))
    assert proc.returncode == 2 and "belongs to another user" in one_line(proc, "error")
    assert list(theirs.iterdir()) == []


def test_world_writable_cache_dir_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    proc = check(tmp_path, "--cache-dir", str(shared))
    assert proc.returncode == 2 and "writable by every user" in one_line(proc, "error")
    assert list(shared.iterdir()) == []


def test_own_symlinked_cache_dir_works_and_a_new_dir_is_private(tmp_path):
    real = tmp_path / "real"
    (tmp_path / "c").symlink_to(real, target_is_directory=True)
    real.mkdir(mode=0o700)
    with no_warning():
        make_cache(tmp_path / "c")
    assert (real / DB).is_file()
    fresh = tmp_path / "new" / "cache"
    with no_warning():
        make_cache(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / DB).stat().st_mode) == 0o600


# -- files that are not our cache: moved aside, never altered in place ---------------------


def test_db_of_another_schema_is_moved_aside_untouched(tmp_path):
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    old = sqlite3.connect(cache_dir / DB)
    old.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema', '2');"
        "CREATE TABLE jobs (target TEXT, verdict TEXT); INSERT INTO jobs VALUES ('old.job', 'x');"
    )
    old.commit()
    old.close()
    before = (cache_dir / DB).read_bytes()
    proc = check(tmp_path, "--cache-dir", str(cache_dir))
    assert f"has schema 2, expected {SCHEMA}" in one_line(proc, "warning") and check_ran(proc)
    [aside] = asides(cache_dir, "foreign")
    assert aside.read_bytes() == before
    assert rows(aside, "SELECT * FROM jobs") == [("old.job", "x")]
    assert rows(cache_dir / DB, "SELECT value FROM meta WHERE key='schema'") == [(str(SCHEMA),)]


@pytest.mark.parametrize("meta", [False, True], ids=["other-tables", "other-meta-table"])
def test_foreign_sqlite_db_is_moved_aside_untouched(tmp_path, meta):
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    make_foreign_db(cache_dir / DB, meta=meta).close()
    before = (cache_dir / DB).read_bytes()
    proc = check(tmp_path, "--cache-dir", str(cache_dir))
    assert "holds other tables" in one_line(proc, "warning") and check_ran(proc)
    [aside] = asides(cache_dir, "foreign")
    assert aside.read_bytes() == before and rows(aside, "SELECT * FROM users") == [("ada",), ("grace",)]
    assert "jobs" not in tables(aside) and "jobs" in tables(cache_dir / DB)


def test_foreign_wal_db_keeps_its_unfolded_rows(tmp_path):
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    writer = make_foreign_db(cache_dir / DB, wal=True)
    if hasattr(writer, "setconfig"):
        writer.setconfig(sqlite3.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, True)
    writer.close()  # its rows stay in the -wal file
    proc = run("cache", "show", "--cache-dir", str(cache_dir), cwd=tmp_path)
    assert proc.returncode == 0 and "holds other tables" in one_line(proc, "warning")
    assert proc.stdout.startswith("no cache at")
    [aside] = asides(cache_dir, "foreign")
    assert rows(aside, "SELECT * FROM users") == [("ada",), ("grace",)]
    assert "jobs" not in tables(aside)


def _half_written(tmp_path: Path) -> bytes:
    data = make_cache(tmp_path / "source").read_bytes()
    return data[: len(data) // 3]


@pytest.mark.parametrize("kind", ["not-sqlite", "short-header", "half-written"])
def test_corrupt_file_is_moved_aside_with_its_bytes(tmp_path, kind):
    content = {
        "not-sqlite": lambda: b"this is not a database\n" * 100,
        "short-header": lambda: b"SQLite for",
        "half-written": lambda: _half_written(tmp_path),
    }[kind]()
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    (cache_dir / DB).write_bytes(content)
    proc = check(tmp_path, "--cache-dir", str(cache_dir))
    assert "moved to" in one_line(proc, "warning") and check_ran(proc)
    [aside] = asides(cache_dir, "corrupt")
    assert aside.read_bytes() == content
    assert "jobs" in tables(cache_dir / DB)


def test_a_busy_cache_is_never_moved_aside(tmp_path):
    db = make_cache(tmp_path)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO meta VALUES ('held', 'by another writer')")
    cache = Cache(tmp_path, timeout=0.2)
    try:
        with one_warning("locked"):
            cache.put_job("interp", "env", Verdict("jobs.new", "compatible", "3.13.0"))
            assert cache.get_job("interp", "env", "jobs.kept") is None  # off for the rest of the run
            cache.put_job("interp", "env", Verdict("jobs.other", "compatible", "3.13.0"))
    finally:
        holder.execute("COMMIT")
        holder.close()
        cache.close()
    assert asides(tmp_path) == []
    assert [t for (t,) in rows(db, "SELECT target FROM jobs")] == ["jobs.kept"]


# -- rows that do not decode ---------------------------------------------------------------

_GOOD = json.dumps(Verdict("jobs.good", "compatible", "3.13.0").to_json())
_BAD_JOBS = {
    "jobs.badjson": ("{not json", "[]"),
    "jobs.list": ("[1, 2]", "[]"),
    "jobs.inttarget": (json.dumps({**json.loads(_GOOD), "target": 5}), "[]"),
    "jobs.wrongtarget": (_GOOD, "[]"),  # says it is jobs.good
    "jobs.listfiles": (json.dumps({**json.loads(_GOOD), "target": "jobs.listfiles", "notes": [1]}), "[]"),
    "jobs.stampsdict": (json.dumps({**json.loads(_GOOD), "target": "jobs.stampsdict"}), '{"a": 1}'),
    "jobs.nulpath": (
        json.dumps({**json.loads(_GOOD), "target": "jobs.nulpath"}),
        '[["a\\u0000b", 1, 2, null]]',
    ),
    "jobs.deep": ("[" * 100_000 + "]" * 100_000, "[]"),
}


def test_malformed_rows_are_misses_not_tracebacks(tmp_path):
    cache = Cache(tmp_path)
    cache.put_job("i", "e", Verdict("jobs.good", "compatible", "3.13.0"))
    for target, (verdict, stamps) in _BAD_JOBS.items():
        cache._run("INSERT INTO jobs VALUES ('i', 'e', ?, ?, ?, 0)", (target, verdict, stamps))
    cache._run(
        "INSERT INTO extensions VALUES ('i', '/x.so', '[\"/x.so\", 1, 2, null]', NULL, '{\"module\": 3}', 0)"
    )
    cache._run("INSERT INTO extensions VALUES ('i', '/y.so', 'nope', NULL, '{}', 0)")
    python = sys.executable
    from subcompat.cache import _interp_stamp

    cache._run("INSERT INTO interpreters VALUES (?, ?, ?)", (python, _interp_stamp(python), '{"python": 3}'))
    with no_warning():
        assert cache.get_job("i", "e", "jobs.good") is not None
        for target in _BAD_JOBS:
            assert cache.get_job("i", "e", target) is None, target
        assert cache.get_extension("i", ModuleInfo("x", "/x.so", "third_party", extension=True)) is None
        assert cache.get_extension("i", ModuleInfo("y", "/y.so", "third_party", extension=True)) is None
        assert cache.get_interpreter(python) is None
    cache.close()
    for fmt in ("text", "json"):
        proc = run("cache", "show", "--format", fmt, "--cache-dir", str(tmp_path), cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert "jobs.good" in proc.stdout and "jobs.badjson" not in proc.stdout
    shown = json.loads(
        run("cache", "show", "--format", "json", "--cache-dir", str(tmp_path), cwd=tmp_path).stdout
    )
    # shown: rows whose verdict decodes (a bad stamp only matters to get_job)
    assert [j["target"] for j in shown["jobs"]] == ["jobs.good", "jobs.nulpath", "jobs.stampsdict"]
    assert shown["extensions"] == []


def test_malformed_extension_verdict_with_wrong_types_is_a_miss(tmp_path):
    so = tmp_path / "m.so"
    so.write_bytes(b"\x7fELF")
    cache = Cache(tmp_path / "c")
    cache.put_extensions("i", [ExtensionVerdict("m", str(so), "compatible")])
    info = ModuleInfo("m", str(so), "third_party", extension=True)
    assert cache.get_extension("i", info) is not None
    cache._run(
        "UPDATE extensions SET verdict=?", (json.dumps({"module": "m", "file": str(so), "verdict": ["x"]}),)
    )
    with no_warning():
        assert cache.get_extension("i", info) is None
        assert cache.recall("i")(info) is None
    cache.close()


# -- cache show / clear ----------------------------------------------------------------


@pytest.mark.parametrize("explicit", [True, False], ids=["cache-dir", "default"])
def test_cache_show_does_not_create_the_cache(tmp_path, explicit):
    where = tmp_path / "nothing" / "here"
    args = ("--cache-dir", str(where)) if explicit else ()
    proc = run("cache", "show", *args, cwd=tmp_path, default_dir=None if explicit else where)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip() == f"no cache at {where / DB}"
    as_json = run(
        "cache", "show", "--format", "json", *args, cwd=tmp_path, default_dir=None if explicit else where
    )
    assert json.loads(as_json.stdout)["usable"] is False and json.loads(as_json.stdout)["jobs"] == []
    clear = run("cache", "clear", *args, cwd=tmp_path, default_dir=None if explicit else where)
    assert clear.returncode == 0 and "cleared 0" in clear.stdout
    assert not (tmp_path / "nothing").exists()


def test_cache_show_and_clear_of_a_good_cache(tmp_path):
    make_cache(tmp_path)
    show = run("cache", "show", "--cache-dir", str(tmp_path), cwd=tmp_path)
    assert show.returncode == 0 and show.stderr == "" and "jobs.kept" in show.stdout
    clear = run("cache", "clear", "--cache-dir", str(tmp_path), cwd=tmp_path)
    assert clear.returncode == 0 and clear.stderr == "" and "cleared 1 entries" in clear.stdout


# -- trouble in the middle of a run ------------------------------------------------------

_DISK_FULL = """
import resource, signal, sys, warnings
from subcompat.cache import Cache
from subcompat.verdict import Verdict
warnings.showwarning = lambda message, *a, **k: print(f"subcompat: warning: {message}", file=sys.stderr)
cache = Cache(sys.argv[1])
cache.put_job("i", "e", Verdict("jobs.first", "compatible", "3.13.0"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))
for i in range(100):
    cache.put_job("i", "e", Verdict(f"jobs.n{i}", "compatible", "3.13.0", reason="x" * 20000))
assert cache.get_job("i", "e", "jobs.first") is None  # off for the rest of the run
cache.close()
print("done")
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE (POSIX)")
def test_disk_full_mid_run_is_one_warning_and_the_cache_goes_off(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _DISK_FULL, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    assert "disk I/O error" in one_line(proc, "warning")
    assert asides(tmp_path) == []  # an I/O error is not corruption
    assert [t for (t,) in rows(tmp_path / DB, "SELECT target FROM jobs")] == ["jobs.first"]


def test_side_files_that_come_and_go_with_other_connections_are_no_problem(tmp_path):
    """Another process's last connection removes the -wal and -shm between our look at them
    and our access check: that is an ordinary open, not a read-only cache (a fleet test lost
    its cache to this once). Two real connections churn the side files while caches open."""
    import threading

    make_cache(tmp_path)
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            other = sqlite3.connect(tmp_path / DB, isolation_level=None)
            other.execute("SELECT count(*) FROM jobs").fetchall()
            other.close()  # the last connection: SQLite removes -wal and -shm

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheWarning)
            for _ in range(300):
                cache = Cache(tmp_path)
                assert cache.get_job("interp", "env", "jobs.kept") is not None
                cache.close()
    finally:
        stop.set()
        churner.join(timeout=60)
    assert asides(tmp_path) == []
