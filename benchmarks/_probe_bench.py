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
"""

from __future__ import annotations

import json
import os
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


def timed(
    cmd: list[str],
    cwd: Path,
    *,
    check_codes=(0,),
    pythonpath: str | None = None,  # noqa: ANN001
) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=_env(pythonpath), capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
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
    def item1(self, repeats: int, lazy: dict[str, list[str]], log=print, with_serial: bool = True) -> dict:  # noqa: ANN001
        # one untimed round: the OS file cache, not the first timed run, pays for disk
        self.naive()
        self.floor()
        self.per_job_floor(lazy)
        _, report = self.check("--no-cache")
        verdicts: dict[str, int] = {}
        for m in report["modules"]:
            verdicts[m["verdict"]] = verdicts.get(m["verdict"], 0) + 1
        cold, cold_internal, naive, floor, serial, per_job = [], [], [], [], [], []
        naive_failed = 0
        for r in range(repeats):
            wall, naive_failed = self.naive()
            naive.append(wall)
            floor.append(self.floor())
            per_job.append(self.per_job_floor(lazy))
            wall, rep = self.check("--no-cache")
            cold.append(wall)
            cold_internal.append(rep["elapsed_s"])
            if with_serial and r < max(1, repeats // 2):  # the serial check is 2x slower: half the repeats
                wall, _ = self.check("--no-cache", "--jobs", "1")
                serial.append(wall)
            log(
                f"  round {r + 1}/{repeats}: naive {naive[-1]:.2f}s floor {floor[-1]:.2f}s "
                f"per-job {per_job[-1]:.2f}s "
                f"cold {cold[-1]:.2f}s" + (f" cold --jobs 1 {serial[-1]:.2f}s" if len(serial) > r else "")
            )
        return {
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
    def item2(self, repeats: int, edit_target: str, log=print) -> dict:  # noqa: ANN001
        cache_dir = Path(tempfile.mkdtemp(prefix="bench-cache-"))
        try:
            args = ("--cache-dir", str(cache_dir))
            populate, rep = self.check(*args)
            warm, warm_internal, touched, edited = [], [], [], []
            edit_reprobed: list[list[str]] = []
            touch_reprobed = 0
            warm_cached_all = True
            module = edit_target.split(":")[0]
            path = self.app.joinpath(*module.split(".")).with_suffix(".py")
            original = path.read_text()
            try:
                for r in range(repeats):
                    wall, rep = self.check(*args)
                    warm.append(wall)
                    warm_internal.append(rep["elapsed_s"])
                    warm_cached_all &= all(m["cached"] for m in rep["modules"])
                    # touch: new mtime, same bytes -> the content hash keeps the verdict
                    st = path.stat()
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
                    wall, rep = self.check(*args)
                    touched.append(wall)
                    touch_reprobed = max(touch_reprobed, sum(not m["cached"] for m in rep["modules"]))
                    # edit: new bytes -> that job (and only it) is probed again
                    path.write_text(original + f"\n# edited in round {r}\n")
                    wall, rep = self.check(*args)
                    edited.append(wall)
                    edit_reprobed.append([m["target"] for m in rep["modules"] if not m["cached"]])
                    log(
                        f"  round {r + 1}/{repeats}: warm {warm[-1] * 1e3:.0f}ms "
                        f"touched {touched[-1] * 1e3:.0f}ms edited {edited[-1]:.2f}s "
                        f"(re-probed {edit_reprobed[-1]})"
                    )
            finally:
                path.write_text(original)
            return {
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
