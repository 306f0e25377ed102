"""Items 1 and 2: what a check costs, cold and warm, against a naive tracker and the floor.

Every measurement is the wall time of a whole process tree, as a user would wait for
it, started from the runner with ``subprocess``:

- cold: ``subcompat check TARGETS --python VENV --format json --no-cache``;
- naive: for each package of the tree, serially, a fresh ``python -c`` that creates one
  isolated sub-interpreter and imports the package there (what public trackers do);
- floor: one process, one isolated sub-interpreter, every package and every job
  module of the tree imported once (each import in its own try/except, failures ignored);
- warm: the same check with a populated ``--cache-dir``; then after ``touch`` (mtime only)
  and after a real edit of one job module (only that job must be re-probed).

Repeats are interleaved (naive, floor, cold, ... per round) so background load on a
shared machine hits all of them alike; ratios are taken per round, then the median.

A/B (``other``, ``run.py --against DIR``): the cold, warm, touched and edited checks also
run with another subcompat tree, back to back with this tree's in the same round (the
order alternates per round), so a ratio ``this ÷ other`` is taken per round.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stats import Series

NAIVE = r"""
import sys, _interpreters
iid = _interpreters.create("isolated")
try:
    failed = _interpreters.exec(iid, "import sys; sys.path[:] = %r; import %s" % (sys.path, sys.argv[1]))
finally:
    _interpreters.destroy(iid)
print("ok" if failed is None else "failed")
"""

FLOOR = r"""
import sys, _interpreters
iid = _interpreters.create("isolated")
code = '''
import sys
sys.path[:] = %r
ok = 0
for name in %r:
    try:
        __import__(name)
        ok += 1
    except BaseException:
        pass
''' % (sys.path, sys.argv[1:])
try:
    _interpreters.exec(iid, code)
finally:
    _interpreters.destroy(iid)
"""

PER_JOB = r"""
import sys, _interpreters
for spec in sys.argv[1:]:
    names = spec.split(",")
    iid = _interpreters.create("isolated")
    code = "import sys\nsys.path[:] = %r\n" % (sys.path,)
    for name in names:
        code += "try:\n    __import__(%r)\nexcept BaseException:\n    pass\n" % name
    try:
        _interpreters.exec(iid, code)
    finally:
        _interpreters.destroy(iid)
