"""What really happens when each module of a package is imported, with no subcompat in
the room: the ground truth subcompat's verdicts are scored against.

    python benchmarks/ground_truth.py [--python PY] [--path DIR] [--timeout S] PACKAGE...
        -> JSON on stdout: {"python": ..., "modules": {name: {"sub": ..., "main": ...}}}

For every module of each package (``.py`` files and extension modules found under the
package's directory, ``__main__`` and test directories left out), a fresh process of
``PY`` first imports it in a fresh isolated sub-interpreter (``_interpreters`` with the
``isolated`` config: own GIL, no single-phase extensions), then in its main interpreter.
Each outcome is ``ok``, or the exception's ``Type: message``, or ``crash``/``timeout``
(the process died or hung; the main import is then retried in a process of its own).
``--path`` puts DIR first on ``sys.path`` (a project whose package is first-party).

This file never imports subcompat, on purpose: it is the referee. ``score()`` compares a
subcompat JSON report with it (used by ``tests/test_ground_truth.py`` and by hand):
agreement is ``compatible``/``degraded`` where the sub-interpreter import works,
``incompatible`` (or ``crash``/``timeout``) where it fails only there, anything but
``compatible`` where it fails in a main interpreter too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from typing import Any

#: Runs in the fresh process: argv = [module]; one JSON line per interpreter.
PROBE = r"""
import json, sys
name = sys.argv[1]
def say(where, outcome):
    sys.stdout.write(json.dumps([where, outcome]) + "\n")
    sys.stdout.flush()
import _interpreters
config = _interpreters.new_config("isolated")
iid = _interpreters.create(config)
failed = _interpreters.exec(iid, "import importlib; importlib.import_module(%r)" % name)
if failed is None:
    say("sub", "ok")
else:
    kind = getattr(getattr(failed, "type", None), "__name__", None) or "Error"
    msg = str(getattr(failed, "msg", "") or "").strip().splitlines()
    say("sub", kind + (": " + msg[0][:300] if msg else ""))
try:
    _interpreters.destroy(iid)
except BaseException:
    pass
if "--sub-only" in sys.argv:
    raise SystemExit(0)
try:
    import importlib
    importlib.import_module(name)
    say("main", "ok")
except BaseException as e:
    text = str(e).splitlines()[0][:300] if str(e) else ""
    say("main", type(e).__name__ + (": " + text if text else ""))
"""

MAIN_ONLY = r"""
import json, sys, importlib
try:
    importlib.import_module(sys.argv[1])
    out = "ok"
except BaseException as e:
    text = str(e).splitlines()[0][:300] if str(e) else ""
    out = type(e).__name__ + (": " + text if text else "")
