"""One inner pool of AutoPoolExecutor, fed in batches.

A pool round trip (pickling, a pipe or an interpreter switch, a result future) costs far
more than a small call. A lane keeps at most ``AHEAD`` batches per worker in its pool;
calls that arrive while the pool is that busy wait in the lane's backlog, and leave
together: as many as are expected to run for ``TARGET_S`` (each function's time per call
is measured in the worker), at most an even share of the backlog across the batches in
flight. An idle pool therefore gets each call at once, alone; a busy one gets fewer,
fuller batches. A function not measured yet goes alone.

A batch runs its calls one by one and returns every outcome (``_worker.run_batch``), so
a failure of the batch as a whole means none of it ran: its calls are sent again one per
batch. A broken pool (a worker crashed) fails the calls it held, as the pool alone would,
and the lane starts a fresh pool for the calls after them if the broken one had worked.
"""

from __future__ import annotations

import dataclasses
import pickle
import threading
from collections import deque
from concurrent.futures import BrokenExecutor, Executor, Future
from concurrent.futures.process import BrokenProcessPool, _RemoteTraceback

from subcompat import _worker

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

TARGET_S = 0.002  # expected run time of one batch
MAX_BATCH = 256
AHEAD = 2  # batches in flight per worker
ESTIMATES_KEPT = 4096  # functions whose time per call is remembered
WEIGHT = 0.3  # of a new measurement in a function's running estimate


