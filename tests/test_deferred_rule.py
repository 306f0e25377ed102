"""The one rule for a deferred import that fails in a sub-interpreter (``verdict.judge``),
end to end: a real probe of a small first-party app against the compiled fixtures
(``sc_single`` never loads in an isolated interpreter)."""

from __future__ import annotations

import pytest

from subcompat import verdict

pytestmark = pytest.mark.needs_subinterpreters

APP = {
    "app.jobs": """
        import sys

        def guarded():
            try:
                import sc_single
            except ImportError:
                sc_single = None
            return sc_single is None

        def unguarded():
            import sc_single
            return sc_single

        def only_not_found():
            try:
                import sc_single  # a sub-interpreter raises ImportError, not this
            except ModuleNotFoundError:
                return None

        def needs_absent():
            import no_such_dep_21a
            return no_such_dep_21a

        def needs_absent_again():
            import no_such_dep_21a
            return no_such_dep_21a

        def platform_only():
            if sys.platform == "win32":
                import winonly_dep_21a
                return winonly_dep_21a
            return None

        def uses_broken():
            from app import broken
            return broken

        WINDOWS = sys.platform == "win32"
        OLD = sys.version_info < (3, 0)
        OLD = not OLD  # bound twice: no longer a test anyone can evaluate statically

        def version_dead():
            if sys.version_info < (3, 0):
                import sc_single
            return 1

        def flag_dead():
            if WINDOWS or sys.platform.startswith(("cygwin", "msys")):
                import sc_single
            return 1

        def version_live():
            if sys.version_info[:2] >= (3, 8):
                import sc_single
                return sc_single

        def flag_rebound():
            if OLD:
                import sc_single
                return sc_single
    """,
    "app.broken": """
        raise RuntimeError("a bug in this module, in any interpreter")
    """,
    "app.bystander": """
        from app import jobs

        def harmless():
            return 1
    """,
    "app.caller": """
        from app.jobs import unguarded

        def go():
            return unguarded()

        def other():
            return 2
    """,
}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory, fixture_site):
    from _probe_fixtures import make_probe_app

    mp = pytest.MonkeyPatch()
    try:
        app = make_probe_app(tmp_path_factory.mktemp("rule"), mp, fixture_site)
        app.write(APP)
        return app.check(
            "app.jobs:guarded",
            "app.jobs:unguarded",
            "app.jobs:only_not_found",
            "app.jobs:needs_absent",
            "app.jobs:platform_only",
            "app.jobs:uses_broken",
            "app.jobs:version_dead",
            "app.jobs:flag_dead",
            "app.jobs:version_live",
            "app.jobs:flag_rebound",
            "app.jobs",
            "app.bystander",
            "app.caller:go",
            "app.caller:other",
            cache=False,
            timeout=60,
        )
    finally:
        mp.undo()


def test_the_rule_itself():
    j = verdict.judge
    assert j(reached=True, fails_in_main=False, guarded=False) == "incompatible"
    assert j(reached=True, fails_in_main=False, guarded=True) == "degraded"
    assert j(reached=True, fails_in_main=True, guarded=False) == "warning"
    assert j(reached=True, fails_in_main=True, guarded=True) == "note"
    assert j(reached=True, fails_in_main=True, guarded=False, gated=True) == "note"
    assert j(reached=False, fails_in_main=False, guarded=False) == "note"


def test_a_guarded_sub_only_failure_is_degraded_and_names_culprit_and_guard(verdicts):
    v = verdicts["app.jobs:guarded"]
    assert v.verdict == "degraded", v.reason
    assert [c.module for c in v.degraded] == ["sc_single"] and not v.culprits
    assert "jobs.py:4" in v.degraded[0].reason  # the try's line
    assert v.degraded[0].import_line == 5


def test_an_unguarded_one_is_incompatible_and_a_not_found_handler_is_no_guard(verdicts):
    for target, line in (("app.jobs:unguarded", 11), ("app.jobs:only_not_found", 16)):
        v = verdicts[target]
        assert v.verdict == "incompatible", (target, v.reason)
        assert [(c.module, c.import_line) for c in v.culprits] == [("sc_single", line)]


