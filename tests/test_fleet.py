"""Fleet verdicts (issue 16): one probe per module per interpreter build across processes
that share a PostgreSQL store, each with its own local cache ("hosts")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _req import require_or_skip

from subcompat import cache_pg

pytestmark = pytest.mark.needs_subinterpreters

HERE = Path(__file__).parent
PROC = str(HERE / "_fleet_proc.py")
CAP = ["prlimit", "--as=4000000000"]


def _psycopg():
    try:
        import psycopg
    except ImportError:
        psycopg = None
    require_or_skip(psycopg is not None, "psycopg is not installed")
    return psycopg


@pytest.fixture
def store(pg_dsn):
    """A fresh database per test in the shared cluster, so counts are this test's own."""
    psycopg = _psycopg()
    name = f"fleet_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield pg_dsn.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def app(tmp_path, fixture_site, monkeypatch):
    """10 new job modules: even ones load in a sub-interpreter, odd ones import a
    single-phase extension. Each job appends its tag to a log (run exactly once?)."""
    root = tmp_path / "app"
    pkg = root / "fleetjobs"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for i in range(10):
        ext = "sc_multi_ok" if i % 2 == 0 else "sc_single"
        (pkg / f"m{i}.py").write_text(
            f"import {ext}\n\n\ndef job(log='', tag=''):\n"
            "    if log:\n"
            "        with open(log, 'a') as fh:\n"
            "            fh.write(tag + '\\n')\n"
            f"    return {i}\n"
        )
    (pkg / "gated.py").write_text("from chancy_jobs.gated import job  # noqa: F401\n")
    monkeypatch.chdir(root)
    import subcompat

    here = str(Path(subcompat.__file__).parent.parent)  # this tree's subcompat in the children
    path = os.pathsep.join([str(fixture_site), str(HERE), str(root), here])
    monkeypatch.setenv("PYTHONPATH", path)
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("SUBCOMPAT_TEST_GATE", None)
    return {"root": root, "env": env, "tmp": tmp_path, "targets": [f"fleetjobs.m{i}" for i in range(10)]}


def _host_env(app, host: str, **extra: str) -> dict[str, str]:
    return {**app["env"], "SUBCOMPAT_CACHE_DIR": str(app["tmp"] / f"cache-{host}"), **extra}


def _start(args, env, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [*CAP, sys.executable, PROC, *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_ready(procs) -> None:
    for p in procs:
        line = p.stdout.readline()
        assert line.strip() == "ready", p.stderr.read() if p.poll() is not None else line


def _store_counts(url: str) -> dict[str, int]:
    psycopg = _psycopg()
    with psycopg.connect(url) as conn:
        rows = conn.execute(f"SELECT target, probes FROM {cache_pg.TABLE}").fetchall()
    return dict(rows)


def _expected(target: str) -> str:
    return "compatible" if int(target.rsplit("m", 1)[1]) % 2 == 0 else "incompatible"


def test_eight_processes_on_two_hosts_probe_each_module_once(store, app):
    procs = [
        _start(["check", store, *app["targets"]], _host_env(app, "ab"[i % 2]), app["root"]) for i in range(8)
    ]
    try:
        _wait_ready(procs)
        for p in procs:  # all at once
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=600) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    for (_, err), p in zip(outs, procs, strict=True):
        assert p.returncode == 0 and "Traceback" not in err, err
    assert _store_counts(store) == {t: 1 for t in app["targets"]}  # exactly 10 probes fleet-wide
    assert sum(r["probed"] for r in results) == 10
    probed_here = sum(1 for r in results for _, cached in r["verdicts"].values() if not cached)
    assert probed_here == 10  # the 70 others were reported as from cache
    for r in results:
        assert {t: v for t, (v, _) in r["verdicts"].items()} == {t: _expected(t) for t in app["targets"]}


def _lock_holders(url: str) -> list[int]:
    """PIDs (from application_name) of the processes holding a subcompat claim."""
    psycopg = _psycopg()
    from subcompat.cache_pg import LOCK_SPACE

    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT a.application_name, l.granted FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objsubid = 2",
            (LOCK_SPACE,),
        ).fetchall()
    return [(int(name.split(":")[1]), granted) for name, granted in rows if name.startswith("subcompat:")]


