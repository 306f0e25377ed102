"""subcompat benchmarks: what a check costs and what routing buys, in one run.

    python benchmarks/run.py [--out benchmarks/RESULTS.md] [--repeats N] [--items 1,2,3,4,5,6,7,8]
    python benchmarks/run.py --quick      # tiny smoke run: current interpreter, no network
    python benchmarks/run.py --items 1,2 --against DIR   # A/B: this tree vs the subcompat tree DIR

Prints a markdown table (and writes it with ``--out``) with the machine and the date.
Method: benchmarks/README.md. Full runs build benchmarks/.work/venv (real extension
packages from PyPI) and benchmarks/.work/app (the generated job app); items 3 and 4
start a throwaway PostgreSQL through tests/_pg.py, and so does item 7 (fleet verdicts).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _app  # noqa: E402
import _env  # noqa: E402
import _probe_bench  # noqa: E402
from _probe_bench import ProbeBench, python_startup  # noqa: E402
from _stats import Series, fmt_range, fmt_ratio, mib, rate, ratio_series, seconds  # noqa: E402

AUTO = "subcompat.chancy.AutoFallbackExecutor"
EXECUTORS = {
    "thread": "chancy.executors.thread.ThreadedExecutor",
    "process": "chancy.executors.process.ProcessExecutor",
    "sub": "chancy.executors.sub.SubInterpreterExecutor",
    "auto": AUTO,
}
EDIT_TARGET = "benchapp.jobs.orjson_dump:run"  # item 2: the job module that gets edited


class Row:
    def __init__(
        self,
        key: str,
        what: str,
        median: str,
        spread: str = "–",
        n: int | str = "",
        ratio: str = "",
        target: str = "",
        status: str = "",
    ):
        self.cells = [key, what, median, spread, str(n), ratio, target, status]


def status(ok: bool | None) -> str:
    return "–" if ok is None else ("**met**" if ok else "**missed**")


def skipped(key: str, what: str, why: str) -> Row:
    return Row(key, what, "skipped", "", "", "", "", f"skipped: {why}")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- item 1 and 2 --------------------------------------------------------------------
def items_1_2(
    bench: ProbeBench,
    repeats: int,
    want: set[str],
    out: dict,
    quick: bool,
    other: ProbeBench | None = None,
    other_name: str = "",
) -> list[Row]:
    """Items 1-2; with ``other`` (``--against DIR``) also the A/B rows 1g and 2e-2f."""
    lazy = _app.deferred_of(bench.targets)
    rows: list[Row] = []
    r1 = None
    if "1" in want or "2" in want:
        log(f"item 1: cold check, naive, floors ({len(bench.targets)} jobs, {len(bench.packages)} packages)")
        r1 = bench.item1(repeats, lazy, log=log, with_serial=not quick, other=other)
        out["item1"] = {k: (v.values if isinstance(v, Series) else v) for k, v in r1.items()}
    if r1 is not None and "1" in want:
        cold, naive, floor = r1["cold"], r1["naive"], r1["floor"]
        vs_naive = ratio_series(cold, naive)
        vs_floor = ratio_series(cold, floor)
        verdicts = ", ".join(f"{n} {k}" for k, n in sorted(r1["verdicts"].items()))
        rows += [
            Row(
                "1a",
                f"cold `subcompat check` ({r1['targets']} jobs, {r1['packages']} packages; {verdicts})",
                seconds(cold.median),
                fmt_range(cold),
                cold.n,
            ),
            Row(
                "1b",
                f"naive: a process + a sub-interpreter per package, serial "
                f"({r1['naive_failed']} of {r1['packages']} fail)",
                seconds(naive.median),
                fmt_range(naive),
                naive.n,
            ),
            Row(
                "1c",
                "floor: whole tree once, one process, one sub-interpreter",
                seconds(floor.median),
                fmt_range(floor),
                floor.n,
            ),
            Row(
                "1c'",
                f"isolation floor: each job in its own fresh sub-interpreter, {os.cpu_count()} processes "
                "in parallel, no analysis",
                seconds(r1["per_job"].median),
                fmt_range(r1["per_job"]),
                r1["per_job"].n,
                f"cold ÷ this: {fmt_ratio(ratio_series(cold, r1['per_job']).median)}",
                "",
                "–",
            ),
            Row(
                "1d",
                "cold ÷ naive",
                fmt_ratio(vs_naive.median),
                fmt_range(vs_naive, fmt_ratio),
                vs_naive.n,
                "",
                "≤ 0.5×",
                status(vs_naive.median <= 0.5),
            ),
            Row(
                "1e",
                "cold ÷ floor",
                fmt_ratio(vs_floor.median),
                fmt_range(vs_floor, fmt_ratio),
                vs_floor.n,
                "",
                "≤ 1.5×",
                status(vs_floor.median <= 1.5),
            ),
        ]
        if r1["cold_serial"].n:
            serial = r1["cold_serial"]
            rows.append(
                Row(
                    "1f",
                    "cold check with `--jobs 1` (what the parallel children buy)",
                    seconds(serial.median),
                    fmt_range(serial),
                    serial.n,
                    f"{fmt_ratio(serial.median / cold.median)} of 1a",
                    "",
                    "–",
                )
            )
        if other:
            cold_b = r1["cold_b"]
            vs_b = ratio_series(cold, cold_b)
            rows += [
                Row(
                    "1g",
                    f"cold check with the `--against` tree {other_name} (same rounds as 1a, back to back)",
                    seconds(cold_b.median),
                    fmt_range(cold_b),
                    cold_b.n,
                    f"in-process {seconds(r1['cold_b_internal'].median)} "
                    f"(1a: {seconds(r1['cold_internal'].median)})",
                ),
                Row(
                    "1g'",
                    f"cold check: this tree ÷ {other_name}",
                    fmt_ratio(vs_b.median),
                    fmt_range(vs_b, fmt_ratio),
                    vs_b.n,
                    "",
                    "≤ 1.10×",
                    status(vs_b.median <= 1.10),
                ),
                _cpu_row(
                    '1g"',
                    "cold check",
                    r1["cold_cpu"],
                    r1["cold_b_cpu"],
                    other_name,
                    "; per round, this ÷ other: user "
                    + fmt_ratio(ratio_series(r1["cold_user"], r1["cold_b_user"]).median)
                    + ", sys "
                    + fmt_ratio(ratio_series(r1["cold_sys"], r1["cold_b_sys"]).median)
                    + ", minor page faults "
                    + fmt_ratio(ratio_series(r1["cold_minflt"], r1["cold_b_minflt"]).median),
                ),
            ]
    if "2" in want:
        log("item 2: warm check, touch, edit")
        r2 = bench.item2(repeats, EDIT_TARGET, log=log, other=other)
        out["item2"] = {k: (v.values if isinstance(v, Series) else v) for k, v in r2.items()}
        cold_med = r1["cold"].median if r1 else float("nan")
        warm = r2["warm"]
        share = warm.median / cold_med
        ok_warm = share <= 0.05 and warm.median < 0.3 and r2["warm_cached_all"]
        edited = r2["edited"]
        only_one = all(rp == [r2["edit_target"]] for rp in r2["edit_reprobed"])
        rows += [
            Row(
                "2a",
                "warm check (nothing changed), CLI process wall"
                + ("" if r2["warm_cached_all"] else " — NOT all from cache"),
                seconds(warm.median),
                fmt_range(warm),
                warm.n,
                f"{fmt_ratio(share)} of 1a",
                "≤ 5% of cold, < 0.3 s",
                status(ok_warm),
            ),
            Row(
                "2b",
                "warm check, in-process time (report `elapsed_s`)",
                seconds(r2["warm_internal"].median),
                fmt_range(r2["warm_internal"]),
                r2["warm_internal"].n,
                f"{fmt_ratio(r2['warm_internal'].median / cold_med)} of 1a",
                "",
                "–",
            ),
            Row(
                "2c",
                f"after `touch` of one job module: {r2['touch_reprobed']} re-probed (content hash unchanged)",
                seconds(r2["touched"].median),
                fmt_range(r2["touched"]),
                r2["touched"].n,
                f"{fmt_ratio(r2['touched'].median / cold_med)} of 1a",
                "0 re-probed",
                status(r2["touch_reprobed"] == 0),
            ),
            Row(
                "2d",
                f"after editing `{r2['edit_target'].split(':')[0]}`: re-probed "
                f"{_reprobed(r2['edit_reprobed'])}",
                seconds(edited.median),
                fmt_range(edited),
                edited.n,
                f"{fmt_ratio(edited.median / cold_med)} of 1a",
                "only that job re-probed",
                status(only_one),
            ),
        ]
        if other:
            warm_b = r2["warm_b"]
            vs_b = ratio_series(warm, warm_b)
            edit_vs_b = ratio_series(edited, r2["edited_b"])
            rows += [
                Row(
                    "2e",
                    f"warm check with the `--against` tree {other_name} (same rounds as 2a, back to back)"
                    + ("" if r2["warm_b_cached_all"] else " — NOT all from cache"),
                    seconds(warm_b.median),
                    fmt_range(warm_b),
                    warm_b.n,
                    f"in-process {seconds(r2['warm_internal_b'].median)} "
                    f"(2b: {seconds(r2['warm_internal'].median)})",
                ),
                Row(
                    "2e'",
                    f"warm check: this tree ÷ {other_name}",
                    fmt_ratio(vs_b.median),
                    fmt_range(vs_b, fmt_ratio),
                    vs_b.n,
                    "",
                    "unchanged (≤ 1.05×)",
                    status(vs_b.median <= 1.05 and r2["warm_cached_all"] and r2["warm_b_cached_all"]),
                ),
                _cpu_row('2e"', "warm check", r2["warm_cpu"], r2["warm_cpu_b"], other_name),
                Row(
                    "2f",
                    f"after editing one job (2d): this tree ÷ {other_name} "
                    f"(the other tree: {seconds(r2['edited_b'].median)}, re-probed "
                    f"{_reprobed(r2['b_reprobed']['edited'])})",
                    fmt_ratio(edit_vs_b.median),
                    fmt_range(edit_vs_b, fmt_ratio),
                    edit_vs_b.n,
                    "",
                    "",
                    "–",
                ),
            ]
    return rows


def _cpu_row(key: str, what: str, this: Series, them: Series, other_name: str, more: str = "") -> Row:
    """CPU time (user + sys of the whole process tree) of both sides, per-round ratio."""
    ratio = ratio_series(this, them)
    return Row(
        key,
        f"… {what} CPU time (user + sys, whole process tree): this tree ÷ {other_name}",
        fmt_ratio(ratio.median),
        fmt_range(ratio, fmt_ratio),
        ratio.n,
        f"this {seconds(this.median)} CPU, other {seconds(them.median)} CPU{more}",
        "",
        "–",
    )


def tree_name(src: str) -> str:
    """``DIR (commit)`` for a subcompat source tree, for the table."""
    proc = subprocess.run(
        ["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    head = proc.stdout.strip()
    dirty = ""
    if head:
        st = subprocess.run(
            ["git", "-C", src, "status", "--porcelain", "--", "subcompat"],
            capture_output=True,
            text=True,
            check=False,
        )
        dirty = "+changes" if st.stdout.strip() else ""
    return f"`{src}`" + (f" ({head}{dirty})" if head else "")


def tree_state(src: str) -> str:
    """A digest of the ``.py`` files of the subcompat package under ``src``: tells whether
    a tree that others are editing changed while it was being timed."""
    digest = hashlib.sha256()
    for path in sorted(Path(src, "subcompat").rglob("*.py")):
        with contextlib.suppress(OSError):
            digest.update(str(path).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def verdict_notes(diff: list[dict], other_name: str, n: int) -> list[str]:
    """The markdown lines that compare the verdicts of both trees (every cold report)."""
    if not diff:
        return [f"Verdicts, this tree vs {other_name}: the same for all {n} targets in every cold run."]
    lines = [f"Verdicts that differ between this tree and {other_name} (or between rounds):", ""]
    for d in diff:
        this = "; ".join(f"{v} ({r})" for v, r in d["this"]) or "–"
        them = "; ".join(f"{v} ({r})" for v, r in d["against"]) or "–"
        lines.append(f"- `{d['target']}`: this tree: {this} — against: {them}")
    return lines


def _reprobed(lists: list[list[str]]) -> str:
    names = sorted({t.split(":")[0].rsplit(".", 1)[-1] for rp in lists for t in rp})
    counts = sorted({len(rp) for rp in lists})
    return f"{'/'.join(map(str, counts))} job(s) ({', '.join(names) or 'none'})"


# -- item 5 --------------------------------------------------------------------------
def item_5(python: str, app: Path, job: str, repeats: int, k: int, out: dict) -> list[Row]:
    log(f"item 5: memory of a worker running {job} (k={k})")
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [python, str(HERE / "_memory.py"), job, str(k)],
            cwd=app,
            capture_output=True,
            text=True,
            timeout=300,
            env=_probe_bench._env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"_memory.py failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out["item5"] = runs
    marginal = Series.of(r["sub"]["marginal"] for r in runs)
    first = Series.of(r["sub"]["first"] for r in runs)
    lean_rss = Series.of(r["process"]["rss"] for r in runs)
    lean_uss = Series.of(r["process"]["uss"] for r in runs)
    pool_rss = Series.of(r["pool"]["rss"] for r in runs)
    pool_uss = Series.of(r["pool"]["uss"] for r in runs)
    name = job.rsplit(".", 1)[-1]
    return [
        Row(
            "5a",
            f"sub-interpreter worker running `{name}`: host RSS added per worker (workers 2..{k})",
            mib(marginal.median),
            fmt_range(marginal, mib),
            marginal.n,
            f"{fmt_ratio(marginal.median / lean_rss.median)} of 5b RSS, "
            f"{fmt_ratio(marginal.median / pool_rss.median)} of 5c RSS",
            "(measure)",
            "–",
        ),
        Row(
            "5a'",
            "… the first sub-interpreter worker (maps the extension files)",
            mib(first.median),
            fmt_range(first, mib),
            first.n,
            "",
            "",
            "–",
        ),
        Row(
            "5b",
            f"process worker, lean (`python -c 'import job; run()'`): RSS / private (USS) "
            f"{mib(lean_uss.median)}",
            mib(lean_rss.median),
            fmt_range(lean_rss, mib),
            lean_rss.n,
            "",
            "",
            "–",
        ),
        Row(
            "5c",
            f"process worker as chancy spawns it (ProcessPoolExecutor, spawn): RSS / USS "
            f"{mib(pool_uss.median)}",
            mib(pool_rss.median),
            fmt_range(pool_rss, mib),
            pool_rss.n,
            "",
            "",
            "–",
        ),
    ]


# -- items 3 and 4 -------------------------------------------------------------------
class ChancyBench:
    def __init__(self, python: str, app: Path, dsn: str):
        self.python = python
        self.app = app
        self.dsn = dsn

    def run(self, spec: dict) -> dict:
        spec = {"dsn": self.dsn, **spec}
        proc = subprocess.run(
            [self.python, str(HERE / "_chancy_bench.py"), json.dumps(spec)],
            cwd=self.app,
            capture_output=True,
            text=True,
            timeout=1800,
            env=_probe_bench._env(),
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{spec['op']} {spec.get('executor', '')} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])


def auto_options(cache_dir: Path, fallback: str) -> dict:
    return {"fallback": fallback, "cache_dir": str(cache_dir)}


def items_3_4(
    cb: ChancyBench,
    auto_ok: str | None,
    quick: bool,
    repeats: int,
    want: set[str],
    out: dict,
    cache_dir: Path,
) -> list[Row]:
    rows: list[Row] = []

    def run_queue(name: str, warm: list, jobs: list) -> dict:
        """One queue scenario on executor ``name`` (auto, sub, process, thread), concurrency 2."""
        opts = auto_options(cache_dir, "process") if name == "auto" else {}
        return cb.run(
            {
                "op": "queue",
                "executor": EXECUTORS[name],
                "options": opts,
                "concurrency": 2,
                "warmup": warm,
                "jobs": jobs,
            }
        )

    small_n = 40 if quick else 1500
    cpu_n = 4 if quick else 40
    cpu_size = 50_000 if quick else 1_000_000
    if "3" in want:
        if auto_ok is None:
            spec = {
                "op": "decision",
                "func": "benchapp.work.pure.tiny",
                "loops": 2_000 if quick else 200_000,
                "repeats": 3 if quick else 7,
                "options": auto_options(cache_dir, "process"),
            }
            log("item 3: routing decision")
            d = cb.run(spec)
            out["item3_decision"] = d
            lookup = Series.of((ns - d["decision_base_ns"]) / 1e9 for ns in d["decision_ns"])
            push = Series.of((ns - d["push_base_ns"]) / 1e9 for ns in d["push_ns"])
            rows += [
                Row(
                    "3a",
                    f"routing decision for a known module: `route_of()` lookup (→ {d['route']})",
                    seconds(lookup.median),
                    fmt_range(lookup),
                    lookup.n,
                    "",
                    "≤ 20 µs",
                    status(lookup.median <= 20e-6),
                ),
                Row(
                    "3a'",
                    "… whole routing cost per job: `push()` (lookup, limit checks, counter, log call) and "
                    "its completion hook (job copy with the route in `meta`), inner executor stubbed",
                    seconds(push.median),
                    fmt_range(push),
                    push.n,
                    "",
                    "≤ 20 µs",
                    status(push.median <= 20e-6),
                ),
            ]
        else:
            rows.append(skipped("3a", "routing decision for a known module", auto_ok))
        log("item 3: small-job throughput, auto vs the executor it routes to")
        pairs = [
            ("3b", "benchapp.work.pure.tiny", "sub"),
            ("3c", "benchapp.work.needs_fallback.tiny", "process"),
        ]
        for key, func, plain in pairs[:1] if quick else pairs:
            if auto_ok is not None:
                rows.append(skipped(key, f"small jobs ({func.rsplit('.', 2)[1]}) auto vs {plain}", auto_ok))
                continue
            warm = [[[func, {}]] * 8]
            jobs = [[func, {}]] * small_n
            res: dict[str, list[dict]] = {"auto": [], plain: []}
            for r in range(repeats):
                for name in ("auto", plain) if r % 2 == 0 else (plain, "auto"):
                    res[name].append(run_queue(name, warm, jobs))
                log(
                    f"  {key} round {r + 1}: auto {small_n / res['auto'][-1]['elapsed_s']:.0f}/s, "
                    f"{plain} {small_n / res[plain][-1]['elapsed_s']:.0f}/s"
                )
            out[f"item{key}"] = res
            auto_rate = Series.of(small_n / x["elapsed_s"] for x in res["auto"])
            plain_rate = Series.of(small_n / x["elapsed_s"] for x in res[plain])
            ratio = ratio_series(auto_rate, plain_rate)
            failed = sum(x["failed"] for x in res["auto"])
            label = "compatible → sub-interpreter" if plain == "sub" else "needs fallback → process"
            rows += [
                Row(
                    key,
                    f"{small_n} small jobs, {label}: auto executor"
                    + (f" ({failed} failed)" if failed else ""),
                    rate(auto_rate.median),
                    fmt_range(auto_rate, rate),
                    auto_rate.n,
                ),
                Row(
                    key + "'",
                    f"… same queue on the plain {EXECUTORS[plain].rsplit('.', 1)[1]}",
                    rate(plain_rate.median),
                    fmt_range(plain_rate, rate),
                    plain_rate.n,
                ),
                Row(
                    key + '"',
                    "… auto ÷ plain throughput",
                    fmt_ratio(ratio.median),
                    fmt_range(ratio, fmt_ratio),
                    ratio.n,
                    "",
                    "≥ 0.97×",
                    status(ratio.median >= 0.97 and not failed),
                ),
            ]
    if "4" in want:
        log(f"item 4: mixed CPU-bound workload ({cpu_n} jobs, half need the fallback)")
        jobs = []
        for i in range(cpu_n):
            mod = "benchapp.work.pure" if i % 2 == 0 else "benchapp.work.needs_fallback"
            jobs.append([f"{mod}.crunch", {"n": cpu_size}])
        # one batch per kind, 2 x concurrency jobs of ~30 ms each: every pool (both, for the
        # auto executor) sees `concurrency` jobs in flight and grows to full size untimed
        warm = [[[f"benchapp.work.{mod}.crunch", {"n": 300_000}]] * 4 for mod in ("pure", "needs_fallback")]
        kinds = ["thread", "process", "sub"] + (["auto"] if auto_ok is None else [])
        res = {k: [] for k in kinds}
        for r in range(repeats):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for name in order:
                res[name].append(run_queue(name, warm, jobs))
            log(f"  round {r + 1}: " + ", ".join(f"{k} {res[k][-1]['elapsed_s']:.2f}s" for k in kinds))
        out["item4"] = res
        wall = {k: Series.of(x["elapsed_s"] for x in v) for k, v in res.items()}
        failed = {k: max(x["failed"] for x in v) for k, v in res.items()}
        names = {
            "thread": "all-thread (ThreadedExecutor)",
            "process": "all-process (ProcessExecutor)",
            "sub": "plain sub-interpreter (SubInterpreterExecutor)",
            "auto": "auto executor",
        }
        for k in ["auto", "thread", "process", "sub"]:
            if k not in wall:
                rows.append(skipped("4a", f"mixed CPU-bound jobs: {names[k]}", auto_ok or ""))
                continue
            fail = f" — **{failed[k]} of {cpu_n} jobs failed**" if failed[k] else ""
            rows.append(
                Row(
                    {"auto": "4a", "thread": "4b", "process": "4c", "sub": "4d"}[k],
                    f"{cpu_n} mixed CPU-bound jobs, {names[k]}{fail}",
                    seconds(wall[k].median),
                    fmt_range(wall[k]),
                    wall[k].n,
                    f"{rate(cpu_n / wall[k].median)}",
                )
            )
        if "auto" in wall:
            vs_thread = ratio_series(
                Series.of(1 / x for x in wall["auto"].values), Series.of(1 / x for x in wall["thread"].values)
            )
            vs_proc = ratio_series(
                Series.of(1 / x for x in wall["auto"].values),
                Series.of(1 / x for x in wall["process"].values),
            )
            rows += [
                Row(
                    "4e",
                    "auto ÷ all-thread throughput",
                    fmt_ratio(vs_thread.median),
                    fmt_range(vs_thread, fmt_ratio),
                    vs_thread.n,
                    "",
                    "≥ 1.6× (2 cores)",
                    status(vs_thread.median >= 1.6 and not failed["auto"]),
                ),
                Row(
                    "4f",
                    "auto ÷ all-process throughput",
                    fmt_ratio(vs_proc.median),
                    fmt_range(vs_proc, fmt_ratio),
                    vs_proc.n,
                    "",
                    "≥ 1.0×",
                    status(vs_proc.median >= 1.0 and not failed["auto"]),
                ),
            ]
    return rows


def item_7(python: str, work: Path, quick: bool, repeats: int, out: dict) -> list[Row]:
    """Fleet verdicts: N cold workers, shared store vs local caches (_fleet_bench.py)."""
    import _fleet_bench

    what = "fleet: probes and time to first job, shared store vs local caches"
    if subprocess.run([python, "-c", "import psycopg"], capture_output=True).returncode != 0:
        return [skipped("7", what, "psycopg is not installed for the target interpreter")]
    if _pg().find_bindir() is None:
        return [skipped("7", what, "no PostgreSQL server binaries (initdb, pg_ctl)")]
    with postgres() as dsn:
        return [Row(*cells) for cells in _fleet_bench.item_7(python, work, dsn, repeats, quick, out)]


def item_8(python: str, work: Path, quick: bool, src: str | None, out: dict) -> list[Row]:
    """A real package of 1,000+ modules, cold and warm, beside a naive tracker (_scale_bench.py)."""
    import _scale_bench

    if quick:  # the current interpreter and a stdlib package: no network
        scale_py, packages = python, _scale_bench.QUICK_PACKAGES
        src = src or str(_env.REPO)
    else:
        scale_py = str(_scale_bench.ensure_venv(work / "scale-venv", log=log))
        packages = _scale_bench.PACKAGES
    data = _scale_bench.item_8(scale_py, work, packages, src, log=log)
    out["item8"] = data
    return [Row(*cells) for cells in _scale_bench.rows(data, quick)]


def chancy_unavailable(python: str) -> tuple[str | None, str | None]:
    """(why items 3-4 cannot run at all, why the auto executor is missing) - None if fine."""
    probe = subprocess.run(
        [python, "-c", "import chancy.executors.sub, psycopg"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return "chancy[sub] and psycopg are not installed for the target interpreter", None
    if _pg().find_bindir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl)", None
    auto = subprocess.run(
        [python, "-c", "from subcompat.chancy import AutoFallbackExecutor"], capture_output=True, text=True
    )
    if auto.returncode != 0:
        return None, "subcompat.chancy.AutoFallbackExecutor is not available yet"
    return None, None


def _pg():  # noqa: ANN202
    """tests/_pg.py, imported by path (tests/ is no package)."""
    if "_subcompat_bench_pg" not in sys.modules:
        spec = importlib.util.spec_from_file_location("_subcompat_bench_pg", _env.REPO / "tests" / "_pg.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[spec.name] = module
    return sys.modules["_subcompat_bench_pg"]


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL cluster (tests/_pg.py), yielding its DSN."""
    with _pg().throwaway_cluster() as dsn:
        yield dsn


