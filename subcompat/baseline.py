"""Compare a check run with a previous JSON report: what got worse, what got better."""

from __future__ import annotations

from dataclasses import dataclass

from subcompat.report import JSON_SCHEMA, Report, ReportFormatError, read_report
from subcompat.verdict import SEVERITY

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


class BaselineError(Exception):
    """The baseline file cannot be used (one line for the user)."""


@dataclass(frozen=True)
class Change:
    target: str
    before: str | None  # None: not in the baseline
    after: str
    new_culprits: tuple[str, ...] = ()
    gone_culprits: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = [f"{self.target}: {self.before or 'new'} -> {self.after}"]
        if self.new_culprits:
            parts.append(f"new culprit(s) {', '.join(self.new_culprits)}")
        if self.gone_culprits:
            parts.append(f"fixed {', '.join(self.gone_culprits)}")
        return "; ".join(parts)


@dataclass(frozen=True)
class Comparison:
    regressions: tuple[Change, ...]
    improvements: tuple[Change, ...]

    def lines(self) -> list[str]:
        return [f"regression: {c.describe()}" for c in self.regressions] + [
            f"improvement: {c.describe()}" for c in self.improvements
        ]


def load(path: str) -> dict[str, tuple[str, frozenset[str]]]:
    """target -> (verdict, culprit modules) from a ``--format json`` report."""
    try:
        data: Any = read_report(path)
    except OSError as exc:
        raise BaselineError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except ReportFormatError as exc:
        if exc.modules:
            raise BaselineError(f"baseline {path} is missing 'modules' in a module entry") from None
        raise BaselineError(f"baseline {path} has schema {exc.schema!r}, expected {JSON_SCHEMA}") from None
    except ValueError as exc:
        raise BaselineError(f"baseline {path} is not valid JSON ({exc})") from None
    try:
        return {
            m["target"]: (
                m["verdict"],
                frozenset(c["module"] for c in (*m["culprits"], *m.get("degraded", ()))),
            )
            for m in data["modules"]
        }
    except (KeyError, TypeError) as exc:
        raise BaselineError(f"baseline {path} is missing {exc} in a module entry") from None


def compare(report: Report, baseline: dict[str, tuple[str, frozenset[str]]]) -> Comparison:
    regressions, improvements = [], []
    for v in report.verdicts:
        now = frozenset(c.module for c in (*v.culprits, *v.degraded))
        before, was = baseline.get(v.target, (None, frozenset()))
        new, gone = tuple(sorted(now - was)), tuple(sorted(was - now))
        change = Change(v.target, before, v.verdict, new, gone)
        worse = before is not None and SEVERITY.get(v.verdict, 0) > SEVERITY.get(before, 0)
        if before is None and SEVERITY.get(v.verdict, 0) > 0 and v.verdict != "unsupported":
            worse = True
        if worse or new:
            regressions.append(change)
        elif before is not None and (SEVERITY.get(v.verdict, 0) < SEVERITY.get(before, 0) or gone):
            improvements.append(change)
    return Comparison(tuple(regressions), tuple(improvements))