def _until(condition, what: str, limit: float = 120.0):
    """Poll a condition that another process makes true (bounded)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_prober_killed_mid_probe_releases_its_claim(store, app):
    gate = app["tmp"] / "gate"
    env = _host_env(app, "a", SUBCOMPAT_TEST_GATE=str(gate))
    first = _start(["check", store, "fleetjobs.gated"], env, app["root"])
    second = _start(
        ["check", store, "fleetjobs.gated"], _host_env(app, "b", SUBCOMPAT_TEST_GATE=str(gate)), app["root"]
    )
    try:
        _wait_ready([first])
        first.stdin.write("go\n")
        first.stdin.flush()
        _until(lambda: Path(f"{gate}.started").exists(), "the first probe to start importing")
        _wait_ready([second])
        second.stdin.write("go\n")
        second.stdin.flush()
        holders = _until(lambda: (h := _lock_holders(store)) and len(h) == 2 and h, "the second to wait")
        assert sorted(granted for _, granted in holders) == [False, True]
        prober = next(pid for pid, granted in holders if granted)
        os.kill(prober, signal.SIGKILL)  # the prlimit'ed python itself: its process group keeps the zygote
        first.wait(timeout=60)
        gate.write_text("")
        out, err = second.communicate(timeout=120)
    finally:
        for p in (first, second):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert first.returncode == -signal.SIGKILL
    assert second.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"verdicts": {"fleetjobs.gated": ["compatible", False]}, "probed": 1}
    assert _store_counts(store) == {"fleetjobs.gated": 1}


def test_store_down_or_silent_means_local_cache_and_one_warning(app, pg_dsn):
    """A port where nothing listens, and one that accepts and never answers: the check
    goes on with the local cache, with one warning; once the local cache knows the
    modules, the store is not even asked."""
    import warnings

    from subcompat.cache import Cache, CacheWarning
    from subcompat.cache_pg import _DOWN_UNTIL, FleetCache
    from subcompat.check import check

    _psycopg()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    try:
        for port in (closed.getsockname()[1], silent.getsockname()[1]):
            url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
            for run in (1, 2):
                _DOWN_UNTIL.pop(url, None)  # as in a fresh process
                store = FleetCache(url, Cache(app["tmp"] / f"cache-{port}"))
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    report = check(app["targets"][:2], cache=store, jobs=2)
                    store.close()
                said = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
                assert len(said) == (1 if run == 1 else 0), said
                assert all("using the local cache" in line for line in said)
                assert [v.verdict for v in report.verdicts] == ["compatible", "incompatible"]
                assert report.probed == (2 if run == 1 else 0)
    finally:
        silent.close()
        closed.close()


def _cli(app, host: str, *args: str, timeout: int = 60) -> subprocess.CompletedProcess[str]:
    """``subcompat`` as one host runs it in the app (capped, as every probe here)."""
    return subprocess.run(
        [*CAP, sys.executable, "-m", "subcompat.cli", *args],
        env=_host_env(app, host),
        cwd=app["root"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_export_import_round_trip_through_the_cli(store, app):
    """Verdicts probed into one host's cache, exported, imported into a store: a second
    host finds them there (no probe) and they carry the fingerprints."""
    run = _cli(app, "a", "check", *app["targets"][:4], "--format", "json", timeout=600)
    assert run.returncode == 1, run.stderr
    exported = _cli(app, "a", "cache", "export")
    assert exported.returncode == 0, exported.stderr
    data = json.loads(exported.stdout)
    assert sorted(m["target"] for m in data["modules"]) == app["targets"][:4]
    assert all(m["stamps"] and m["interp"] and m["env"] for m in data["modules"])
    path = app["tmp"] / "verdicts.json"
    path.write_text(exported.stdout)
    imported = _cli(app, "b", "cache", "import", str(path), "--cache", store)
    assert imported.returncode == 0, imported.stderr
    assert "imported 4 verdict(s)" in imported.stdout
    assert _store_counts(store) == {t: 0 for t in app["targets"][:4]}  # imported, not probed
    again = _cli(app, "c", "cache", "import", str(path), "--cache", store)
    assert "imported 0 verdict(s)" in again.stdout  # never over what is there
    host_b = _cli(app, "d", "check", *app["targets"][:4], "--format", "json", "--cache", store, timeout=600)
    report = json.loads(host_b.stdout)
    assert [m["cached"] for m in report["modules"]] == [True] * 4
    assert [m["verdict"] for m in report["modules"]] == [_expected(t) for t in app["targets"][:4]]
    # a changed file: the fingerprint no longer matches, the entry is not used
    (app["root"] / "fleetjobs" / "m0.py").write_text("import sc_single\n\n\ndef job():\n    return 0\n")
    host_c = _cli(app, "e", "check", "fleetjobs.m0", "--format", "json", "--cache", store, timeout=600)
    (entry,) = json.loads(host_c.stdout)["modules"]
    assert entry["verdict"] == "incompatible" and entry["cached"] is False


def test_bad_store_input_is_one_line_exit_2(app, tmp_path):
    cli = [sys.executable, "-m", "subcompat.cli"]
    cases = [
        (["check", "fleetjobs.m0", "--cache", "mysql://x"], "expected a postgresql:// URL"),
        (["cache", "import", str(tmp_path / "missing.json")], "No such file"),
        (["cache", "export", "extra"], "takes one FILE"),
    ]
    (tmp_path / "bad.json").write_text("[[[")
    cases.append((["cache", "import", str(tmp_path / "bad.json")], "not JSON"))
    for argv, message in cases:
        run = subprocess.run(
            [*cli, *argv],
            env=_host_env(app, "x"),
            cwd=app["root"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and message in run.stderr, (argv, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


def test_without_psycopg_a_store_url_is_one_line_exit_2(app, tmp_path):
    """The core without the chancy extra: psycopg hidden by a path entry that shadows it."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "psycopg.py").write_text("raise ImportError('psycopg hidden for this test')\n")
    env = _host_env(app, "x")
    env["PYTHONPATH"] = f"{shadow}{os.pathsep}{env['PYTHONPATH']}"
    run = subprocess.run(
        [sys.executable, "-m", "subcompat.cli", "check", "fleetjobs.m0", "--cache", "postgresql://h/db"],
        env=env,
        cwd=app["root"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "subcompat: error: a postgresql:// cache needs psycopg: pip install 'subcompat[chancy]' (or psycopg)"
    )


# -- through real chancy workers ------------------------------------------------------


# probe_timeout bounds a worker's wait for another's probe (+ 5 s): generous, so that a
# loaded machine cannot turn a wait into a second probe
OPTIONS = {"cache": "chancy", "fallback": "process", "probe_timeout": 120}


def _require_chancy():
    try:
        import chancy  # noqa: F401
        from chancy.executors.sub import SubInterpreterExecutor  # noqa: F401
    except ImportError as exc:
        require_or_skip(False, f"chancy[sub] is not importable: {exc}")


async def _declare_and_push(dsn: str, queue: str, options: dict, jobs: list[tuple[str, dict]]):
    from chancy import Chancy, Job, Queue

    async with Chancy(dsn) as app:
        await app.migrate()
        await app.declare(
            Queue(
                queue,
                executor="subcompat.chancy.AutoFallbackExecutor",
                executor_options=options,
                concurrency=2,
                polling_interval=1,
                tags={f"^run={queue}$"},
            )
        )
        return [await app.push(Job(func=func, queue=queue, kwargs=kw)) for func, kw in jobs]


async def _all_done(dsn: str, refs, limit: float = 300.0):
    """The jobs once every one has finished (polled: they finish in other processes)."""
    from chancy import Chancy
    from chancy.job import QueuedJob

    done = {QueuedJob.State.SUCCEEDED, QueuedJob.State.FAILED}
    deadline = time.monotonic() + limit
    async with Chancy(dsn) as app:
        while True:
            jobs = await app.get_jobs(refs)
            if all(j.state in done for j in jobs) or time.monotonic() > deadline:
                return jobs
            await asyncio.sleep(0.2)


def _workers(store: str, queue: str, app, n: int, *extra: str, **env) -> list[subprocess.Popen]:
    procs = [
        _start(["worker", store, queue, *extra], _host_env(app, "ab"[i % 2], **env), app["root"])
        for i in range(n)
    ]
    _wait_ready(procs)
    return procs


def _stop(procs) -> list[str]:
    errs = []
    for p in procs:
        if p.poll() is None:
            p.stdin.close()
    for p in procs:
        try:
            errs.append(p.communicate(timeout=90)[1])
        except (subprocess.TimeoutExpired, ValueError):
            os.killpg(p.pid, signal.SIGKILL)
            errs.append("")
    return errs


def _ran_once(log: Path, tags: list[str]) -> bool:
    lines = log.read_text().split() if log.exists() else []
    return sorted(lines) == sorted(tags)


def test_eight_chancy_workers_share_one_probe_per_module(store, app):
    """8 worker processes, two hosts, 10 new modules, 30 jobs pushed at once into the
    chancy database that also holds the verdicts (``cache="chancy"``)."""
    _require_chancy()
    log = app["tmp"] / "ran.log"
    queue = f"q_{uuid.uuid4().hex[:8]}"
    jobs = [(f"{t}.job", {"log": str(log), "tag": f"{t}#{k}"}) for t in app["targets"] for k in range(3)]
    asyncio.run(_declare_and_push(store, queue, OPTIONS, []))
    procs = _workers(store, queue, app, 8)
    try:
        refs = asyncio.run(_declare_and_push(store, queue, OPTIONS, jobs))
        finished = asyncio.run(_all_done(store, refs))
    finally:
        errs = _stop(procs)
    assert [j.state.value for j in finished] == ["succeeded"] * 30, errs
    assert all(j.attempts == 1 for j in finished)
    assert _ran_once(log, [kw["tag"] for _, kw in jobs]), log.read_text()
    for j in finished:
        module = j.func.rpartition(".")[0]
        wanted = "subinterpreter" if _expected(module) == "compatible" else "process"
        assert j.meta["subcompat"]["executor"] == wanted, (module, j.meta)
    # exactly 10 probes, fleet-wide: one per job function (chancy routes per function)
    assert _store_counts(store) == {f"{t}:job": 1 for t in app["targets"]}


def test_chancy_worker_killed_mid_probe_another_takes_over(store, app):
    _require_chancy()
    gate = app["tmp"] / "gate"
    log = app["tmp"] / "ran.log"
    queue = f"q_{uuid.uuid4().hex[:8]}"
    options = OPTIONS
    gated = [("chancy_jobs.gated.job", {"log": str(log)})] * 4
    later = [("fleetjobs.m0.job", {"log": str(log), "tag": f"m0#{k}"}) for k in range(2)]
    asyncio.run(_declare_and_push(store, queue, options, []))
    procs = _workers(store, queue, app, 3, "10", SUBCOMPAT_TEST_GATE=str(gate))
    try:
        refs = asyncio.run(_declare_and_push(store, queue, options, gated))
        _until(lambda: Path(f"{gate}.started").exists(), "the gated module's probe")
        holders = _until(lambda: [pid for pid, granted in _lock_holders(store) if granted], "a claim")
        (prober,) = holders
        victim = next(p for p in procs if p.pid == prober)
        os.kill(prober, signal.SIGKILL)
        victim.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):  # what it left: chancy's process pool
            os.killpg(prober, signal.SIGKILL)
        gate.write_text("")
        refs += asyncio.run(_declare_and_push(store, queue, options, later))
        finished = asyncio.run(_all_done(store, refs))
    finally:
        errs = _stop([p for p in procs if p.poll() is None])
    assert [j.state.value for j in finished] == ["succeeded"] * 6, errs
    lines = log.read_text().splitlines()
    assert sorted(x for x in lines if x.startswith("m0#")) == ["m0#0", "m0#1"]  # none lost or run twice
    assert sum(1 for x in lines if x.startswith("gated start")) == 4
    counts = _store_counts(store)
    assert counts["chancy_jobs.gated:job"] == 1  # the dead prober wrote nothing; one took over


