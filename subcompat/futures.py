"""A ``concurrent.futures`` executor that runs each call in a sub-interpreter when its
callable can run there, and in a process (or thread) pool otherwise.

    with AutoPoolExecutor(fallback="process") as pool:
        prices = list(pool.map(myapp.jobs.price, orders, chunksize=16))

Why: ``InterpreterPoolExecutor`` alone fails badly on a module that cannot load in a
sub-interpreter (3.13's backport leaves the future pending forever, gh-125864; 3.14+
raises ``NotShareableError`` with the ImportError down its chain), cannot send a function
defined in ``__main__`` (gh-136603), and runs a degraded package's slow path silently.

Routing is per callable, with the probe, policy and cache of ``subcompat check``:
``pkg.jobs.price`` is judged as the target ``pkg.jobs:price`` (a method as its class), so
only the deferred imports that function reaches count and one numpy function does not
send its module's other functions to a process. A ``functools.partial`` is looked
through; a callable with no name to import it by (a method bound to an instance, a
callable object) is judged by its whole module. A known target is a dict lookup; an
unknown one is probed once, in a probe thread (never the caller's), while its calls wait.
A call that still fails in the sub-interpreter with the sub-interpreter ImportError is
recorded in the cache (for its target) and re-run once on the fallback; its future gets
that result, and only that target's later calls move.

Each inner pool is fed by a lane (``_lanes``): calls that wait while the pool is busy
leave together in one pool task, so a small call does not pay a whole pool round trip.

Every future this executor returns completes: probe failures route to the fallback,
``shutdown(wait=True)`` waits for calls still waiting for a probe, and the inner pools
(created on first use) are shut down once the last call is done.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import logging
import math
import multiprocessing
import os
import pickle
import sys
import threading
import time
import types
import warnings
import weakref
from collections import Counter
from concurrent.futures import BrokenExecutor, Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool

from subcompat import _worker
from subcompat._lanes import MAX_BATCH, Call, Lane, mark_running
from subcompat.learn import subinterpreter_import_message
from subcompat.route import FALLBACK, SUBINTERPRETER, Policy, Route, route_for

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import Any

    from subcompat.verdict import Verdict

log = logging.getLogger("subcompat.futures")
PROBE_THREADS = 2  # targets probed at once


# -- the interpreter pool of this Python ---------------------------------------------------


def interpreter_pool_class() -> tuple[type[Executor] | None, str | None]:
    """The InterpreterPoolExecutor to use here, or why there is none."""
    if sys.version_info < (3, 13):
        return None, f"Python {sys.version_info[0]}.{sys.version_info[1]} has no isolated sub-interpreters"
    try:
        from concurrent.futures import InterpreterPoolExecutor  # type: ignore[attr-defined]

        return InterpreterPoolExecutor, None  # 3.14+
    except ImportError:
        pass
    try:
        from interpreters_backport.concurrent.futures import (  # type: ignore[import-untyped]
            interpreter as backport,
        )
    except ImportError:
        return None, "the interpreters-pep-734 backport is not installed (pip install 'subcompat[futures]')"
    return _backport_pool(backport)


def _backport_pool(backport: Any) -> tuple[type[Executor] | None, str | None]:
    """The backport's pool, minus its hang (gh-125864): when a call cannot even be
    unpickled in the sub-interpreter (its module fails to import), nothing is put on the
    results queue and the worker spins on it forever. Here the worker raises the
    interpreter's ``ExecutionFailed`` instead, which names the ImportError.

    Each call also runs one code object compiled once per worker, its pickled task passed
    as a ``__main__`` attribute, where the backport compiles a script embedding the
    task's bytes per call (1.6x the per-call cost of small calls, measured)."""
    import _interpqueues
    import _interpreters

    base = getattr(backport, "WorkerContext", None)
    needed = ("run", "prepare", "_call_pickled")
    if base is None or not all(hasattr(base, n) for n in needed) or not hasattr(backport, "ExecutionFailed"):
        return None, "this interpreters-pep-734 backport has an unknown shape (0.5 is supported)"

    class WorkerContext(base):  # type: ignore[misc, valid-type]
        _script = None

        def run(self, task: tuple[bytes, str]) -> Any:
            data, kind = task
            if kind != "function":
                return super().run(task)
            if self._script is None:
                line = f"WorkerContext._call_pickled(_subcompat_task, {self.resultsid})"
                self._script = compile(line, "<subcompat>", "exec")
            shared = {"_subcompat_task": data}
            excinfo = _interpreters.exec(self.interpid, self._script, shared, restrict=True)
            failed = None if excinfo is None else backport.ExecutionFailed(excinfo)
            try:
                (res, excdata), pickled, _unbound = _interpqueues.get(self.resultsid)
            except _interpqueues.QueueError:  # empty: the call never started over there
                if failed is None:
                    raise
                raise failed from None
            if excdata is not None:
                raise pickle.loads(excdata) from failed
            return pickle.loads(res) if pickled else res

    class InterpreterPoolExecutor(backport.InterpreterPoolExecutor):  # type: ignore[misc]
        @classmethod
        def prepare_context(cls, initializer: Any, initargs: Any, shared: Any) -> Any:
            return WorkerContext.prepare(initializer, initargs, shared)

    return InterpreterPoolExecutor, None


