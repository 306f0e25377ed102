"""What a trial is told, and what the job sees of the probe's own process.

A step's argument travels into the trial's interpreter as data (``_child._step``), never
as source text: a list of deferred imports has no size limit. The job sees the
``sys.argv`` a fresh ``python -c`` gives it, in the sub-interpreter and in the
main-interpreter pass alike, not the worker's ``['-c', '.../_child.py', FD]``.
"""

from __future__ import annotations

import ast
import re

import pytest

from subcompat.verdict import COMPATIBLE, INCOMPATIBLE

pytestmark = pytest.mark.needs_subinterpreters

MANY = 1200  # 3.14 refused a step built as source from about 250 deferred imports


def _many_deferred(probe_app, failing_at=None):
    """``jobs.many:job`` imports MANY first-party modules in its body; the one at
    ``failing_at`` loads a single-phase extension."""
    files = {"jobs.many": "def job():\n" + "".join(f"    import jobs.m{i}\n" for i in range(MANY))}
    for i in range(MANY):
        files[f"jobs.m{i}"] = "import sc_single\n" if i == failing_at else f"VALUE = {i}\n"
    probe_app.write(files)
    return probe_app.check("jobs.many:job", cache=False)["jobs.many:job"]


def test_a_thousand_deferred_imports_are_all_tried(probe_app):
    v = _many_deferred(probe_app)
    assert v.verdict == COMPATIBLE, v.reason
    assert "deferred imports included" in v.reason
    assert v.culprits == () and v.warnings == ()
    assert sum(1 for f in v.files if re.search(r"/jobs/m\d+\.py$", f)) == MANY  # every one was imported


def test_leftovers_after_a_failure_reach_a_fresh_interpreter_whole(probe_app):
    """The failure comes early: the ~1190 imports after it are handed to the next
    interpreter in its first step, and every one of them is still tried there."""
    v = _many_deferred(probe_app, failing_at=10)
    assert v.verdict == INCOMPATIBLE, v.reason
    assert [c.module for c in v.culprits] == ["sc_single"]
    assert v.culprits[0].import_file.endswith("many.py")
    # every one: m10 failed, and its file is what the verdict rests on
    assert sum(1 for f in v.files if re.search(r"/jobs/m\d+\.py$", f)) == MANY


def test_the_job_sees_the_argv_of_a_fresh_python_c(probe_app, tmp_path):
    """Recorded at import in the sub-interpreter (which fails: a single-phase
    extension) and in the main-interpreter pass that follows."""
    record = tmp_path / "argv.txt"
    probe_app.write(
        {
            "jobs.argv": f"""
        import sys, _interpreters
        where = "main" if _interpreters.get_current() == _interpreters.get_main() else "sub"
        with open({str(record)!r}, "a") as fh:
            fh.write(repr([where, sys.argv]) + "\\n")
        import sc_single
    """
        }
    )
    v = probe_app.check("jobs.argv", cache=False)["jobs.argv"]
    assert v.verdict == INCOMPATIBLE, v.reason
    seen = [ast.literal_eval(line) for line in record.read_text().splitlines()]
    assert {where for where, _ in seen} == {"main", "sub"}, seen
    assert all(argv == ["-c"] for _, argv in seen), seen
