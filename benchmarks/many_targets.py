"""Many targets: thousands of small importable job modules and of names that do not exist.

    python benchmarks/many_targets.py [--importable N] [--missing M] [--repeats R] [--against DIR]

Writes a throwaway app of N one-line modules, then times ``subcompat check`` (no cache,
``--jobs 2``, JSON to a file) on the missing names alone, on the importable modules alone,
and on both; with ``--against DIR`` the same runs with the subcompat tree under DIR, in
the same rounds (order alternating), and the ratio per round. Each side finds its tree
through PYTHONPATH, as ``run.py --against`` does. Prints one markdown table; asserts
nothing about time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def write_app(root: Path, n: int) -> list[str]:
    pkg = root / "manyapp"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    names = []
    for i in range(n):
        (pkg / f"job_{i}.py").write_text(f"VALUE = {i}\n\n\ndef run():\n    return VALUE\n")
        names.append(f"manyapp.job_{i}:run")
    return names


def one(tree: Path, app: Path, targets: list[str], python: str) -> tuple[float, dict[str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBCOMPAT_", "PYTHONPATH"))}
    env["PYTHONPATH"] = str(tree)
    out = app / "report.json"
    args_file = app / "targets.txt"
    args_file.write_text("\n".join(targets))
    cmd = [
        python,
        "-c",
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from subcompat.cli import main; "
        "f = sys.argv.pop(1); sys.argv += open(f).read().split(); sys.exit(main())",
        str(tree),
        str(args_file),
        "check",
        "--no-cache",
        "--format",
        "json",
        "--jobs",
        "2",
        "--timeout",
        "30",
    ]
    started = time.perf_counter()
    with open(out, "wb") as fh:
        subprocess.run(cmd, cwd=app, env=env, stdout=fh, stderr=subprocess.DEVNULL, check=False, timeout=3600)
    wall = time.perf_counter() - started
    counts: dict[str, int] = {}
    try:
        for m in json.loads(out.read_text())["modules"]:
            counts[m["verdict"]] = counts.get(m["verdict"], 0) + 1
    except (OSError, ValueError, KeyError):
        counts["no report"] = 1
    return wall, counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--importable", type=int, default=2000)
    parser.add_argument("--missing", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", metavar="DIR", help="another subcompat tree, timed in the same rounds")
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="subcompat-many-") as tmp:
        app = Path(tmp)
        importable = write_app(app, args.importable)
        missing = [f"no_such_module_{i}:run" for i in range(args.missing)]
        cases = {"missing": missing, "importable": importable, "both": importable + missing}
        trees = {"this": HERE, **({"other": Path(args.against).resolve()} if args.against else {})}
        walls: dict[tuple[str, str], list[float]] = {}
        counts: dict[tuple[str, str], dict[str, int]] = {}
        for rnd in range(args.repeats):
            for case, targets in cases.items():
                order = list(trees.items())
                if rnd % 2:
                    order.reverse()
                for name, tree in order:
                    wall, seen = one(tree, app, targets, args.python)
                    walls.setdefault((case, name), []).append(wall)
                    counts[(case, name)] = seen
                    print(f"round {rnd + 1} {case} {name}: {wall:.2f}s {seen}", file=sys.stderr)
        print("| case | targets | tree | wall s (median, min-max) | ms per target | verdicts |")
        print("|---|---:|---|---|---:|---|")
        for (case, name), values in walls.items():
            med = statistics.median(values)
            n = len(cases[case])
            print(
                f"| {case} | {n} | {name} | {med:.2f} ({min(values):.2f}-{max(values):.2f}) | "
                f"{1000 * med / n:.2f} | {counts[(case, name)]} |"
            )
        if args.against:
            for case in cases:
                ratios = [o / t for t, o in zip(walls[(case, "this")], walls[(case, "other")], strict=True)]
                print(f"| {case} | | other / this | {statistics.median(ratios):.2f}x per round | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
