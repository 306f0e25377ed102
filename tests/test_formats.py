"""Report formats: JUnit structure, markdown parsed back, GitHub annotations."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from _reports import sample

from subcompat.report import render_github, render_junit, render_markdown

C, REPORT = sample("single-phase init, 100% legacy\nreally", "SyntaxError: bad | worse", unsupported=True)


def test_junit_structure():
    root = ET.fromstring(render_junit(REPORT))
    assert root.tag == "testsuites"
    (suite,) = root
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "5",
        "1",
        "1",
        "1",
    )
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["app.ok", "app.job", "app.soft", "app.broken", "app.old"]
    assert all(c.get("classname") and c.get("time") for c in cases.values())
    failure = cases["app.job"].find("failure")
    assert failure is not None and failure.get("type") == "incompatible"
    assert (
        "lib._core (lib 1.2)" in failure.text
        and "app.job -> lib -> lib._core (/a/app/job.py:3)" in failure.text
    )
    assert cases["app.broken"].find("error") is not None
    assert cases["app.old"].find("skipped") is not None
    assert len(cases["app.ok"]) == 0


def test_markdown_table_parses_back():
    lines = render_markdown(REPORT).splitlines()
    assert lines[0].startswith("**subcompat** on Python 3.13.0: 5 target(s)")
    table = [line for line in lines if line.startswith("|")]
    header, rule, *rows = table
    split = lambda line: [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # noqa: E731
    assert split(header) == ["Target", "Verdict", "Culprits", "Advice"]
    assert set(rule.replace("|", "")) == {"-"}
    parsed = {split(r)[0].strip("`"): split(r) for r in rows}
    assert len(parsed) == 5 and all(len(cells) == 4 for cells in parsed.values())
    assert parsed["app.job"][1] == "incompatible" and "lib._core (lib 1.2)" in parsed["app.job"][2]
    assert parsed["app.broken"][2] == "SyntaxError: bad \\| worse"


def test_github_annotations_point_at_the_import_line():
    lines = render_github(REPORT).splitlines()
    pattern = re.compile(r"^::(error|warning|notice)( [^:]+)?::(.*)$")
    assert all(pattern.match(line) for line in lines), lines
    first = lines[0]
    assert first.startswith("::error file=/a/app/job.py,line=3,title=subcompat%3A app.job is incompatible::")
    assert "100%25 legacy%0Areally" in first  # GitHub's escaping of % and newlines
    assert any(line.startswith("::warning file=/a/app/job.py,line=3") for line in lines)
    assert any(line.startswith("::error title=subcompat%3A app.broken is error::") for line in lines)
    assert not any("app.ok" in line for line in lines)
