"""The verdict cache: warm runs, precise invalidation, corruption, concurrent writers."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from subcompat import probe
from subcompat.cache import SCHEMA, Cache, CacheWarning, Stamp
from subcompat.verdict import COMPATIBLE, DEGRADED, Verdict

needs_sub = pytest.mark.needs_subinterpreters


@needs_sub
def test_warm_check_spawns_no_child_and_imports_no_job_code(probe_app):
    marker = probe_app.root / "imported.log"
    probe_app.write(
        {
            "jobs.a": f"open({str(marker)!r}, 'a').write('i')\nimport sc_multi_ok\n",
            "jobs.b": "import sc_single\n",
        }
    )
    cold = probe_app.check("jobs.a", "jobs.b")
    imports_after_cold = marker.read_text()
    started = dict(probe.STATS)
    warm = probe_app.check("jobs.a", "jobs.b")
    assert probe.STATS["children_started"] == started["children_started"]
    assert probe.STATS["trials"] == started["trials"]
    assert marker.read_text() == imports_after_cold  # no job code ran anywhere
    assert all(v.cached for v in warm.values())
    assert {t: v.verdict for t, v in warm.items()} == {t: v.verdict for t, v in cold.items()}


@needs_sub
def test_touch_keeps_and_edit_invalidates_only_that_job(probe_app):
    probe_app.write({"jobs.a": "import sc_multi_ok\n", "jobs.b": "import json\n"})
    probe_app.check("jobs.a", "jobs.b")
    a_file = probe_app.root / "jobs" / "a.py"
    os.utime(a_file, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched, same content
    warm = probe_app.check("jobs.a", "jobs.b")
    assert warm["jobs.a"].cached and warm["jobs.b"].cached
    a_file.write_text("import sc_single\n")
    after = probe_app.check("jobs.a", "jobs.b")
    assert not after["jobs.a"].cached and after["jobs.a"].verdict == "incompatible"
    assert after["jobs.b"].cached


@needs_sub
def test_upgrading_a_distribution_invalidates_exactly_its_dependents(probe_app, rebuild_fixture_site):
    probe_app.write({"jobs.soft": "import sc_softpkg\n", "jobs.ok": "import sc_multi_ok\n"})
    first = probe_app.check("jobs.soft", "jobs.ok")
    assert first["jobs.soft"].degraded[0].version == "1.0"
    rebuild_fixture_site(versions={"sc-softpkg": "2.0"})
    second = probe_app.check("jobs.soft", "jobs.ok")
    assert not second["jobs.soft"].cached
    assert second["jobs.soft"].degraded[0].version == "2.0"
    assert second["jobs.ok"].cached


@needs_sub
def test_corrupt_cache_is_moved_aside_and_rebuilt(probe_app):
    probe_app.write({"jobs.a": "import json\n"})
    probe_app.check("jobs.a")
    db = probe_app.cache_dir / Cache.FILENAME
    for side in ("-wal", "-shm"):
        if os.path.exists(str(db) + side):
            os.remove(str(db) + side)
    db.write_bytes(b"this is not a database" * 100)
    with pytest.warns(CacheWarning, match="moved to"):
        again = probe_app.check("jobs.a")
    assert again["jobs.a"].verdict == COMPATIBLE and not again["jobs.a"].cached
    assert list(probe_app.cache_dir.glob("cache.sqlite3.corrupt-*"))
    assert probe_app.check("jobs.a")["jobs.a"].cached


def test_half_written_cache_file_is_rebuilt(tmp_path):
    cache = Cache(tmp_path)
    cache.put_extensions("k", [])
    cache._run("INSERT INTO meta VALUES ('x', 'y')")
    cache.close()
    data = (tmp_path / Cache.FILENAME).read_bytes()
    (tmp_path / Cache.FILENAME).write_bytes(data[: len(data) // 3])
    with pytest.warns(CacheWarning):
        assert Cache(tmp_path).summary()["jobs"] == []


def test_cache_from_another_schema_is_rebuilt(tmp_path):
    db = sqlite3.connect(tmp_path / Cache.FILENAME)
    db.executescript(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE jobs (interp TEXT, env TEXT, target TEXT, verdict TEXT,"
        " stamps TEXT, created REAL);"
        "CREATE TABLE extensions (x TEXT); CREATE TABLE interpreters (y TEXT);"
        "INSERT INTO meta VALUES ('schema', '0');"
    )
    db.commit()
    db.close()
    with pytest.warns(CacheWarning, match=f"expected {SCHEMA}"):
        summary = Cache(tmp_path).summary()
    assert summary["schema"] == SCHEMA and summary["jobs"] == []


def test_garbage_row_is_a_miss_not_a_crash(tmp_path):
    cache = Cache(tmp_path)
    cache._run("INSERT INTO jobs VALUES ('i', 'e', 't', '{not json', '[]', 0)")
    assert cache.get_job("i", "e", "t") is None


def test_stamp_uses_content_hash_when_mtime_moves(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("x = 1\n")
    stamp = Stamp.of(str(f))
    assert stamp is not None and stamp.still_valid() is True
    os.utime(f, ns=(1, 10**9))
    refreshed = stamp.still_valid()
    assert isinstance(refreshed, Stamp) and refreshed.mtime_ns == 10**9
    f.write_text("x = 2\n")
    assert stamp.still_valid() is False


_WRITER = """
import sys
from subcompat.cache import Cache
from subcompat.verdict import Verdict
cache = Cache(sys.argv[1])
for i in range(200):
    cache.put_job("interp", "env", Verdict(f"{sys.argv[2]}.job{i}", "compatible", "3.13.0"))
