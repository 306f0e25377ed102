"""A chancy executor that runs each job in a sub-interpreter when its module can load
there, and in a process (or thread) executor otherwise.

    Queue("default", executor="subcompat.chancy.AutoFallbackExecutor",
          executor_options={"fallback": "process"})

Routing is per job function: ``pkg.jobs.report`` is probed as the target
``pkg.jobs:report``, so only the deferred imports that function reaches count (one numpy
job in a module of ten sends only itself to a process). A known function is a dict
lookup on the event loop (a verdict file's entry for a whole module applies to each of
its functions); an unknown one is probed once (single flight, in a thread of its own
pool, off the loop) while its jobs wait. A job that still hits the sub-interpreter
ImportError at run time (an import the probe could not see; on Python 3.14+ it may
arrive as a ``NotShareableError`` with the ImportError down its cause/context chain) is
re-run on the fallback without spending an attempt, and its function is remembered as
incompatible.

Slots. Jobs waiting for their module's probe hold no slot of the queue: up to one queue's
worth of them (``concurrency``) are not counted, so the worker keeps fetching and jobs of
known modules run meanwhile. Once routed, they wait for a free slot like any job, so no
more than ``concurrency`` jobs ever run at once across the inner executors.

Invalid options. ``__init__`` checks every option; a bad one raises :class:`OptionsError`
naming it. chancy builds executors inside its per-queue task, where an exception ends that
task silently (jobs stay pending forever, asyncio prints "Task exception was never
retrieved" at best). So before raising, the executor logs the error on chancy's logger and
stops the worker: the worker exits at start with one clear ERROR line instead of serving
a dead queue. The queue's jobs stay pending until the options are fixed.

Verdict file (``verdicts``). Read once, in a thread, non-blocking (a FIFO cannot stall it),
at most 16 MiB and 32 levels of nesting (checked before parsing, so a hostile file cannot
exhaust the stack). An entry is used only if its ``python`` (the entry's own, or the
file's) is this interpreter's version and none of the files it depends on (``files`` and
``dist_stamps``, as in Verdict JSON) changed after the file was written or vanished. An
entry that would send jobs into a sub-interpreter must carry those fingerprints: without
them its module is probed instead (a wrong "compatible" can kill the worker); an entry
that routes to the fallback is used without them (a wrong one only costs speed).

This module imports chancy; the rest of subcompat does not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import os
import stat
import sys
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from chancy.executors.base import Executor
from chancy.executors.process import ProcessExecutor
from chancy.executors.thread import ThreadedExecutor
from chancy.job import Limit, QueuedJob, Reference

from subcompat._bounded import Refused, file_kind, read_regular
from subcompat._support import no_subinterpreters
from subcompat.learn import (  # noqa: F401 (the first two re-exported: their home was here)
    CHAIN_LIMIT,
    is_subinterpreter_import_error,
    subinterpreter_import_message,
)
from subcompat.report import ReportFormatError, parse_report
from subcompat.route import DEFAULT_POLICY, FALLBACK, FALLBACKS, SUBINTERPRETER, Policy, Route, route_for
from subcompat.verdict import SEVERITY, Verdict

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any, NoReturn

OPTIONS = ("fallback", "degraded", "cache_dir", "probe_timeout", "verdicts", "cache")
MAX_VERDICTS_BYTES = 16 << 20
MAX_VERDICTS_DEPTH = 32  # a report nests 6 deep
PROBE_THREADS = 2  # probes at once; their own pool, so the loop's default one stays free
PYTHON = "{}.{}.{}".format(*sys.version_info[:3])  # as the probe describes an interpreter

#: Process-wide counters: ``route.subinterpreter``, ``route.process``, ``route.thread``,
#: ``probes``, ``reroutes``, ``probe_errors``, ``verdicts_used``, ``verdicts_ignored``.
COUNTERS: Counter[str] = Counter()
_BACKGROUND: set[asyncio.Task[Any]] = set()  # worker stops requested by a refused executor


def stats() -> dict[str, int]:
    return dict(COUNTERS)


# -- options ----------------------------------------------------------------------


class OptionsError(ValueError):
    """An ``executor_options`` value the executor cannot run with; the message names it."""


@dataclass(frozen=True)
class Config:
    policy: Policy
    cache_dir: str | None
    probe_timeout: float
    verdicts: str | None
    cache: str | None = None  # a postgresql:// verdict store, or "chancy": the worker's database


def validate_options(options: dict[str, Any]) -> Config:
    """The options checked, or an OptionsError naming the first bad one."""
    unknown = sorted(set(options) - set(OPTIONS), key=str)
    if unknown:
        raise OptionsError(
            f"unknown executor_options {', '.join(map(repr, unknown))} (valid: {', '.join(OPTIONS)})"
        )
    fallback = _choice(options, "fallback", FALLBACKS, "process")
    degraded = _choice(options, "degraded", (FALLBACK, SUBINTERPRETER), FALLBACK)
    return Config(
        Policy(fallback=fallback, degraded=degraded),
        _directory(options.get("cache_dir")),
        _seconds(options.get("probe_timeout", 30.0)),
        _regular_file(options.get("verdicts")),
        _store(options.get("cache")),
    )


def _store(value: Any) -> str | None:
    """``"chancy"`` (the worker's own database) or a postgresql:// URL."""
    if value is None or value == "chancy":
        store: str | None = value
        return store
    if not isinstance(value, str) or not value.startswith(("postgresql://", "postgres://")):
        _bad("cache", "must be 'chancy' or a postgresql:// URL", value)
    return value


def _bad(name: str, problem: str, value: Any) -> NoReturn:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise OptionsError(f"executor_options[{name!r}] {problem}, not {shown}")


def _choice(options: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = options.get(name, default)
    if not isinstance(value, str) or value not in allowed:
        _bad(name, f"must be one of {', '.join(map(repr, allowed))}", value)
    return value


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _bad("probe_timeout", "must be a number of seconds", value)
    if not math.isfinite(value) or value <= 0:
        _bad("probe_timeout", "must be finite and > 0", value)
    return float(value)


def _path(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        _bad(name, "must be a path", value)
    return os.fspath(value)


def _directory(value: Any) -> str | None:
    path = _path("cache_dir", value)
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        _bad("cache_dir", "must be a directory (it is created if missing)", value)
    return path


def _regular_file(value: Any) -> str | None:
    """The verdict file must be there at start: a typo would otherwise mean probing all."""
    path = _path("verdicts", value)
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _bad("verdicts", "does not exist", value)
    except OSError as exc:
        _bad("verdicts", f"cannot be read ({exc.strerror})", value)
    if not stat.S_ISREG(st.st_mode):
        _bad("verdicts", f"must be a regular file (it is a {file_kind(st.st_mode)})", value)
    return path


def _refuse(worker: Any, queue: Any, problem: str) -> NoReturn:
    """Make a bad option impossible to miss: chancy swallows the exception of the
    per-queue task that builds executors, so log it and stop the worker too."""
    name = getattr(queue, "name", None)
    message = f"AutoFallbackExecutor{f' for queue {name!r}' if name else ''}: {problem}"
    log = getattr(getattr(worker, "chancy", None), "log", None)
    if log is not None:
        log.error(f"{message}; stopping the worker (the queue's jobs stay pending until this is fixed)")
    _stop_soon(worker)
    raise OptionsError(message) from None


def _stop_soon(worker: Any) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if getattr(worker, "stop", None) is not None:
        task = loop.create_task(_stop_once_started(worker))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)


async def _stop_once_started(worker: Any) -> None:
    """chancy 0.26's ``Worker.start()`` waits for its notification listener to be ready, and
    ``stop()`` cancels that listener: a stop requested while the worker starts (when its
    first queues' executors are built) would leave ``start()`` waiting forever. The event
    is private; without it (another chancy) the stop is requested at once."""
    ready = getattr(worker, "_notifications_ready_event", None)
    if isinstance(ready, asyncio.Event) and getattr(worker.chancy, "notifications", False):
        await ready.wait()
    await worker.stop()


# -- the verdict file -------------------------------------------------------------------


_Refused = Refused  # the whole verdict file is unusable; the message says why


def job_target(func: str) -> str:
    """chancy's ``pkg.jobs.report`` as the probe's target ``pkg.jobs:report``."""
    module, _, function = func.rpartition(".")
    return f"{module}:{function}" if module else func


@dataclass
class Seed:
    """What a verdict file contributes: routes per target (a module's entry stands for
    all its functions), why other entries were not used (those are probed), or why the
    whole file was refused."""

    routes: dict[str, Route] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    refused: str | None = None


def load_verdicts(path: str, policy: Policy = DEFAULT_POLICY, python: str = PYTHON) -> Seed:
    """Blocking (call it in a thread); never raises for anything the file holds."""
    try:
        raw, written_ns = read_regular(path, MAX_VERDICTS_BYTES)
        entries, made_by = _entries(_parse(raw))
    except _Refused as exc:
        return Seed(refused=str(exc))
    except OSError as exc:
        return Seed(refused=f"cannot be read: {exc.strerror or exc}")
    seed = Seed()
    judge = _Judge(python, made_by, written_ns, policy)
    for entry in entries:
        module, route, why_not = judge(entry)
        if module is None or module in seed.ignored:
            continue
        if why_not is not None:
            seed.ignored[module] = why_not
            seed.routes.pop(module, None)
        elif module not in seed.routes or seed.routes[module].route == SUBINTERPRETER:
            assert route is not None  # why_not is None only with a known verdict's route
            seed.routes[module] = route  # one fallback entry of a module sends it all there
    return seed


_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _skeleton(raw: bytes) -> bytes:
    """The brackets outside strings, at C speed: escape pairs dropped left to right (as a
    parser reads them), then every other quote-delimited piece is a string's inside."""
    outside = raw.replace(b"\\\\", b"").replace(b'\\"', b"").split(b'"')[::2]
    return b"".join(outside).translate(None, _NOT_BRACKETS)


def _nesting_problem(raw: bytes, limit: int = MAX_VERDICTS_DEPTH) -> str | None:
    """Why the JSON must not reach the parser, which recurses per level (a deep file
    overflows a thread's stack on 3.13): innermost bracket pairs peeled ``limit`` times."""
    skeleton = _skeleton(raw)
    for _ in range(limit):
        if not skeleton:
            return None
        shorter = skeleton.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(skeleton):
            return "not JSON: its brackets do not balance"
        skeleton = shorter
    return f"nested deeper than {limit} levels" if skeleton else None


def _parse(raw: bytes) -> Any:
    problem = _nesting_problem(raw)
    if problem:
        raise _Refused(problem)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise _Refused(f"not JSON: {exc}") from None


def _entries(data: Any) -> tuple[list[Any], Any]:
    try:
        report = parse_report(data)
    except ReportFormatError as exc:
        raise _Refused(str(exc) if exc.modules else f"{exc} (subcompat check --format json)") from None
    return report["modules"], report.get("python")


class _Judge:
    """Whether one entry of a verdict file can be trusted here and now."""

    def __init__(self, python: str, made_by: Any, written_ns: int, policy: Policy) -> None:
        self.python, self.made_by, self.written_ns = python, made_by, written_ns
        self.routes = {  # a route depends on the verdict alone: built once, not per entry
            v: _from_file(route_for(Verdict("", v, python), policy)) for v in SEVERITY
        }
        self.mtimes: dict[str, int | None] = {}  # a file shared by many entries is stat'ed once
        self.interp: str | None = None  # this interpreter's cache key, once an entry has one

    def __call__(self, entry: Any) -> tuple[str | None, Route | None, str | None]:
        """(target, route, None) for a usable entry, (target, None, why) for one that is not."""
        if not isinstance(entry, dict) or not isinstance(entry.get("target"), str):
            return None, None, None
        target = entry["target"]  # a module (all its functions) or module:function
        route = self.routes.get(entry.get("verdict"))  # type: ignore[arg-type]
        why_not = self._why_not(entry, route)
        return (target or None), (None if why_not else route), why_not

    def _why_not(self, entry: dict[str, Any], route: Route | None) -> str | None:
        if route is None:
            return f"unknown verdict {entry.get('verdict')!r}"
        made_by = entry.get("python") or self.made_by
        if made_by != self.python:
            return f"made by Python {made_by}, this is {self.python}"
        if "stamps" in entry:  # from `subcompat cache export`: content hashes, not mtimes
            return self._stamps_differ(entry, route)
        files, dists = entry.get("files") or [], entry.get("dist_stamps") or []
        if not isinstance(files, list) or not isinstance(dists, list):
            return "malformed fingerprints"
        if not files and route.route == SUBINTERPRETER:
            return "no fingerprints (files) to check a sub-interpreter route against"
        return self._changed([*files, *dists])

    def _stamps_differ(self, entry: dict[str, Any], route: Route) -> str | None:
        """An exported entry: made by this interpreter build, every file as it was probed
        (size and content hash: files deployed elsewhere have other mtimes)."""
        from subcompat.cache import Stamp

        interp = entry.get("interp")
        if interp is not None and interp != self._interp_key():
            return "made by another interpreter build"
        stamps = entry["stamps"]
        if not isinstance(stamps, list) or (
            not stamps and self.routes[entry["verdict"]].route == SUBINTERPRETER
        ):
            return "no fingerprints (stamps) to check a sub-interpreter route against"
        for data in stamps:
            try:
                stamp = Stamp.from_json(data)
            except (TypeError, ValueError):
                return "malformed fingerprints"
            if stamp.still_valid() is False:
                return f"{stamp.path} is not the file that was probed"
        return None

    def _interp_key(self) -> str:
        if self.interp is None:
            from subcompat.probe import Interpreter

            self.interp = Interpreter.current().key
        return self.interp

    def _changed(self, paths: list[Any]) -> str | None:
        """Why the files an entry depends on are not as they were when the file was written."""
        for path in paths:
            if not isinstance(path, str):
                return "malformed fingerprints"
            if path not in self.mtimes:
                try:
                    self.mtimes[path] = os.stat(path).st_mtime_ns
                except OSError:
                    self.mtimes[path] = None
            mtime = self.mtimes[path]
            if mtime is None:
                return f"{path} is gone"
            if mtime > self.written_ns:
                return f"{path} changed after the verdict file was written"
        return None


def _from_file(route: Route) -> Route:
    return dataclasses.replace(route, why=f"{route.why} (verdict file)")


# -- the executor -------------------------------------------------------------------------


def _sub_executor_class() -> tuple[type[Executor] | None, str | None]:
    too_old = no_subinterpreters()
    if too_old:
        return None, too_old
    try:
        from chancy.executors.sub import SubInterpreterExecutor
    except ImportError as exc:
        return None, f"chancy's SubInterpreterExecutor cannot be imported ({exc})"
    return SubInterpreterExecutor, None


_GUARD_WHY = (
    "chancy's process executor starts its children with multiprocessing's 'spawn', and each child "
    're-imports the script: put its start-up under `if __name__ == "__main__":`'
)
EXIT_REIMPORTED = 70  # EX_SOFTWARE


def _stop_if_reimported() -> None:
    """A worker started while a spawned child re-imports the main script: the script has
    no ``__main__`` guard and this copy would push its jobs again and start another worker
    (the run never ends). Stop the copy, saying why; the parent sees its child fail."""
    process = sys.modules.get("multiprocessing.process")
    if process is None or not getattr(process.current_process(), "_inheriting", False):
        return
    main = sys.argv[0] if sys.argv and sys.argv[0] else "the main script"  # the parent's, sent to the child
    sys.stderr.write(
        f"subcompat: error: {main} started a worker again inside a child process: {_GUARD_WHY}\n"
    )
    sys.stderr.flush()
    os._exit(EXIT_REIMPORTED)


def unguarded_main() -> str | None:
    """Why the main script will misbehave in spawned children, or None: it starts work at
    top level (``asyncio.run(...)``, ``main()``, ``Worker(...)``) with no
    ``if __name__ == "__main__":`` guard. The file is read, never imported."""
    import ast

    file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not file or not file.endswith(".py"):
        return None
    try:
        if os.path.getsize(file) > 1 << 20:
            return None
        with open(file, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), file)
    except (OSError, ValueError, SyntaxError):
        return None
    definitions = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    for node in tree.body:
        if isinstance(node, ast.If) and {"__name__", "__main__"} <= _names(node.test):
            return None
    if not any(_starts_work(node) for node in tree.body if not isinstance(node, definitions)):
        return None
    return f'{file} starts work at import time, with no `if __name__ == "__main__":` guard: {_GUARD_WHY}'


_STARTERS = {"run", "main", "run_until_complete", "Worker"}


def _starts_work(node: Any) -> bool:
    import ast

    for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
        func = call.func
        if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)) in _STARTERS:
            return True
    return False


