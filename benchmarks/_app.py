"""Generate the benchmark's job app: ``benchapp.jobs.*`` over real extension packages.

Realistic shapes: jobs that share packages, jobs that defer imports into function
bodies or ``importlib.import_module("...")``, a shared first-party helper, stdlib-only
jobs. A job whose package is absent from the target interpreter is left out (quick
runs keep the stdlib jobs and whatever the test environment has).

``benchapp.work`` holds the CPU-bound jobs of item 4 and the small jobs of item 3:
``pure`` runs anywhere, ``needs_fallback`` imports ujson (single-phase init, never
loads in an isolated sub-interpreter) and does the same work.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Job:
    name: str
    top: tuple[str, ...] = ()  # imported at module level
    lazy: tuple[str, ...] = ()  # imported in the run() body
    dynamic: tuple[str, ...] = ()  # importlib.import_module("literal") in the body
    body: str = "return len(repr(data))"

    @property
    def packages(self) -> tuple[str, ...]:
        return self.top + self.lazy + self.dynamic


JOBS: tuple[Job, ...] = (
    Job(
        "stdlib_report",
        ("json", "decimal", "statistics"),
        body="return json.dumps([str(decimal.Decimal(1) / 7)])",
    ),
    Job(
        "stdlib_archive",
        ("zlib", "hashlib", "base64"),
        body="return hashlib.sha256(zlib.compress(b'x' * 999)).hexdigest()",
    ),
    Job("markup_render", ("markupsafe",), body="return str(markupsafe.escape('<b>%s</b>' % data))"),
    Job("msgpack_pack", ("msgpack",), body="return msgpack.unpackb(msgpack.packb(data))"),
    Job("orjson_dump", ("orjson",), body="return orjson.dumps(data)"),
    Job("ujson_dump", ("ujson",), body="return ujson.dumps(data)"),
    Job("yaml_config", ("yaml",), body="return yaml.safe_dump(data)"),
    Job("regex_scan", (), lazy=("regex",), body="return regex.findall(r'\\w+', str(data))"),
    Job("simplejson_api", (), dynamic=("simplejson",), body="return simplejson.dumps(data)"),
    Job("hash_keys", ("xxhash", "mmh3"), body="return xxhash.xxh64(b'k').hexdigest(), mmh3.hash('k')"),
    Job(
        "compress_blobs",
        ("zstandard", "lz4.frame"),
        lazy=("brotli",),
        body="return lz4.frame.compress(b'x' * 99)",
    ),
    Job("brotli_static", ("brotli",), body="return brotli.compress(b'x' * 99)"),
    Job("cbor_events", ("cbor2",), body="return cbor2.dumps(data)"),
    Job("wrapt_audit", ("wrapt",), body="return wrapt.__name__"),
    Job("url_build", ("yarl", "multidict"), body="return str(yarl.URL('http://x/').with_query({'a': '1'}))"),
    Job("multidict_headers", ("multidict",), body="return multidict.MultiDict(a=1)"),
    Job("frozen_batches", ("frozenlist",), body="return frozenlist.FrozenList([1, 2])"),
    Job(
        "charset_sniff",
        (),
        lazy=("charset_normalizer",),
        body="return charset_normalizer.from_bytes(b'abc').best()",
    ),
    Job("host_metrics", (), lazy=("psutil",), body="return psutil.cpu_count()"),
    Job("passwords", ("bcrypt",), body="return bcrypt.gensalt()"),
    Job("ffi_call", ("_cffi_backend",), body="return _cffi_backend.__name__"),
    Job("numeric_stats", (), lazy=("numpy",), body="return float(numpy.mean([1, 2, 3]))"),
    Job(
        "export_mixed",
        ("orjson", "yaml"),
        lazy=("msgpack",),
        body="return orjson.dumps(data), yaml.safe_dump(data)",
    ),
    Job("fast_path", ("xxhash", "brotli", "markupsafe"), body="return xxhash.xxh32(b'k').intdigest()"),
)

STDLIB = {"json", "decimal", "statistics", "zlib", "hashlib", "base64"}

_UTIL = '''
"""Shared first-party helpers (every job imports this)."""

import dataclasses
import functools


@dataclasses.dataclass
class Payload:
    items: list


@functools.lru_cache
def sample(n=16):
    return {"items": [{"id": i, "name": "n%d" % i, "tags": ["a", "b"]} for i in range(n)]}
'''

_WORK_PURE = '''
"""Item 3/4 jobs that run anywhere: a pure-Python CPU loop."""


def crunch(n=200_000):
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1_000_003
    return total


def tiny():
    return 1
'''

_WORK_FALLBACK = '''
"""Item 3/4 jobs that need the fallback: ujson (single-phase init) at import time."""

import ujson


def crunch(n=200_000):
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1_000_003
    return ujson.dumps(total)


def tiny():
    return ujson.dumps(1)
'''


def _job_source(job: Job) -> str:
    lines = [f'"""Benchmark job {job.name}."""', ""]
    if job.dynamic:
        lines.append("import importlib")
    for mod in job.top:
        lines.append(f"import {mod}")
    lines += ["", "from benchapp.lib.util import sample", "", "", "def run(n=16):"]
    lines.append("    data = sample(n)")
    for mod in job.lazy:
        lines.append(f"    import {mod}")
    for mod in job.dynamic:
        lines.append(f'    {mod} = importlib.import_module("{mod}")')
    lines.append("    " + job.body)
    return "\n".join(lines) + "\n"


#: quick runs: jobs over these packages only (the test extras), so a smoke run stays small
QUICK_PACKAGES = frozenset({"msgpack", "orjson", "ujson"})


def write_app(root: Path, available: set[str], only: frozenset[str] | None = None) -> list[str]:
    """Write the app under ``root``; return the job targets (``module:run``).

    ``only``: keep just the jobs whose third-party packages are all in it."""
    if root.exists():
        shutil.rmtree(root)
    pkg = root / "benchapp"
    for sub in ("", "jobs", "lib", "work"):
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "lib" / "util.py").write_text(textwrap.dedent(_UTIL).lstrip())
    (pkg / "work" / "pure.py").write_text(textwrap.dedent(_WORK_PURE).lstrip())
    if "ujson" in available:
        (pkg / "work" / "needs_fallback.py").write_text(textwrap.dedent(_WORK_FALLBACK).lstrip())
    targets = []
    for job in JOBS:
        if not all(p in STDLIB or p in available for p in job.packages):
            continue
        if only is not None and not all(p in STDLIB or p in only for p in job.packages):
            continue
        (pkg / "jobs" / f"{job.name}.py").write_text(_job_source(job))
        targets.append(f"benchapp.jobs.{job.name}:run")
    return targets


def deferred_of(targets: list[str]) -> dict[str, list[str]]:
    """target -> the packages its job imports only inside run() (a trial imports them too)."""
    by_name = {job.name: job for job in JOBS}
    out = {}
    for t in targets:
        job = by_name.get(t.split(":")[0].rsplit(".", 1)[1])
        if job is not None and (job.lazy or job.dynamic):
            out[t] = [*job.lazy, *job.dynamic]
    return out


def packages_of(targets: list[str]) -> list[str]:
    """The distinct third-party packages the given targets import (lazily or not)."""
    names = {t.split(":")[0].rsplit(".", 1)[1] for t in targets}
    seen: dict[str, None] = {}
    for job in JOBS:
        if job.name in names:
            for p in job.packages:
                if p not in STDLIB:
                    seen.setdefault(p, None)
    return list(seen)


def all_packages() -> list[str]:
    seen: dict[str, None] = {}
    for job in JOBS:
        for p in job.packages:
            if p not in STDLIB:
                seen.setdefault(p, None)
    return list(seen)