@dataclasses.dataclass(eq=False)
class Call:
    """One call of the caller's; ``key`` is what its time per call is learnt by."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: Any
    target: str | None  # the probe target it is routed by (``module:function``)
    future: Future[Any]
    rerouted: bool = False
    started: bool = False  # its future is RUNNING: cancel() refuses from here on
    alone: bool = False  # its batch failed as a whole: it goes alone from now on
    refused: bool = False  # its error is the pool refusing it (it never ran): not the call's own


def remote_traceback(text: str) -> BaseException:
    """The worker's traceback, as the ``__cause__`` of a job's exception: the very class
    ``ProcessPoolExecutor`` uses (its ``tb`` is the text), so code that looks for it finds it."""
    return _RemoteTraceback(f'\n"""\n{text}"""')  # type: ignore[arg-type]


class Lane:
    """``finish(call, exc, result)`` gets every call's outcome, in whatever thread the
    pool completes its batch in."""

    def __init__(
        self,
        name: str,
        make_pool: Callable[[], Executor],
        finish: Callable[[Call, BaseException | None, Any], None],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.name = name
        self.max_batch = max_batch
        self._make_pool = make_pool
        self._finish = finish
        self._pickled = name != "thread"  # a thread shares our memory: nothing to pickle
        self._lock = threading.Lock()
        self._backlog: deque[Call] = deque()
        self._estimates: dict[Any, float] = {}
        self._pool: Executor | None = None
        self._pool_worked = False  # has the current pool completed a batch?
        self._refusal: BaseException | None = None  # the current pool could not start
        self._limit = 1
        self._in_flight = 0
        self._closed = False
        self._pumping = threading.local()
        self.batches = 0

    def put(self, call: Call) -> None:
        with self._lock:
            self._backlog.append(call)
        self._pump()

    def withdraw(self, which: Callable[[Call], bool]) -> list[Call]:
        """Take back the waiting calls ``which`` picks (their route changed)."""
        with self._lock:
            taken = [call for call in self._backlog if which(call)]
            if taken:
                self._backlog = deque(call for call in self._backlog if not which(call))
        return taken

    @property
    def pool(self) -> Executor | None:
        """The inner pool now in use, if any."""
        return self._pool

    def close(self, wait: bool) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            self._backlog.clear()
        if pool is None:
            return
        try:
            pool.shutdown(wait=wait)
        except RuntimeError:  # half started (see _refused_by): its threads never ran
            if self._refusal is None:
                raise
            for process in dict(getattr(pool, "_processes", None) or {}).values():
                process.terminate()

    # -- sending -------------------------------------------------------------------
    def _pump(self) -> None:
        """Send batches while the pool has room. A completion that arrives inside
        ``add_done_callback`` (a call already done) is picked up by this loop instead of
        a nested one, so the stack stays flat however fast the calls are."""
        if getattr(self._pumping, "active", False):
            return
        self._pumping.active = True
        try:
            while True:
                with self._lock:
                    if self._closed or not self._backlog or self._in_flight >= self._limit:
                        return
                    batch = self._take()
                    if not batch:
                        continue
                    self._in_flight += 1
                    self.batches += 1
                self._send(batch)
        finally:
            self._pumping.active = False

    def _take(self) -> list[Call]:
        share = -(-len(self._backlog) // self._limit)
        batch: list[Call] = []
        expected = 0.0
        while self._backlog and len(batch) < min(self.max_batch, share):
            call = self._backlog[0]
            cost = self._estimates.get(call.key, TARGET_S)
            if batch and (call.alone or expected + cost > TARGET_S):
                break
            self._backlog.popleft()
            if call.future.cancelled():  # cancelled while it waited (its waiters are told)
                continue
            if self._pickled and not call.started:  # a thread worker marks it as it starts it
                if not mark_running(call.future):
                    continue  # cancelled while it waited
                call.started = True
            batch.append(call)
            expected += cost
            if call.alone:
                break
        return batch

    def _send(self, batch: list[Call]) -> None:
        pool = None
        try:
            pool = self._current_pool()
            if self._refusal is not None:
                raise self._refusal
            if self._pickled:
                tasks: list[Any] = [(c.fn, c.args, c.kwargs) for c in batch]
            else:  # the worker marks each call running as it starts it, as a thread pool does
                tasks = [(c.fn, c.args, c.kwargs, None if c.started else c.future) for c in batch]
            future = pool.submit(_worker.run_batch, tasks, self._pickled)
        except BaseException as exc:  # the pool refused it: none of it ran
            if isinstance(exc, RuntimeError) and pool is not None and self._refusal is None:
                exc = self._refused_by(pool, exc)
            self._batch_failed(batch, exc, pool, refused=True)
            return
        future.add_done_callback(lambda done: self._done(batch, pool, done))

    def _refused_by(self, pool: Executor, exc: RuntimeError) -> BaseException:
        """A pool whose submit raised RuntimeError (a thread it needs could not start, as at
        interpreter finalization) is half started: nothing more is sent to it, and every
        later call fails at once (a process pool's calls with ``BrokenProcessPool``, as that
        pool fails when its own threads cannot start), instead of waiting on it forever."""
        error: BaseException = exc
        if self.name == "process":
            error = BrokenProcessPool(f"the process pool could not start: {exc}")
            error.__cause__ = exc
        with self._lock:
            if self._pool is pool and not self._closed:
                self._refusal = error
        return error

    def _current_pool(self) -> Executor:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is None:
                self._pool, self._pool_worked = self._make_pool(), False
                workers = getattr(self._pool, "_max_workers", None)
                self._limit = AHEAD * (workers if isinstance(workers, int) and workers > 0 else 1)
            return self._pool

    # -- receiving -----------------------------------------------------------------
    def _done(self, batch: list[Call], pool: Executor, future: Future[Any]) -> None:
        exc = future.exception() if not future.cancelled() else RuntimeError("the batch was cancelled")
        if isinstance(exc, BrokenExecutor):
            # The pool completes our future holding its own lock (ProcessPoolExecutor's
            # terminate_broken, ThreadPoolExecutor's _initializer_failed): submitting to
            # it or shutting it down from here would wait on that lock forever.
            self._broken_elsewhere(batch, exc, pool)
            return
        if exc is not None:
            self._batch_failed(batch, exc, pool)
            return
        try:
            outcomes = self._read(future.result(), len(batch))
        except BaseException as error:  # noqa: BLE001 - the batch ran: fail its calls, never re-run them
            outcomes = [(False, error, None, 0.0)] * len(batch)
        with self._lock:
            self._in_flight -= 1
            self._pool_worked = self._pool_worked or self._pool is pool
            for call, (returned, _, _, seconds) in zip(batch, outcomes, strict=True):
                if returned is not None:
                    self._learn_time(call.key, seconds)
        # each call and its outcome are let go as soon as they are delivered: a caller that
        # drops a result (map's iterator) must not find it still held here, or by the pool's
        # own reference to this batch (the same lists), while later calls are delivered
        batch.reverse()
        outcomes.reverse()
        while batch:
            call, (returned, value, text, _) = batch.pop(), outcomes.pop()
            if returned is None:  # cancelled before the worker got to it: never ran
                continue
            if returned:
                self._deliver(call, None, value)
            else:
                if text is not None:
                    value.__cause__ = remote_traceback(text)
                self._deliver(call, value, None)
            del call, value
        self._pump()

    def _read(self, data: Any, calls: int) -> list[_worker.Outcome]:
        outcomes: list[_worker.Outcome] = pickle.loads(data) if self._pickled else data
        if len(outcomes) != calls:
            raise RuntimeError(f"a batch of {calls} calls came back with {len(outcomes)} outcomes")
        if self._pickled:  # bytes, bools, floats and strings so far: now each value
            broken = BrokenProcessPool if self.name == "process" else None
            outcomes = [
                (*_unpickled(bool(returned), value, broken), text, t) for returned, value, text, t in outcomes
            ]
        return outcomes

    def _deliver(self, call: Call, exc: BaseException | None, result: Any) -> None:
        """``finish``, and the error it raised if it failed: no future is left pending."""
        try:
            self._finish(call, exc, result)
        except BaseException as error:  # noqa: BLE001
            if not call.future.done():
                call.future.set_exception(error)

    def _learn_time(self, key: Any, seconds: float) -> None:
        old = self._estimates.get(key)
        if old is None and len(self._estimates) >= ESTIMATES_KEPT:
            self._estimates.clear()
        self._estimates[key] = seconds if old is None else old + WEIGHT * (seconds - old)

    def _broken_elsewhere(self, batch: list[Call], exc: BaseException, pool: Executor) -> None:
        """``_batch_failed`` in a thread of its own; if none can start (interpreter
        exit), the calls get the error here, the pool is left alone and the calls still
        waiting fail with the same error (nothing can replace the pool now)."""
        try:
            args = (batch, exc, pool)
            threading.Thread(target=self._batch_failed, args=args, name="subcompat-broken-pool").start()
        except RuntimeError:
            with self._lock:
                self._in_flight -= 1
                if self._pool is pool:
                    self._refusal = exc
            for call in batch:
                self._deliver(call, exc, None)
            self._pump()

    def _batch_failed(
        self, batch: list[Call], exc: BaseException, pool: Executor | None, refused: bool = False
    ) -> None:
        """None of the batch ran (see run_batch), unless the pool broke: a batch of one
        takes the error; a larger one is sent again one call per batch. A pool that broke
        after it had worked is replaced; one that never worked (its initializer fails, or
        its very first call crashes it) stays, so later calls fail at once as they would
        with that pool alone."""
        broken = isinstance(exc, BrokenExecutor)
        with self._lock:
            self._in_flight -= 1
            replace = broken and pool is not None and self._pool is pool and self._pool_worked
            if replace:
                self._pool = None
            if len(batch) > 1 and not broken and not self._closed:
                for call in reversed(batch):
                    call.alone = True
                    self._backlog.appendleft(call)
                batch = []
        if replace:
            pool.shutdown(wait=False)  # type: ignore[union-attr]
        for call in batch:
            call.refused = refused
            self._deliver(call, exc, None)
        self._pump()


def mark_running(future: Future[Any]) -> bool:
    """Mark the future running; False if it was cancelled (and its waiters told so,
    here or by whoever saw the cancel first)."""
    try:
        return future.set_running_or_notify_cancel()
    except RuntimeError:  # CANCELLED_AND_NOTIFIED already
        return False


def _unpickled(returned: bool, data: bytes, broken: type[BaseException] | None) -> tuple[bool, Any]:
    """One outcome's value; a value this side cannot unpickle (a class that rebuilds
    itself differently, one missing here) fails its call only: the call did run. Its
    error is ``broken`` (a process lane: ``BrokenProcessPool``, what that pool raises
    then), caused by the unpickling error; else the unpickling error itself."""
    try:
        return returned, pickle.loads(data)
    except BaseException as exc:  # noqa: BLE001 - whatever unpickling raised
        what = "result" if returned else "exception"
        error = f"the call ran, but its {what} cannot be unpickled here: {type(exc).__name__}: {exc}"
        if broken is not None:
            wrapped = broken(error)
            wrapped.__cause__ = exc
            return False, wrapped
        exc.add_note(error)
        return False, exc
