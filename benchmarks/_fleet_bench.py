"""Item 6: N cold workers meeting the same new job modules at once, with one shared
verdict store (PostgreSQL) against a local cache each.

Each worker is a process of its own with an empty local cache; all start, connect, then
are released together and look up the same modules in the same order (the worst case:
every worker wants the same module first). Per worker: time from release to its first
module's verdict (a job of it could start: "time to first job") and to all of them;
probes fleet-wide (shared: counted by the store; local: each worker's own).

    python _fleet_bench.py worker STORE_URL|- MODULE...   (one worker; prints JSON)
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
STDLIB_EXTENSIONS = ("_decimal", "_json", "_csv", "_struct", "_heapq", "_bisect", "array", "_datetime")


def write_modules(root: Path, n: int) -> list[str]:
    """n job modules, each loading a different mix of stdlib extension modules (all of them
    load in a sub-interpreter: the probe's cost, not the verdict, is what is timed)."""
    pkg = root / "fleetbench"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for i in range(n):
        mods = [STDLIB_EXTENSIONS[(i + k) % len(STDLIB_EXTENSIONS)] for k in range(3)]
        (pkg / f"m{i}.py").write_text(
            "".join(f"import {m}\n" for m in mods) + f"\n\ndef job():\n    return {i}\n"
        )
    return [f"fleetbench.m{i}" for i in range(n)]


def worker(url: str, modules: list[str]) -> None:
    from subcompat.cache import Cache
    from subcompat.check import check

    cache = Cache()
    if url != "-":
        from subcompat.cache_pg import FleetCache

        cache = FleetCache(url, cache)
    cache.open()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    first, probed = None, 0
    try:
        for module in modules:  # as a worker meets its jobs' modules
            report = check([module], cache=cache, jobs=1)
            probed += report.probed
            first = first if first is not None else time.perf_counter() - start
    finally:
        cache.close()
    print(json.dumps({"first": first, "all": time.perf_counter() - start, "probed": probed}), flush=True)


def one_round(python: str, app: Path, modules: list[str], n: int, url: str | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app), str(HERE.parent)])}
    procs = []
    with tempfile.TemporaryDirectory(prefix="subcompat-fleet-") as caches:
        for i in range(n):
            env_i = {**env, "SUBCOMPAT_CACHE_DIR": os.path.join(caches, str(i))}
            procs.append(
                subprocess.Popen(
                    [
                        "prlimit",
                        "--as=4000000000",
                        "timeout",
                        "600",
                        python,
                        __file__,
                        "worker",
                        url or "-",
                        *modules,
                    ],
                    cwd=app,
                    env=env_i,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            for p in procs:
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("a fleet worker did not start")
            for p in procs:
                p.stdin.write("go\n")
                p.stdin.flush()
            results = [json.loads(p.communicate(timeout=660)[0].strip().splitlines()[-1]) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    probes = _store_probes(python, url) if url else sum(r["probed"] for r in results)
    return {"first": [r["first"] for r in results], "all": [r["all"] for r in results], "probes": probes}


def _sql(python: str, dsn: str, statement: str) -> str:
    """Run one statement with the *target* interpreter's psycopg (the benchmark venv has it;
    the runner, e.g. `make bench`'s demo venv, need not): the first column of the first row."""
    code = (
        "import sys, psycopg\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as conn:\n"
        "    cur = conn.execute(sys.argv[2])\n"
        "    row = cur.fetchone() if cur.description else None\n"
        "print('' if row is None else row[0])\n"
    )
    proc = subprocess.run(
        ["timeout", "120", python, "-c", code, dsn, statement], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{statement!r} failed: {proc.stderr.strip()[-500:]}")
    return proc.stdout.strip()


def _store_probes(python: str, url: str) -> int:
    from subcompat.cache_pg import TABLE  # the store's versioned table name

    return int(_sql(python, url, f"SELECT coalesce(sum(probes), 0) FROM {TABLE}") or 0)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def fresh_database(python: str, dsn: str) -> str:
    name = f"fleetbench_{uuid.uuid4().hex[:8]}"
    _sql(python, dsn, f"CREATE DATABASE {name}")
    return dsn.rsplit("/", 1)[0] + "/" + name


def item_7(python: str, work: Path, dsn: str, repeats: int, quick: bool, out: dict) -> list[list[str]]:
    """Rows (cells) for the table: probes and time to first job, shared ÷ local."""
    counts = (1, 2) if quick else (1, 4, 8)
    modules = write_modules(work / "fleetapp", 2 if quick else 10)
    rounds = max(1, min(repeats, 3))
    rows, data = [], {}
    for n in counts:
        sides: dict[str, dict[str, list[float]]] = {
            "shared": {"first": [], "probes": []},
            "local": {"first": [], "probes": []},
        }
        for r in range(rounds):
            order = ("shared", "local") if r % 2 == 0 else ("local", "shared")  # alternate who goes first
            for side in order:
                url = fresh_database(python, dsn) if side == "shared" else None
                res = one_round(python, work / "fleetapp", modules, n, url)
                sides[side]["first"].append(statistics.median(res["first"]))
                sides[side]["probes"].append(res["probes"])
        data[n] = sides
        sh, lo = sides["shared"], sides["local"]
        ratio = statistics.median(a / b for a, b in zip(sh["first"], lo["first"], strict=True))
        rows.append(
            [
                f"7{'abc'[counts.index(n)]}",
                f"{n} cold worker(s) × {len(modules)} new modules: probes fleet-wide, shared / local",
                f"{statistics.median(sh['probes']):.0f} / {statistics.median(lo['probes']):.0f}",
                "–",
                str(rounds),
                "",
                f"shared = {len(modules)}",
                "**met**" if max(sh["probes"]) == len(modules) else "**missed**",
            ]
        )
        rows.append(
            [
                f"7{'abc'[counts.index(n)]}'",
                f"{n} cold worker(s): time to first job (median over workers), shared store / local caches",
                f"{_ms(statistics.median(sh['first']))} / {_ms(statistics.median(lo['first']))}",
                f"{min(sh['first']) * 1000:.0f}–{max(sh['first']) * 1000:.0f} / "
                f"{min(lo['first']) * 1000:.0f}–{max(lo['first']) * 1000:.0f} ms",
                str(rounds),
                f"{ratio:.2f}× (shared ÷ local)",
                "measured",
                "–",
            ]
        )
    out["item7"] = data
    return rows


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3:])