cache.close()
print("done")
"""


def test_two_processes_writing_at_once(tmp_path):
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not any("Warning" in err for _, err in outs), outs  # nothing moved aside
    assert [p.name for p in tmp_path.iterdir() if "corrupt" in p.name] == []
    jobs = Cache(tmp_path).summary()["jobs"]
    assert len(jobs) == 400
    assert {j["target"].split(".")[0] for j in jobs} == {"first", "second"}


def test_verdict_json_round_trip():
    v = Verdict("a.b", DEGRADED, "3.13.0", reason="r", notes=("n",), files=("/x",))
    assert Verdict.from_json(json.loads(json.dumps(v.to_json()))) == v


def _package_verdicts(tmp_path, n: int) -> list[Verdict]:
    """``n`` modules of one package, failing for the same 20 extensions (as every module
    of pandas fails for numpy's), each depending on its own file and the package's."""
    from subcompat.verdict import INCOMPATIBLE, Culprit, ExtensionVerdict

    shared = tmp_path / "pkg" / "__init__.py"
    shared.parent.mkdir()
    shared.write_text("import _core\n")
    culprits = tuple(
        Culprit(f"_ext{i}", f"/site/_ext{i}.so", "dist", "1.0", "no per-interpreter GIL")
        for i in range(1, 21)
    )
    exts = tuple(ExtensionVerdict(f"_ext{i}", f"/site/_ext{i}.so", INCOMPATIBLE) for i in range(1, 21))
    out = []
    for i in range(n):
        own = tmp_path / "pkg" / f"m{i}.py"
        own.write_text(f"x = {i}\n")
        out.append(
            Verdict(
                f"pkg.m{i}",
                INCOMPATIBLE,
                "3.13.0",
                "r",
                culprits,
                (),
                files=(str(shared), str(own)),
                extensions=exts,
            )
        )
    return out


def test_what_the_modules_of_a_package_share_is_stored_once(tmp_path):
    verdicts = _package_verdicts(tmp_path, 50)
    cache = Cache(tmp_path / "c")
    for v in verdicts:
        cache.put_job("interp", "env", v)
    cache.close()
    db = sqlite3.connect(tmp_path / "c" / Cache.FILENAME)
    (lists,) = db.execute("SELECT count(*) FROM lists").fetchone()
    (biggest,) = db.execute("SELECT max(length(verdict)) FROM jobs").fetchone()
    (stamps,) = db.execute("SELECT max(length(stamps)) FROM jobs").fetchone()
    db.close()
    # the culprits, the extension verdicts, the empty list of degraded; and each file's
    # stamp once: the file every module imports, and each module's own
    assert lists == 3 + 1 + 50
    assert stamps < 80  # a row names its two stamps by digest
    assert biggest < len(json.dumps(verdicts[0].to_json())) / 4  # a row names its lists
    warm = Cache(tmp_path / "c")
    assert [warm.get_job("interp", "env", v.target) for v in verdicts] == verdicts
    m0, m1 = (warm.get_job("interp", "env", t) for t in ("pkg.m0", "pkg.m1"))
    assert m0 is not None and m1 is not None and m0.culprits is m1.culprits  # one copy in memory


def test_a_row_names_its_stamps_and_one_missing_or_altered_is_a_miss(tmp_path):
    """A job row refers to its files' stamps by digest; a stamp that is gone, or whose
    body no longer matches its digest, makes that row a miss, never a wrong hit. An
    export writes the stamps inline (another cache reads them as they are)."""
    verdicts = _package_verdicts(tmp_path, 3)
    cache = Cache(tmp_path / "c")
    for v in verdicts:
        cache.put_job("interp", "env", v)
    exported = cache.job_rows()
    cache.close()
    assert all(isinstance(item, list) for row in exported for item in json.loads(row[4]))
    other = Cache(tmp_path / "other")
    assert all(other.put_job_row(row) for row in exported)
    assert [other.get_job("interp", "env", v.target) for v in verdicts] == verdicts
    other.close()
    db = sqlite3.connect(tmp_path / "c" / Cache.FILENAME)
    own = {t: json.loads(s)[-1] for t, s in db.execute("SELECT target, stamps FROM jobs")}
    db.execute("UPDATE lists SET body=replace(body, '[', '[ ') WHERE digest=?", (own["pkg.m0"],))
    db.execute("DELETE FROM lists WHERE digest=?", (own["pkg.m1"],))
    db.commit()
    db.close()
    warm = Cache(tmp_path / "c")
    assert warm.get_job("interp", "env", "pkg.m0") is None
    assert warm.get_job("interp", "env", "pkg.m1") is None
    assert warm.get_job("interp", "env", "pkg.m2") == verdicts[2]
    assert [row[2] for row in warm.job_rows()] == ["pkg.m2"]
    warm.close()


def test_an_edit_after_a_warm_read_is_seen_by_the_next_open(tmp_path):
    """Stamps are checked once per distinct file while a cache is open, not forever."""
    verdicts = _package_verdicts(tmp_path, 3)
    cache = Cache(tmp_path / "c")
    for v in verdicts:
        cache.put_job("interp", "env", v)
    assert all(cache.get_job("interp", "env", v.target) for v in verdicts)
    cache.close()
    (tmp_path / "pkg" / "__init__.py").write_text("import _core, _other\n")
    assert [cache.get_job("interp", "env", v.target) for v in verdicts] == [None, None, None]


def test_export_holds_whole_verdicts_and_import_reads_them(tmp_path):
    verdicts = _package_verdicts(tmp_path, 3)
    source = Cache(tmp_path / "a")
    for v in verdicts:
        source.put_job("interp", "env", v)
    rows = source.job_rows()
    assert [json.loads(r[3])["culprits"][0]["module"] for r in rows] == ["_ext1"] * 3  # inline
    target = Cache(tmp_path / "b")
    assert all(target.put_job_row(r) for r in rows)
    assert [target.get_job("interp", "env", v.target) for v in verdicts] == verdicts


def test_a_row_naming_a_missing_list_is_a_miss(tmp_path):
    (verdict,) = _package_verdicts(tmp_path, 1)
    cache = Cache(tmp_path / "c")
    cache.put_job("interp", "env", verdict)
    cache.close()
    db = sqlite3.connect(tmp_path / "c" / Cache.FILENAME)
    db.execute("DELETE FROM lists")
    db.commit()
    db.close()
    import subcompat.cache as cache_module

    cache_module._LISTS_READ.clear()  # this process read it before: forget, as a new run would
    assert Cache(tmp_path / "c").get_job("interp", "env", verdict.target) is None