def _names(node: Any) -> set[str]:
    import ast

    found = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name):
            found.add(n.id)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            found.add(n.value)
    return found


class AutoFallbackExecutor(Executor):  # type: ignore[misc]  # chancy is untyped: Executor is Any
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
        _stop_if_reimported()
        try:
            config = validate_options(options)
        except OptionsError as exc:
            _refuse(worker, queue, str(exc))
        super().__init__(worker, queue)
        self.policy = config.policy
        self.cache_dir = config.cache_dir
        self.probe_timeout = config.probe_timeout
        self.verdicts = config.verdicts
        self.store = worker.chancy.dsn if config.cache == "chancy" else config.cache
        self._inner: dict[str, Executor] = {}
        self._routes: dict[str, Route] = {}
        self._probes: dict[str, asyncio.Future[Route]] = {}
        self._held: dict[tuple[Any, Any], QueuedJob] = {}  # pushed to us, not yet to an inner one
        self._unrouted: set[tuple[Any, Any]] = set()  # of those, waiting for their module's route
        self._gates: deque[asyncio.Future[None]] = deque()  # routed, waiting for a free slot
        self._granted = 0  # slots given to held jobs not yet pushed to an inner executor
        self._tasks: dict[tuple[Any, Any], asyncio.Task[Any]] = {}
        self._meta: dict[Any, dict[str, str]] = {}  # job id -> route, until it completes
        self._seeding: asyncio.Future[None] | None = None
        self._probe_pool: ThreadPoolExecutor | None = None
        self._completed = asyncio.Event()  # set whenever a job leaves an inner executor
        self._debug = worker.chancy.log.isEnabledFor(logging.DEBUG)
        self._sub_cls, self._unavailable = _sub_executor_class()
        unguarded = unguarded_main()
        if unguarded:
            self._log("warning", f"subcompat: {unguarded}")
        if self._unavailable:
            self._log(
                "warning",
                f"subcompat: {self._unavailable}; every job runs on the {self.policy.fallback} executor",
            )

    async def __aenter__(self) -> AutoFallbackExecutor:
        self._start_seeding()  # read the verdict file while the first jobs are fetched
        return self

    # -- chancy's executor interface -------------------------------------------
    async def push(self, job: QueuedJob) -> Any:
        target = job_target(job.func)
        route = self._known(target)
        if route is not None:
            return await self._dispatch(job, route)
        key = (job.id, job.claim_id)
        self._held[key] = job
        self._unrouted.add(key)
        task = asyncio.create_task(self._route_then_dispatch(job, target, key))
        self._tasks[key] = task
        task.add_done_callback(lambda _: self._tasks.pop(key, None))
        return task

    def __len__(self) -> int:
        """What chancy counts against the queue's concurrency: running jobs and routed
        ones waiting for a slot; jobs waiting for a probe only past one queue's worth."""
        unrouted = len(self._unrouted)
        counted: int = self._running() + len(self._held) - unrouted + max(0, unrouted - self.concurrency)
        return counted

    def get_running_jobs(self) -> list[QueuedJob]:
        jobs = list(self._held.values())
        for inner in self._inner.values():
            jobs.extend(inner.get_running_jobs())
        return jobs

    def get_default_concurrency(self) -> int:
        default: int = ThreadedExecutor.get_default_concurrency(self)  # chancy's own default (CPUs + 4)
        return default

    async def cancel(self, ref: Reference) -> None:
        for job in list(self._held.values()):
            if job.id == ref.identifier:
                await self.cancel_execution(job)
        for inner in list(self._inner.values()):
            await inner.cancel(ref)

    async def cancel_execution(self, job: QueuedJob) -> None:
        key = (job.id, job.claim_id)
        if self._held.pop(key, None) is not None:
            self._unrouted.discard(key)
            task = self._tasks.get(key)
            if task is not None:
                task.cancel()
            await self.on_job_completed(job=job, exc=asyncio.CancelledError("cancelled before it started"))
            return
        for inner in list(self._inner.values()):
            await inner.cancel_execution(job)

    async def stop(self) -> None:
        """chancy calls this once ``len()`` is 0, which does not count jobs waiting for a
        probe: those are dispatched and run to completion first, so none is lost (the inner
        executors' own stop would cancel a job still queued in their pools)."""
        try:
            if self._tasks:
                await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
            while self._running():
                self._completed.clear()
                await self._completed.wait()
        except asyncio.CancelledError:  # the worker's shutdown timeout ran out
            await self._stop_on_cancel()
            raise
        if self._seeding is not None and not self._seeding.done():
            self._seeding.cancel()
        for inner in list(self._inner.values()):
            await inner.stop()
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=False)

    async def _stop_on_cancel(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._seeding is not None:
            self._seeding.cancel()
        for inner in list(self._inner.values()):
            await inner._stop_on_cancel()
        if self._probe_pool is not None:
            self._probe_pool.shutdown(wait=False, cancel_futures=True)

    # -- slots -------------------------------------------------------------------
    def _running(self) -> int:
        return sum(len(inner) for inner in self._inner.values())

    async def _slot(self) -> None:
        """Wait until a held job may run without exceeding the queue's concurrency."""
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates.append(gate)
        self._pump()
        try:
            await gate
        except asyncio.CancelledError:
            if gate.done() and not gate.cancelled():  # granted, then cancelled: give it back
                self._granted -= 1
                self._pump()
            raise

    def _pump(self) -> None:
        """Grant free slots to held jobs, oldest first (called after every completion)."""
        self._completed.set()
        while self._gates and self._running() + self._granted < self.concurrency:
            gate = self._gates.popleft()
            if not gate.done():
                gate.set_result(None)
                self._granted += 1

    # -- routing -----------------------------------------------------------------
    def route_of(self, target: str) -> Route | None:
        """The decision for a job function (``module:function``), if known (an in-memory
        lookup); for a bare module, the first decided for any of its functions."""
        route = self._known(target)
        if route is None and ":" not in target:
            route = next((r for t, r in self._routes.items() if t.partition(":")[0] == target), None)
        return route

    def _known(self, target: str) -> Route | None:
        """The route of ``module:function``, or of its whole module (a verdict file's entry)."""
        return self._routes.get(target) or self._routes.get(target.partition(":")[0])

    async def _route_then_dispatch(self, job: QueuedJob, target: str, key: tuple[Any, Any]) -> Any:
        try:
            route = await self._decide(target)
            self._unrouted.discard(key)
            if key not in self._held:
                return None  # cancelled while its module was probed
            await self._slot()
            try:
                if key in self._held:
                    return await self._dispatch(job, route)
            finally:
                self._granted -= 1
                self._pump()
        finally:
            self._held.pop(key, None)
            self._unrouted.discard(key)

    async def _decide(self, target: str) -> Route:
        """One probe per job function however many of its jobs arrive together."""
        await self._seeded()
        route = self._known(target)
        if route is not None:
            return route
        future = self._probes.get(target)
        if future is None:
            future = asyncio.ensure_future(self._probe(target))
            self._probes[target] = future
        return await asyncio.shield(future)

    async def _probe(self, target: str) -> Route:
        try:
            if self._unavailable:
                route = Route(FALLBACK, self.policy.fallback, self._unavailable)
            else:
                COUNTERS["probes"] += 1  # counted while in flight; a cache hit was none
                try:
                    loop = asyncio.get_running_loop()
                    verdict = await loop.run_in_executor(self._probe_threads(), self._check, target)
                    if verdict.cached:
                        COUNTERS["probes"] -= 1
                        COUNTERS["cache_hits"] += 1
                except Exception as exc:  # a probe that cannot run must not lose jobs
                    COUNTERS["probe_errors"] += 1
                    self._log("warning", f"subcompat: probing {target} failed ({exc}); using the fallback")
                    verdict = None
                route = route_for(verdict, self.policy)
                if verdict is not None and verdict.culprits:
                    route = dataclasses.replace(
                        route, why=f"{route.why}: {', '.join(c.module for c in verdict.culprits)}"
                    )
            self._routes[target] = route
            return route
        finally:
            self._probes.pop(target, None)

    def _probe_threads(self) -> ThreadPoolExecutor:
        """Probes wait on child processes for up to ``probe_timeout``: not in the loop's
        default pool, which psycopg needs for name resolution."""
        if self._probe_pool is None:
            self._probe_pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="subcompat-probe")
        return self._probe_pool

    def _cache(self) -> Any:
        """The local cache, under the fleet's shared store when there is one."""
        from subcompat.cache import Cache

        cache = Cache(self.cache_dir)
        if self.store is None:
            return cache
        from subcompat.cache_pg import FleetCache

        return FleetCache(
            self.store,
            cache,
            wait=self.probe_timeout + 5,
            warn=lambda m: self._log("warning", f"subcompat: {m}"),
        )

    def _check(self, target: str) -> Verdict:
        from subcompat.check import check_module

        return check_module(
            target, self._cache(), timeout=self.probe_timeout, policy=self.policy, runtime="chancy"
        )

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
            inner.on_job_completed = self._completion(inner, reroute=name == SUBINTERPRETER)
            self._inner[name] = inner
        return inner

    def _completion(self, inner: Executor, reroute: bool) -> Any:
        """The inner executor's completion, with the route recorded in ``job.meta`` and,
        for the sub-interpreter, a job that hit the sub-interpreter ImportError rerouted."""
        original = inner.on_job_completed

        async def on_job_completed(
            *, job: QueuedJob, exc: BaseException | None = None, result: Any = None
        ) -> None:
            try:
                info = self._meta.pop(job.id, None)
                message = subinterpreter_import_message(exc) if reroute and exc is not None else None
                if message is not None:
                    await self._reroute(job, message)
                    return
                if info is not None:
                    job = dataclasses.replace(job, meta={**job.meta, "subcompat": info})
                await original(job=job, exc=exc, result=result)
            finally:
                # the inner executor frees the job's slot right after this returns
                asyncio.get_running_loop().call_soon(self._pump)

        return on_job_completed

    async def _reroute(self, job: QueuedJob, message: str) -> None:
        """The probe missed an import: learn it, and run the job again on the fallback.
        No attempt is recorded: the job never ran its code to completion anywhere."""
        target = job_target(job.func)
        COUNTERS["reroutes"] += 1
        route = Route(FALLBACK, self.policy.fallback, f"learned at run time: {message}")
        self._routes[target] = route
        self._log("warning", f"subcompat: {job.func} failed in a sub-interpreter ({message}); rerouted")
        try:
            await asyncio.to_thread(self._learn, target, message)
        except Exception as err:  # the job matters more than the cache
            self._log("warning", f"subcompat: could not record {target} in the cache ({err})")
        await self._dispatch(job, route)

    def _learn(self, target: str, message: str) -> None:
        from subcompat.check import record_runtime_failure

        cache = self._cache()
        try:
            record_runtime_failure(target, message, cache=cache, runtime="chancy", sys_path=sys.path)
        finally:
            cache.close()

    # -- the verdict file ----------------------------------------------------------
    def _start_seeding(self) -> None:
        if self.verdicts is not None and self._seeding is None:
            self._seeding = asyncio.ensure_future(self._seed(self.verdicts))

    async def _seeded(self) -> None:
        """Routes from the verdict file come before any probe."""
        self._start_seeding()
        if self._seeding is not None:
            await asyncio.shield(self._seeding)

    async def _seed(self, path: str) -> None:
        try:
            seed = await asyncio.to_thread(load_verdicts, path, self.policy)
        except Exception as exc:  # the file is a shortcut: probing still works without it
            seed = Seed(refused=f"{type(exc).__name__}: {exc}")
        if seed.refused:
            self._log(
                "warning", f"subcompat: ignoring verdict file {path} ({seed.refused}); modules will be probed"
            )
            return
        for module, route in seed.routes.items():
            self._routes.setdefault(module, route)
        COUNTERS["verdicts_used"] += len(seed.routes)
        COUNTERS["verdicts_ignored"] += len(seed.ignored)
        if seed.ignored:
            shown = "; ".join(f"{m}: {why}" for m, why in list(seed.ignored.items())[:5])
            more = f" and {len(seed.ignored) - 5} more" if len(seed.ignored) > 5 else ""
            self._log(
                "warning",
                f"subcompat: verdict file {path}: entries of {len(seed.ignored)} module(s) not used, "
                f"they will be probed ({shown}{more})",
            )

    def _log(self, level: str, message: str) -> None:
        getattr(self.worker.chancy.log, level)(message)
