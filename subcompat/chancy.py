"""A chancy executor that runs each job in a sub-interpreter when its module can load
there, and in a process (or thread) executor otherwise.

    Queue("default", executor="subcompat.chancy.AutoFallbackExecutor",
          executor_options={"fallback": "process"})

Routing is per job-function module. A known module is a dict lookup on the event loop;
an unknown one is probed once (single flight, off the loop) while its jobs wait. A job
that still hits the sub-interpreter ImportError at run time (an import the probe could
not see) is re-run on the fallback without spending an attempt, and its module is
remembered as incompatible.

This module imports chancy; the rest of subcompat does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import sys
from collections import Counter

from chancy.executors.base import Executor
from chancy.executors.process import ProcessExecutor
from chancy.executors.thread import ThreadedExecutor
from chancy.job import Limit, QueuedJob, Reference

from subcompat.probe import SUBINTERP_MESSAGE
from subcompat.route import FALLBACK, SUBINTERPRETER, Policy, Route, route_for
from subcompat.verdict import Verdict

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

OPTIONS = ("fallback", "degraded", "cache_dir", "probe_timeout", "verdicts")

#: Process-wide counters: ``route.subinterpreter``, ``route.process``, ``route.thread``,
#: ``probes``, ``reroutes``, ``probe_errors``.
COUNTERS: Counter[str] = Counter()


def stats() -> dict[str, int]:
    return dict(COUNTERS)


def _sub_executor_class() -> tuple[type[Executor] | None, str | None]:
    if sys.version_info < (3, 13):
        return None, f"Python {sys.version_info[0]}.{sys.version_info[1]} has no isolated sub-interpreters"
    try:
        from chancy.executors.sub import SubInterpreterExecutor
    except ImportError as exc:
        return None, f"chancy's SubInterpreterExecutor cannot be imported ({exc})"
    return SubInterpreterExecutor, None


def is_subinterpreter_import_error(exc: BaseException) -> bool:
    """The sub-interpreter refusal, wherever it sits in the chain (wrapped, or
    re-created on this side of the interpreter boundary)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if SUBINTERP_MESSAGE in str(cur):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


