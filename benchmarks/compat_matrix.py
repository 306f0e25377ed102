"""Rebuild compat_matrix.md: popular PyPI packages with C/Rust/Cython extensions, probed for real.

For every (package, Python) the package goes alone into its own venv (binary wheels only:
a package without a wheel for that Python gets a "no wheel" cell, never a source build),
then ``subcompat check <import names> --python <venv python> --format json --no-cache``
probes those imports in fresh isolated sub-interpreters and names the culprit extensions.

Resumable: each (package, Python) result is kept under benchmarks/.work/matrix/results/
and reused on the next run (``--refresh`` redoes install and probe, ``--reprobe`` only
the probe). The venvs stay under benchmarks/.work/matrix/venvs/ for reuse (delete that
folder to free the space). One package at a time, niced; each probe is capped with
``prlimit --as`` and ``timeout``.

Run outside CI (it downloads every package): ``make matrix``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _expanded(report: object) -> object:
    """A report with each module's own copies of what schema 2 writes once (this
    checkout's reader; the runner need not have subcompat installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from subcompat.report import ReportFormatError, parse_report

    try:
        return parse_report(report)
    except ReportFormatError:
        return report


WORK = ROOT / "benchmarks" / ".work" / "matrix"
VERSIONS = ("3.13", "3.14", "3.15")
MAX_WHEEL_MB = 150  # packages whose wheel is bigger are left out of the list below

