"""Item 5: resident memory of a sub-interpreter worker versus a process worker.

Run by the target interpreter, in the app directory: ``python _memory.py JOB K``.
Stdlib only. Prints one JSON object (KiB).

- sub-interpreter workers: in this process, K isolated sub-interpreters are created one
  after the other, each imports JOB and calls its ``run()`` and stays alive; the host's
  RSS is read before and after each. The first one pays for mapping the job's
  extension files; every further one is the marginal cost of one more worker.
- process workers (lean): K child processes of the same interpreter each import JOB, call
  ``run()`` and wait; their RSS, PSS and USS (private pages) are read while all K are
  alive. This is the leanest possible process worker (no multiprocessing, no pickling
  machinery), so the comparison favours processes.
- process workers (pool): a spawn-context ``ProcessPoolExecutor`` of K workers, as
  chancy's ProcessExecutor builds it; each worker imports JOB and runs it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys


def rollup(pid: str | int = "self") -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            parts = line.split()
            if len(parts) >= 3 and parts[-1] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    out["Uss"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


CHILD = """
import sys
import {job} as job
job.run()
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.read()
"""


def sub_workers(job: str, k: int) -> dict[str, object]:
    import _interpreters

    gc.collect()
    base = rollup()
    code = f"import sys\nsys.path[:] = {sys.path!r}\nimport {job} as _job\n_result = _job.run()\n"
    ids, after = [], []
    try:
        for _ in range(k):
            iid = _interpreters.create("isolated")
            ids.append(iid)
            failed = _interpreters.exec(iid, code)
            if failed is not None:
                raise SystemExit(f"{job} failed in a sub-interpreter: {failed.formatted}")
            gc.collect()
            after.append(rollup())
    finally:
        for iid in ids:
            _interpreters.destroy(iid)
    first = after[0]["Rss"] - base["Rss"]
    marginal = (after[-1]["Rss"] - after[0]["Rss"]) / (k - 1) if k > 1 else float(first)
    return {"host_before": base["Rss"], "first": first, "marginal": marginal, "host_after": after[-1]["Rss"]}


def process_workers(job: str, k: int) -> dict[str, object]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD.format(job=job)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(k)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"{job} failed in a process worker")
        rolls = [rollup(p.pid) for p in procs]
    finally:
        for p in procs:
            p.communicate("", timeout=30)
    med = sorted(r["Rss"] for r in rolls)[len(rolls) // 2]
    return {
        "rss": med,
        "pss": sorted(r["Pss"] for r in rolls)[len(rolls) // 2],
        "uss": sorted(r["Uss"] for r in rolls)[len(rolls) // 2],
    }


def _pool_task(job: str) -> int:
    import importlib
    import os
    import time

    importlib.import_module(job).run()
    time.sleep(0.3)  # keep this worker busy so the next task lands on another one
    return os.getpid()


def pool_workers(job: str, k: int) -> dict[str, object]:
    """Workers as chancy's ProcessExecutor makes them: a spawn-context process pool."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=k, mp_context=multiprocessing.get_context("spawn")) as pool:
        pids = set(pool.map(_pool_task, [job] * k))
        rolls = [rollup(pid) for pid in pids]
    return {
        "rss": sorted(r["Rss"] for r in rolls)[len(rolls) // 2],
        "pss": sorted(r["Pss"] for r in rolls)[len(rolls) // 2],
        "uss": sorted(r["Uss"] for r in rolls)[len(rolls) // 2],
        "workers": len(pids),
    }


def bare_process() -> int:
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; print(1, flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    p.stdout.readline()
    rss = rollup(p.pid)["Rss"]
    p.communicate("", timeout=30)
    return rss


def main(argv: list[str]) -> None:
    job, k = argv[0], int(argv[1])
    sys.path.insert(0, ".")
    out = {
        "job": job,
        "k": k,
        "sub": sub_workers(job, k),
        "process": process_workers(job, k),
        "pool": pool_workers(job, k),
        "bare_process": bare_process(),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
