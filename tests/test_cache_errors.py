"""``error`` verdicts are facts about the code: cached under the same stamps as any other,
so a warm check of a project with broken modules starts no process; they are re-probed
when a file they rest on changes, or when a module they found missing appears. Only
what a limit, an outside kill or a probe failure decided stays out of the cache."""

from __future__ import annotations

import pytest

from subcompat import check as check_mod
from subcompat.verdict import COMPATIBLE, ERROR

pytestmark = pytest.mark.needs_subinterpreters

APP = {
    # broken in a helper it imports: the helper's file is what the verdict rests on
    "jobs.bad": "import jobs.helper\n",
    "jobs.helper": "VALUE = undefined_name\n",
    # a deferred import that fails in a main interpreter too (not a sub-interpreter
    # finding: a warning on its verdict, which rests on the helper's file as well)
    "jobs.lazybad": "def job():\n    import jobs.helper\n",
    # a dependency that is not installed
    "jobs.nodep": "import sc_not_installed_anywhere\n",
    "jobs.fine": "import sc_multi_ok\n",
}
TARGETS = ("jobs.bad", "jobs.lazybad:job", "jobs.nodep", "jobs.fine")


class _NoProbe:
    """Stands in for the Prober: a warm check must never start one."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("a warm check started a probe")


def test_a_warm_check_of_error_modules_starts_no_process(probe_app, monkeypatch):
    probe_app.write(APP)
    cold = probe_app.check(*TARGETS)
    assert [cold[t].verdict for t in ("jobs.bad", "jobs.nodep", "jobs.fine")] == [ERROR, ERROR, COMPATIBLE]
    assert not any(v.cached or v.transient for v in cold.values())
    monkeypatch.setattr(check_mod, "Prober", _NoProbe)
    warm = probe_app.check(*TARGETS)
    assert all(v.cached for v in warm.values())
    for t in TARGETS:
        assert (warm[t].verdict, warm[t].reason, warm[t].warnings, warm[t].notes) == (
            cold[t].verdict,
            cold[t].reason,
            cold[t].warnings,
            cold[t].notes,
        )


def test_a_cached_error_follows_the_files_it_rests_on(probe_app):
    probe_app.write(APP)
    probe_app.check(*TARGETS)
    probe_app.write({"jobs.helper": "VALUE = 1\n"})  # the bug is fixed
    (probe_app.root / "sc_not_installed_anywhere.py").write_text("X = 1\n")  # the dependency appears
    after = probe_app.check(*TARGETS)
    for t in ("jobs.bad", "jobs.lazybad:job", "jobs.nodep"):
        assert after[t].verdict == COMPATIBLE and not after[t].cached, after[t]
    assert after["jobs.fine"].cached


def test_an_error_a_limit_decided_is_not_cached(probe_app):
    probe_app.write({"jobs.huge": "BLOCK = bytearray(1 << 46)\n"})  # MemoryError everywhere
    first = probe_app.check("jobs.huge")["jobs.huge"]
    assert first.verdict == ERROR and first.transient == "the memory limit", first
    assert not first.lasting
    again = probe_app.check("jobs.huge")["jobs.huge"]
    assert again.verdict == ERROR and not again.cached
