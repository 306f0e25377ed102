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
    the batch itself means none of it ran. ``pickled``: the outcomes come back as one
    pickle made here, with any result or exception that cannot be pickled replaced by the
    error pickling it, so one bad result cannot lose the other calls' outcomes."""
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

    try:
        return pickle.dumps(outcomes, pickle.HIGHEST_PROTOCOL)
    except BaseException:  # noqa: BLE001 - whatever pickling raised, find the item
        return pickle.dumps([_picklable(o) for o in outcomes], pickle.HIGHEST_PROTOCOL)


def _picklable(outcome: "Outcome") -> "Outcome":
    import pickle

    try:
        pickle.dumps(outcome[1], pickle.HIGHEST_PROTOCOL)
        return outcome
    except BaseException as exc:  # noqa: BLE001
        what = "result" if outcome[0] else f"exception {type(outcome[1]).__name__}"
        error = RuntimeError(f"the call's {what} cannot be sent back: {type(exc).__name__}: {exc}")
        return (False, error, outcome[2], outcome[3])


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
