"""Item 8: a real package of 1,000+ modules (pandas, scipy, numpy from wheels), cold and
warm, wall time and the CLI's peak RSS, beside a naive per-module tracker in the same run.

- ``benchmarks/.work/scale-venv``: a venv of the target interpreter with numpy, pandas and
  scipy (wheels only), and this checkout's subcompat on a path-only ``.pth`` (as the
  item 1 venv). Rebuilt when the list or the Python changes.
- cold: ``python -m subcompat check PACKAGE --format json --cache-dir EMPTY`` with the venv's
  own interpreter (a package target means every module of it, found on disk), one package
  after the other; warm: the same command again on the same cache dir. Peak RSS is the CLI
  process's own (``RUSAGE_SELF`` at exit, read by a launcher: the probe's children are
  processes of their own), the JSON size is the cold report's.
- naive: for each module the cold report lists, a fresh ``python -c`` that creates one
  isolated sub-interpreter and imports the module there (what a per-module tracker does),
  2 processes at a time, for the same packages.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _env
from _probe_bench import NAIVE
from _stats import Series

PACKAGES = ("numpy", "pandas", "scipy")
QUICK_PACKAGES = ("json",)  # smoke run: a stdlib package on the current interpreter

#: runs the CLI in this process and writes its own peak RSS (KiB) where it is told
LAUNCH = r"""
import atexit, resource, runpy, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)))
sys.argv[0] = "subcompat"
runpy.run_module("subcompat", run_name="__main__", alter_sys=True)
"""


def ensure_venv(venv: Path, log=print) -> Path:
    want = hashlib.sha256(("\n".join(PACKAGES) + "\n" + sys.version).encode()).hexdigest()
    stamp = venv / ".bench-done"
    py = _env.venv_python(venv)
    if stamp.exists() and stamp.read_text() == want and py.exists():
        return py
    log(f"building the scale venv {venv} ({', '.join(PACKAGES)}, wheels only)...")
    _env.make_venv(venv)
    for args in (["--only-binary", ":all:", *PACKAGES], ["packaging>=23", "platformdirs>=3"]):
        _env.pip_install(py, *args)
    _env.link_subcompat(venv)
    stamp.write_text(want)
    return py


def _env_vars(src: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("SUBCOMPAT_")}
    if src:
        env["PYTHONPATH"] = src
    return env


def check_once(python: str, package: str, cache_dir: Path, work: Path, src: str | None) -> dict:
    """One CLI run: wall time, peak RSS (MiB), report size (bytes), verdict counts."""
    rss_file = work / "scale-rss.txt"
    report = work / f"scale-{package}.json"
    cmd = [python, "-c", LAUNCH, str(rss_file), "check", package, "--format", "json"]
    cmd += ["--cache-dir", str(cache_dir), "--progress", "never"]
    started = time.perf_counter()
    with open(report, "wb") as out:
        proc = subprocess.run(
            ["prlimit", "--as=8000000000", "timeout", "3600", *cmd],
            stdout=out,
            stderr=subprocess.PIPE,
            env=_env_vars(src),
            cwd=work,
        )
    wall = time.perf_counter() - started
    try:
        data = json.loads(report.read_text())
    except ValueError:
        raise RuntimeError(f"check {package} wrote no JSON (exit {proc.returncode}): {proc.stderr[-2000:]!r}")
    modules = data.get("modules", [])
    counts: dict[str, int] = {}
    for m in modules:
        counts[m["verdict"]] = counts.get(m["verdict"], 0) + 1
    return {
        "wall": wall,
        "rss_mb": int(rss_file.read_text()) / 1024,
        "json_bytes": report.stat().st_size,
        "targets": [m["target"] for m in modules],
        "verdicts": {m["target"]: m["verdict"] for m in modules},
        "counts": counts,
        "cached": sum(1 for m in modules if m.get("cached")),
    }


def naive(python: str, targets: list[str], workers: int = 2) -> tuple[float, int]:
    """(wall time, how many failed): one process and one isolated interpreter per module."""

    def one(name: str) -> bool:
        proc = subprocess.run(
            ["prlimit", "--as=4000000000", "timeout", "120", python, "-c", NAIVE, name],
            capture_output=True,
            text=True,
            env=_env_vars(None),
        )
        return proc.stdout.strip() == "ok"

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(one, targets))
    return time.perf_counter() - started, ok.count(False)


def item_8(python: str, work: Path, packages: tuple[str, ...], src: str | None, log=print) -> dict:
    """Cold and warm per package, then the naive tracker on the same modules."""
    out: dict = {"packages": {}}
    for package in packages:
        cache_dir = work / f"scale-cache-{package}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        log(f"item 8: {package} cold...")
        cold = check_once(python, package, cache_dir, work, src)
        log(f"item 8: {package} cold {cold['wall']:.1f}s, {len(cold['targets'])} modules; warm...")
        warm = [check_once(python, package, cache_dir, work, src) for _ in range(3)]
        log(f"item 8: {package} naive over {len(cold['targets'])} modules...")
        naive_s, naive_failed = naive(python, cold["targets"])
        out["packages"][package] = {
            "modules": len(cold["targets"]),
            "cold": cold["wall"],
            "cold_rss_mb": cold["rss_mb"],
            "json_bytes": cold["json_bytes"],
            "counts": cold["counts"],
            "verdicts": cold["verdicts"],
            "warm": [w["wall"] for w in warm],
            "warm_rss_mb": max(w["rss_mb"] for w in warm),
            "warm_cached": min(w["cached"] for w in warm),
            "naive": naive_s,
            "naive_failed": naive_failed,
        }
    return out


def rows(data: dict, quick: bool) -> list[list[str]]:
    """Table cells: per package, then all together."""
    out = []
    pk = data["packages"]
    for i, (name, d) in enumerate(pk.items()):
        warm = Series.of(d["warm"])
        key = f"8{'abcdefgh'[i]}"
        counts = ", ".join(f"{n} {v}" for v, n in sorted(d["counts"].items()))
        out.append(
            [
                key,
                f"{name}: cold check of {d['modules']} modules ({counts}) / naive per-module tracker",
                f"{d['cold']:.1f} s / {d['naive']:.1f} s",
                "–",
                "1",
                f"{d['cold'] / d['naive']:.2f}× naive",
                "",
                "–",
            ]
        )
        out.append(
            [
                key + "'",
                f"{name}: warm check (same cache; {d['warm_cached']}/{d['modules']} from cache)",
                f"{warm.median:.2f} s",
                f"{warm.lo:.2f} – {warm.hi:.2f} s",
                str(warm.n),
                f"{warm.median / d['cold'] * 100:.1f}% of cold",
                "",
                "–",
            ]
        )
        big = name == "pandas"
        out.append(
            [
                key + "''",
                f"{name}: CLI peak RSS cold / warm; JSON report",
                f"{d['cold_rss_mb']:.0f} / {d['warm_rss_mb']:.0f} MiB; {d['json_bytes'] / 1e6:.2f} MB",
                "–",
                "1",
                "",
                "≤ 300 MB, JSON ≤ 2 MB" if big else "",
                ("**met**" if d["cold_rss_mb"] <= 300 and d["json_bytes"] <= 2e6 else "**missed**")
                if big
                else "–",
            ]
        )
    cold = sum(d["cold"] for d in pk.values())
    warm = sum(min(d["warm"]) for d in pk.values())
    naive_s = sum(d["naive"] for d in pk.values())
    every = set(PACKAGES) <= set(pk)
    out.append(
        [
            "8z",
            f"{' + '.join(pk)} together: cold / warm (fastest round) / naive",
            f"{cold:.1f} s / {warm:.2f} s / {naive_s:.1f} s",
            "–",
            "1",
            f"{cold / naive_s:.2f}× naive",
            "cold ≤ 60 s, warm ≤ 3 s",
            ("**met**" if cold <= 60 and warm <= 3 else "**missed**") if every and not quick else "–",
        ]
    )
    return out
