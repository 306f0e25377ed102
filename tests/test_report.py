"""Text and JSON rendering of a check run."""

from __future__ import annotations

import json

from _reports import sample

from subcompat.report import Report, render_json, render_text
from subcompat.route import Policy
from subcompat.verdict import Verdict

CULPRIT, REPORT = sample()


def test_text_names_culprit_chain_and_advice():
    text = render_text(REPORT)
    assert "lib._core (lib 1.2): single-phase init" in text
    assert "via app.job → lib → lib._core  (/a/app/job.py:3)" in text
    assert "use the process executor" in text
    assert "SyntaxError: bad" in text
    assert "\x1b[" not in text
    assert "\x1b[32mcompatible" in render_text(REPORT, colour=True)


def test_json_routes_follow_policy():
    data = json.loads(render_json(REPORT))
    assert [m["route"] for m in data["modules"]] == ["subinterpreter", "fallback", "fallback", "fallback"]
    lenient = Report("3.13.0", REPORT.verdicts, Policy(degraded="subinterpreter"))
    assert [m["route"] for m in lenient.to_json()["modules"]][2] == "subinterpreter"


def test_exit_code_precedence():
    assert REPORT.exit_code() == 2
    only = Report("3.13.0", REPORT.verdicts[:3])
    assert only.exit_code() == 1
    assert Report("3.13.0", (REPORT.verdicts[2],)).exit_code() == 0
    assert Report("3.13.0", (REPORT.verdicts[2],)).exit_code(strict=True) == 1
    assert Report("3.11.7", (Verdict("a", "unsupported", "3.11.7"),)).exit_code() == 3


def test_text_report_shows_the_first_culprits_and_a_count_verbose_all():
    from subcompat.report import TEXT_CULPRITS
    from subcompat.verdict import Culprit, Verdict

    many = tuple(
        Culprit(f"lib._c{i:02}", f"/s/lib/_c{i:02}.so", "lib", "1", "single-phase") for i in range(12)
    )
    report = Report("3.14.0", (Verdict("pd.m", "incompatible", "3.14.0", culprits=many),))
    text = render_text(report)
    assert [f"lib._c{i:02}" in text for i in range(12)] == [i < TEXT_CULPRITS for i in range(12)]
    assert f"… and {12 - TEXT_CULPRITS} more (--verbose lists them all)" in text
    full = render_text(report, verbose=True)
    assert all(f"lib._c{i:02}" in full for i in range(12)) and "more (--verbose" not in full
