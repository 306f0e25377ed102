"""What AutoPoolExecutor runs inside its pools: imports nothing at load time, so a
sub-interpreter unpickling it loads only the job's own modules."""

import sys

TYPE_CHECKING = False  # no typing import here: annotations naming its types are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Task = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]
    # (returned?, result or exception, formatted traceback or None, seconds)
    Outcome = tuple[bool, Any, str | None, float]


def start(path: list[str], initializer: bytes | None = None) -> None:
    """A sub-interpreter starts with the path the process started with; the probe
    resolved the job's module with the caller's ``sys.path``, so the job gets that too.
    The caller's initializer comes pickled (in memory, as the pool sends every call), so
    that its module is looked up on that path."""
    sys.path[:] = path
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
    for fn, args, kwargs in tasks:
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


def _pickled(outcome: "Outcome", pickle: "Any") -> "Outcome":
    returned, value, text, seconds = outcome
    try:
        return (returned, pickle.dumps(value, pickle.HIGHEST_PROTOCOL), text, seconds)
    except BaseException as exc:  # noqa: BLE001 - whatever pickling raised
        what = "result" if returned else f"exception {type(value).__name__}"
        error = RuntimeError(f"the call's {what} cannot be sent back: {type(exc).__name__}: {exc}")
        return (False, pickle.dumps(error, pickle.HIGHEST_PROTOCOL), text, seconds)


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
