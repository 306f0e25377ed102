"""Merge JSON reports from several interpreters (one per tox env) into one table."""

from __future__ import annotations

from collections.abc import Sequence

from subcompat.report import JSON_SCHEMA, ReportFormatError, read_report

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


class MatrixError(Exception):
    """A report cannot be merged (one line for the user)."""


def load_report(path: str) -> dict[str, Any]:
    try:
        return read_report(path)
    except OSError as exc:
        raise MatrixError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ReportFormatError:
        raise MatrixError(f"{path} is not a subcompat JSON report (schema {JSON_SCHEMA})") from None
    except ValueError as exc:
        raise MatrixError(f"{path} is not valid JSON ({exc})") from None


def merge(reports: Sequence[dict[str, Any]]) -> str:
    """Rows: targets; columns: Python versions; cells: verdict and culprits."""
    pythons = sorted({r["python"] for r in reports}, key=lambda v: tuple(int(x) for x in v.split(".")[:3]))
    cells: dict[str, dict[str, str]] = {}
    for report in reports:
        for m in report["modules"]:
            culprits = [c["module"] for c in m.get("culprits", ())] + [
                f"~{c['module']}" for c in m.get("degraded", ())
            ]
            text = m["verdict"] + (f" ({', '.join(f'`{c}`' for c in culprits)})" if culprits else "")
            cells.setdefault(m["target"], {})[report["python"]] = text
    lines = [
        "| Target | " + " | ".join(f"Python {p}" for p in pythons) + " |",
        "|---|" + "---|" * len(pythons),
    ]
    for target, row in cells.items():
        lines.append(f"| `{target}` | " + " | ".join(row.get(p, "–") for p in pythons) + " |")
    lines.append("")
    lines.append("`~module`: degraded (accelerator skipped in a sub-interpreter).")
    return "\n".join(lines)
