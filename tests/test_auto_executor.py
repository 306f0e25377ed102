"""AutoFallbackExecutor through a real chancy Worker on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

import pytest
from _exec_queue import AUTO, routes, run_queue, states
from _req import require_or_skip

pytestmark = pytest.mark.needs_subinterpreters

SUCCEEDED, FAILED = "succeeded", "failed"


@pytest.fixture
def chancy_env(pg_dsn, fixture_site, monkeypatch, tmp_path):
    try:
        import chancy  # noqa: F401
        from chancy.executors.sub import SubInterpreterExecutor  # noqa: F401
    except ImportError as exc:
        chancy = None
        reason = str(exc)
    else:
        reason = ""
    require_or_skip(chancy is not None, f"chancy[sub] is not importable: {reason}")
    tests_dir = os.path.dirname(__file__)
    for path in (str(fixture_site), tests_dir):
        monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fixture_site), tests_dir]))
    for name in [m for m in sys.modules if m.startswith("chancy_jobs")]:
        monkeypatch.delitem(sys.modules, name)
    from subcompat import chancy as auto

    monkeypatch.setattr(auto, "COUNTERS", auto.COUNTERS.__class__())
    return {"dsn": pg_dsn, "cache_dir": str(tmp_path / "cache"), "tmp": tmp_path}


def test_end_to_end_every_job_takes_the_expected_route(chancy_env):
    from subcompat import chancy as auto

    names = ["compat", "degraded", "incompat", "realpkg", "lazy", "crash", "broken"]
    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"fallback": "process", "cache_dir": chancy_env["cache_dir"]},
            names + ["compat", "compat"],
        )
    )
    st = states(result)
    assert st == {
        "compat": [SUCCEEDED] * 3,
        "degraded": [SUCCEEDED],
        "incompat": [SUCCEEDED],
        "realpkg": [SUCCEEDED],
        "lazy": [SUCCEEDED],
        "crash": [SUCCEEDED],
        "broken": [FAILED],
    }
    assert routes(result) == {
        "compat": {"subinterpreter"},
        "degraded": {"process"},
        "incompat": {"process"},
        "realpkg": {"process"},
        "lazy": {"process"},
        "crash": {"process"},
        "broken": {"process"},
    }
    (broken,) = result["broken"]
    assert "this job module is broken everywhere" in broken.errors[-1]["traceback"]
    assert len(broken.errors) == 1
    assert "sc_single" in result["incompat"][0].meta["subcompat"]["why"]
    counters = auto.stats()
    assert counters["probes"] == len(names)  # one probe per job function, the 3 compat jobs shared one
    assert counters["route.subinterpreter"] == 3 and counters["route.process"] == 6


def test_routing_is_per_job_function_not_per_module(chancy_env):
    """One job of a module imports an extension that never loads in a sub-interpreter:
    it alone goes to the process pool; its neighbour keeps the sub-interpreter."""
    from subcompat import chancy as auto

    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"fallback": "process", "cache_dir": chancy_env["cache_dir"]},
            ["mixed:light", "mixed:heavy", "mixed:light"],
        )
    )
    assert states(result) == {"mixed:light": [SUCCEEDED] * 2, "mixed:heavy": [SUCCEEDED]}
    assert routes(result) == {"mixed:light": {"subinterpreter"}, "mixed:heavy": {"process"}}
    assert "sc_single" in result["mixed:heavy"][0].meta["subcompat"]["why"]
    assert auto.stats()["probes"] == 2  # one per job function


def test_plain_subinterpreter_queue_shows_what_auto_prevents(chancy_env):
    """The same jobs on chancy's own SubInterpreterExecutor (crash excluded: it would
    take the test process down, which is the point of probing in a child)."""
    result = asyncio.run(
        run_queue(
            chancy_env,
            "chancy.executors.sub.SubInterpreterExecutor",
            {},
            ["compat", "degraded", "lazy", "dynamic"],
            timeout=60,
        )
    )
    st = states(result)
    assert st["compat"] == [SUCCEEDED]
    assert st["degraded"] == [FAILED]
    assert "AttributeError" in result["degraded"][0].errors[-1]["traceback"]  # CFast was skipped
    assert st["lazy"] == [FAILED]
    assert "does not support loading in subinterpreters" in result["lazy"][0].errors[-1]["traceback"]
    assert st["dynamic"] == [FAILED]


def test_runtime_reroute_keeps_the_attempt_count(chancy_env):
    from subcompat import chancy as auto
    from subcompat.cache import Cache

    result = asyncio.run(
        run_queue(chancy_env, AUTO, {"cache_dir": chancy_env["cache_dir"]}, ["dynamic"], max_attempts=1)
    )
    (job,) = result["dynamic"]
    assert job.state.value == SUCCEEDED
    assert job.attempts == 1 and job.errors == []
    assert job.meta["subcompat"]["executor"] == "process"
    assert "learned at run time" in job.meta["subcompat"]["why"]
    assert auto.stats()["reroutes"] == 1
    cached = {j["target"]: j["verdict"] for j in Cache(chancy_env["cache_dir"]).summary()["jobs"]}
    assert cached["chancy_jobs.dynamic:job"] == "incompatible"  # the job function's verdict
    # a later job of that function goes straight to the fallback: no second reroute, and
    # the decision comes from the cache (no probe child started)
    from subcompat import probe

    children = probe.STATS["children_started"]
    again = asyncio.run(run_queue(chancy_env, AUTO, {"cache_dir": chancy_env["cache_dir"]}, ["dynamic"]))
    assert states(again) == {"dynamic": [SUCCEEDED]}
    assert routes(again) == {"dynamic": {"process"}}
    assert probe.STATS["children_started"] == children
    assert auto.stats()["reroutes"] == 1


def test_single_flight_probe_and_thread_fallback(chancy_env):
    from subcompat import chancy as auto

    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"fallback": "thread", "cache_dir": chancy_env["cache_dir"]},
            ["slowprobe"] * 6 + ["incompat"] * 2,
            concurrency=8,
        )
    )
    assert states(result) == {"slowprobe": [SUCCEEDED] * 6, "incompat": [SUCCEEDED] * 2}
    assert routes(result) == {"slowprobe": {"subinterpreter"}, "incompat": {"thread"}}
    assert auto.stats()["probes"] == 2


def test_a_verdict_from_the_cache_is_counted_as_a_hit_not_a_probe(chancy_env):
    from subcompat import chancy as auto

    options = {"fallback": "thread", "cache_dir": chancy_env["cache_dir"]}
    for _ in range(2):
        result = asyncio.run(run_queue(chancy_env, AUTO, options, ["incompat"]))
        assert routes(result) == {"incompat": {"thread"}}
    assert (auto.stats()["probes"], auto.stats()["cache_hits"]) == (1, 1)


def _verdict_file(path, verdicts, python=None):
    """What ``subcompat check`` computed, with the fingerprints the executor checks."""
    import json

    from subcompat.chancy import PYTHON

    path.write_text(
        json.dumps({"schema": 1, "python": python or PYTHON, "modules": [v.to_json() for v in verdicts]})
    )
    return str(path)


def test_verdict_file_from_check_seeds_routes_without_probing(chancy_env):
    from subcompat import chancy as auto
    from subcompat.cache import Cache
    from subcompat.check import check

    cache = Cache(chancy_env["tmp"] / "ci-cache")  # the CI's cache, not the worker's
    try:
        report = check(
            ["chancy_jobs.compat", "chancy_jobs.incompat"],
            cache=cache,
            jobs=1,
            runtime="chancy",
            sys_path=sys.path,
        )
    finally:
        cache.close()
    assert [v.verdict for v in report.verdicts] == ["compatible", "incompatible"]
    assert all(v.files for v in report.verdicts)  # the fingerprints the entries are checked against
    verdicts = _verdict_file(chancy_env["tmp"] / "verdicts.json", report.verdicts)
    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"verdicts": verdicts, "cache_dir": chancy_env["cache_dir"]},
            ["compat", "incompat"],
        )
    )
    assert states(result) == {"compat": [SUCCEEDED], "incompat": [SUCCEEDED]}
    assert routes(result) == {"compat": {"subinterpreter"}, "incompat": {"process"}}
    assert "(verdict file)" in result["compat"][0].meta["subcompat"]["why"]
    assert auto.stats().get("probes", 0) == 0
    assert auto.stats()["verdicts_used"] == 2


def test_stale_compatible_entry_cannot_crash_the_worker(chancy_env):
    """A verdict file that calls a segfaulting module compatible, written before that module
    last changed, next to a compatible entry without fingerprints: both are probed instead.
    The worker runs in a child process, so trusting the entry fails this test instead of
    killing pytest."""
    import json
    import subprocess

    from subcompat.verdict import Verdict

    jobs_dir = os.path.join(os.path.dirname(__file__), "chancy_jobs")
    crash_file = os.path.join(jobs_dir, "crash.py")
    verdicts = _verdict_file(
        chancy_env["tmp"] / "verdicts.json",
        [
            Verdict("chancy_jobs.crash", "compatible", "", files=(crash_file,)),
            Verdict("chancy_jobs.compat", "compatible", ""),  # no files: nothing to check it against
        ],
    )
    before = os.stat(crash_file).st_mtime_ns // 10**9 - 60
    os.utime(verdicts, (before, before))  # written before crash.py last changed
    options = {"verdicts": verdicts, "cache_dir": chancy_env["cache_dir"], "probe_timeout": 30}
    child = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(__file__), "_exec_queue.py"), chancy_env["dsn"]]
        + [json.dumps(options), "crash", "crash", "compat"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, f"the worker died ({child.returncode}): {child.stderr[-3000:]}"
    out = json.loads(child.stdout.splitlines()[-1])
    assert {n: [j["state"] for j in js] for n, js in out["jobs"].items()} == {
        "crash": [SUCCEEDED] * 2,
        "compat": [SUCCEEDED],
    }
    assert {j["executor"] for j in out["jobs"]["crash"]} == {"process"}
    assert out["jobs"]["compat"][0]["executor"] == "subinterpreter"
    assert "(verdict file)" not in out["jobs"]["compat"][0]["why"]
    assert out["stats"]["probes"] == 2 and out["stats"]["verdicts_ignored"] == 2
    assert "changed after the verdict file was written" in child.stderr


def test_corrupt_verdict_file_is_ignored_with_a_warning(chancy_env, caplog):
    bad = chancy_env["tmp"] / "bad.json"
    bad.write_text("{half written")
    result = asyncio.run(
        run_queue(chancy_env, AUTO, {"verdicts": str(bad), "cache_dir": chancy_env["cache_dir"]}, ["compat"])
    )
    assert states(result) == {"compat": [SUCCEEDED]}
    assert routes(result) == {"compat": {"subinterpreter"}}
    assert any(f"ignoring verdict file {bad} (not JSON" in r.getMessage() for r in caplog.records)


async def _refused_run(env, options, timeout=60):
    """A worker on a queue whose options are invalid: (the job afterwards, seconds until
    the worker stopped by itself)."""
    import contextlib

    from chancy import Chancy, Job, Queue, Worker

    from subcompat.chancy import OptionsError

    queue = f"q_{uuid.uuid4().hex[:8]}"
    async with Chancy(env["dsn"]) as app:
        await app.migrate()
        await app.declare(
            Queue(queue, executor=AUTO, executor_options=options, polling_interval=1, tags={f"^run={queue}$"})
        )
        ref = await app.push(Job(func="chancy_jobs.compat.job", queue=queue))
        started = time.monotonic()
        async with Worker(
            app, register_signal_handlers=False, shutdown_timeout=30, tags={f"run={queue}"}
        ) as w:
            async with asyncio.timeout(timeout):  # the bug: a dead queue, a worker that never stops
                with contextlib.suppress(OptionsError):  # chancy re-raises it when it sees it
                    await w.wait_for_shutdown()
        return await app.get_job(ref), time.monotonic() - started


@pytest.mark.parametrize(
    "options, named",
    [
        ({"fallback": "fork"}, "executor_options['fallback'] must be one of 'process', 'thread', not 'fork'"),
        ({"verdicts": "/nonexistent/verdicts.json"}, "executor_options['verdicts'] does not exist"),
        ({"probe_timeout": "30"}, "executor_options['probe_timeout'] must be a number of seconds, not '30'"),
    ],
)
def test_invalid_option_stops_the_worker_at_start_with_one_clear_error(chancy_env, caplog, options, named):
    job, waited = asyncio.run(_refused_run(chancy_env, options))
    errors = [r for r in caplog.records if r.name == "chancy" and r.levelname == "ERROR"]
    assert len(errors) == 1 and named in errors[0].getMessage(), [r.getMessage() for r in errors]
    assert "stopping the worker" in errors[0].getMessage()
    assert job.state.value == "pending"  # not claimed, not lost: it runs once the options are fixed
    assert waited < 60
    print(f"worker stopped by itself {waited:.2f}s after it started")


def test_shutdown_while_a_probe_runs_loses_no_job(chancy_env, monkeypatch):
    """The worker stops while the first probe is still running: the waiting jobs are
    dispatched once it finishes and run to completion before the executor stops."""
    import threading

    from subcompat import chancy as auto

    probing, release = threading.Event(), threading.Event()
    original = auto.AutoFallbackExecutor._check

    def held_check(self, module):
        probing.set()
        release.wait(60)  # held until the worker has been told to stop
        return original(self, module)

    monkeypatch.setattr(auto.AutoFallbackExecutor, "_check", held_check)

    async def stop_during_probe(worker):
        await asyncio.to_thread(probing.wait, 60)
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0)  # let stop() begin before the probe may finish
        release.set()
        await stopping

    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"cache_dir": chancy_env["cache_dir"]},
            ["compat"] * 3,
            after_push=stop_during_probe,
            timeout=60,
        )
    )
    assert probing.is_set()
    assert states(result) == {"compat": [SUCCEEDED] * 3}, [j.errors for j in result["compat"]]


def test_killed_probe_child_loses_no_job(chancy_env, monkeypatch):
    """A probe whose child dies (here: the crash fixture) still routes its jobs."""
    result = asyncio.run(
        run_queue(
            chancy_env, AUTO, {"cache_dir": chancy_env["cache_dir"], "probe_timeout": 20}, ["crash", "crash"]
        )
    )
    assert states(result) == {"crash": [SUCCEEDED] * 2}
    assert routes(result) == {"crash": {"process"}}


def _records(path) -> list[tuple[str, str, float]]:
    """(tag, "start" | "end", time) lines written by chancy_jobs.stamped."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(tag, kind, float(t)) for tag, kind, t in (line.split() for line in lines if line.strip())]


