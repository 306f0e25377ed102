"""Items 3 and 4: jobs through a real chancy Worker on a real PostgreSQL.

Run by the target interpreter in the app directory, one scenario per process:

    python _chancy_bench.py '{"op": "queue", "dsn": ..., "executor": ..., ...}'
    python _chancy_bench.py '{"op": "decision", ...}'

prints one JSON object. A ``queue`` scenario declares a fresh queue bound to this
worker only (a unique tag), warms the executor up with ``warmup`` jobs of every kind
it will time (pools spawned to full size, sub-interpreters created, modules imported,
verdicts probed; ``warmup`` is one batch or a list of batches, each waited for), then
pushes ``jobs`` with one ``push_many`` and times from the push to the last completion,
counted in ``Worker.on_job_completed`` (no polling of job state).
Jobs have ``max_attempts=1``: a job that fails in its executor is counted, not retried.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import statistics
import sys
import time
import uuid


def _import_string(path: str):  # noqa: ANN202
    import importlib

    mod, _, name = path.rpartition(".")
    return getattr(importlib.import_module(mod), name)


async def queue_scenario(spec: dict) -> dict:
    from chancy import Chancy, Job, Queue, Worker
    from chancy.job import QueuedJob

    tag = f"bench={uuid.uuid4().hex[:12]}"
    name = "b_" + uuid.uuid4().hex[:12]
    total = len(spec["jobs"])
    warm = spec.get("warmup") or []
    state = {"done": 0, "failed": 0, "target": 0, "event": None}

    class BenchWorker(Worker):
        async def on_job_completed(self, *, queue, job):  # noqa: ANN001
            await super().on_job_completed(queue=queue, job=job)
            if job.state != QueuedJob.State.SUCCEEDED:
                state["failed"] += 1
            state["done"] += 1
            if state["done"] >= state["target"] and state["event"] is not None:
                state["event"].set()

    log = logging.getLogger("bench.chancy")
    log.setLevel(logging.ERROR)
    async with Chancy(spec["dsn"], no_default_plugins=True, log=log) as chancy:
        await chancy.declare(
            Queue(
                name=name,
                concurrency=spec["concurrency"],
                tags={tag},
                executor=spec["executor"],
                executor_options=spec.get("options") or {},
                polling_interval=1,
                eager_polling=True,
            )
        )
        worker = BenchWorker(chancy, tags={tag}, register_signal_handlers=False, shutdown_timeout=60)
        worker.send_outgoing_interval = 0.05
        started = time.perf_counter()
        async with worker:
            # warm-up batches, each waited for: pools reach full size, modules are imported
            # and (auto executor) verdicts probed before anything is timed
            batches = warm if warm and isinstance(warm[0][0], list) else [warm]
            for batch in batches:
                if not batch:
                    continue
                state.update(done=0, target=len(batch), event=asyncio.Event())
                await _push(
                    chancy, [Job(func=f, queue=name, kwargs=kw or {}, max_attempts=1) for f, kw in batch]
                )
                await asyncio.wait_for(state["event"].wait(), timeout=600)
            warmup_s = time.perf_counter() - started
            pools = _pool_sizes(worker.executors.get(name))
            warm_failed = state["failed"]
            state.update(done=0, failed=0, target=total, event=asyncio.Event())
            jobs = [Job(func=f, queue=name, kwargs=kw or {}, max_attempts=1) for f, kw in spec["jobs"]]
            t0 = time.perf_counter()
            await _push(chancy, jobs)
            await asyncio.wait_for(state["event"].wait(), timeout=900)
            elapsed = time.perf_counter() - t0
            counters = _counters(worker, name)
            await worker.stop()
        await chancy.delete_queue(name, purge_jobs=True)
    return {
        "elapsed_s": elapsed,
        "jobs": total,
        "failed": state["failed"],
        "warmup_s": warmup_s,
        "warmup_failed": warm_failed,
        "counters": counters,
        "pools_after_warmup": pools,
    }


def _pool_sizes(executor) -> dict:  # noqa: ANN001
    """Workers alive in each pool (the auto executor's inner pools too): a check that the
    warm-up brought every pool to full size before timing."""
    out: dict = {}
    inner = getattr(executor, "_inner", None)
    for label, ex in inner.items() if isinstance(inner, dict) else [("", executor)]:
        pool = getattr(ex, "pool", None)
        workers = getattr(pool, "_processes", None) or getattr(pool, "_threads", None)
        if workers is not None:
            out[label or type(ex).__name__] = len(workers)
    return out


async def _push(chancy, jobs: list) -> None:  # noqa: ANN001
    async for _refs in chancy.push_many(jobs, batch_size=5000):
        pass


def _counters(worker, queue_name: str) -> dict:  # noqa: ANN001
    """Whatever routing counters the auto executor exposes (module or instance)."""
    out: dict = {}
    try:
        import subcompat.chancy as sc
    except ImportError:
        return out
    for holder in (sc, worker.executors.get(queue_name) if hasattr(worker, "executors") else None):
        for attr in ("COUNTERS", "counters", "STATS", "stats"):
            value = getattr(holder, attr, None)
            if isinstance(value, dict):
                out.update({str(k): v for k, v in value.items() if isinstance(v, (int, float, str))})
    return out


def decision_scenario(spec: dict) -> dict:
    """Item 3a: the auto executor's routing cost per job, for a module it already knows.

    The executor is built on a stand-in worker (the decision needs no database and no
    pool) and seeded with a verdict file (``verdicts=``, the output of ``subcompat check
    --format json``), so no probe runs. Two loops, timed with perf_counter_ns,
    ``repeats`` times each, minus the cost of the same loop doing nothing:

    - ``decision``: ``route_of(module of job.func)``, the in-memory lookup;
    - ``push``: the whole of ``AutoFallbackExecutor.push`` for a known module (lookup,
      limit checks, counters, log call) up to the inner executor's ``push``, which is
      replaced by a no-op here, plus its completion hook (the job copy that records the
      route in ``meta``) up to the inner executor's ``on_job_completed``, also a no-op.
    """
    from chancy import Queue
    from chancy.job import QueuedJob

    import subcompat.chancy as sc

    func = spec["func"]
    module = func.rpartition(".")[0]
    options = dict(spec.get("options") or {})
    verdicts = os.path.join(options.get("cache_dir") or ".", "bench-verdicts.json")
    os.makedirs(os.path.dirname(verdicts), exist_ok=True)
    # as `subcompat check --format json` writes it: the entry names the files its verdict
    # depends on (the job module is pure Python: its own source), which the executor checks
    # before it trusts a sub-interpreter route from a file
    origin = importlib.util.find_spec(module).origin
    with open(verdicts, "w", encoding="utf-8") as fh:
        json.dump(
            {
                "schema": 1,
                "python": sys.version.split()[0],
                "modules": [
                    {
                        "target": module,
                        "verdict": spec.get("verdict", "compatible"),
                        "files": [origin] if origin else [],
                        "dist_stamps": [],
                    }
                ],
            },
            fh,
        )
    options["verdicts"] = verdicts

    class _Chancy:
        log = logging.getLogger("bench.auto")
        plugins: dict = {}

    class _Worker:
        chancy = _Chancy()
        worker_id = "bench"

    queue = Queue(name="bench", concurrency=2, executor=sc.AutoFallbackExecutor.__module__)
    executor = sc.AutoFallbackExecutor(_Worker(), queue, **options)

    async def seeded() -> object:
        """The seeded route: chancy enters every executor with ``async with`` (its worker's
        queue task), and the executor may read the verdict file in the background from then
        on, so wait for it (bounded) as a worker's first jobs would."""
        await executor.__aenter__()
        deadline = time.monotonic() + 30
        route = executor.route_of(module)
        while route is None and time.monotonic() < deadline:
            await asyncio.sleep(0.002)
            route = executor.route_of(module)
        return route

    class _NullInner:
        async def push(self, job):  # noqa: ANN001, ANN202
            return None

        async def on_job_completed(self, *, job, exc=None, result=None):  # noqa: ANN001, ANN202
            return None

        def __len__(self) -> int:
            return 0

    null = _NullInner()
    executor._inner = {name: null for name in ("subinterpreter", "process", "thread")}
    # the completion hook the executor installs on a real inner executor, if it has one
    hook = getattr(executor, "_completion", None)
    complete = hook(null, reroute=True) if hook else None
    import datetime

    now = datetime.datetime.now(tz=datetime.UTC)
    job = QueuedJob(
        func=func,
        queue="bench",
        id=uuid.uuid4(),
        claim_id=uuid.uuid4(),
        created_at=now,
        started_at=now,
        state=QueuedJob.State.RUNNING,
    )
    loops, repeats = spec["loops"], spec["repeats"]

    def decide_loop() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            executor.route_of(job.func.rpartition(".")[0])
        return (time.perf_counter_ns() - t0) / loops

    def empty_loop() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            job.func.rpartition(".")
        return (time.perf_counter_ns() - t0) / loops

    async def push_loop(target, done) -> float:  # noqa: ANN001
        n = max(1, loops // 10)
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await target.push(job)
            await done(job=job)
        return (time.perf_counter_ns() - t0) / n

    async def scenario() -> tuple[object, list[float], list[float], list[float], list[float]]:
        route = await seeded()  # one event loop: the executor's tasks live in it
        if route is None:
            raise SystemExit(f"the verdict file did not seed a route for {module}")
        decide = [decide_loop() for _ in range(repeats)]
        empty = [empty_loop() for _ in range(repeats)]
        auto, inner = [], []
        for _ in range(repeats):
            auto.append(await push_loop(executor, complete or null.on_job_completed))
            inner.append(await push_loop(null, null.on_job_completed))
        return route, decide, empty, auto, inner

    route, decide, empty, auto, inner = asyncio.run(scenario())
    return {
        "decision_ns": decide,
        "decision_base_ns": statistics.median(empty),
        "push_ns": auto,
        "push_base_ns": statistics.median(inner),
        "route": f"{route.route}/{route.executor}",
        "counters": sc.stats() if hasattr(sc, "stats") else {},
    }


def prepare_scenario(spec: dict) -> dict:
    """A UTF-8 database in the cluster, migrated; its DSN.

    ``initdb`` under ``LC_ALL=C`` makes SQL_ASCII databases, where psycopg returns text
    as bytes and chancy fails (``b'active' is not a valid Queue.State``).
    """
    import psycopg
    from chancy import Chancy

    dsn = spec["dsn"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        enc = conn.execute("SHOW server_encoding").fetchone()[0]
        enc = enc.decode() if isinstance(enc, bytes) else enc
        if enc != "UTF8":
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname='bench'").fetchone()
            if not exists:
                conn.execute(
                    "CREATE DATABASE bench ENCODING 'UTF8' TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'"
                )
            dsn = dsn.rsplit("/", 1)[0] + "/bench"

    async def migrate() -> None:
        async with Chancy(dsn, no_default_plugins=True) as chancy:
            await chancy.migrate()

    asyncio.run(migrate())
    return {"dsn": dsn, "server_encoding": enc}


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    sys.path.insert(0, os.getcwd())
    logging.basicConfig(level=logging.ERROR)
    if spec["op"] == "queue":
        out = asyncio.run(queue_scenario(spec))
    elif spec["op"] == "prepare":
        out = prepare_scenario(spec)
    elif spec["op"] == "decision":
        out = decision_scenario(spec)
    else:
        raise SystemExit(f"unknown op {spec['op']!r}")
    sys.stdout.write("\n" + json.dumps(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
