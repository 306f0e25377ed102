"""A chancy worker that routes each job by subcompat's verdict, end to end.

    pip install -e '.[chancy,test]'      # from a checkout: chancy, psycopg; attrs and msgpack for shop
    python examples/chancy_worker.py postgresql://USER:PASSWORD@HOST/DB

It declares a queue on AutoFallbackExecutor, pushes three jobs of examples/shop (one
compatible, one incompatible, one degraded), runs a worker until they finish and prints
the route each one took. Exit 0 when every job succeeded.

The ``if __name__ == "__main__":`` guard at the bottom is required, not style: chancy's
process executor starts its children with multiprocessing's "spawn", and each child
re-imports this file to find what it was asked to run. Without the guard every child
would run the whole script again (push the jobs again and start another worker) and the
run would never end. subcompat detects that case and stops the copy with an error.
"""

from __future__ import annotations

import asyncio
import sys

QUEUE = "subcompat_example"
TAG = "subcompat-example"  # this queue is served by this script's worker only

#: label -> (job function, kwargs); the module docstrings in examples/shop say why
JOBS = {
    "compatible": ("shop.jobs.reports.daily_report", {"rows": [{"sku": "tea", "qty": 2}]}),
    "incompatible": ("shop.jobs.terminal.history_size", {}),  # readline: single-phase init
    "degraded": ("shop.jobs.serialize.pack", {"payload": {"a": 1}}),  # msgpack falls back
}


async def run(dsn: str, timeout: float = 120) -> int:
    from chancy import Chancy, Job, Queue, Worker
    from chancy.job import QueuedJob

    async with Chancy(dsn) as app:
        await app.migrate()
        await app.declare(
            Queue(
                QUEUE,
                executor="subcompat.chancy.AutoFallbackExecutor",
                executor_options={"fallback": "process"},  # or "thread"
                concurrency=3,
                polling_interval=1,
                tags={f"^{TAG}$"},
            ),
            upsert=True,
        )
        refs = {
            label: await app.push(Job(func=func, queue=QUEUE, kwargs=kwargs, max_attempts=1))
            for label, (func, kwargs) in JOBS.items()
        }
        done = {QueuedJob.State.SUCCEEDED, QueuedJob.State.FAILED}
        async with Worker(app, tags={TAG}, shutdown_timeout=30):
            async with asyncio.timeout(timeout):
                while not all(j.state in done for j in await app.get_jobs(list(refs.values()))):
                    await asyncio.sleep(0.5)
            jobs = {label: await app.get_job(ref) for label, ref in refs.items()}
    for label, job in jobs.items():
        decision = job.meta.get("subcompat", {})
        print(
            f"{label:<13} {job.func:<34} {job.state.value:<10} route={decision.get('route')} "
            f"executor={decision.get('executor')}  ({decision.get('why')})"
        )
    return 0 if all(j.state == QueuedJob.State.SUCCEEDED for j in jobs.values()) else 1


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python examples/chancy_worker.py DSN (postgresql://...)", file=sys.stderr)
        return 2
    import psycopg

    try:
        return asyncio.run(run(argv[0]))
    except TimeoutError:
        print("chancy_worker: the jobs did not finish within 120 s", file=sys.stderr)
        return 1
    except psycopg.OperationalError as exc:  # the database is unreachable or refuses us
        print(f"chancy_worker: cannot use {argv[0]}: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