def _ends(path) -> list[float]:
    return [t for _, kind, t in _records(path) if kind == "end"]


def _probe_imports(gate) -> list[float]:
    """When imports of chancy_jobs.gated started (each then waits for the gate)."""
    try:
        return [float(line) for line in gate.with_name("gate.started").read_text().split()]
    except FileNotFoundError:
        return []


def _most_at_once(records: list[tuple[str, str, float]]) -> int:
    running = most = 0
    for _, kind, _t in sorted(records, key=lambda r: (r[2], r[1] == "start")):  # ends first on ties
        running += 1 if kind == "start" else -1
        most = max(most, running)
    return most


async def _until(condition, timeout: float) -> bool:
    """Wait for a condition the jobs make true (polled); False if it never came."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        return False
    return True


def test_a_held_probe_does_not_hold_the_queue(chancy_env, monkeypatch):
    """Four jobs of a module whose probe is held open (its import waits for a gate file) are
    fetched first and fill the queue's concurrency; four jobs of a module the verdict file
    knows must still run, and finish, before the gate opens."""
    from subcompat import chancy as auto
    from subcompat.verdict import Verdict

    tmp = chancy_env["tmp"]
    gate, log = tmp / "gate", tmp / "stamped.log"
    monkeypatch.setenv("SUBCOMPAT_TEST_GATE", str(gate))
    jobs_dir = os.path.join(os.path.dirname(__file__), "chancy_jobs")
    files = tuple(os.path.join(jobs_dir, f) for f in ("__init__.py", "stamped.py"))
    verdicts = _verdict_file(
        tmp / "verdicts.json", [Verdict("chancy_jobs.stamped", "compatible", "", files=files)]
    )
    seen: dict[str, object] = {}

    async def open_gate_once_the_known_jobs_ran(worker):
        ran = await _until(lambda: len(_ends(log)) == 4 and _probe_imports(gate), 60)
        seen.update(opened=time.time(), probes=auto.stats().get("probes"), ran=ran)
        gate.touch()  # whatever happened: let the probe finish so the worker can stop

    started = time.time()
    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"verdicts": verdicts, "cache_dir": chancy_env["cache_dir"], "probe_timeout": 90},
            [("gated", {}, 10)] * 4 + [("stamped", {"log": str(log), "tag": f"s{i}"}) for i in range(4)],
            concurrency=4,
            after_push=open_gate_once_the_known_jobs_ran,
        )
    )
    assert seen["ran"], "the known module's jobs waited for the other module's probe"
    assert seen["probes"] == 1  # the gated module's probe was in flight the whole time
    assert states(result) == {"gated": [SUCCEEDED] * 4, "stamped": [SUCCEEDED] * 4}
    assert routes(result) == {"gated": {"subinterpreter"}, "stamped": {"subinterpreter"}}
    assert min(_probe_imports(gate)) < seen["opened"]
    assert all(t < seen["opened"] for t in _ends(log))
    assert all(j.completed_at.timestamp() > seen["opened"] for j in result["gated"])
    assert auto.stats()["probes"] == 1 and auto.stats()["verdicts_used"] == 1
    print(f"known jobs done {max(_ends(log)) - started:.2f}s after the start, probe held open meanwhile")


def test_jobs_a_probe_releases_wait_for_a_free_slot(chancy_env, monkeypatch):
    """Concurrency 2: the gated module's two jobs are fetched first and probed; the known
    module's jobs (process executor) take both slots; the probe ends while they run. The
    probed jobs (sub-interpreter pool) must wait for a slot: never more than 2 at once."""
    from subcompat.verdict import Verdict

    tmp = chancy_env["tmp"]
    gate, log = tmp / "gate", tmp / "jobs.log"
    monkeypatch.setenv("SUBCOMPAT_TEST_GATE", str(gate))
    verdicts = _verdict_file(tmp / "verdicts.json", [Verdict("chancy_jobs.stamped", "incompatible", "")])

    busy_when_routed: list[int] = []

    async def open_gate_once_a_known_job_runs(worker):
        await _until(lambda: any(tag.startswith("s") for tag, _, _ in _records(log)), 60)
        gate.touch()
        auto = next(e for e in worker.executors.values() if hasattr(e, "route_of"))
        await _until(lambda: auto.route_of("chancy_jobs.gated") is not None, 60)
        known = [kind for tag, kind, _ in _records(log) if tag.startswith("s")]
        busy_when_routed.append(known.count("start") - known.count("end"))

    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"verdicts": verdicts, "cache_dir": chancy_env["cache_dir"]},
            [("gated", {"log": str(log), "hold": 1.0}, 10)] * 2
            + [("stamped", {"log": str(log), "tag": f"s{i}", "hold": 3.0}) for i in range(4)],
            concurrency=2,
            after_push=open_gate_once_a_known_job_runs,
        )
    )
    assert states(result) == {"gated": [SUCCEEDED] * 2, "stamped": [SUCCEEDED] * 4}
    assert routes(result) == {"gated": {"subinterpreter"}, "stamped": {"process"}}
    records = _records(log)
    assert len(records) == 12
    assert busy_when_routed[0] > 0, "the probe ended when no known job ran: nothing was tested"
    assert _most_at_once(records) == 2
