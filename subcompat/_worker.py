"""What AutoPoolExecutor runs inside its pools: imports nothing, so a sub-interpreter
unpickling it loads only the job's own modules."""

import sys

TYPE_CHECKING = False  # no typing import here: annotations naming its types are strings
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


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