# PyPI requirement -> import names to probe (no package here is expanded to all its
# modules: the imports a user's job would do, and everything they load, are probed).
# Left out: torch, tensorflow, xgboost (wheels or dependencies > 150 MB); pure-Python
# packages; ruff/uv-like tools that ship a binary and no module.
PACKAGES: dict[str, list[str]] = {
    # --- numeric / data
    "numpy": ["numpy"],
    "pandas": ["pandas"],
    "pyarrow": ["pyarrow"],
    "scipy": ["scipy.linalg", "scipy.special"],
    "scikit-learn": ["sklearn.ensemble"],
    "polars": ["polars"],
    "duckdb": ["duckdb"],
    "numba": ["numba"],
    "llvmlite": ["llvmlite.binding"],
    "numexpr": ["numexpr"],
    "bottleneck": ["bottleneck"],
    "tables": ["tables"],
    "h5py": ["h5py"],
    "netCDF4": ["netCDF4"],
    "cftime": ["cftime"],
    "statsmodels": ["statsmodels.api"],
    "lightgbm": ["lightgbm"],
    "PyWavelets": ["pywt"],
    "scikit-image": ["skimage.filters:gaussian"],  # lazy_loader: a plain import loads no extension
    "astropy": ["astropy.table"],
    "pyerfa": ["erfa"],
    "gmpy2": ["gmpy2"],
    "faiss-cpu": ["faiss"],
    "onnxruntime": ["onnxruntime"],
    # --- plotting / imaging / media
    "matplotlib": ["matplotlib.pyplot"],
    "kiwisolver": ["kiwisolver"],
    "contourpy": ["contourpy"],
    "fonttools": ["fontTools.cu2qu", "fontTools.misc.bezierTools"],
    "Pillow": ["PIL.Image"],
    "opencv-python-headless": ["cv2"],
    "av": ["av"],
    "soundfile": ["soundfile"],
    "pygame": ["pygame"],
    "PyMuPDF": ["pymupdf"],
    # --- geo
    "shapely": ["shapely"],
    "pyproj": ["pyproj"],
    # --- ML text
    "tokenizers": ["tokenizers"],
    "tiktoken": ["tiktoken"],
    "safetensors": ["safetensors"],
    "sentencepiece": ["sentencepiece"],
    "cymem": ["cymem.cymem"],
    "murmurhash": ["murmurhash.mrmr"],
    "srsly": ["srsly"],
    # --- serialization
    "orjson": ["orjson"],
    "ujson": ["ujson"],
    "msgspec": ["msgspec"],
    "msgpack": ["msgpack"],
    "ormsgpack": ["ormsgpack"],
    "simplejson": ["simplejson"],
    "python-rapidjson": ["rapidjson"],
    "pysimdjson": ["simdjson"],
    "jiter": ["jiter"],
    "ijson": ["ijson.backends.yajl2_c"],
    "cbor2": ["cbor2"],
    "PyYAML": ["yaml"],
    "ruamel.yaml": ["ruamel.yaml"],
    "ruamel.yaml.clib": ["_ruamel_yaml"],  # with ruamel.yaml (EXTRA): its loader imports it
    "protobuf": ["google.protobuf.message"],
    "fastavro": ["fastavro"],
    "lxml": ["lxml.etree"],
    "markupsafe": ["markupsafe"],
    "tomli": ["tomli"],
    "ciso8601": ["ciso8601"],
    "pybase64": ["pybase64"],
    "jq": ["jq"],
    # --- validation / data structures
    "pydantic": ["pydantic"],
    "pydantic-core": ["pydantic_core"],
    "rpds-py": ["rpds"],
    "pyrsistent": ["pyrsistent"],
    "immutables": ["immutables"],
    "bitarray": ["bitarray"],
    "pyroaring": ["pyroaring"],
    "marisa-trie": ["marisa_trie"],
    "pyahocorasick": ["ahocorasick"],
    "cytoolz": ["cytoolz"],
    "wrapt": ["wrapt"],
    "zope.interface": ["zope.interface"],
    "frozenlist": ["frozenlist"],
    "multidict": ["multidict"],
    "propcache": ["propcache"],
    "yarl": ["yarl"],
    # --- text
    "regex": ["regex"],
    "rapidfuzz": ["rapidfuzz"],
    "Levenshtein": ["Levenshtein"],
    "editdistance": ["editdistance"],
    "jellyfish": ["jellyfish"],
    "charset-normalizer": ["charset_normalizer"],
    "faust-cchardet": ["cchardet"],
    "nh3": ["nh3"],
    "tree-sitter": ["tree_sitter"],
    # --- compression / hashing
    "zstandard": ["zstandard"],
    "pyzstd": ["pyzstd"],
    "lz4": ["lz4.frame"],
    "brotli": ["brotli"],
    "brotlicffi": ["brotlicffi"],
    "cramjam": ["cramjam"],
    "zopfli": ["zopfli"],
    "pyppmd": ["pyppmd"],
    "xxhash": ["xxhash"],
    "mmh3": ["mmh3"],
    "blake3": ["blake3"],
    "google-crc32c": ["google_crc32c"],
    "crc32c": ["crc32c"],
    # --- crypto
    "cryptography": ["cryptography.hazmat.bindings._rust"],
    "cffi": ["_cffi_backend"],
    "bcrypt": ["bcrypt"],
    "PyNaCl": ["nacl.bindings"],
    "argon2-cffi-bindings": ["_argon2_cffi_bindings"],
    "pycryptodome": ["Crypto.Cipher.AES"],
    "pycryptodomex": ["Cryptodome.Cipher.AES"],
    "coincurve": ["coincurve"],
    # --- databases
    "psycopg2-binary": ["psycopg2"],
    "psycopg[binary]": ["psycopg"],
    "asyncpg": ["asyncpg"],
    "pymongo": ["pymongo"],
    "mysqlclient": ["MySQLdb"],
    "pymssql": ["pymssql"],
    "oracledb": ["oracledb"],
    "pyodbc": ["pyodbc"],
    "hiredis": ["hiredis"],
    "SQLAlchemy": ["sqlalchemy"],
    "confluent-kafka": ["confluent_kafka"],
    # --- networking / async
    "aiohttp": ["aiohttp"],
    "grpcio": ["grpc"],
    "pyzmq": ["zmq"],
    "uvloop": ["uvloop"],
    "httptools": ["httptools"],
    "greenlet": ["greenlet"],
    "gevent": ["gevent"],
    "websockets": ["websockets"],
    "tornado": ["tornado.web"],
    "pycares": ["pycares"],
    "pycurl": ["pycurl"],
    "curl_cffi": ["curl_cffi"],
    "zeroconf": ["zeroconf"],
    "watchfiles": ["watchfiles"],
    # --- system / dev tools
    "psutil": ["psutil"],
    "setproctitle": ["setproctitle"],
    "pendulum": ["pendulum"],
    "time-machine": ["time_machine"],
    "line-profiler": ["line_profiler"],
    "memray": ["memray"],
    "pyinstrument": ["pyinstrument"],
    "yappi": ["yappi"],
    "coverage": ["coverage"],
    "Cython": ["Cython.Compiler.Main"],
    "mypy": ["mypy.main"],
    "black": ["black"],
    "lupa": ["lupa"],
    "pygit2": ["pygit2"],
    "dulwich": ["dulwich.repo"],
    "ddtrace": ["ddtrace"],
}

# installed beside the package (each still alone with its own dependencies)
EXTRA: dict[str, list[str]] = {"ruamel.yaml.clib": ["ruamel.yaml"]}

_ORDER = ["compatible", "degraded", "unsupported", "error", "incompatible", "timeout", "crash"]
_SHORT = {"single-phase": "single-phase init", "multi-phase-no-gil": "no per-interpreter GIL slot"}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