def test_a_missing_module_is_one_warning_with_its_places(verdicts):
    v = verdicts["app.jobs:needs_absent"]
    assert v.verdict == "compatible", v.reason
    warned = [w for w in v.warnings if "no_such_dep_21a" in w]
    assert len(warned) == 1 and "jobs.py:21" in warned[0] and "jobs.py:25" in warned[0]


def test_another_platforms_module_is_a_note(verdicts):
    v = verdicts["app.jobs:platform_only"]
    assert v.verdict == "compatible", v.reason
    assert not [w for w in v.warnings if "winonly" in w]
    assert [n for n in v.notes if "winonly_dep_21a" in n]


def test_an_import_under_an_if_false_on_the_target_never_runs(verdicts):
    """An ``if`` on the version or the platform that is false on the target interpreter
    (directly, or through a module-level flag bound once) keeps its imports from running
    there: a note, not a culprit. A test it cannot evaluate (a flag bound twice) counts as
    reachable."""
    for target in ("app.jobs:version_dead", "app.jobs:flag_dead"):
        v = verdicts[target]
        assert v.verdict == "compatible", (target, v.reason)
        assert [n for n in v.notes if "sc_single" in n and "never runs on this interpreter" in n], v.notes
    for target in ("app.jobs:version_live", "app.jobs:flag_rebound"):
        v = verdicts[target]
        assert v.verdict == "incompatible", (target, v.reason)
        assert [c.module for c in v.culprits] == ["sc_single"]


def test_a_deferred_import_broken_everywhere_is_a_warning_not_an_error(verdicts):
    v = verdicts["app.jobs:uses_broken"]
    assert v.verdict == "compatible", v.reason
    assert [w for w in v.warnings if "app.broken" in w and "RuntimeError" in w]


def test_a_module_target_reaches_its_own_functions(verdicts):
    v = verdicts["app.jobs"]
    assert v.verdict == "incompatible" and [c.module for c in v.culprits] == ["sc_single"]


def test_code_the_target_never_names_is_a_note(verdicts):
    v = verdicts["app.bystander"]  # imports app.jobs, calls none of its functions
    assert v.verdict == "compatible", v.reason
    assert [n for n in v.notes if "sc_single" in n and "app.jobs.unguarded" in n]
    assert verdicts["app.caller:other"].verdict == "compatible"


def test_a_function_reaches_what_it_calls_in_another_module(verdicts):
    v = verdicts["app.caller:go"]
    assert v.verdict == "incompatible" and [c.module for c in v.culprits] == ["sc_single"]


def test_a_namespace_package_is_expanded_and_followed(tmp_path, monkeypatch, fixture_site):
    """PEP 420 packages (no ``__init__.py``): a package target lists their modules (a
    directory of data files is not one), and a job's ``from . import helper`` is followed
    into the helper whose function imports ``sc_single`` (it was 'not reached':
    compatible, for a job that fails in a sub-interpreter)."""
    from _probe_fixtures import make_probe_app

    from subcompat.config import expand_jobs

    app = make_probe_app(tmp_path, monkeypatch, fixture_site)
    inner = app.root / "nsp21" / "inner"
    inner.mkdir(parents=True)
    (app.root / "nsp21" / "data").mkdir()
    (app.root / "nsp21" / "data" / "table.csv").write_text("a,b\n")
    (inner / "mod.py").write_text("def job():\n    from . import helper\n    return helper.x()\n")
    (inner / "helper.py").write_text("def x():\n    import sc_single\n    return sc_single\n")
    assert expand_jobs(["nsp21"], [str(app.root)]) == [
        "nsp21",
        "nsp21.inner",
        "nsp21.inner.helper",
        "nsp21.inner.mod",
    ]
    v = app.check("nsp21.inner.mod:job", cache=False, timeout=60)["nsp21.inner.mod:job"]
    assert v.verdict == "incompatible", v.reason
    assert [c.module for c in v.culprits] == ["sc_single"]
