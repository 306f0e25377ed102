"""What AutoPoolExecutor runs inside its pools: imports nothing, so a sub-interpreter
unpickling it loads only the job's own modules."""

import sys


def start(path, initializer, initargs):
    """A sub-interpreter starts with the path the process started with; the probe
    resolved the job's module with the caller's ``sys.path``, so the job gets that too."""
    sys.path[:] = path
    if initializer is not None:
        initializer(*initargs)


def run_chunk(fn, chunk):
    return [fn(*args) for args in chunk]