# --------------------------------------------------------------------------- setup


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def find_pythons(given: list[str]) -> dict[str, str]:
    """minor -> interpreter: --python first, then shared/tools/pythons, its cache, PATH."""
    found: dict[str, str] = {}
    for py in given:
        if not py:
            continue
        v = _run([py, "-c", "import sys;print('%d.%d'%sys.version_info[:2])"]).stdout.strip()
        if v:
            found[v] = py
    if given:
        return found
    tool = ROOT.parent / "shared" / "tools" / "pythons"
    cache = Path(os.environ.get("SUBCOMPAT_PYTHONS", Path.home() / ".cache" / "subcompat-pythons"))
    for v in VERSIONS:
        pick = ""
        if tool.exists():
            pick = _run(["bash", str(tool), "path", v]).stdout.strip().split(" ")[-1]
        if not pick and (cache / v / "usr" / "bin" / f"python{v}").exists():
            pick = str(cache / v / "usr" / "bin" / f"python{v}")
        pick = pick or shutil.which(f"python{v}") or ""
        if pick:
            found[v] = pick
    return found


def exact_version(python: str) -> str:
    return _run([python, "-c", "import sys;print('%d.%d.%d'%sys.version_info[:3])"]).stdout.strip()


def tool_env(src: Path) -> tuple[str, dict[str, str], str]:
    """A venv with only subcompat's dependencies and a recent pip (pip also installs into
    the target venvs, which have none; pip >= 25 runs on 3.15). subcompat itself comes
    from ``src`` through PYTHONPATH. Its site-packages holds none of the probed packages:
    ``check`` expands a package found on the *checking* interpreter's path to all of its
    modules, and we want each named import probed as one target, the same on every Python."""
    venv = WORK / "tool"
    py = venv / "bin" / "python"
    if not (venv / ".done").exists():
        shutil.rmtree(venv, ignore_errors=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(py),
                "install",
                "-q",
                "-U",
                "pip>=25",
                "packaging>=23",
                "platformdirs>=3",
            ],
            check=True,
        )
        (venv / ".done").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUBCOMPAT_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(src)
    version = _run([str(py), "-m", "subcompat", "--version"], env=env, cwd=str(src)).stdout.strip()
    return str(py), env, version


def snapshot(rev: str) -> tuple[Path, str]:
    """The subcompat/ package of commit ``rev``, unpacked under .work (others may be
    editing the work tree while a long run goes on)."""
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "--short", rev]).stdout.strip()
    if not sha:
        sys.exit(f"compat_matrix: unknown revision {rev!r}")
    dest = WORK / f"src-{sha}"
    if not (dest / "subcompat" / "__init__.py").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "subcompat"], capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest, sha


def tree_rev() -> str:
    sha = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
    dirty = _run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "subcompat"]).stdout.strip()
    return sha + ("+dirty" if dirty else "") if sha else "unknown"


# --------------------------------------------------------------------------- one cell


def _pip_failure(stderr: str, name: str) -> tuple[str, str]:
    dist = re.split(r"[\[<>=!~; ]", name)[0].lower().replace("_", "-").replace(".", "-")
    m = re.search(r"Could not find a version that satisfies the requirement ([^\s(]+)", stderr)
    if m:
        req = re.split(r"[\[<>=!~; ]", m.group(1))[0]
        norm = req.lower().replace("_", "-").replace(".", "-")
        return "no-wheel", ("" if norm == dist else f"dependency {req} has no wheel")
    if "ResolutionImpossible" in stderr:  # only old releases left, whose dependencies have no wheel
        return "no-wheel", "no wheel of a recent release; older ones need dependencies without a wheel"
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("WARNING")]
    return "install-failed", (lines[-1] if lines else "")[:200]


# where a package's own extension modules live, if not in its own distribution
OWN_DISTS: dict[str, list[str]] = {
    "pydantic": ["pydantic-core"],
    "psycopg[binary]": ["psycopg-binary"],
    "polars": ["polars", "polars-runtime-32"],
    "pyzstd": ["pyzstd", "backports.zstd"],  # pyzstd >= 0.18 wraps backports.zstd (stdlib on 3.14+)
}


def own_extensions(vpy: str, name: str) -> int | None:
    """extension files the package's wheel installed (0: a pure-Python wheel was picked)"""
    dists = OWN_DISTS.get(name, [re.split(r"[\[<>=!~; ]", name)[0]])
    code = (
        "import importlib.metadata as m,sys\n"
        "def files(d):\n"
        "    try: return m.files(d) or []\n"
        "    except m.PackageNotFoundError: return []\n"
        "print(sum(1 for d in sys.argv[1:] for f in files(d) if f.name.endswith(('.so', '.pyd'))))"
    )
    out = _run([vpy, "-c", code, *dists]).stdout.strip()
    return int(out) if out.isdigit() else None


