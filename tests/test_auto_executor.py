"""AutoFallbackExecutor through a real chancy Worker on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import pytest
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


def func(name: str):
    import importlib

    return f"chancy_jobs.{name}.job", importlib


async def run_queue(
    env, executor, options, job_names, *, max_attempts=1, timeout=120, concurrency=4, after_push=None
):
    from chancy import Chancy, Job, Queue, Worker
    from chancy.job import QueuedJob

    queue = f"q_{uuid.uuid4().hex[:8]}"
    async with Chancy(env["dsn"]) as app:
        await app.migrate()
        await app.declare(
            Queue(
                queue,
                executor=executor,
                executor_options=options,
                concurrency=concurrency,
                polling_interval=1,
                tags={f"^run={queue}$"},  # only this test's worker: the cluster is shared
            )
        )
        refs = {}
        for name in job_names:
            job = Job(func=f"chancy_jobs.{name}.job", queue=queue, max_attempts=max_attempts)
            refs.setdefault(name, []).append(await app.push(job))
        async with Worker(
            app, register_signal_handlers=False, shutdown_timeout=30, tags={f"run={queue}"}
        ) as worker:
            if after_push:
                await after_push(worker)
            all_refs = [r for rs in refs.values() for r in rs]
            done_states = {QueuedJob.State.SUCCEEDED, QueuedJob.State.FAILED}
            try:
                async with asyncio.timeout(timeout):
                    while True:
                        jobs = await app.get_jobs(all_refs)
                        if all(j.state in done_states for j in jobs):
                            break
                        await asyncio.sleep(0.2)
            except TimeoutError:
                pass
            jobs = {j.id: j for j in await app.get_jobs(all_refs)}
        return {name: [jobs[r.identifier] for r in rs] for name, rs in refs.items()}


def states(result):
    return {name: [j.state.value for j in jobs] for name, jobs in result.items()}


def routes(result):
    return {
        name: {(j.meta.get("subcompat") or {}).get("executor") for j in jobs} for name, jobs in result.items()
    }


AUTO = "subcompat.chancy.AutoFallbackExecutor"


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
    assert counters["probes"] == len(names)  # one probe per module, the 3 compat jobs shared one
    assert counters["route.subinterpreter"] == 3 and counters["route.process"] == 6


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
    assert cached["chancy_jobs.dynamic"] == "incompatible"
    # a later job of that module goes straight to the fallback: no second reroute, and
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


def test_verdict_file_seeds_routes_without_probing(chancy_env):
    import json

    from subcompat import chancy as auto

    verdicts = chancy_env["tmp"] / "verdicts.json"
    verdicts.write_text(
        json.dumps(
            {
                "schema": 1,
                "python": "3.13.0",
                "modules": [
                    {"target": "chancy_jobs.compat", "verdict": "compatible", "route": "subinterpreter"},
                    {"target": "chancy_jobs.incompat", "verdict": "incompatible", "route": "fallback"},
                ],
            }
        )
    )
    result = asyncio.run(
        run_queue(
            chancy_env,
            AUTO,
            {"verdicts": str(verdicts), "cache_dir": chancy_env["cache_dir"]},
            ["compat", "incompat"],
        )
    )
    assert states(result) == {"compat": [SUCCEEDED], "incompat": [SUCCEEDED]}
    assert routes(result) == {"compat": {"subinterpreter"}, "incompat": {"process"}}
    assert auto.stats().get("probes", 0) == 0


def test_corrupt_verdict_file_is_ignored_with_a_warning(chancy_env, caplog):
    bad = chancy_env["tmp"] / "bad.json"
    bad.write_text("{half written")
    result = asyncio.run(
        run_queue(chancy_env, AUTO, {"verdicts": str(bad), "cache_dir": chancy_env["cache_dir"]}, ["compat"])
    )
    assert states(result) == {"compat": [SUCCEEDED]}


def test_unknown_option_is_a_clear_error(chancy_env):
    from subcompat.chancy import AutoFallbackExecutor

    with pytest.raises(ValueError, match="unknown executor_options 'falback'"):
        AutoFallbackExecutor(worker=None, queue=None, falback="process")
    with pytest.raises(ValueError, match="fallback must be one of"):
        AutoFallbackExecutor(worker=None, queue=None, fallback="fork")


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
    assert states(result) == {"compat": [SUCCEEDED] * 3}


def test_killed_probe_child_loses_no_job(chancy_env, monkeypatch):
    """A probe whose child dies (here: the crash fixture) still routes its jobs."""
    result = asyncio.run(
        run_queue(
            chancy_env, AUTO, {"cache_dir": chancy_env["cache_dir"], "probe_timeout": 20}, ["crash", "crash"]
        )
    )
    assert states(result) == {"crash": [SUCCEEDED] * 2}
    assert routes(result) == {"crash": {"process"}}