def test_verdict_store_stopped_jobs_keep_flowing(pg_dsn, app, caplog):
    """The verdict store is a cluster of its own here (chancy's database must stay up for
    jobs to flow at all). Stopped between two runs of this process: known modules route
    from the local cache, new ones are probed locally, one warning for both probes."""
    _require_chancy()
    from _exec_queue import AUTO, routes, run_queue, states
    from _pg import STOP, throwaway_cluster

    env = {"dsn": pg_dsn}
    added = [p for p in app["env"]["PYTHONPATH"].split(os.pathsep) if p not in sys.path]
    sys.path[:0] = added
    try:
        with throwaway_cluster() as store_url:
            options = {"cache": store_url, "cache_dir": str(app["tmp"] / "cache-w")}
            first = asyncio.run(
                run_queue(env, AUTO, options, ["m0", "m1"], timeout=300, module_root="fleetjobs")
            )
            assert states(first) == {"m0": ["succeeded"], "m1": ["succeeded"]}, [
                j.errors for jobs in first.values() for j in jobs
            ]
            assert _store_counts(store_url) == {"fleetjobs.m0:job": 1, "fleetjobs.m1:job": 1}

            STOP[store_url]()  # the worker process lives on; its verdict store is gone
            caplog.set_level("WARNING")
            from subcompat import chancy as auto

            before = auto.stats()
            second = asyncio.run(
                run_queue(env, AUTO, options, ["m0", "m1", "m2", "m3"], timeout=300, module_root="fleetjobs")
            )
    finally:
        for path in added:
            sys.path.remove(path)
    assert states(second) == {m: ["succeeded"] for m in ("m0", "m1", "m2", "m3")}
    assert routes(second) == {
        "m0": {"subinterpreter"},
        "m1": {"process"},
        "m2": {"subinterpreter"},
        "m3": {"process"},
    }
    after = auto.stats()
    # m0, m1 from the local cache, m2, m3 probed here: none failed
    assert after.get("cache_hits", 0) - before.get("cache_hits", 0) == 2
    assert after["probes"] - before.get("probes", 0) == 2
    assert not after.get("probe_errors")
    from subcompat.cache import Cache

    cache = Cache(app["tmp"] / "cache-w")
    try:
        local = {j["target"] for j in cache.summary()["jobs"]}
    finally:
        cache.close()
    assert local == {f"fleetjobs.m{i}:job" for i in range(4)}  # m2, m3 probed and kept locally
    said = [r.getMessage() for r in caplog.records if "using the local cache" in r.getMessage()]
    assert len(said) == 1, said