def run_cell(name: str, imports: list[str], python: str, tag: str, ctx: dict, mode: str) -> dict:
    out = WORK / "results" / tag / f"{slug(name)}.json"
    old = json.loads(out.read_text()) if out.exists() else None
    if old is not None and mode == "resume":
        return old
    venv = WORK / "venvs" / tag / slug(name)
    vpy = str(venv / "bin" / "python")
    record: dict = {"package": name, "python": tag, "imports": imports}
    started = time.perf_counter()
    if mode == "refresh" or not (venv / ".installed").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
        install = _run(
            [
                "nice",
                "-n",
                "15",
                "timeout",
                "1200",
                ctx["tool_py"],
                "-m",
                "pip",
                "--python",
                vpy,
                "install",
                "-q",
                "--only-binary",
                ":all:",
                name,
                *EXTRA.get(name, []),
            ]
        )
        if install.returncode != 0:
            status, detail = _pip_failure(install.stderr, name)
            record.update(status=status, detail=detail, seconds=round(time.perf_counter() - started, 1))
            record["when"] = datetime.datetime.now().isoformat(timespec="seconds")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=1))
            shutil.rmtree(venv, ignore_errors=True)  # nothing worth keeping
            return record
        (venv / ".installed").write_text("")
    dist = re.split(r"[\[<>=!~; ]", name)[0]
    record["version"] = _run(
        [vpy, "-c", f"import importlib.metadata as m;print(m.version({dist!r}))"]
    ).stdout.strip()
    record["own_extensions"] = own_extensions(vpy, name)
    empty = WORK / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    cmd = [
        "prlimit",
        f"--as={ctx['as_limit']}",
        "timeout",
        str(ctx["cap"]),
        "nice",
        "-n",
        "15",
        ctx["tool_py"],
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
        str(ctx["timeout"]),
        "--jobs",
        "1",
    ]
    probe_started = time.perf_counter()
    proc = _run(cmd, cwd=str(empty), env=ctx["env"])  # an empty cwd: nothing to shadow or expand
    record["probe_seconds"] = round(time.perf_counter() - probe_started, 1)
    record["exit"] = proc.returncode
    record["tool"] = ctx["tool_version"]
    record["tool_rev"] = ctx["rev"]
    try:
        record["report"] = _expanded(json.loads(proc.stdout))
        record["status"] = "probed"
    except ValueError:
        tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        if proc.returncode == 124:
            record.update(status="probe-killed", detail=f"the whole check ran past {ctx['cap']} s (timeout)")
        else:
            record.update(
                status="probe-failed", detail=(tail[-1] if tail else f"exit {proc.returncode}")[:300]
            )
        record["stderr_tail"] = tail[-15:]
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["when"] = datetime.datetime.now().isoformat(timespec="seconds")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    if ctx["prune"]:
        shutil.rmtree(venv, ignore_errors=True)
    return record


# --------------------------------------------------------------------------- rendering


def _why(c: dict) -> str:
    kind = c.get("kind")
    bits = [_SHORT.get(kind, kind)] if kind else []
    if c.get("toolchain"):
        bits.append(c["toolchain"])
    if not bits:
        bits.append(_clip(c.get("reason") or "", 70))
    return ", ".join(b for b in bits if b)


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= n else text[: n - 1] + "…"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~; ]", name)[0]).lower()


def _top_of_file(path: str | None) -> str | None:
    if path and "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/", 1)[0].split(".", 1)[0]
    return None


def _path_name(path: str | None) -> str | None:
    """dotted module name of an extension file under site-packages"""
    if not path or "site-packages/" not in path:
        return None
    folder, _, file = path.split("site-packages/", 1)[1].rpartition("/")
    stem = file.split(".")[0]
    return f"{folder.replace('/', '.')}.{stem}" if folder else stem


def _rank(c: dict) -> tuple:
    return (c["module"] == _path_name(c.get("file")), c["module"].count("."))


def _entries(mods: list[dict], key: str) -> dict[str, dict]:
    """culprit (or degraded) entries of all targets, one per extension file: the probe may
    report one file twice, once under a bare name (chain of one, no distribution)."""
    by_file: dict[str, dict] = {}
    for m in mods:
        for c in m[key]:
            f = c.get("file") or c["module"]
            have = by_file.get(f)
            if have is None or _rank(c) > _rank(have):
                by_file[f] = c
    return by_file


