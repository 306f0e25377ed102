"""The probe's own module names never reach what users see (issue 15).

A trial drives the candidate from its interpreter's ``__main__`` (a sub-interpreter) or
from a ``__subcompat_trial__`` namespace (a main-interpreter pass): imports made there
are the probe's, and must not show up as links of an import chain or as the line that
pulls a culprit in.
"""

from __future__ import annotations

import pytest

from subcompat import report

pytestmark = pytest.mark.needs_subinterpreters

INTERNAL = ("__main__", "__subcompat_trial__", "<string>", "<subcompat-trial>")


def _leaks(verdicts):
    found = []
    for v in verdicts:
        for c in (*v.culprits, *v.degraded):
            found += [f"{v.target}: {c.module} chain {c.chain}" for name in c.chain if name in INTERNAL]
            if c.import_file in INTERNAL:
                found.append(f"{v.target}: {c.module} imported at {c.import_file}")
    rendered = report.render_text(report.Report("3", tuple(verdicts)))
    found += [f"text report: {name}" for name in INTERNAL if name in rendered]
    return found


def test_a_culprit_that_is_the_target_itself_has_no_probe_importer(probe_app):
    """``sc_single`` imported by the probe: in the sub-interpreter and, since it fails
    there, in a main-interpreter pass too."""
    verdicts = probe_app.check("sc_single", "sc_segv", cache=False)
    assert verdicts["sc_single"].verdict == "incompatible" and verdicts["sc_segv"].verdict == "crash"
    assert not _leaks(verdicts.values())


def test_deferred_and_main_pass_imports_have_no_probe_importer(probe_app):
    """A job whose deferred import crashes is retried by name in a main interpreter; the
    chains of what that pass loaded start at the job, not at the probe."""
    probe_app.write(
        {
            "jobs.lazy": "def run():\n    import sc_segv\n    import sc_single\n",
            "jobs.eager": "import sc_multi_nogil\n",
        }
    )
    verdicts = probe_app.check("jobs.lazy", "jobs.eager", cache=False)
    assert verdicts["jobs.lazy"].verdict == "crash" and verdicts["jobs.eager"].verdict == "incompatible"
    assert not _leaks(verdicts.values())