sys.stdout.write(json.dumps(["main", out]) + "\n")
"""

SKIP_DIRS = frozenset({"tests", "test", "testing", "__pycache__", "_vendor"})


def modules_of(package_dir: str, package: str, ext_suffixes: Sequence[str]) -> list[str]:
    """Every importable module under ``package_dir`` (the package itself first)."""
    out = [package]
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(
            d for d in dirs if d not in SKIP_DIRS and os.path.isfile(os.path.join(root, d, "__init__.py"))
        )
        rel = os.path.relpath(root, package_dir)
        prefix = package if rel == "." else package + "." + rel.replace(os.sep, ".")
        if rel != ".":
            out.append(prefix)
        for f in sorted(files):
            stem = None
            if f.endswith(".py"):
                stem = f[:-3]
            else:
                stem = next((f[: -len(s)] for s in ext_suffixes if f.endswith(s)), None)
            if stem and stem not in ("__init__", "__main__") and stem.isidentifier():
                out.append(f"{prefix}.{stem}")
    return list(dict.fromkeys(out))


def _run(
    python: str, code: str, args: list[str], env: dict[str, str], timeout: float
) -> tuple[dict[str, str], str]:
    try:
        proc = subprocess.run(
            [python, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return _lines(out), "timeout"
    return _lines(proc.stdout), ("crash" if proc.returncode < 0 else "")


def _lines(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        try:
            where, outcome = json.loads(line)
        except (ValueError, TypeError):
            continue
        if where in ("sub", "main"):
            found[where] = str(outcome)
    return found


def truth(
    packages: Iterable[str], *, python: str = sys.executable, path: str | None = None, timeout: float = 60.0
) -> dict[str, Any]:
    """Per module of each package: {"sub": outcome, "main": outcome}."""
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    where = subprocess.run(
        [
            python,
            "-c",
            "import importlib.util, importlib.machinery, json, sys\n"
            "out = {}\n"
            "for p in sys.argv[1:]:\n"
            "    s = importlib.util.find_spec(p)\n"
            "    out[p] = list(s.submodule_search_locations or [])[:1] if s else []\n"
            "suffixes = list(importlib.machinery.EXTENSION_SUFFIXES)\n"
            "print(json.dumps([out, suffixes, '%d.%d.%d' % sys.version_info[:3]]))",
            *packages,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    dirs, suffixes, version = json.loads(where.stdout)
    modules: dict[str, dict[str, str]] = {}
    for package in packages:
        if not dirs.get(package):
            continue
        for name in modules_of(dirs[package][0], package, suffixes):
            seen, lost = _run(python, PROBE, [name], env, timeout)
            if "main" not in seen:
                again, lost_main = _run(python, MAIN_ONLY, [name], env, timeout)
                seen["main"] = again.get("main", lost_main or "crash")
            seen.setdefault("sub", lost or "crash")
            modules[name] = seen
    return {"python": version, "modules": modules}


def expected(row: dict[str, str]) -> str:
    """What a right verdict is: ``works`` | ``sub-fails`` | ``broken``."""
    if row.get("main") != "ok":
        return "broken"
    return "works" if row.get("sub") == "ok" else "sub-fails"


def score(report: dict[str, Any], ground: dict[str, Any]) -> dict[str, Any]:
    """subcompat's per-module verdicts (a JSON report's ``modules``) against ``ground``."""
    rows = ground["modules"]
    out: dict[str, Any] = {
        "total": 0,
        "agree": 0,
        "unsafe": [],  # compatible where the sub-interpreter import fails
        "error_where_main_works": [],
        "guarded_only_incompatible": [],
        "disagree": [],
    }
    table = report.get("culprits") if isinstance(report.get("culprits"), list) else []
    for entry in report["modules"]:
        target, verdict = entry["target"], entry["verdict"]
        culprits = [
            table[c] if isinstance(c, int) and c < len(table) else c for c in entry.get("culprits", ())
        ]
        row = rows.get(target)
        if row is None:
            continue
        out["total"] += 1
        want = expected(row)
        if want == "works":
            ok = verdict in ("compatible", "degraded")
        elif want == "sub-fails":
            ok = verdict in ("incompatible", "crash", "timeout")
            if verdict == "compatible":
                out["unsafe"].append(target)
        else:
            ok = verdict != "compatible"
        if verdict == "error" and row.get("main") == "ok":
            out["error_where_main_works"].append(target)
        if verdict == "incompatible" and culprits and all(_guarded_culprit(c) for c in culprits):
            out["guarded_only_incompatible"].append(target)
        if ok:
            out["agree"] += 1
        else:
            out["disagree"].append(f"{target}: {verdict} (sub {row.get('sub')!r}, main {row.get('main')!r})")
    return out


def _guarded_culprit(c: Any) -> bool:
    """A culprit whose own reason says a ``try`` catches its import (it should have been
    ``degraded``)."""
    reason = str(c.get("reason", "")) if isinstance(c, dict) else ""
    return "in a try that catches it" in reason


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--path", default=None, help="a directory put first on sys.path")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument(
        "--score", metavar="REPORT", help="a subcompat JSON report to score against the truth"
    )
    args = parser.parse_args(argv)
    ground = truth(args.packages, python=args.python, path=args.path, timeout=args.timeout)
    if args.score:
        with open(args.score, encoding="utf-8") as fh:
            print(json.dumps(score(json.load(fh), ground), indent=2))
    else:
        print(json.dumps(ground, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