def analyse(record: dict | None, package: str = "") -> dict:
    """verdict, own culprits {module: why}, dependency culprits {dist: [modules]},
    degraded {module: why}, notes (other targets), dup (bare-name duplicates)."""
    base = {
        "pure": False,
        "verdict": "not run",
        "culprits": {},
        "deps": {},
        "degraded": {},
        "notes": [],
        "dup": [],
    }
    if record is None:
        return base
    status = record["status"]
    if status != "probed":
        label = {
            "no-wheel": "no wheel",
            "install-failed": "install failed",
            "probe-failed": "tool error",
            "probe-killed": "tool timeout",
        }.get(status, status)
        return {**base, "verdict": label, "notes": [record["detail"]] if record.get("detail") else []}
    mods = record["report"]["modules"]
    worst = max((m["verdict"] for m in mods), key=lambda v: _ORDER.index(v) if v in _ORDER else len(_ORDER))
    own_tops = {i.split(".")[0] for i in record.get("imports", [])}
    own_dist = _norm(package or record.get("package", ""))
    culprits: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    degraded: dict[str, str] = {}
    dup = sorted(
        {c["module"] for m in mods for c in m["culprits"] + m["degraded"]}
        - {c["module"] for c in [*_entries(mods, "culprits").values(), *_entries(mods, "degraded").values()]}
    )
    for c in _entries(mods, "culprits").values():
        top = _top_of_file(c.get("file")) or c["module"].split(".")[0]
        dist = c.get("distribution")
        if (dist and _norm(dist) == own_dist) or top in own_tops or c["module"].split(".")[0] in own_tops:
            culprits[c["module"]] = _why(c)
        else:
            deps.setdefault(dist or top, []).append(c["module"])
    for d in _entries(mods, "degraded").values():
        degraded[d["module"]] = _why(d)
    notes: list[str] = []
    if record.get("own_extensions") == 0:
        notes.append("pure-Python wheel: no extension module of its own installed")
    for m in mods:
        if m["verdict"] in ("error", "crash", "timeout") and not m["culprits"]:
            notes.append(f"`{m['target']}`: {_clip(m.get('reason') or '', 110)}")
        elif len(mods) > 1 and m["verdict"] != worst:
            notes.append(f"`{m['target']}` {m['verdict']}")
    # a dependency named by its import name and by its distribution: one key
    merged: dict[str, list[str]] = {}
    for k, v in deps.items():
        merged.setdefault(k.lower().replace("_", "-"), []).extend(v)
    return {
        "pure": record.get("own_extensions") == 0,
        "verdict": worst,
        "culprits": culprits,
        "deps": merged,
        "degraded": degraded,
        "notes": notes,
        "dup": dup,
    }


def _cell(a: dict, version: str | None, row_version: str | None) -> str:
    v = a["verdict"]
    parts = [
        f"**{v}**" if v in ("incompatible", "crash", "timeout", "error", "tool error", "tool timeout") else v
    ]
    if version and row_version and version != row_version:
        parts[0] += f" ({version})"
    items = [f"`{m}` ({why})" for m, why in a["culprits"].items()]
    if len(items) > 4:
        items = items[:4] + [f"… +{len(items) - 4} more"]
    for dist, mods in sorted(a["deps"].items()):
        items.append(f"via {dist}: " + (f"`{mods[0]}`" if len(mods) == 1 else f"{len(mods)} modules"))
    deg = [f"`{m}`" for m in a["degraded"]]
    if len(deg) > 4:
        deg = deg[:4] + [f"… +{len(deg) - 4} more"]
    text = parts[0]
    if items:
        text += ": " + "; ".join(items)
    if deg:
        text += ("; " if items else ": ") + "falls back: " + ", ".join(deg)
    if a["notes"]:
        text += "<br>" + "; ".join(_clip(n, 160) for n in a["notes"][:3])
    return text


def _classified(why: str) -> bool:
    return any(why.startswith(k) for k in _SHORT.values())


_UNPROBED = ("no wheel", "install failed", "not run", "tool error", "tool timeout")


def _signature(a: dict) -> tuple:
    deps = tuple(sorted((k, tuple(sorted(v))) for k, v in a["deps"].items()))
    return (a["verdict"], a["pure"], tuple(sorted(a["culprits"].items())), deps, tuple(sorted(a["degraded"])))


