"""Item 6 for run.py: AutoPoolExecutor vs InterpreterPoolExecutor, ProcessPoolExecutor and
ThreadPoolExecutor alone, on the small-call and the CPU-bound mix (_futures_bench.py).

Each round runs auto, process and thread back to back (order rotated per round) on both
mixes; ratios are per round, then the median. The interpreter pool alone runs in the
first round only, with a per-call bound: its count of failed and hung calls is the same
every round, and a hung 3.13 pool costs the whole bound.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from _stats import Series, fmt_range, fmt_ratio, mib, ratio_series

HERE = Path(__file__).resolve().parent
WORKERS = 2
BOUND = {"interp": 10.0}
DEFAULT_BOUND = 120.0


def scenario(python: str, work: Path, pool: str, mix: str, calls: int | None) -> dict:
    spec = {
        "pool": pool,
        "mix": mix,
        "workers": WORKERS,
        "dir": str(work / "futures-jobs"),
        "cache": str(work / "futures-cache"),
        "bound": BOUND.get(pool, DEFAULT_BOUND),
        "calls": calls,
    }
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run(
        [python, str(HERE / "_futures_bench.py"), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=work,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"_futures_bench.py {pool} {mix} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available(python: str) -> str | None:
    """Why item 6 cannot run on this interpreter, or None."""
    code = "import sys, ujson; sys.exit(0 if sys.version_info >= (3, 13) else 3)"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode == 3:
        return "needs Python >= 3.13"
    if proc.returncode != 0:
        return "ujson (the fallback calls' single-phase extension) is not installed"
    return None


def rows(python: str, work: Path, repeats: int, quick: bool, out: dict, row, log) -> list:  # noqa: ANN001
    why = available(python)
    if why:
        return [row("6", "AutoPoolExecutor, mixed workload", "skipped", "", "", "", "", f"skipped: {why}")]
    calls = {"small": 200, "cpu": 8} if quick else {"small": None, "cpu": None}
    pools = {"small": ("auto", "auto1", "process", "thread"), "cpu": ("auto", "process", "thread")}
    runs: dict[str, dict[str, list[dict]]] = {m: {p: [] for p in pools[m]} for m in calls}
    interp: dict[str, dict] = {}
    for r in range(repeats):
        for mix in calls:
            order = list(pools[mix])
            order = order[r % len(order) :] + order[: r % len(order)]
            for pool in order:
                log(f"item 6: round {r + 1}/{repeats}, {mix} mix, {pool}")
                runs[mix][pool].append(scenario(python, work, pool, mix, calls[mix]))
            if r == 0:
                log(f"item 6: {mix} mix, InterpreterPoolExecutor alone (bound {BOUND['interp']:.0f} s)")
                interp[mix] = scenario(python, work, "interp", mix, calls[mix])
    out["item6"] = {"runs": runs, "interp": interp, "workers": WORKERS}
    return _rows(runs, interp, row)


def _throughput(results: list[dict]) -> Series:
    return Series.of(r["completed"] / r["elapsed_s"] for r in results)


def _pool_tasks(result: dict) -> int:
    return sum(n for k, n in result.get("stats", {}).items() if k.startswith("batches."))


def _rows(runs: dict, interp: dict, row) -> list:  # noqa: ANN001
    out = []
    targets = {"small": ("process", 1.5), "cpu": ("thread", 1.6)}
    for key, mix, what in (("6a", "small", "small calls"), ("6b", "cpu", "CPU-bound calls")):
        thr = {p: _throughput(v) for p, v in runs[mix].items()}
        versus, goal = targets[mix]
        ratio = ratio_series(thr["auto"], thr[versus])
        other = "thread" if versus == "process" else "process"
        other_ratio = ratio_series(thr["auto"], thr[other])
        calls = runs[mix]["auto"][0]["calls"]
        lost = sum(r["failed"] + r["pending"] for v in runs[mix].values() for r in v)
        tasks = Series.of(_pool_tasks(r) for r in runs[mix]["auto"])
        out.append(
            row(
                key,
                f"AutoPoolExecutor, {calls} {what} (half need the fallback, process), {WORKERS} workers: "
                f"calls/s; ÷ {versus} pool alone (÷ {other} alone: {fmt_ratio(other_ratio.median)}, "
                f"{fmt_range(other_ratio, fmt_ratio)}); sent in {tasks.median:.0f} pool tasks "
                f"(the timed batch and its warm-up); calls not completed in any pool: {lost}",
                f"{thr['auto'].median:.0f}/s",
                f"{fmt_ratio(ratio.lo)} – {fmt_ratio(ratio.hi)}",
                ratio.n,
                fmt_ratio(ratio.median),
                f"≥ {goal}× {versus}",
                "**met**" if ratio.median >= goal else "**missed**",
            )
        )
        if "auto1" in thr:
            unbatched = ratio_series(thr["auto1"], thr[versus])
            out.append(
                row(
                    f"{key}″",
                    f"… AutoPoolExecutor with max_batch=1 (every call its own pool task), same calls: "
                    f"calls/s; ÷ {versus} pool alone",
                    f"{thr['auto1'].median:.0f}/s",
                    f"{fmt_ratio(unbatched.lo)} – {fmt_ratio(unbatched.hi)}",
                    unbatched.n,
                    fmt_ratio(unbatched.median),
                    "(what batching buys)",
                    "–",
                )
            )
        i = interp.get(mix)
        if i:
            out.append(
                row(
                    f"{key}′",
                    f"… InterpreterPoolExecutor alone, same {i['calls']} calls "
                    f"(bound {BOUND['interp']:.0f} s): "
                    f"completed / failed / still pending{(': ' + i['error']) if i.get('error') else ''}",
                    f"{i['completed']} / {i['failed']} / {i['pending']}",
                    "",
                    1,
                    "",
                    "every call completes",
                    "auto: met" if not lost else "auto: **missed**",
                )
            )
    mem = {p: Series.of(r["memory"]["rss"] for r in runs["cpu"][p]) for p in ("auto", "process", "thread")}
    per_worker = {
        p: Series.of((r["memory"]["rss"] - r["memory_before"]["rss"]) / WORKERS for r in runs["cpu"][p])
        for p in ("process", "thread")
    }
    sub = interp.get("cpu")
    sub_worker = (sub["memory"]["rss"] - sub["memory_before"]["rss"]) / WORKERS if sub else float("nan")
    out.append(
        row(
            "6c",
            "memory, CPU-bound mix with the pools at full size: RSS of the whole process tree, auto "
            f"(process {mib(mem['process'].median)}, thread {mib(mem['thread'].median)}); "
            f"per worker: sub-interpreter {mib(sub_worker)}, process {mib(per_worker['process'].median)} "
            "(forkserver included)",
            mib(mem["auto"].median),
            fmt_range(mem["auto"], mib),
            mem["auto"].n,
            fmt_ratio(sub_worker / per_worker["process"].median) + " sub ÷ process per worker",
            "per worker well below a process",
            "–",
        )
    )
    return out


if __name__ == "__main__":
    sys.exit("run through benchmarks/run.py --items 6")
