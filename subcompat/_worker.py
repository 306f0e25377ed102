"""What AutoPoolExecutor runs inside its pools: imports nothing at load time, so a
sub-interpreter unpickling it loads only the job's own modules."""

import sys

TYPE_CHECKING = False  # no typing import here: annotations naming its types are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
    # (returned? (None: cancelled, never ran), result or exception, traceback or None, seconds)
    Outcome = tuple[bool | None, Any, str | None, float]


def start(path: list[str], initializer: bytes | None = None, authkey: bytes | None = None) -> None:
    """A sub-interpreter starts with the path the process started with; the probe
    resolved the job's module with the caller's ``sys.path``, so the job gets that too.
    The caller's initializer comes pickled (in memory, as the pool sends every call), so
    that its module is looked up on that path. ``authkey``: the caller's multiprocessing
    key, which a child process inherits, so a ``Manager`` proxy passed to a call connects
    from here as it would from a process pool's worker."""
    sys.path[:] = path
    if authkey is not None:
        from multiprocessing import process

        process.current_process().authkey = authkey
    if initializer is not None:
        import pickle

        fn, args = pickle.loads(initializer)
        fn(*args)


def run_chunk(fn: "Callable[..., Any]", chunk: "list[tuple[Any, ...]]") -> "list[Any]":
    return [fn(*args) for args in chunk]


def run_batch(tasks: "list[Task]", pickled: bool) -> "list[Outcome] | bytes":
    """Run every task, each one's exception caught (BaseException: a job's ``sys.exit``
    is its outcome, as in a process pool), so a batch never fails half-way: an error of
    the batch itself means none of it ran. ``pickled``: each outcome's value is pickled
    on its own, and one that cannot be is replaced by the error pickling it, so one bad
    result (or one the caller's side cannot unpickle) costs that call only."""
    from time import perf_counter

    outcomes: list[Outcome] = []
    for task in tasks:
        fn, args, kwargs = task[0], task[1], task[2]
        if len(task) > 3 and task[3] is not None and not _start(task[3]):
            outcomes.append((None, None, None, 0.0))  # cancelled before it started
            continue
        started = perf_counter()
        try:
            value, returned, text = fn(*args, **kwargs), True, None
        except BaseException as exc:
            value, returned, text = exc, False, _traceback(exc) if pickled else None
        outcomes.append((returned, value, text, perf_counter() - started))
    if not pickled:
        return outcomes
    import pickle

    return pickle.dumps([_pickled(o, pickle) for o in outcomes], pickle.HIGHEST_PROTOCOL)


def _start(future: "Any") -> bool:
    """A thread worker's call: mark its future running now, as ThreadPoolExecutor does
    when a worker takes it (so cancel() works until then); False if it was cancelled."""
    try:
        return bool(future.set_running_or_notify_cancel())
    except RuntimeError:  # cancelled, and its waiters told so already
        return False


def _pickled(outcome: "Outcome", pickle: "Any") -> "Outcome":
    """A value that cannot be pickled is replaced by the error pickling it raised (as a
    process pool's worker sends that back), or by a RuntimeError if that cannot be sent
    either."""
    returned, value, text, seconds = outcome
    try:
        return (returned, pickle.dumps(value, pickle.HIGHEST_PROTOCOL), text, seconds)
    except BaseException as exc:  # noqa: BLE001 - whatever pickling raised
        what = "result" if returned else f"exception {type(value).__name__}"
        note = f"the call's {what} cannot be sent back: {type(exc).__name__}: {exc}"
        tb = _traceback(exc)
        try:
            exc.add_note(note)
            return (False, pickle.dumps(exc, pickle.HIGHEST_PROTOCOL), tb, seconds)
        except BaseException:  # noqa: BLE001
            return (False, pickle.dumps(RuntimeError(note), pickle.HIGHEST_PROTOCOL), tb, seconds)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