def _default_mp_context() -> Any:
    """forkserver where the platform default is fork (3.13 on Linux): this executor has
    threads (probes, interpreter workers), and forking a threaded process can deadlock."""
    if multiprocessing.get_start_method(allow_none=True) in (None, "fork") and (
        "forkserver" in multiprocessing.get_all_start_methods()
    ):
        return multiprocessing.get_context("forkserver")
    return None


# -- what a call is --------------------------------------------------------------------


def _routing_target(fn: Any) -> tuple[str | None, str | None]:
    """(target to route by, or why it goes to the fallback without a probe)."""
    fn = _unwrapped(fn)
    if (risk := _ends_process_risk(fn)) is not None:
        return None, risk
    module = getattr(fn, "__module__", None)
    if not isinstance(module, str) or not module:
        return None, "its module is unknown"
    if module == "__main__":
        return None, "defined in __main__: a sub-interpreter cannot import it (gh-136603)"
    qualname = getattr(fn, "__qualname__", "")
    if isinstance(qualname, str) and ("<locals>" in qualname or "<lambda>" in qualname):
        return None, "a lambda or local function: it cannot be sent by name"
    return callable_target(fn, module, qualname), None


def callable_target(fn: Any, module: str, qualname: Any) -> str:
    """The probe target ``fn``'s calls are judged as: ``module:name`` when ``fn`` is what
    ``module.qualname`` names (a function, a class, or a static or class method of a class
    there, judged as its class: reach's unit), so only the deferred imports it reaches
    count; else its whole ``module``. A method bound to an instance is judged by its
    module: ``self`` may be of a subclass whose methods the class's unit does not cover.
    Looked up in ``vars()``: no code of the caller's runs."""
    if not isinstance(qualname, str) or not qualname:
        return module
    owner: Any = None
    found: Any = sys.modules.get(module)
    for part in qualname.split("."):
        if not isinstance(found, (types.ModuleType, type)):
            return module
        owner, found = found, vars(found).get(part)
    if isinstance(found, staticmethod):
        found = found.__func__
    elif isinstance(found, classmethod):  # bound to the very class that defines it
        same = getattr(fn, "__func__", None) is found.__func__ and getattr(fn, "__self__", None) is owner
        found = fn if same else None
    return f"{module}:{qualname.partition('.')[0]}" if found is fn else module


def _unwrapped(fn: Any) -> Any:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return fn


