"""What a chunk of ``AutoPoolExecutor.map`` runs in its pool: imports nothing, so a
sub-interpreter unpickling it loads only the job's own module."""


def run_chunk(fn, chunk):
    return [fn(*args) for args in chunk]
