"""Rebuild compat_matrix.md: real PyPI packages with C extensions, probed for real.

Each package goes into its own throwaway venv (one per package and Python), then
``subcompat check <import names> --python <venv python> --format json --no-cache``
probes its import and its extension modules. Results are kept per (Python, package,
version) under benchmarks/.work/matrix so an interrupted run resumes where it stopped.

Run outside CI (it downloads ~40 packages): ``make matrix``.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / ".work" / "matrix"

# PyPI name -> import names to probe
PACKAGES: dict[str, list[str]] = {
    "numpy": ["numpy"],
    "pandas": ["pandas"],
    "pydantic": ["pydantic"],
    "orjson": ["orjson"],
    "ujson": ["ujson"],
    "msgspec": ["msgspec"],
    "lxml": ["lxml.etree"],
    "PyYAML": ["yaml"],
    "cryptography": ["cryptography.hazmat.bindings._rust"],
    "bcrypt": ["bcrypt"],
    "cffi": ["_cffi_backend"],
    "psutil": ["psutil"],
    "SQLAlchemy": ["sqlalchemy"],
    "aiohttp": ["aiohttp"],
    "yarl": ["yarl"],
    "multidict": ["multidict"],
    "frozenlist": ["frozenlist"],
    "regex": ["regex"],
    "Pillow": ["PIL.Image"],
    "greenlet": ["greenlet"],
    "protobuf": ["google.protobuf.message"],
    "psycopg2-binary": ["psycopg2"],
    "psycopg[binary]": ["psycopg"],
    "asyncpg": ["asyncpg"],
    "uvloop": ["uvloop"],
    "httptools": ["httptools"],
    "rapidfuzz": ["rapidfuzz"],
    "xxhash": ["xxhash"],
    "mmh3": ["mmh3"],
    "msgpack": ["msgpack"],
    "ruamel.yaml": ["ruamel.yaml"],
    "tomli": ["tomli"],
    "wrapt": ["wrapt"],
    "zstandard": ["zstandard"],
    "lz4": ["lz4.frame"],
    "brotli": ["brotli"],
    "simplejson": ["simplejson"],
    "markupsafe": ["markupsafe"],
    "charset-normalizer": ["charset_normalizer"],
    "cbor2": ["cbor2"],
    "pyzmq": ["zmq"],
    "websockets": ["websockets"],
    "propcache": ["propcache"],
    "pycryptodome": ["Crypto.Cipher.AES"],
}


def find_pythons() -> list[str]:
    """Every Python >= 3.13 on PATH (pyenv shims skipped) or under pyenv."""
    found: dict[str, str] = {}
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for version in ("3.13", "3.14", "3.15"):
        candidates = sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))
        path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "shims" not in p)
        on_path = shutil.which(f"python{version}", path=path)
        pick = candidates[-1] if candidates else on_path
        if pick:
            found[version] = pick
    return list(found.values())


def probe_package(python: str, name: str, imports: list[str], timeout: float) -> dict:
    tag = subprocess.check_output(
        [python, "-c", "import sys;print('%d.%d.%d'%sys.version_info[:3])"], text=True
    ).strip()
    slug = name.replace("[", "_").replace("]", "")
    out = WORK / tag / f"{slug}.json"
    if out.exists():
        return json.loads(out.read_text())
    venv = Path("/tmp/subcompat-matrix") / tag / slug
    shutil.rmtree(venv, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(venv)], check=True)
    vpy = str(venv / "bin" / "python")
    install = subprocess.run(
        [vpy, "-m", "pip", "install", "-q", "--only-binary", ":all:", name], capture_output=True, text=True
    )
    record: dict = {"package": name, "python": tag, "imports": imports}
    if install.returncode != 0:
        record.update(status="no-wheel", detail=(install.stderr.strip().splitlines() or [""])[-1][:200])
    else:
        dist = name.split("[")[0]
        record["version"] = subprocess.check_output(
            [vpy, "-c", f"import importlib.metadata as m;print(m.version({dist!r}))"], text=True
        ).strip()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "subcompat",
                "check",
                *imports,
                "--python",
                vpy,
                "--format",
                "json",
                "--no-cache",
                "--timeout",
                str(timeout),
            ],
            capture_output=True,
            text=True,
            cwd=str(venv),  # an empty cwd: nothing to shadow
        )
        try:
            record["report"] = json.loads(proc.stdout)
            record["status"] = "probed"
        except ValueError:
            record.update(status="probe-failed", detail=(proc.stderr.strip().splitlines() or [""])[-1][:200])
    record["seconds"] = round(time.perf_counter() - started, 1)
    shutil.rmtree(venv, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    return record


def _cell(record: dict) -> tuple[str, list[str], list[str]]:
    if record["status"] != "probed":
        return record["status"], [], []
    worst, culprits, degraded = "compatible", [], []
    order = ["compatible", "degraded", "unsupported", "error", "incompatible", "timeout", "crash"]
    for m in record["report"]["modules"]:
        if order.index(m["verdict"]) > order.index(worst):
            worst = m["verdict"]
        for c in m["culprits"]:
            why = ", ".join(x for x in (c.get("kind"), c.get("toolchain")) if x) or c["reason"][:60]
            culprits.append(f"`{c['module']}` ({why})")
        for d in m["degraded"]:
            degraded.append(f"`{d['module']}`")
    return worst, culprits, degraded


def write_markdown(records: list[dict], pythons: list[str], dest: Path) -> None:
    from subcompat import __version__

    by_pkg: dict[str, dict[str, dict]] = {}
    for r in records:
        by_pkg.setdefault(r["package"], {})[r["python"]] = r
    counts: dict[str, int] = {}
    lines = [
        "# Sub-interpreter compatibility of popular packages with C extensions",
        "",
        f"Generated {datetime.date.today().isoformat()} by subcompat {__version__} "
        f"(`make matrix`, i.e. `python benchmarks/compat_matrix.py`) on {platform.machine()} Linux, "
        f"Python {', '.join(pythons)}. Each package was installed alone into a throwaway venv "
        "(binary wheels only) and its import probed in fresh isolated sub-interpreters "
        "(own GIL, multi-phase check on). This file is produced outside CI (it downloads "
        "every package) and committed.",
        "",
        "| Package | Version | "
        + " | ".join(f"Python {p}" for p in pythons)
        + " | Culprit extensions (why) | Degraded accelerators |",
        "|---|---|" + "---|" * len(pythons) + "---|---|",
    ]
    for pkg in PACKAGES:
        cells = by_pkg.get(pkg, {})
        version = next((r.get("version") for r in cells.values() if r.get("version")), "–")
        verdicts, culprits, degraded = [], [], []
        for p in pythons:
            r = cells.get(p)
            if r is None:
                verdicts.append("not run")
                continue
            v, c, d = _cell(r)
            counts[v] = counts.get(v, 0) + 1
            verdicts.append(f"**{v}**" if v in ("incompatible", "crash", "timeout") else v)
            culprits.extend(x for x in c if x not in culprits)
            degraded.extend(x for x in d if x not in degraded)
        if len(culprits) > 6:
            culprits = culprits[:6] + [f"… and {len(culprits) - 6} more"]
        lines.append(
            f"| {pkg} | {version} | "
            + " | ".join(verdicts)
            + f" | {'<br>'.join(culprits) or '–'} | {', '.join(degraded) or '–'} |"
        )
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    lines[2:2] = [f"**{len(PACKAGES)} packages; {summary}.**", ""]
    dest.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "compat_matrix.md"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--only", nargs="*", help="a subset of packages")
    args = parser.parse_args(argv)
    pythons = find_pythons()
    if not pythons:
        print("compat_matrix: no Python >= 3.13 found", file=sys.stderr)
        return 2
    work = [
        (py, name, imports)
        for py in pythons
        for name, imports in PACKAGES.items()
        if not args.only or name in args.only
    ]
    records = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for record in pool.map(lambda w: probe_package(w[0], w[1], w[2], args.timeout), work):
            print(
                f"{record['python']} {record['package']:<20} {record['status']:<10} "
                f"{_cell(record)[0]:<12} {record['seconds']}s",
                flush=True,
            )
            records.append(record)
    tags = sorted({r["python"] for r in records})
    write_markdown(records, tags, Path(args.output))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