def test_config_names_the_store(store, app):
    (app["root"] / "pyproject.toml").write_text(f'[tool.subcompat]\ncache = "{store}"\n')
    run = subprocess.run(
        [*CAP, sys.executable, "-m", "subcompat.cli", "check", "fleetjobs.m0"],
        env=_host_env(app, "a"),
        cwd=app["root"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert _store_counts(store) == {"fleetjobs.m0": 1}
    from subcompat import config

    for bad in ("/var/cache", 1, "sqlite:///x"):
        with pytest.raises(config.ConfigError) as err:
            config.parse({"cache": bad})
        assert err.value.key == "tool.subcompat.cache"


def test_exported_verdicts_seed_the_executor_where_fingerprints_match(app):
    """The executor's ``verdicts`` option reads an export: entries are checked by content
    hash and interpreter build, not by mtime (files deployed elsewhere are newer)."""
    _require_chancy()
    from subcompat import chancy as auto
    from subcompat import transfer
    from subcompat.cache import Cache
    from subcompat.check import check

    cache = Cache(app["tmp"] / "cache-ci")
    try:
        check(app["targets"][:2], cache=cache, jobs=2)
        exported = transfer.export(cache.job_rows())
    finally:
        cache.close()
    path = app["tmp"] / "verdicts.json"
    path.write_text(json.dumps(exported))
    for f in (app["root"] / "fleetjobs").glob("m*.py"):  # "deployed" after the file was written
        os.utime(f)
    seed = auto.load_verdicts(str(path))
    assert {m: r.route for m, r in seed.routes.items()} == {
        "fleetjobs.m0": "subinterpreter",
        "fleetjobs.m1": "fallback",
    }
    (app["root"] / "fleetjobs" / "m0.py").write_text("import sc_single\n\n\ndef job():\n    return 0\n")
    seed = auto.load_verdicts(str(path))
    assert set(seed.routes) == {"fleetjobs.m1"}
    assert "is not the file that was probed" in seed.ignored["fleetjobs.m0"]
    exported["modules"][1]["interp"] = "another-build"
    path.write_text(json.dumps(exported))
    assert auto.load_verdicts(str(path)).ignored["fleetjobs.m1"] == "made by another interpreter build"


def test_executor_cache_option_is_checked():
    _require_chancy()
    from subcompat import chancy as auto

    assert auto.validate_options({"cache": "chancy"}).cache == "chancy"
    assert auto.validate_options({"cache": "postgresql://h/db"}).cache == "postgresql://h/db"
    for bad in ("mysql://h/db", 3, ""):
        with pytest.raises(auto.OptionsError, match=r"executor_options\['cache'\] must be 'chancy' or a"):
            auto.validate_options({"cache": bad})