def _describe_change(
    pkg: str, tags: list[str], cells: dict[str, dict], versions: dict[str, str | None]
) -> str:
    """verdict and culprit changes between consecutive Pythons on which the package was probed"""
    probed = [t for t in tags if cells[t]["verdict"] not in _UNPROBED]
    steps = []
    for prev, cur in zip(probed, probed[1:], strict=False):
        a, b = cells[prev], cells[cur]
        if _signature(a) == _signature(b):
            continue
        bits = []
        if a["verdict"] != b["verdict"]:
            bits.append(f"{a['verdict']} → **{b['verdict']}**")
        if a["pure"] != b["pure"]:
            bits.append(
                f"on {cur if b['pure'] else prev} the install has no extension module of its own "
                "(pip picked a pure-Python wheel, or the compiled dependency is not needed there)"
            )
        gone = sorted(set(a["culprits"]) - set(b["culprits"]))
        new = sorted(set(b["culprits"]) - set(a["culprits"]))
        changed = sorted(
            m for m in set(a["culprits"]) & set(b["culprits"]) if a["culprits"][m] != b["culprits"][m]
        )
        if gone:
            bits.append(
                "no longer a culprit: "
                + ", ".join(f"`{m}`" for m in gone[:6])
                + (f" … +{len(gone) - 6}" if len(gone) > 6 else "")
            )
        if new:
            bits.append(
                "new culprit: "
                + ", ".join(f"`{m}` ({b['culprits'][m]})" for m in new[:6])
                + (f" … +{len(new) - 6}" if len(new) > 6 else "")
            )
        unclassified = [
            m for m in changed if not (_classified(a["culprits"][m]) and _classified(b["culprits"][m]))
        ]
        for m in changed:
            if m not in unclassified:
                bits.append(f"`{m}`: {a['culprits'][m]} → {b['culprits'][m]}")
        if unclassified:
            one = unclassified[0]
            bits.append(
                f"the probe classified {len(unclassified)} culprit(s) differently, same files and verdict "
                f"(e.g. `{one}`: {a['culprits'][one]} → {b['culprits'][one]})"
            )
        dgone = sorted(set(a["degraded"]) - set(b["degraded"]))
        dnew = sorted(set(b["degraded"]) - set(a["degraded"]))
        if dgone:
            bits.append("no longer falls back: " + ", ".join(f"`{m}`" for m in dgone))
        if dnew:
            bits.append("now falls back: " + ", ".join(f"`{m}`" for m in dnew))
        for dist in sorted(set(a["deps"]) | set(b["deps"])):
            was, now = set(a["deps"].get(dist, [])), set(b["deps"].get(dist, []))
            if was != now:
                diff = [f"+`{m}`" for m in sorted(now - was)] + [f"−`{m}`" for m in sorted(was - now)]
                shown = f" ({', '.join(diff)})" if len(diff) <= 3 else ""
                bits.append(f"culprits in dependency {dist}: {len(was)} → {len(now)}{shown}")
        if versions.get(prev) and versions.get(cur) and versions[prev] != versions[cur]:
            bits.append(f"(version {versions[prev]} → {versions[cur]})")
        steps.append(f"{prev} → {cur}: " + "; ".join(bits))
    return f"- **{pkg}**: " + ". ".join(steps) + "." if steps else ""


def _wheel_changes(wanted: list[str], tags: list[str], analysed: dict[str, dict[str, dict]]) -> list[str]:
    out = []
    for t in tags:
        others = [o for o in tags if o != t]
        missing = [
            p
            for p in wanted
            if analysed[p][t]["verdict"] in ("no wheel", "install failed")
            and any(analysed[p][o]["verdict"] not in _UNPROBED for o in others)
        ]
        if missing:
            out.append(
                f"- No installable wheel on **{t}** (but probed on another Python): "
                + ", ".join(missing)
                + "."
            )
    return out


