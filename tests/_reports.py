"""One sample report for the rendering tests: every verdict kind, one culprit reused."""

from __future__ import annotations

from subcompat.report import Report
from subcompat.verdict import Culprit, Verdict


def sample(reason: str = "single-phase init", broken: str = "SyntaxError: bad", unsupported: bool = False):
    """(culprit, report); ``reason``/``broken`` let a test put characters to escape in them."""
    culprit = Culprit(
        "lib._core",
        "/s/lib/_core.so",
        "lib",
        "1.2",
        reason,
        chain=("app.job", "lib", "lib._core"),
        import_file="/a/app/job.py",
        import_line=3,
    )
    verdicts = [
        Verdict("app.ok", "compatible", "3.13.0"),
        Verdict("app.job", "incompatible", "3.13.0", "x", culprits=(culprit,)),
        Verdict("app.soft", "degraded", "3.13.0", degraded=(culprit,)),
        Verdict("app.broken", "error", "3.13.0", broken),
    ]
    if unsupported:
        verdicts.append(Verdict("app.old", "unsupported", "3.13.0", "too old"))
    return culprit, Report("3.13.0", tuple(verdicts))
