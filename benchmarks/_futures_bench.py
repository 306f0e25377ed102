"""Item 6: AutoPoolExecutor against each concurrent.futures pool alone, on a mixed workload.

Run by the target interpreter, one scenario per process (a pool's threads, processes and
hung interpreters die with it):

    python _futures_bench.py '{"pool": "auto", "mix": "small", "workers": 2, "dir": ...}'

prints one JSON object: elapsed seconds of the timed batch, calls completed / failed /
still pending at the per-call bound, and the memory of this process and every
descendant (RSS and peak) while the pools are at full size. Half the calls of each mix
use ujson (single-phase init: it never loads in an isolated sub-interpreter), the
other half json. Before timing, one untimed batch of the same mix brings every
pool to full size and imports the job modules (and lets the auto executor probe).
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, wait

JOBS = """
def small(x):
    return len(codec.dumps([x] * 20)) + sum(range(200))

def cpu(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total + len(codec.dumps([total]))
"""
MIXES = {"small": ("small", 2000, 1), "cpu": ("cpu", 40, 400_000)}  # (function, calls, argument)


def write_jobs(where: str) -> None:
    os.makedirs(where, exist_ok=True)
    for name, head in (
        ("fb_pure", "import json as codec\n"),
        ("fb_needs_fallback", "import ujson as codec\n"),
    ):
        path = os.path.join(where, name + ".py")
        if not os.path.exists(path):
            with open(path, "w") as fh:
                fh.write(head + JOBS)


def make_pool(kind: str, workers: int, spec: dict):  # noqa: ANN201
    import multiprocessing

    context = multiprocessing.get_context("forkserver")  # what AutoPoolExecutor uses on Linux
    if kind in ("auto", "auto1"):  # auto1: no batching, every call its own pool task
        from subcompat.futures import AutoPoolExecutor

        extra = {"max_batch": 1} if kind == "auto1" else {}
        fallback, cache = spec.get("fallback", "process"), spec["cache"]
        return AutoPoolExecutor(workers, fallback=fallback, cache_dir=cache, mp_context=context, **extra)
    if kind == "process":
        return ProcessPoolExecutor(workers, mp_context=context)
    if kind == "thread":
        return ThreadPoolExecutor(workers)
    try:  # the pool as a user gets it: the stdlib one, or the backport on 3.13 (unpatched)
        from concurrent.futures import InterpreterPoolExecutor
    except ImportError:
        from interpreters_backport.concurrent.futures.interpreter import InterpreterPoolExecutor
    return InterpreterPoolExecutor(workers, initializer=_set_path, initargs=(list(sys.path),))


def _set_path(path: list) -> None:
    sys.path[:] = path


def descendants() -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    tree, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo += [child for child, parent in parents.items() if parent == pid and child not in tree]
    return tree - {os.getpid()}


def tree_memory() -> dict:
    """RSS and peak RSS (KiB) of this process and all its descendants."""
    tree = descendants() | {os.getpid()}
    rss = hwm = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/status") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            rss += int(fields["VmRSS"].split()[0])
            hwm += int(fields["VmHWM"].split()[0])
        except (OSError, KeyError, ValueError):
            pass
    return {"rss": rss, "peak": hwm, "processes": len(tree)}


def batch(pool, modules, fn: str, calls: int, arg: int, bound: float) -> dict:  # noqa: ANN001
    funcs = [getattr(m, fn) for m in modules]
    started = time.perf_counter()
    futures = [pool.submit(funcs[i % 2], arg) for i in range(calls)]
    done, pending = wait(futures, timeout=bound)
    elapsed = time.perf_counter() - started
    failed = [f for f in done if f.exception() is not None]
    return {
        "elapsed_s": elapsed,
        "calls": calls,
        "completed": len(done) - len(failed),
        "failed": len(failed),
        "pending": len(pending),
        "error": repr(failed[0].exception())[:200] if failed else None,
    }


def main(spec: dict) -> dict:
    write_jobs(spec["dir"])
    sys.path.insert(0, spec["dir"])
    import fb_needs_fallback
    import fb_pure

    fn, calls, arg = MIXES[spec["mix"]]
    calls = spec.get("calls") or calls
    before = tree_memory()
    pool = make_pool(spec["pool"], spec["workers"], spec)
    modules = (fb_pure, fb_needs_fallback)
    warm = batch(pool, modules, fn, max(2 * spec["workers"], calls // 10), arg, spec["bound"])
    timed = batch(pool, modules, fn, calls, arg, spec["bound"]) if not warm["pending"] else warm
    memory = tree_memory()
    out = {
        **timed,
        "warm": warm,
        "memory_before": before,
        "memory": memory,
        "stats": pool.stats() if hasattr(pool, "stats") else {},
    }
    if timed["pending"] or warm["pending"]:  # a hung pool cannot be shut down: report and leave
        print(json.dumps(out), flush=True)
        for pid in descendants():  # our own pool's processes: they would hold stdout open
            os.kill(pid, 9)
        os._exit(0)
    pool.shutdown(wait=True)
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