class AutoFallbackExecutor(Executor):
    """One executor to chancy; a sub-interpreter, a process and a thread pool inside,
    each created on first use."""

    capabilities = (
        Executor.Capability.SYNC_JOBS
        | Executor.Capability.ASYNC_JOBS
        | Executor.Capability.COOPERATIVE_TIME_LIMITS
    )

    @classmethod
    def get_capabilities(cls) -> Executor.Capability:
        # whatever one of the inner executors can do, a job routed there gets
        return cls.capabilities | ProcessExecutor.get_capabilities() | ThreadedExecutor.get_capabilities()

    def __init__(self, worker: Any, queue: Any, **options: Any) -> None:
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ValueError(
                f"AutoFallbackExecutor: unknown executor_options {', '.join(map(repr, unknown))} "
                f"(valid: {', '.join(OPTIONS)})"
            )
        super().__init__(worker, queue)
        self.policy = Policy(
            fallback=options.get("fallback", "process"), degraded=options.get("degraded", FALLBACK)
        )
        self.cache_dir = options.get("cache_dir")
        self.probe_timeout = float(options.get("probe_timeout", 30.0))
        if self.probe_timeout <= 0:
            raise ValueError("AutoFallbackExecutor: probe_timeout must be > 0")
        self._inner: dict[str, Executor] = {}
        self._routes: dict[str, Route] = {}
        self._probes: dict[str, asyncio.Future[Route]] = {}
        self._waiting: dict[tuple[Any, Any], QueuedJob] = {}  # jobs whose module is being probed
        self._tasks: dict[tuple[Any, Any], asyncio.Task[Any]] = {}
        self._meta: dict[Any, dict[str, str]] = {}  # job id -> route, until it completes
        self._debug = worker.chancy.log.isEnabledFor(logging.DEBUG)
        self._sub_cls, self._unavailable = _sub_executor_class()
        if self._unavailable:
            self._log(
                "warning",
                f"subcompat: {self._unavailable}; every job runs on the {self.policy.fallback} executor",
            )
        if options.get("verdicts"):
            self._load_verdicts(options["verdicts"])

    # -- chancy's executor interface -------------------------------------------
    async def push(self, job: QueuedJob) -> Any:
        module = job.func.rpartition(".")[0]
        route = self._routes.get(module)
        if route is not None:
            return await self._dispatch(job, route)
        key = (job.id, job.claim_id)
        self._waiting[key] = job  # counted in len(): the worker must not over-fetch
        task = asyncio.create_task(self._dispatch_when_known(job, module, key))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return task

    def __len__(self) -> int:
        return len(self._waiting) + sum(len(inner) for inner in self._inner.values())

    def get_running_jobs(self) -> list[QueuedJob]:
        jobs = list(self._waiting.values())
        for inner in self._inner.values():
            jobs.extend(inner.get_running_jobs())
        return jobs

    def get_default_concurrency(self) -> int:
        return ThreadedExecutor.get_default_concurrency(self)  # chancy's own default (CPUs + 4)

    async def cancel(self, ref: Reference) -> None:
        for job in list(self._waiting.values()):
            if job.id == ref.identifier:
                await self.cancel_execution(job)
        for inner in list(self._inner.values()):
            await inner.cancel(ref)

    async def cancel_execution(self, job: QueuedJob) -> None:
        key = (job.id, job.claim_id)
        if self._waiting.pop(key, None) is not None:
            task = self._tasks.get(key)
            if task is not None:
                task.cancel()
            await self.on_job_completed(job=job, exc=asyncio.CancelledError("cancelled before it started"))
            return
        for inner in list(self._inner.values()):
            await inner.cancel_execution(job)

    async def stop(self) -> None:
        # jobs waiting for a probe are dispatched first: none is lost on shutdown
        if self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        for inner in list(self._inner.values()):
            await inner.stop()

    async def _stop_on_cancel(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for inner in list(self._inner.values()):
            await inner._stop_on_cancel()

    # -- routing -----------------------------------------------------------------
    def route_of(self, module: str) -> Route | None:
        """The decision for a module, if known (an in-memory lookup)."""
        return self._routes.get(module)

    async def _dispatch_when_known(self, job: QueuedJob, module: str, key: tuple[Any, Any]) -> Any:
        try:
            route = await self._decide(module)
            if key in self._waiting:
                return await self._dispatch(job, route)
        finally:
            self._waiting.pop(key, None)

    async def _decide(self, module: str) -> Route:
        """One probe per module however many of its jobs arrive together."""
        future = self._probes.get(module)
        if future is None:
            future = asyncio.ensure_future(self._probe(module))
            self._probes[module] = future
        return await asyncio.shield(future)

    async def _probe(self, module: str) -> Route:
        try:
            if self._unavailable:
                route = Route(FALLBACK, self.policy.fallback, self._unavailable)
            else:
                COUNTERS["probes"] += 1
                try:
                    verdict = await asyncio.to_thread(self._check, module)
                except Exception as exc:  # a probe that cannot run must not lose jobs
                    COUNTERS["probe_errors"] += 1
                    self._log("warning", f"subcompat: probing {module} failed ({exc}); using the fallback")
                    verdict = None
                route = route_for(verdict, self.policy)
                if verdict is not None and verdict.culprits:
                    route = dataclasses.replace(
                        route, why=f"{route.why}: {', '.join(c.module for c in verdict.culprits)}"
                    )
            self._routes[module] = route
            return route
        finally:
            self._probes.pop(module, None)

    def _check(self, module: str) -> Verdict:
        from subcompat.cache import Cache
        from subcompat.check import check

        cache = Cache(self.cache_dir)
        try:
            report = check(
                [module],
                cache=cache,
                timeout=self.probe_timeout,
                jobs=1,
                policy=self.policy,
                runtime="chancy",
                sys_path=sys.path,
            )
        finally:
            cache.close()
        return report.verdicts[0]

    async def _dispatch(self, job: QueuedJob, route: Route) -> Any:
        executor, why = route.executor, route.why
        if executor != "process" and Executor.get_limit(job, Limit.Type.MEMORY) is not None:
            executor, why = "process", f"{why}; memory limit needs the process executor"
        elif executor != "process" and Executor.get_limit(job, Limit.Type.TIME) is not None:
            executor, why = "process", f"{why}; time limit enforced by the process executor"
        # written into job.meta when the job completes, not now: a bigger job would be
        # pickled into the sub-interpreter and back for nothing (3% of throughput)
        self._meta[job.id] = {"route": route.route, "executor": executor, "why": why}
        COUNTERS[f"route.{executor}"] += 1
        if self._debug:
            self._log("debug", f"subcompat: job {job.id} ({job.func}) -> {executor}: {why}")
        try:
            return await self._executor(executor).push(job)
        except BaseException:
            self._meta.pop(job.id, None)
            raise

    def _executor(self, name: str) -> Executor:
        inner = self._inner.get(name)
        if inner is None:
            if name == SUBINTERPRETER:
                assert self._sub_cls is not None
                inner = self._sub_cls(self.worker, self.queue)
            elif name == "process":
                inner = ProcessExecutor(self.worker, self.queue)
            else:
                inner = ThreadedExecutor(self.worker, self.queue)
            inner.on_job_completed = self._completion(inner, reroute=name == SUBINTERPRETER)  # type: ignore[method-assign]
            self._inner[name] = inner
        return inner

    def _completion(self, inner: Executor, reroute: bool) -> Any:
        """The inner executor's completion, with the route recorded in ``job.meta`` and,
        for the sub-interpreter, a job that hit the sub-interpreter ImportError rerouted."""
        original = inner.on_job_completed

        async def on_job_completed(*, job: QueuedJob, exc: BaseException | None = None, result: Any = None):
            info = self._meta.pop(job.id, None)
            if reroute and exc is not None and is_subinterpreter_import_error(exc):
                await self._reroute(job, exc)
                return
            if info is not None:
                job = dataclasses.replace(job, meta={**job.meta, "subcompat": info})
            await original(job=job, exc=exc, result=result)

        return on_job_completed

    async def _reroute(self, job: QueuedJob, exc: BaseException) -> None:
        """The probe missed an import: learn it, and run the job again on the fallback.
        No attempt is recorded: the job never ran its code to completion anywhere."""
        module = job.func.rpartition(".")[0]
        COUNTERS["reroutes"] += 1
        message = str(exc)
        route = Route(FALLBACK, self.policy.fallback, f"learned at run time: {message}")
        self._routes[module] = route
        self._log("warning", f"subcompat: {job.func} failed in a sub-interpreter ({message}); rerouted")
        try:
            await asyncio.to_thread(self._learn, module, message)
        except Exception as err:  # the job matters more than the cache
            self._log("warning", f"subcompat: could not record {module} in the cache ({err})")
        await self._dispatch(job, route)

    def _learn(self, module: str, message: str) -> None:
        from subcompat.cache import Cache
        from subcompat.check import record_runtime_failure

        cache = Cache(self.cache_dir)
        try:
            record_runtime_failure(module, message, cache=cache, runtime="chancy", sys_path=sys.path)
        finally:
            cache.close()

    def _load_verdicts(self, path: str) -> None:
        """Seed decisions from ``subcompat check --format json`` output."""
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if not isinstance(data, dict) or data.get("schema") != 1:
                raise ValueError(
                    f"schema {data.get('schema') if isinstance(data, dict) else None!r}, expected 1"
                )
            entries = [(m["target"].partition(":")[0], m["verdict"]) for m in data["modules"]]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._log("warning", f"subcompat: ignoring verdict file {path} ({exc}); modules will be probed")
            return
        for module, verdict in entries:
            route = route_for(Verdict(module, verdict, str(data.get("python", ""))), self.policy)
            self._routes[module] = dataclasses.replace(route, why=f"{route.why} (verdict file)")

    def _log(self, level: str, message: str) -> None:
        getattr(self.worker.chancy.log, level)(message)