"""


#: Full runs time with bytecode caching on (PYTHONDONTWRITEBYTECODE dropped), as on a
#: normal machine where pip compiled the installed packages; quick runs (the test suite)
#: leave the caller's setting alone.
WRITE_BYTECODE = True


def _env(pythonpath: str | None = None) -> dict[str, str]:
    """The environment every timed process gets: no PYTHONPATH or SUBCOMPAT_* leaking in."""
    drop = ("PYTHONPATH", "SUBCOMPAT_") + (("PYTHONDONTWRITEBYTECODE",) if WRITE_BYTECODE else ())
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


#: CPU time (user + sys) of the last ``timed`` process tree: every descendant that was
#: waited for (the probe's children and their forks are) is counted in RUSAGE_CHILDREN.
#: Less sensitive than wall time to other load on a shared machine.
last_cpu = 0.0
#: The same process tree's user and sys CPU seconds and minor page faults, apart.
last_usage: dict[str, float] = {}


def timed(
    cmd: list[str],
    cwd: Path,
    *,
    check_codes=(0,),
    pythonpath: str | None = None,  # noqa: ANN001
) -> tuple[float, subprocess.CompletedProcess[str]]:
    global last_cpu, last_usage
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(pythonpath), capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    last_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    last_usage = {
        "user": after.ru_utime - before.ru_utime,
        "sys": after.ru_stime - before.ru_stime,
        "minflt": float(after.ru_minflt - before.ru_minflt),
    }
    if proc.returncode not in check_codes:
        raise RuntimeError(
            f"{' '.join(cmd[:6])}... exited {proc.returncode}:\n{proc.stderr[-3000:]}{proc.stdout[-2000:]}"
        )
    return wall, proc


class ProbeBench:
    def __init__(
        self,
        runner: str,
        python: str,
        app: Path,
        targets: list[str],
        packages: list[str],
        subcompat_src: str | None = None,
    ):
        self.runner = runner  # the interpreter that runs the subcompat CLI
        self.subcompat_src = subcompat_src  # another subcompat checkout to time (A/B of a fix)
        self.python = python  # the target interpreter (the benchmark venv)
        self.app = app
        self.targets = targets
        self.packages = packages

    # -- the three ways to find out --------------------------------------------
    def check(self, *extra: str) -> tuple[float, dict]:
        cmd = [self.runner, "-m", "subcompat", "check", *self.targets]
        cmd += ["--python", self.python, "--format", "json", *extra]
        wall, proc = timed(cmd, self.app, check_codes=(0, 1, 2), pythonpath=self.subcompat_src)
        return wall, json.loads(proc.stdout)

    def naive(self) -> tuple[float, int]:
        started = time.perf_counter()
        failed = 0
        for pkg in self.packages:
            _, proc = timed([self.python, "-c", NAIVE, pkg], self.app)
            failed += proc.stdout.strip() != "ok"
        return time.perf_counter() - started, failed

    def per_job_floor(self, lazy: dict[str, list[str]], jobs: int = 0) -> float:
        """Each job (and its deferred imports) in its own fresh isolated sub-interpreter,
        spread over ``jobs`` processes in parallel: subcompat's isolation with none of
        its analysis (no hooks, no tree, no verdicts, no main-interpreter re-check)."""
        jobs = jobs or os.cpu_count() or 1
        specs = [",".join([t.split(":")[0], *lazy.get(t, [])]) for t in self.targets]
        started = time.perf_counter()
        procs = [
            subprocess.Popen(
                [self.python, "-c", PER_JOB, *specs[i::jobs]],
                cwd=self.app,
                env=_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(jobs)
        ]
        for p in procs:
            p.wait()
        return time.perf_counter() - started

    def floor(self) -> float:
        modules = [t.split(":")[0] for t in self.targets]
        wall, _ = timed([self.python, "-c", FLOOR, *self.packages, *modules], self.app)
        return wall

    # -- item 1 -------------------------------------------------------------------
    def item1(
        self,
        repeats: int,
        lazy: dict[str, list[str]],
        log=print,  # noqa: ANN001
        with_serial: bool = True,
        other: ProbeBench | None = None,
    ) -> dict:
        # one untimed round: the OS file cache, not the first timed run, pays for disk
        # (and each tree's first check writes its .pyc)
        self.naive()
        self.floor()
        self.per_job_floor(lazy)
        _, report = self.check("--no-cache")
        report_b = other.check("--no-cache")[1] if other else None
        verdicts: dict[str, int] = {}
        for m in report["modules"]:
            verdicts[m["verdict"]] = verdicts.get(m["verdict"], 0) + 1
        cold, cold_internal, naive, floor, serial, per_job = [], [], [], [], [], []
        cold_b, cold_b_internal, cold_cpu, cold_b_cpu = [], [], [], []
        usage: list[dict[str, float]] = []
        usage_b: list[dict[str, float]] = []
        reports_b: list[dict] = [report_b] if report_b else []
        reports: list[dict] = [report]
        naive_failed = 0
        for r in range(repeats):
            wall, naive_failed = self.naive()
            naive.append(wall)
            floor.append(self.floor())
            per_job.append(self.per_job_floor(lazy))
            # A/B: both trees back to back, the order alternating per round
            for side in (self, other) if r % 2 == 0 else (other, self):
                if side is None:
                    continue
                wall, rep = side.check("--no-cache")
                if side is self:
                    cold.append(wall)
                    cold_internal.append(rep["elapsed_s"])
                    cold_cpu.append(last_cpu)
                    usage.append(last_usage)
                    reports.append(rep)
                else:
                    cold_b.append(wall)
                    cold_b_internal.append(rep["elapsed_s"])
                    cold_b_cpu.append(last_cpu)
                    usage_b.append(last_usage)
                    reports_b.append(rep)
            if with_serial and r < max(1, repeats // 2):  # the serial check is 2x slower: half the repeats
                wall, _ = self.check("--no-cache", "--jobs", "1")
                serial.append(wall)
            log(
                f"  round {r + 1}/{repeats}: naive {naive[-1]:.2f}s floor {floor[-1]:.2f}s "
                f"per-job {per_job[-1]:.2f}s "
                f"cold {cold[-1]:.2f}s"
                + (f" cold --jobs 1 {serial[-1]:.2f}s" if len(serial) > r else "")
                + (f" | against: cold {cold_b[-1]:.2f}s ({cold[-1] / cold_b[-1]:.3f}x)" if other else "")
            )
        ab = {}
        if other:
            ab = {
                "cold_b": Series.of(cold_b),
                "cold_b_internal": Series.of(cold_b_internal),
                "cold_cpu": Series.of(cold_cpu),
                "cold_b_cpu": Series.of(cold_b_cpu),
                **{f"cold_{k}": Series.of(u[k] for u in usage) for k in ("user", "sys", "minflt")},
                **{f"cold_b_{k}": Series.of(u[k] for u in usage_b) for k in ("user", "sys", "minflt")},
                "verdict_diff": verdict_diff(reports, reports_b),
            }
        return {
            **ab,
            "cold": Series.of(cold),
            "cold_internal": Series.of(cold_internal),
            "cold_serial": Series.of(serial),
            "naive": Series.of(naive),
            "floor": Series.of(floor),
            "per_job": Series.of(per_job),
            "verdicts": verdicts,
            "naive_failed": naive_failed,
            "targets": len(self.targets),
            "packages": len(self.packages),
        }

    # -- item 2 -------------------------------------------------------------------
    def item2(self, repeats: int, edit_target: str, log=print, other: ProbeBench | None = None) -> dict:  # noqa: ANN001
        cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
        cache_b = cache_dir / "against"  # the other tree's own cache (its format may differ)
        try:
            args = ("--cache-dir", str(cache_dir))
            args_b = ("--cache-dir", str(cache_b))
            populate, rep = self.check(*args)
            if other:
                other.check(*args_b)
            warm, warm_internal, touched, edited = [], [], [], []
            # A/B: the other tree runs each step too (its cache must follow the edits)
            b: dict[str, list[float]] = {"warm": [], "warm_internal": [], "touched": [], "edited": []}
            cpu: dict[str, list[float]] = {"warm_cpu": [], "warm_cpu_b": []}
            b_reprobed: dict[str, list[list[str]]] = {"warm": [], "touched": [], "edited": []}
            edit_reprobed: list[list[str]] = []
            touch_reprobed = 0
            warm_cached_all = True
            module = edit_target.split(":")[0]
            path = self.app.joinpath(*module.split(".")).with_suffix(".py")
            original = path.read_text()

            def step(r: int, key: str) -> dict:
                """This tree's check and, with ``other``, the other's, back to back."""
                mine = None
                for side in (self, other) if r % 2 == 0 else (other, self):
                    if side is None:
                        continue
                    wall, rep = side.check(*(args if side is self else args_b))
                    if key == "warm":
                        cpu["warm_cpu" if side is self else "warm_cpu_b"].append(last_cpu)
                    if side is self:
                        mine = (wall, rep)
                    else:
                        b[key].append(wall)
                        if key == "warm":
                            b["warm_internal"].append(rep["elapsed_s"])
                        b_reprobed[key].append([m["target"] for m in rep["modules"] if not m["cached"]])
                assert mine is not None
                return mine

            try:
                for r in range(repeats):
                    wall, rep = step(r, "warm")
                    warm.append(wall)
                    warm_internal.append(rep["elapsed_s"])
                    warm_cached_all &= all(m["cached"] for m in rep["modules"])
                    # touch: new mtime, same bytes -> the content hash keeps the verdict
                    st = path.stat()
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
                    wall, rep = step(r, "touched")
                    touched.append(wall)
                    touch_reprobed = max(touch_reprobed, sum(not m["cached"] for m in rep["modules"]))
                    # edit: new bytes -> that job (and only it) is probed again
                    path.write_text(original + f"\n# edited in round {r}\n")
                    wall, rep = step(r, "edited")
                    edited.append(wall)
                    edit_reprobed.append([m["target"] for m in rep["modules"] if not m["cached"]])
                    log(
                        f"  round {r + 1}/{repeats}: warm {warm[-1] * 1e3:.0f}ms "
                        f"touched {touched[-1] * 1e3:.0f}ms edited {edited[-1]:.2f}s "
                        f"(re-probed {edit_reprobed[-1]})"
                        + (
                            f" | against: warm {b['warm'][-1] * 1e3:.0f}ms "
                            f"({warm[-1] / b['warm'][-1]:.3f}x) touched {b['touched'][-1] * 1e3:.0f}ms "
                            f"edited {b['edited'][-1]:.2f}s (re-probed {b_reprobed['edited'][-1]})"
                            if other
                            else ""
                        )
                    )
            finally:
                path.write_text(original)
            ab = {}
            if other:
                ab = {f"{k}_b": Series.of(v) for k, v in b.items()}
                ab.update((k, Series.of(v)) for k, v in cpu.items())
                ab["b_reprobed"] = b_reprobed
                ab["warm_b_cached_all"] = not any(b_reprobed["warm"])
            return {
                **ab,
                "populate": populate,
                "warm": Series.of(warm),
                "warm_internal": Series.of(warm_internal),
                "touched": Series.of(touched),
                "edited": Series.of(edited),
                "edit_reprobed": edit_reprobed,
                "touch_reprobed": touch_reprobed,
                "warm_cached_all": warm_cached_all,
                "edit_target": edit_target,
            }
        finally:
            shutil.rmtree(cache_dir, ignore_errors=True)


def verdict_diff(reports: list[dict], reports_b: list[dict]) -> list[dict]:
    """Targets whose verdict differs between the two trees, or from one round to the next.

    One entry per target whose verdicts (over every cold report of both trees) are not all
    the same: each tree's distinct (verdict, reason) pairs.
    """

    def by_target(reps: list[dict]) -> dict[str, list[tuple[str, str]]]:
        seen: dict[str, list[tuple[str, str]]] = {}
        for rep in reps:
            for m in rep["modules"]:
                pair = (m["verdict"], m.get("reason") or "")
                if pair not in seen.setdefault(m["target"], []):
                    seen[m["target"]].append(pair)
        return seen

    a, b = by_target(reports), by_target(reports_b)
    out = []
    for target in sorted(set(a) | set(b)):
        va = {v for v, _ in a.get(target, [])}
        vb = {v for v, _ in b.get(target, [])}
        if va != vb or len(va) > 1:
            out.append({"target": target, "this": a.get(target, []), "against": b.get(target, [])})
    return out


def python_startup(python: str, repeats: int = 5) -> Series:
    """The bare cost of ``python -c pass``: what any CLI pays before it does anything."""
    out = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([python, "-c", "pass"], check=True, env=_env())
        out.append(time.perf_counter() - started)
    return Series.of(out)


if __name__ == "__main__":  # pragma: no cover - manual use: python _probe_bench.py VENV_PY APP
    sys.exit("use benchmarks/run.py")