def write_markdown(
    records: list[dict], pythons: dict[str, str], dest: Path, meta: dict, wanted: list[str]
) -> None:
    tags = [meta["exact"][v] for v in pythons]
    by_pkg: dict[str, dict[str, dict]] = {}
    for r in records:
        by_pkg.setdefault(r["package"], {})[r["python"]] = r
    counts: dict[str, dict[str, int]] = {t: {} for t in tags}
    rows, changes = [], []
    dups: set[str] = set()
    analysed: dict[str, dict[str, dict]] = {}
    for pkg in wanted:
        cells = {t: analyse(by_pkg.get(pkg, {}).get(t), pkg) for t in tags}
        analysed[pkg] = cells
        versions = {t: (by_pkg.get(pkg, {}).get(t) or {}).get("version") for t in tags}
        row_version = next((versions[t] for t in tags if versions[t]), None)
        for t in tags:
            counts[t][cells[t]["verdict"]] = counts[t].get(cells[t]["verdict"], 0) + 1
        rows.append(
            f"| {pkg} | {row_version or '–'} | "
            + " | ".join(_cell(cells[t], versions[t], row_version) for t in tags)
            + " |"
        )
        for t in tags:
            dups.update(cells[t]["dup"])
        change = _describe_change(pkg, tags, cells, versions)
        if change:
            changes.append(change)
    order = _ORDER + ["tool error", "tool timeout", "install failed", "no wheel", "not run"]
    kinds = [k for k in order if any(k in c for c in counts.values())]
    kinds += sorted({k for c in counts.values() for k in c} - set(kinds))
    probed = {t: sum(n for k, n in counts[t].items() if k in _ORDER) for t in tags}
    lines = [
        "# Sub-interpreter compatibility of popular packages with C extensions",
        "",
        f"Generated {meta['date']} by {meta['tool']} (commit {meta['rev']}) with `make matrix` "
        f"(`benchmarks/compat_matrix.py`) on {platform.machine()} Linux, for Python "
        + ", ".join(f"**{t}**" for t in tags)
        + f". {len(wanted)} packages that ship C, C++, Rust or Cython extension modules; "
        + ", ".join(f"{probed[t]} probed on {t}" for t in tags)
        + " (the rest had no wheel for that Python, or failed to install).",
        "",
    ]
    if meta.get("partial"):
        lines += [f"> **Partial run:** {meta['partial']}", ""]
    lines += [
        "## Summary",
        "",
        "| Verdict | " + " | ".join(f"Python {t}" for t in tags) + " |",
        "|---|" + "---:|" * len(tags),
    ]
    for k in kinds:
        lines.append(f"| {k} | " + " | ".join(str(counts[t].get(k, 0)) for t in tags) + " |")
    lines.append("| **total** | " + " | ".join(str(sum(counts[t].values())) for t in tags) + " |")
    lines += [
        "",
        "*compatible*: the imports load in an isolated sub-interpreter (own GIL) with everything "
        "they load; *degraded*: they load, but only because the package fell back to its "
        'pure-Python code when an accelerator refused to load (listed after "falls back"); '
        "*incompatible*: an extension module refuses (the culprits, with why: *single-phase init* = "
        "legacy `PyInit` without module state, never loads in an isolated sub-interpreter; *no "
        "per-interpreter GIL slot* = multi-phase init but without `Py_mod_multiple_interpreters` "
        "= per-interpreter GIL support, loads only with a shared GIL); *error*: the import fails "
        "in a plain interpreter as well (not a sub-interpreter problem; the reason is quoted); "
        "*crash* / *timeout*: the trial import killed or hung the sub-interpreter; *no wheel*: "
        "no binary wheel of the package (or of a dependency) for that Python, so nothing was "
        "probed (no source builds).",
        "",
        "## What changed between Pythons",
        "",
    ]
    lines += changes or ["No package got a different verdict or culprits on another Python."]
    wheels = _wheel_changes(wanted, tags, analysed)
    if wheels:
        lines += ["", "Wheel availability:", "", *wheels]
    lines += [
        "",
        "## Packages",
        "",
        "Version: the one installed on the first Python (a different one on another Python is "
        "given in its cell). Culprits as `dotted.module` (why).",
        "",
        "| Package | Version | " + " | ".join(f"Python {t}" for t in tags) + " |",
        "|---|---|" + "---|" * len(tags),
        *rows,
        "",
        "## Method",
        "",
        "For each Python, each package alone: `python -m venv --without-pip`, then "
        "`pip install --only-binary :all: PACKAGE` (from a tool venv's pip: Debian's CPython "
        "builds have no ensurepip); a package with no wheel for that Python, or a dependency "
        "without one, gets *no wheel* and is never built from source. Then, from an empty "
        "directory, `subcompat check IMPORTS --python VENV/bin/python --format json --no-cache "
        f"--timeout {meta['timeout']:g} --jobs 1` (subcompat from this repository; the probe "
        "runs stdlib-only child processes of the target interpreter, so the target venv holds "
        "only the package and its dependencies), niced, under `prlimit "
        f"--as={meta['as_limit']}` and `timeout {meta['cap']}`. The imports probed per package "
        "are in `benchmarks/compat_matrix.py` (`PACKAGES`): the modules a job would import, "
        "not every module of the package. A package's verdict is the worst over its imports. "
        "Results per (package, Python) are kept under `benchmarks/.work/matrix/` so an "
        "interrupted `make matrix` resumes; `--refresh` reinstalls and reprobes, `--reprobe` "
        f"reprobes only. Wheels larger than {MAX_WHEEL_MB} MB (torch, tensorflow, xgboost with "
        "its NCCL dependency) were left out. Run time: "
        f"{meta['elapsed']}.",
        "",
        "Read with care: scikit-image is probed as `skimage.filters:gaussian` because its "
        "`lazy_loader` makes a plain `import skimage.filters` load no extension at all "
        "(it was *compatible* that way); ruamel.yaml.clib is installed with ruamel.yaml, which "
        'its `_ruamel_yaml` imports; a culprit in a dependency is counted as "via DIST" '
        "(numpy's are the most common); an *error* row fails in a plain interpreter too (the "
        "reason is quoted in its cell, e.g. a system library the wheel does not bundle), not "
        'because of sub-interpreters; "pure-Python wheel" marks an install with no extension '
        "module of the package's own (a dropped or optional accelerator), whose verdict says "
        "nothing about C code.",
        "",
    ]
    if dups:
        lines[-1:-1] = [
            "",
            f"The probe reported {len(dups)} extension files a second time under another name "
            "(a bare name with a one-module import chain and no distribution, e.g. "
            + ", ".join(f"`{d}`" for d in sorted(dups)[:4])
            + "); those duplicates are merged here by file, keeping the name that matches the "
            "file's path under site-packages.",
        ]
    dest.write_text("\n".join(lines))


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "compat_matrix.md"))
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="PATH",
        help="an interpreter to cover (repeatable; default: 3.13, 3.14, 3.15 found)",
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="subcompat's --timeout per target")
    parser.add_argument("--cap", type=int, default=600, help="wall-clock cap of one whole check, s")
    parser.add_argument("--as-limit", default="8000000000", help="prlimit --as of one check, bytes")
    parser.add_argument("--only", nargs="*", help="a subset of packages")
    parser.add_argument(
        "--at",
        metavar="REV",
        help="probe with subcompat as committed at REV (unpacked under .work) instead of the work tree",
    )
    parser.add_argument("--refresh", action="store_true", help="reinstall and reprobe even if stored")
    parser.add_argument("--reprobe", action="store_true", help="reprobe stored results, keep the venvs")
    parser.add_argument("--prune", action="store_true", help="delete each venv after its probe")
    parser.add_argument("--render-only", action="store_true", help="write the markdown from stored results")
    args = parser.parse_args(argv)

    pythons = find_pythons(args.python)
    if not pythons:
        print(
            "compat_matrix: no Python 3.13/3.14/3.15 found (shared/tools/pythons install 3.13 3.14 3.15)",
            file=sys.stderr,
        )
        return 2
    exact = {v: exact_version(p) for v, p in pythons.items()}
    if args.at:
        src, rev = snapshot(args.at)
    else:
        src, rev = ROOT, tree_rev()
    tool_py, env, tool_version = tool_env(src)
    ctx = {
        "tool_py": tool_py,
        "env": env,
        "tool_version": tool_version,
        "rev": rev,
        "timeout": args.timeout,
        "cap": args.cap,
        "as_limit": args.as_limit,
        "prune": args.prune,
    }
    wanted = [n for n in PACKAGES if not args.only or n in args.only]
    mode = "refresh" if args.refresh else "reprobe" if args.reprobe else "resume"
    for v, p in pythons.items():
        print(f"{exact[v]}: {p}", flush=True)
    print(f"{tool_version} ({rev}), {len(wanted)} packages", flush=True)
    started = time.perf_counter()
    records: list[dict] = []
    for v, python in pythons.items():  # one Python after the other: 3.13 and 3.14 complete first
        for name in [] if args.render_only else wanted:
            record = run_cell(name, PACKAGES[name], python, exact[v], ctx, mode)
            a = analyse(record, name)
            print(
                f"{exact[v]:<8} {name:<24} {record.get('version') or '-':<12} {a['verdict']:<14} "
                f"{', '.join(a['culprits'])[:70]:<70} {record.get('seconds', 0)}s",
                flush=True,
            )
    # own_extensions of results stored before it was recorded (needs the venv)
    for v in pythons:
        for name in PACKAGES:
            out = WORK / "results" / exact[v] / f"{slug(name)}.json"
            venv = WORK / "venvs" / exact[v] / slug(name)
            if out.exists() and (venv / ".installed").exists():
                rec = json.loads(out.read_text())
                if rec.get("status") == "probed" and "own_extensions" not in rec:
                    rec["own_extensions"] = own_extensions(str(venv / "bin" / "python"), name)
                    out.write_text(json.dumps(rec, indent=1))
    # the file covers every package: stored results of earlier runs (--only) included
    records, missing = [], []
    for v in pythons:
        absent = 0
        for name in PACKAGES:
            out = WORK / "results" / exact[v] / f"{slug(name)}.json"
            if out.exists():
                records.append(json.loads(out.read_text()))
            else:
                absent += 1
        if absent:
            missing.append(f"{exact[v]}: {absent} of {len(PACKAGES)} packages not run yet")
    total = sum(r.get("seconds", 0) for r in records)
    revs = sorted({r["tool_rev"] for r in records if r.get("tool_rev")}) or [rev]
    tools = sorted({r["tool"] for r in records if r.get("tool")}) or [tool_version]
    days = sorted({r["when"][:10] for r in records if r.get("when")}) or [datetime.date.today().isoformat()]
    meta = {
        "date": days[0] if len(days) == 1 else f"{days[0]} – {days[-1]}",
        "tool": ", ".join(tools),
        "rev": ", ".join(revs),
        "exact": exact,
        "timeout": args.timeout,
        "cap": args.cap,
        "as_limit": args.as_limit,
        "partial": "; ".join(missing),
        "elapsed": f"{total / 60:.0f} min summed over the (package, Python) cells, one at a time"
        " on a shared 2-core machine"
        if total
        else f"{(time.perf_counter() - started) / 60:.0f} min",
    }
    write_markdown(records, pythons, Path(args.output), meta, list(PACKAGES))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
