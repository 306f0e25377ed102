"""The benchmark harness runs end to end (``benchmarks/run.py --quick``): no timings asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "benchmarks" / "run.py"

pytestmark = [
    pytest.mark.skipif(
        sys.version_info < (3, 13), reason="the benchmarks time isolated sub-interpreters (Python >= 3.13)"
    ),
    # the harness is the same on every Python and takes 50-100 s: once per CI run, in the
    # env of the newest stable Python (``make test`` runs it there)
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 14), reason="the benchmark harness smoke runs in the py314 env"
    ),
]


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| #"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows[cells[0]] = cells
    return rows


def test_quick_run_prints_and_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, str(RUN), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    written = out.read_text()
    assert written.strip() in proc.stdout
    assert re.search(r"^- date: \d{4}-\d\d-\d\d", written, re.M)
    assert re.search(r"^- machine: \d+ cores", written, re.M)
    assert re.search(r"^- Python: 3\.\d+", written, re.M)
    assert "| # | measurement | median | min – max | n | ratio | target | result |" in written

    rows = table_rows(written)
    # items 1, 2 and 5 need nothing but this interpreter
    for key in ("1a", "1b", "1c", "1c'", "1d", "1e", "2a", "2b", "2c", "2d", "5a", "5b", "5c"):
        assert key in rows, f"row {key} missing:\n{written}"
        assert rows[key][2] not in ("", "skipped", "–"), rows[key]
    assert "≤ 0.5×" in rows["1d"][6] and "≤ 1.5×" in rows["1e"][6]
    assert "re-probed 1 job(s)" in rows["2d"][1]
    # items 3 and 4 need chancy, PostgreSQL and the auto executor: their rows, or skipped rows
    for item, keys in (("3", ("3a", "3a'", "3b", "3b'", '3b"')), ("4", ("4a", "4b", "4c", "4d", "4e", "4f"))):
        mine = {k: v for k, v in rows.items() if k.startswith(item)}
        assert mine, f"no row for item {item}:\n{written}"
        if any(v[7].startswith("skipped: ") for v in mine.values()):
            continue  # e.g. no PostgreSQL here: said so in the table
        for key in keys:
            assert key in rows, f"row {key} missing:\n{written}"
            assert rows[key][2] not in ("", "–"), rows[key]
    # item 8 (a big package, cold and warm, beside a naive tracker) on a stdlib package
    for key in ("8a", "8a'", "8a''", "8z"):
        assert key in rows, f"row {key} missing:\n{written}"
    assert "json: cold check of" in rows["8a"][1] and "× naive" in rows["8a"][5]
    # a smoke run is never presented as a result
    assert "**met**" not in written and "**missed**" not in written