def _time_key(fn: Any, chunked: bool) -> tuple[str, str, bool]:
    """What a call's time is learnt by: its function's qualified name (a partial's, a
    bound method's function, an object's type), never the callable itself, so the table
    keeps nothing of the caller's alive."""
    key = _unwrapped(fn)
    key = getattr(key, "__func__", key)
    module, qualname = getattr(key, "__module__", None), getattr(key, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        module, qualname = type(key).__module__, type(key).__qualname__
    return (module, qualname, chunked)


def _ends_process_risk(fn: Any) -> str | None:
    """Why ``fn`` must not run inside this process, or None: a call straight into a C
    function (``os._exit``, ``os.abort``, ``signal.raise_signal``...) does whatever it does
    to the whole process, and the import probe judges what loading a module does, not
    what one of its C functions does; so such a call runs in the fallback, as one in a
    process pool would."""
    fn = _unwrapped(fn)
    if isinstance(fn, (types.BuiltinFunctionType, types.BuiltinMethodType)):
        return "a C function called directly: its effect on the process is not probed"
    return None


def _unshareable(call_fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Why this call's arguments cannot enter a sub-interpreter, or None: measured by
    pickling them, as the interpreter pool will (an Event, a lock, an open file...)."""
    try:
        pickle.dumps((call_fn, args, kwargs), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - whatever pickling raised
        return f"its arguments cannot be sent to a sub-interpreter ({type(exc).__name__}: {exc})"
    return None


# -- the executor ------------------------------------------------------------------------


class AutoPoolExecutor(Executor):
    """``max_workers`` and ``initializer``/``initargs`` go to each inner pool: at most
    ``max_workers`` calls run in sub-interpreters and as many on the fallback.

    ``AutoPoolExecutor(...)`` makes an ``AutoProcessPoolExecutor`` (the default,
    ``fallback="process"``) or an ``AutoThreadPoolExecutor`` (``fallback="thread"``): each is
    an instance of its fallback's stdlib class and takes that class's arguments, in its
    order (``AutoPoolExecutor(4, ctx)`` is 4 workers and an mp context, as with
    ``ProcessPoolExecutor``).

    Calls that arrive while a pool is busy are sent to it together, up to ``max_batch``
    per pool task and about 2 ms of their measured run time (``_lanes``); ``max_batch=1``
    sends every call as its own task. A call on an idle pool is sent at once."""

    _mp_context: Any
    _max_tasks_per_child: int | None
    _thread_name_prefix: str

    def __new__(cls, *args: Any, **kwargs: Any) -> AutoPoolExecutor:
        if cls is AutoPoolExecutor:
            thread = kwargs.get("fallback", "process") == "thread"
            cls = AutoThreadPoolExecutor if thread else AutoProcessPoolExecutor
        return object.__new__(cls)

    def _setup(
        self,
        max_workers: int | None,
        initializer: Callable[..., Any] | None,
        initargs: tuple[Any, ...],
        fallback: str,
        degraded: str,
        cache_dir: str | os.PathLike[str] | None,
        probe_timeout: float,
        max_batch: int,
    ) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or not isinstance(max_workers, int)):
            raise TypeError(f"max_workers must be an int or None, not {max_workers!r}")
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if isinstance(probe_timeout, bool) or not isinstance(probe_timeout, (int, float)):
            raise TypeError(f"probe_timeout must be a number of seconds, not {probe_timeout!r}")
        if not math.isfinite(probe_timeout) or probe_timeout <= 0:
            raise ValueError(f"probe_timeout must be finite and > 0, not {probe_timeout!r}")
        if isinstance(max_batch, bool) or not isinstance(max_batch, int):
            raise TypeError(f"max_batch must be an int, not {max_batch!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 (1: every call its own pool task), not {max_batch}")
        self.policy = Policy(fallback=fallback, degraded=degraded)  # ValueError naming the option
        self.max_batch = max_batch
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.probe_timeout = float(probe_timeout)
        if max_workers is None:  # the fallback pool's default, as its stdlib class computes it
            cpus = getattr(os, "process_cpu_count", os.cpu_count)() or 1
            max_workers = min(32, cpus + 4) if fallback == "thread" else cpus
        self._max_workers = max_workers
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._lanes: dict[str, Lane] = {}
        self._routes: dict[str, Route] = {}
        self._waiting: dict[str, list[Call]] = {}  # target -> calls waiting for its probe
        self._live: set[Future[Any]] = set()
        self._closing = self._close_when_idle = self._closed = False
        self._probe_pool: ThreadPoolExecutor | None = None
        self._counters: Counter[str] = Counter()
        self._sub_cls, self._unavailable = interpreter_pool_class()
        self._sub_down: str | None = None  # why the interpreter pool cannot run anything
        try:  # measured now: an initializer a sub-interpreter cannot get leaves that pool unused
            self._init_blob = None if initializer is None else pickle.dumps((initializer, self._initargs))
        except Exception as exc:  # noqa: BLE001 - whatever pickling raised
            self._sub_down = (
                f"the initializer or its arguments cannot be sent to a sub-interpreter "
                f"({type(exc).__name__}: {exc})"
            )
        _EXECUTORS.add(self)
        if self._unavailable:
            warnings.warn(
                f"subcompat: {self._unavailable}; every call runs on the {fallback} pool",
                RuntimeWarning,
                stacklevel=3,
            )

    # -- concurrent.futures.Executor ---------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        return self._submit(fn, fn, args, kwargs, _time_key(fn, False))

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[Any]:
        """Like ``Executor.map`` (3.14's ``buffersize`` too, on every Python: at most that
        many tasks submitted ahead of the results taken); with ``chunksize`` > 1 each pool
        task runs that many calls (routed by ``fn``, so a chunk goes wherever ``fn`` would)."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        end = None if timeout is None else timeout + time.monotonic()
        calls = zip(*iterables, strict=False)
        items: Iterator[Any] = calls
        if chunksize > 1:
            items = iter(lambda: list(itertools.islice(calls, chunksize)), [])
        key = _time_key(fn, chunksize > 1)

        def submit(args: Any) -> Future[Any]:
            if chunksize > 1:
                return self._submit(fn, _worker.run_chunk, (fn, args), {}, key)
            return self._submit(fn, fn, args, {}, key)

        def refill() -> Future[Any] | None:
            args = next(items, None)
            return None if args is None else submit(args)

        futures = collections.deque(map(submit, itertools.islice(items, buffersize)))
        return self._results(futures, end, chunksize > 1, None if buffersize is None else refill)

    @staticmethod
    def _results(
        futures: collections.deque[Future[Any]],
        end: float | None,
        chunked: bool,
        refill: Callable[[], Future[Any] | None] | None,
    ) -> Iterator[Any]:
        # No local names a result while the iterator is suspended: a result the caller
        # dropped is freed (the stdlib's map holds none either).
        try:
            while futures:
                box = [_result_or_cancel(futures.popleft(), end)]
                if refill is not None and (more := refill()) is not None:
                    futures.append(more)
                if chunked:
                    box[0].reverse()
                    while box[0]:
                        yield box[0].pop()
                else:
                    yield box.pop()
        finally:
            for future in futures:
                future.cancel()

    @property
    def _broken(self) -> str | bool:
        """Why the fallback pool is broken (its initializer failed), or False; the stdlib
        pools' attribute, which their own tests read."""
        lane = self._lanes.get(self.policy.fallback)
        pool = lane.pool if lane is not None else None
        broken = getattr(pool, "_broken", False)
        return broken if isinstance(broken, str) and broken else False

    def _drain(self) -> None:
        """Wait for every call submitted (interpreter exit)."""
        with self._lock:
            while self._live:
                self._idle.wait()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Calls already submitted still complete (those waiting for a probe too) unless
        ``cancel_futures``; the inner pools close once they have."""
        with self._lock:
            self._closing = True
            live = list(self._live) if cancel_futures else []
        for future in live:
            future.cancel()  # refused by a call already running: it completes
        if wait:
            with self._lock:
                while self._live:
                    self._idle.wait()
            self._close(wait=True)
            return
        with self._lock:
            idle = not self._live
            self._close_when_idle = not idle
        if idle:
            self._close(wait=False)

    # -- inspection --------------------------------------------------------------------
    def route_of(self, fn: Callable[..., Any]) -> Route | None:
        """The decision for ``fn``'s calls (judged as ``module:function``, see
        ``callable_target``), or None while that target is not probed yet."""
        route = self._known(fn)[1]
        return None if route is None else self._usable(route)

    def stats(self) -> dict[str, int]:
        """Calls per executor (``route.subinterpreter``, ``route.process``, ``route.thread``),
        pool tasks they were sent in (``batches.subinterpreter``, ...), ``probes``,
        ``probe_errors``, ``reroutes``."""
        with self._lock:
            counts = dict(self._counters)
            lanes = list(self._lanes.values())
        counts.update({f"batches.{lane.name}": lane.batches for lane in lanes})
        return counts

    # -- routing -----------------------------------------------------------------------
    def _known(self, fn: Any) -> tuple[str | None, Route | None]:
        if self._unavailable:
            return None, Route(FALLBACK, self.policy.fallback, self._unavailable)
        target, why = _routing_target(fn)
        if target is None:
            return None, Route(FALLBACK, self.policy.fallback, why or "")
        return target, self._routes.get(target)

    def _submit(
        self, route_by: Any, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], key: Any
    ) -> Future[Any]:
        target, route = self._known(route_by)
        call = Call(fn, args, kwargs, key, target, Future())
        probe = False
        with self._lock:
            if self._broken:
                kind = BrokenThreadPool if self.policy.fallback == "thread" else BrokenProcessPool
                raise kind(self._broken)
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _EXITING:
                raise RuntimeError("cannot schedule new futures after interpreter shutdown")
            self._live.add(call.future)
            if route is None:
                route = self._routes.get(target)  # type: ignore[arg-type]
            if route is None:
                assert target is not None
                probe = target not in self._waiting
                self._waiting.setdefault(target, []).append(call)
        call.future.add_done_callback(self._forget)
        if probe:
            self._start_probe(call.target)  # type: ignore[arg-type]
        elif route is not None:
            self._dispatch(call, route)
        return call.future

    def _start_probe(self, target: str) -> None:
        with self._lock:
            self._counters["probes"] += 1
        try:
            self._probe_threads().submit(self._probe, target)
        except BaseException as exc:  # no thread to probe in (interpreter exiting): no call lost
            self._routed(target, self._probe_failed(target, exc))

    def _probe(self, target: str) -> None:
        try:
            route = self._route(self._check(target))
        except BaseException as exc:  # whatever the probe did, its calls must complete
            route = self._probe_failed(target, exc)
        self._routed(target, route)

    def _probe_failed(self, target: str, exc: BaseException) -> Route:
        with self._lock:
            self._counters["probe_errors"] += 1
        log.warning(
            "subcompat: probing %s failed (%s); its calls use the %s pool", target, exc, self.policy.fallback
        )
        return Route(
            FALLBACK, self.policy.fallback, f"unknown: the probe failed ({type(exc).__name__}: {exc})"
        )

    def _route(self, verdict: Verdict) -> Route:
        route = route_for(verdict, self.policy)
        if verdict.culprits:
            route = dataclasses.replace(
                route, why=f"{route.why}: {', '.join(c.module for c in verdict.culprits)}"
            )
        return route

    def _routed(self, target: str, route: Route) -> None:
        with self._lock:
            self._routes[target] = route
            calls = self._waiting.pop(target, [])
        for call in calls:
            self._dispatch(call, route)

    def _check(self, target: str) -> Verdict:
        from subcompat.cache import Cache
        from subcompat.check import check_module

        return check_module(target, Cache(self.cache_dir), timeout=self.probe_timeout, policy=self.policy)

    def _probe_threads(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._probe_pool is None:
                self._probe_pool = ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="subcompat-probe")
            return self._probe_pool

    # -- running -----------------------------------------------------------------------
    def _dispatch(self, call: Call, route: Route) -> None:
        """Hand the call to its pool's lane; never raises (a refusal completes the future)."""
        if call.future.done():  # cancelled while its target was probed
            return
        route = self._usable(route)
        if route.executor == SUBINTERPRETER and (why := _unshareable(call.fn, call.args, call.kwargs)):
            route = Route(FALLBACK, self.policy.fallback, why)
        with self._lock:
            self._counters[f"route.{route.executor}"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("subcompat: %s -> %s: %s", _name(call.fn), route.executor, route.why)
        self._lane(route.executor).put(call)

    def _usable(self, route: Route) -> Route:
        """``route``, unless it names the interpreter pool and that pool is broken."""
        if route.executor == SUBINTERPRETER and self._sub_down:
            return Route(FALLBACK, self.policy.fallback, self._sub_down)
        return route

    def _finish(self, executor: str, call: Call, exc: BaseException | None, result: Any) -> None:
        if exc is not None and executor == SUBINTERPRETER and self._rerouted(call, exc):
            return
        if call.future.cancelled():  # a thread lane's call, cancelled before it started
            return
        if exc is not None:
            call.future.set_exception(exc)
        else:
            call.future.set_result(result)

    def _rerouted(self, call: Call, exc: BaseException) -> bool:
        """A sub-interpreter ImportError the probe missed: learn it, run the call again
        on the fallback (once)."""
        if call.rerouted:
            return False
        if isinstance(exc, BrokenExecutor) or call.refused:  # refused: e.g. no thread to start
            return self._sub_pool_broken(call, exc)
        message = subinterpreter_import_message(exc)
        if message is None:
            return False
        route = Route(FALLBACK, self.policy.fallback, f"learned at run time: {message}")
        target = call.target
        with self._lock:
            first = target is None or self._routes.get(target) != route
            if target is not None:
                self._routes[target] = route
        if first:
            log.warning(
                "subcompat: %s failed in a sub-interpreter (%s); re-run on the fallback",
                _name(call.fn),
                message,
            )
        if first and target is not None:
            try:
                self._probe_threads().submit(self._learn, target, message)
            except RuntimeError:  # interpreter exiting: the cache can do without it
                pass
        waiting = (lambda c: c.target == target) if first and target is not None else None
        self._to_fallback(call, route, waiting)
        return True

    def _sub_pool_broken(self, call: Call, exc: BaseException) -> bool:
        """The interpreter pool broke: its worker could not start (the initializer
        failed there; a crash would have taken this process). No call ran in it; this one
        and every later one go to the fallback."""
        with self._lock:
            first = self._sub_down is None
            if first:
                self._sub_down = f"the interpreter pool is broken (its initializer failed there?): {exc}"
            why = self._sub_down or ""
        if first:
            log.warning("subcompat: %s; every call now runs on the %s pool", why, self.policy.fallback)
        self._to_fallback(
            call, Route(FALLBACK, self.policy.fallback, why), (lambda c: True) if first else None
        )
        return True

    def _to_fallback(self, call: Call, route: Route, waiting: Callable[[Call], bool] | None) -> None:
        """Send ``call`` again, on ``route``; with it, the calls still waiting in the
        sub-interpreter lane that ``waiting`` picks (they would fail there as well)."""
        moved = self._lane(SUBINTERPRETER).withdraw(waiting) if waiting is not None else []
        with self._lock:
            self._counters["reroutes"] += 1 + len(moved)
        for each in [call, *moved]:
            each.rerouted, each.alone = True, False
            self._dispatch(each, route)

    def _learn(self, target: str, message: str) -> None:
        from subcompat.cache import Cache
        from subcompat.check import record_runtime_failure

        try:
            cache = Cache(self.cache_dir)
            try:
                record_runtime_failure(target, message, cache=cache, sys_path=sys.path)
            finally:
                cache.close()
        except Exception as exc:  # the call matters more than the cache
            log.warning("subcompat: could not record %s in the cache (%s)", target, exc)

    def _lane(self, name: str) -> Lane:
        with self._lock:
            lane = self._lanes.get(name)
            if lane is None:
                make = functools.partial(self._new_pool, name)
                finish = functools.partial(self._finish, name)
                lane = self._lanes[name] = Lane(name, make, finish, self.max_batch)
            return lane

    def _new_pool(self, name: str) -> Executor:
        init, args = self._initializer, self._initargs
        if name == SUBINTERPRETER:
            assert self._sub_cls is not None
            authkey = bytes(multiprocessing.current_process().authkey)
            start = (list(sys.path), self._init_blob, authkey)
            return self._sub_cls(self._max_workers, initializer=_worker.start, initargs=start)  # type: ignore[call-arg]
        if name == "process":
            return ProcessPoolExecutor(
                self._max_workers, self._mp_context, init, args, max_tasks_per_child=self._max_tasks_per_child
            )
        return ThreadPoolExecutor(self._max_workers, self._thread_name_prefix, init, args)

    # -- lifetime ----------------------------------------------------------------------
    def _forget(self, future: Future[Any]) -> None:
        if future.cancelled():  # waiting in a lane or for a probe: tell wait() now
            mark_running(future)
        with self._lock:
            self._live.discard(future)
            if self._live:
                return
            self._idle.notify_all()
            close = self._close_when_idle
        if close:
            self._close(wait=False)

    def _close(self, wait: bool) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            lanes, probes = list(self._lanes.values()), self._probe_pool
        for lane in lanes:
            lane.close(wait=wait)
        if probes is not None:
            probes.shutdown(wait=wait)


def _result_or_cancel(future: Future[Any], end: float | None) -> Any:
    """The result by ``end``; on a timeout the call is cancelled if it has not started."""
    try:
        try:
            return future.result(None if end is None else end - time.monotonic())
        finally:
            future.cancel()
    finally:
        del future


def _name(fn: Any) -> str:
    fn = _unwrapped(fn)
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class AutoThreadPoolExecutor(AutoPoolExecutor, ThreadPoolExecutor):  # type: ignore[misc]
    """AutoPoolExecutor whose fallback is a thread pool, with ``ThreadPoolExecutor``'s
    arguments; an instance of it, so asyncio takes it as its default executor (3.14
    requires a ThreadPoolExecutor there)."""

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        fallback: str = "thread",
        degraded: str = FALLBACK,
        cache_dir: str | os.PathLike[str] | None = None,
        probe_timeout: float = 30.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if fallback != "thread":
            raise ValueError(f"AutoThreadPoolExecutor's fallback is 'thread', not {fallback!r}")
        self._thread_name_prefix = thread_name_prefix
        self._mp_context = None
        self._max_tasks_per_child = None
        self._setup(
            max_workers, initializer, initargs, fallback, degraded, cache_dir, probe_timeout, max_batch
        )


class AutoProcessPoolExecutor(AutoPoolExecutor, ProcessPoolExecutor):  # type: ignore[misc]
    """AutoPoolExecutor whose fallback is a process pool, with ``ProcessPoolExecutor``'s
    arguments (``mp_context`` second, ``max_tasks_per_child``) and its
    ``terminate_workers()`` / ``kill_workers()``. ``mp_context`` defaults to forkserver
    where the platform's default is fork (this executor has threads), to spawn with
    ``max_tasks_per_child`` (as the stdlib does)."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: Any = None,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        fallback: str = "process",
        degraded: str = FALLBACK,
        cache_dir: str | os.PathLike[str] | None = None,
        probe_timeout: float = 30.0,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if fallback not in ("process", "thread"):
            Policy(fallback=fallback, degraded=degraded)  # the ValueError naming the option
        if fallback != "process":
            raise ValueError(f"AutoProcessPoolExecutor's fallback is 'process', not {fallback!r}")
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if mp_context is None:
                mp_context = multiprocessing.get_context("spawn")
            elif mp_context.get_start_method(allow_none=False) == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' multiprocessing start "
                    "method; supply a different mp_context."
                )
        self._mp_context = mp_context if mp_context is not None else _default_mp_context()
        self._max_tasks_per_child = max_tasks_per_child
        self._thread_name_prefix = ""
        self._setup(
            max_workers, initializer, initargs, fallback, degraded, cache_dir, probe_timeout, max_batch
        )

    def terminate_workers(self) -> None:
        """``ProcessPoolExecutor.terminate_workers``: calls not started are cancelled, the
        fallback's processes are sent SIGTERM; a call running in a sub-interpreter cannot be
        stopped from outside and completes."""
        self._force_shutdown("terminate")

    def kill_workers(self) -> None:
        """As ``terminate_workers``, with SIGKILL."""
        self._force_shutdown("kill")

    def _force_shutdown(self, how: str) -> None:
        with self._lock:
            lane = self._lanes.get("process")
        pool = lane.pool if lane is not None else None
        processes = dict(getattr(pool, "_processes", None) or {})
        self.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            try:
                getattr(process, how)()
            except (OSError, ValueError, AttributeError):  # gone already
                pass


_EXECUTORS: weakref.WeakSet[AutoPoolExecutor] = weakref.WeakSet()
_EXITING = False


def _python_exit() -> None:
    """At interpreter exit (before the stdlib pools' own hook: registered after it), every
    call already submitted still runs, as the stdlib pools' do; ``submit()`` from here on
    raises their RuntimeError."""
    global _EXITING
    _EXITING = True
    for executor in list(_EXECUTORS):
        executor._drain()


_register = getattr(threading, "_register_atexit", None)  # what the stdlib pools use
if _register is not None:
    _register(_python_exit)
