"""Run jobs through a real chancy Worker on a real PostgreSQL, in this process or, as a
script, in a child one (for runs that could take the process down with them).

    python _exec_queue.py DSN OPTIONS_JSON NAME [NAME ...]

prints ``{"jobs": {name: [{"state", "executor", "why"}]}, "stats": {...}}`` on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

AUTO = "subcompat.chancy.AutoFallbackExecutor"
Spec = str | tuple[str, dict[str, Any]] | tuple[str, dict[str, Any], int]  # name[, kwargs[, priority]]


async def run_queue(
    env: dict[str, Any],
    executor: str,
    options: dict[str, Any],
    jobs: Sequence[Spec],
    *,
    max_attempts: int = 1,
    timeout: float = 120,
    concurrency: int = 4,
    after_push: Callable[[Any], Awaitable[None]] | None = None,
    module_root: str = "chancy_jobs",
) -> dict[str, list[Any]]:
    """Push ``jobs`` to a fresh queue, run a worker until they are all done (or ``timeout``),
    and return the final QueuedJobs per module name, in push order."""
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
        refs: dict[str, list[Any]] = {}
        for spec in jobs:
            name, kwargs, priority = _unpack(spec)
            module, _, function = name.partition(":")  # "mod" runs mod.job; "mod:f" runs mod.f
            job = Job(
                func=f"{module_root}.{module}.{function or 'job'}",
                queue=queue,
                max_attempts=max_attempts,
                kwargs=kwargs,
                priority=priority,
            )
            refs.setdefault(name, []).append(await app.push(job))
        all_refs = [r for rs in refs.values() for r in rs]
        async with Worker(
            app, register_signal_handlers=False, shutdown_timeout=30, tags={f"run={queue}"}
        ) as worker:
            if after_push:
                await after_push(worker)
            done_states = {QueuedJob.State.SUCCEEDED, QueuedJob.State.FAILED}
            try:
                async with asyncio.timeout(timeout):
                    while not all(j.state in done_states for j in await app.get_jobs(all_refs)):
                        await asyncio.sleep(0.2)
            except TimeoutError:
                pass
            by_id = {j.id: j for j in await app.get_jobs(all_refs)}
        return {name: [by_id[r.identifier] for r in rs] for name, rs in refs.items()}


def _unpack(spec: Spec) -> tuple[str, dict[str, Any], int]:
    if isinstance(spec, str):
        return spec, {}, 0
    return spec[0], spec[1], spec[2] if len(spec) > 2 else 0


def states(result: dict[str, list[Any]]) -> dict[str, list[str]]:
    return {name: [j.state.value for j in jobs] for name, jobs in result.items()}


def routes(result: dict[str, list[Any]]) -> dict[str, set[str | None]]:
    return {
        name: {(j.meta.get("subcompat") or {}).get("executor") for j in jobs} for name, jobs in result.items()
    }


def main(argv: list[str]) -> int:
    from subcompat import chancy as auto

    dsn, options, names = argv[0], json.loads(argv[1]), argv[2:]
    result = asyncio.run(run_queue({"dsn": dsn}, AUTO, options, names, timeout=180))
    out = {
        name: [
            {
                "state": j.state.value,
                **{k: (j.meta.get("subcompat") or {}).get(k) for k in ("executor", "why")},
            }
            for j in jobs
        ]
        for name, jobs in result.items()
    }
    print(json.dumps({"jobs": out, "stats": auto.stats()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