# -- the table -----------------------------------------------------------------------
HEADER = ["#", "measurement", "median", "min – max", "n", "ratio", "target", "result"]


def render(rows: list[Row], machine: dict[str, str], meta: dict[str, str]) -> str:
    lines = [
        "# subcompat benchmark results",
        "",
        f"- date: {meta['date']}",
        f"- machine: {machine['cores']} cores ({machine['cpu']}), {machine['memory']} RAM, {machine['os']}",
        f"- Python: {machine['python']} (target interpreter: {meta['target']}), runner {meta['runner']}",
        f"- command: `{meta['command']}` ({meta['mode']}, {meta['repeats']} repeats, took {meta['took']})",
        f"- load average before / after: {meta['load_before']} / {meta['load_after']}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---", "---", "---:", "---:", "---:", "---", "---", "---"]) + "|",
    ]
    for row in sorted(rows, key=lambda r: r.cells[0][:1]):  # stable: items in order, rows as added
        if meta["mode"].startswith("quick") and row.cells[7] in ("**met**", "**missed**"):
            row.cells[7] = f"({row.cells[7].strip('*')}: smoke size, not a result)"
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row.cells) + " |")
    if meta.get("notes"):
        lines += ["", *meta["notes"]]
    return "\n".join(lines) + "\n"


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run on the current interpreter")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--repeats", type=int, help="rounds per measurement (default 5, quick 1)")
    parser.add_argument("--items", default="1,2,3,4,5,6,7,8", help="which items to run (default all)")
    parser.add_argument("--python", help="target interpreter (default: the benchmark venv; quick: this one)")
    parser.add_argument("--work", type=Path, help="work dir (default benchmarks/.work; quick: a temp dir)")
    parser.add_argument(
        "--subcompat",
        metavar="DIR",
        help="time the CLI of the subcompat package under DIR instead (A/B a fix out of tree; items 1-2)",
    )
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="A/B: also time the cold and warm checks with the subcompat package under DIR, back to back "
        "with this tree in the same rounds; adds the rows 'this tree ÷ DIR' (items 1-2)",
    )
    args = parser.parse_args(argv)
    # a bench stopped with SIGTERM (timeout, CI, kill) unwinds: its PostgreSQL cluster and
    # temp dirs are removed by the ``finally`` blocks that a bare SIGTERM would skip
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for opt in ("subcompat", "against"):
        src = getattr(args, opt)
        if src is not None:
            if not Path(src, "subcompat", "__init__.py").is_file():
                parser.error(f"--{opt} {src}: no subcompat package there ({src}/subcompat/__init__.py)")
            setattr(args, opt, str(Path(src).resolve()))
    want = set(args.items.split(","))
    _probe_bench.WRITE_BYTECODE = not args.quick
    repeats = args.repeats or (1 if args.quick else 5)
    started = time.perf_counter()
    load_before = loadavg()
    tmp = None
    if args.work:
        work = args.work
    elif args.quick:
        work = Path(tmp := tempfile.mkdtemp(prefix="subcompat-bench-"))
    else:
        work = _env.work_dir()
    work.mkdir(parents=True, exist_ok=True)
    try:
        if args.python:
            python = args.python
        elif args.quick:
            python = sys.executable
        else:
            python = str(_env.ensure_venv(work / "venv", log=log))
        available = _env.importable(python, _app.all_packages())
        app = work / "app"
        targets = _app.write_app(app, available, _app.QUICK_PACKAGES if args.quick else None)
        packages = _app.packages_of(targets)
        machine = _env.describe_machine(python)
        out: dict = {"machine": machine}
        rows: list[Row] = []
        other = other_name = None
        this_src = args.subcompat
        if args.against:
            # both sides find their tree the same way (PYTHONPATH), so neither pays for the other's
            this_src = args.subcompat or str(_env.REPO)
            other = ProbeBench(sys.executable, python, app, targets, packages, args.against)
            other_name = tree_name(args.against)
            states = {src: tree_state(src) for src in (this_src, args.against)}
        bench = ProbeBench(sys.executable, python, app, targets, packages, this_src)
        startup = python_startup(python)
        rows += items_1_2(bench, repeats, want, out, args.quick, other, other_name or "")
        if "5" in want:
            job = (
                "benchapp.jobs.fast_path"
                if "benchapp.jobs.fast_path:run" in targets
                else "benchapp.jobs.stdlib_report"
            )
            rows += item_5(python, app, job, repeats, 2 if args.quick else 4, out)
        if "6" in want:
            import _futures_item

            rows += _futures_item.rows(python, work, repeats, args.quick, out, Row, log)
        if want & {"3", "4"}:
            cannot, auto_missing = chancy_unavailable(python)
            if cannot is None and "ujson" not in available:
                cannot = "ujson (the fallback jobs' single-phase extension) is not installed"
            if cannot:
                for key, what in (
                    ("3", "routing overhead and small-job throughput"),
                    ("4", "mixed CPU workload"),
                ):
                    if key in want:
                        rows.append(skipped(key, what, cannot))
            else:
                with postgres() as dsn:
                    cb = ChancyBench(python, app, dsn)
                    cb.dsn = cb.run({"op": "prepare"})["dsn"]
                    cache_dir = work / "auto-cache"
                    shutil.rmtree(cache_dir, ignore_errors=True)
                    rows += items_3_4(cb, auto_missing, args.quick, repeats, want, out, cache_dir)
        if "7" in want:
            rows += item_7(python, work, args.quick, repeats, out)
        if "8" in want:
            rows += item_8(python, work, args.quick, this_src, out)
        took = time.perf_counter() - started
        notes = [
            f"`python -c pass` on the target interpreter: {seconds(startup.median)} "
            f"(min–max {fmt_range(startup)}); every process-based approach pays it per process.",
            "Ratios are per round (the two sides of a ratio run back to back), then the median; "
            "min – max is over rounds.",
        ]
        noisy = _noisiest(out)
        if noisy:
            notes.append(f"Noise: largest (max − min) / median among the timed series: {noisy}.")
        if other and "verdict_diff" in out.get("item1", {}):
            this_name = tree_name(this_src) if this_src else "this tree"
            changed = [src for src, state in states.items() if tree_state(src) != state]
            out["ab"] = {"this": this_src, "against": args.against, "changed_during_run": changed}
            notes += [
                "",
                f"A/B: this tree = {this_name}, against = {other_name}; each round runs both trees' "
                "checks back to back (order alternating per round), each tree with its own cache dir.",
                *verdict_notes(out["item1"]["verdict_diff"], other_name, len(targets)),
            ]
            if changed:
                notes.append(f"**The subcompat sources under {', '.join(changed)} changed during the run.**")
        meta = {
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "runner": f"{sys.version.split()[0]} ({_short(sys.executable)})",
            "target": _short(python),
            "command": _command(args),
            "mode": "quick smoke run" if args.quick else "full run",
            "repeats": str(repeats),
            "took": seconds(took),
            "load_before": load_before,
            "load_after": loadavg(),
            "notes": notes,
        }
        text = render(rows, machine, meta)
        print(text)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text)
            args.out.with_suffix(".json").write_text(json.dumps(out, indent=1, default=str))
        return 0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _command(args: argparse.Namespace) -> str:
    if args.items == "1,2,3,4,5,6,7,8" and not args.against:
        cmd = "python benchmarks/run.py --quick" if args.quick else "make bench"
    else:
        cmd = "python benchmarks/run.py" + (" --quick" if args.quick else "") + f" --items {args.items}"
    if args.subcompat:
        cmd += f" --subcompat {args.subcompat}"
    if args.against:
        cmd += f" --against {args.against}"
    return cmd


def _short(path: str) -> str:
    try:
        return os.path.relpath(path, _env.REPO) if Path(path).absolute().is_relative_to(_env.REPO) else path
    except ValueError:
        return path


def _noisiest(out: dict) -> str:
    best = None
    for item in ("item1", "item2"):
        for key, values in (out.get(item) or {}).items():
            if isinstance(values, tuple) and len(values) > 1:
                s = Series.of(values)
                if best is None or s.spread > best[0]:
                    best = (s.spread, f"{item} {key}")
    return f"{best[1]} {best[0] * 100:.0f}%" if best else ""


if __name__ == "__main__":
    sys.exit(main())
