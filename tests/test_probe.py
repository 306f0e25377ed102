"""The probe against real sub-interpreters, real compiled extensions and real packages."""

from __future__ import annotations

import sys

import pytest

from subcompat import probe
from subcompat.verdict import COMPATIBLE, CRASH, DEGRADED, ERROR, INCOMPATIBLE, TIMEOUT

pytestmark = pytest.mark.needs_subinterpreters


def culprit_names(v):
    return sorted(c.module for c in v.culprits)


# -- compiled fixtures ---------------------------------------------------------------


def test_single_phase_extension_is_incompatible_and_classified(probe_app):
    v = probe_app.check("sc_single")["sc_single"]
    assert v.verdict == INCOMPATIBLE
    (c,) = v.culprits
    assert c.module == "sc_single"
    assert c.kind == "single-phase"
    assert c.file and c.file.endswith(".so")


def test_multi_phase_without_gil_slot_is_classified(probe_app):
    v = probe_app.check("sc_multi_nogil")["sc_multi_nogil"]
    assert v.verdict == INCOMPATIBLE
    assert [c.kind for c in v.culprits] == ["multi-phase-no-gil"]
    assert "Py_mod_multiple_interpreters" in v.culprits[0].reason


def test_per_interpreter_gil_extension_is_compatible(probe_app):
    v = probe_app.check("sc_multi_ok")["sc_multi_ok"]
    assert v.verdict == COMPATIBLE, v
    assert v.culprits == () and v.degraded == ()


def test_soft_fallback_is_degraded_with_its_distribution(probe_app):
    v = probe_app.check("sc_softpkg")["sc_softpkg"]
    assert v.verdict == DEGRADED
    (d,) = v.degraded
    assert d.module == "sc_softpkg._speedups"
    assert (d.distribution, d.version) == ("sc-softpkg", "1.0")


def test_wrapped_import_error_names_the_dotted_extension(probe_app):
    v = probe_app.check("sc_wrapped")["sc_wrapped"]
    assert v.verdict == INCOMPATIBLE
    assert culprit_names(v) == ["sc_wrapped._core"]
    assert v.culprits[0].distribution == "sc-wrapped"


def test_segfault_is_a_crash_and_the_probe_carries_on(probe_app):
    probe_app.write({"jobs.crashy": "import sc_segv\n", "jobs.fine": "import sc_multi_ok\n"})
    result = probe_app.check("jobs.crashy", "jobs.fine")
    crashy = result["jobs.crashy"]
    assert crashy.verdict == CRASH
    assert culprit_names(crashy) == ["sc_segv"]
    assert "SIGSEGV" in crashy.culprits[0].reason
    assert result["jobs.fine"].verdict == COMPATIBLE


def test_every_target_forks_from_one_pristine_zygote(probe_app):
    """The forking child survives a crash in what it forked, and each forked import sees a
    clean main interpreter (metadata lookups happen elsewhere, so ``_datetime``, which
    importlib.metadata pulls in, still shows up as the job's)."""
    probe_app.write(
        {
            "jobs.first": "import sc_single\nimport datetime\n",
            "jobs.crashy": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n",
            "jobs.second": "import sc_single\nimport datetime\n",
        }
    )
    with probe.Prober(jobs=1) as prober:
        first = prober.probe("jobs.first")
        forker = prober._local.zygote.proc.pid
        crashy = prober.probe("jobs.crashy")
        second = prober.probe("jobs.second")
        assert prober._local.zygote.proc.pid == forker
    (crash_main,) = [t for t in crashy.trials if t.kind == "main"]
    assert crash_main.status == "crash" and crash_main.signal == 11
    for result in (first, second):
        assert [t.status for t in result.trials if t.kind == "main"] == ["ok"]
        assert "_datetime" in {m.name for m in result.tree.modules}


def test_hang_is_a_timeout_naming_the_extension(probe_app):
    probe_app.write({"jobs.stuck": "import sc_hang\n"})
    v = probe_app.check("jobs.stuck", timeout=3)["jobs.stuck"]
    assert v.verdict == TIMEOUT
    assert culprit_names(v) == ["sc_hang"]


def test_every_culprit_is_named_not_just_the_first(probe_app):
    probe_app.write(
        {"jobs.many": "import sc_multi_ok\nimport sc_single\nimport sc_multi_nogil\nimport readline\n"}
    )
    v = probe_app.check("jobs.many")["jobs.many"]
    assert v.verdict == INCOMPATIBLE
    assert culprit_names(v) == ["readline", "sc_multi_nogil", "sc_single"]
    by_name = {c.module: c for c in v.culprits}
    assert by_name["readline"].distribution == "stdlib"
    assert by_name["sc_single"].chain == ("jobs.many", "sc_single")
    assert by_name["sc_single"].import_line == 2


def test_failure_on_retry_is_never_compatible(probe_app):
    # gh-104621: a failed single-phase import may succeed when retried in the same interpreter
    probe_app.write(
        {
            "jobs.retry": """
        try:
            import sc_single
        except ImportError:
            import sc_single
    """
        }
    )
    v = probe_app.check("jobs.retry")["jobs.retry"]
    assert v.verdict == INCOMPATIBLE
    assert culprit_names(v) == ["sc_single"]


def test_pure_python_refusal_is_not_compatible(probe_app):
    probe_app.write(
        {
            "jobs.picky": """
        import sys
        if sys.implementation.name == "cpython":
            import _interpreters
            if _interpreters.get_current() != _interpreters.get_main():
                raise ImportError("this library refuses sub-interpreters")
    """
        }
    )
    v = probe_app.check("jobs.picky")["jobs.picky"]
    assert v.verdict == INCOMPATIBLE
    assert "refuses sub-interpreters" in v.reason


# -- real packages and stdlib ----------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "expected", "culprit"),
    [
        ("orjson", INCOMPATIBLE, "orjson.orjson"),
        ("ujson", INCOMPATIBLE, "ujson"),
        ("msgpack", DEGRADED, "msgpack._cmsgpack"),
        ("attrs", COMPATIBLE, None),
        ("readline", INCOMPATIBLE, "readline"),
        ("sqlite3", COMPATIBLE, None),
    ],
)
def test_real_packages(probe_app, module, expected, culprit):
    pytest.importorskip(module)
    v = probe_app.check(module)[module]
    assert v.verdict == expected, v.reason
    named = [c.module for c in (*v.culprits, *v.degraded)]
    assert named == ([culprit] if culprit else [])
    if culprit and module not in ("readline",):
        c = (*v.culprits, *v.degraded)[0]
        assert c.distribution and c.version


# -- deferred imports -------------------------------------------------------------------


def test_import_in_function_body(probe_app):
    probe_app.write(
        {
            "jobs.body": """
        def job():
            import sc_single
            return sc_single.answer()
    """
        }
    )
    v = probe_app.check("jobs.body:job")["jobs.body:job"]
    assert v.verdict == INCOMPATIBLE
    (c,) = v.culprits
    assert c.module == "sc_single" and c.import_line == 2


def test_import_module_literal(probe_app):
    probe_app.write(
        {
            "jobs.dyn": """
        import importlib
        def job():
            return importlib.import_module("sc_multi_nogil").answer()
    """
        }
    )
    v = probe_app.check("jobs.dyn")["jobs.dyn"]
    assert v.verdict == INCOMPATIBLE
    assert culprit_names(v) == ["sc_multi_nogil"]


def test_pep562_module_getattr(probe_app):
    probe_app.write(
        {
            "jobs.lazy": """
        def __getattr__(name):
            if name == "fast":
                from sc_softpkg import CFast
                return CFast
            raise AttributeError(name)
    """
        }
    )
    v = probe_app.check("jobs.lazy")["jobs.lazy"]
    # `from sc_softpkg import CFast` fails in a sub-interpreter: the accelerator is skipped
    assert v.verdict == INCOMPATIBLE
    assert "sc_softpkg._speedups" in culprit_names(v) + [d.module for d in v.degraded]


def test_first_party_helper_two_hops_away(probe_app):
    probe_app.write(
        {
            "jobs.entry": """
            def job():
                from jobs import helper_a
                return helper_a.run()
        """,
            "jobs.helper_a": "from jobs import helper_b\ndef run():\n    return helper_b.run()\n",
            "jobs.helper_b": "import sc_single\ndef run():\n    return sc_single.answer()\n",
        }
    )
    v = probe_app.check("jobs.entry")["jobs.entry"]
    assert v.verdict == INCOMPATIBLE
    (c,) = v.culprits
    assert c.module == "sc_single"
    assert c.chain == ("jobs.entry", "jobs.helper_a", "jobs.helper_b", "sc_single")


def test_optional_missing_dependency_is_a_note_not_a_failure(probe_app):
    probe_app.write(
        {
            "jobs.opt": """
        def job():
            try:
                import not_installed_anywhere
            except ImportError:
                return None
    """
        }
    )
    v = probe_app.check("jobs.opt")["jobs.opt"]
    assert v.verdict == COMPATIBLE
    assert any("not_installed_anywhere" in n for n in v.notes)


def test_type_checking_imports_are_ignored(probe_app):
    probe_app.write(
        {
            "jobs.typed": """
        from typing import TYPE_CHECKING
        if TYPE_CHECKING:
            import sc_single
        def job(x: "sc_single"): return x
    """
        }
    )
    assert probe_app.check("jobs.typed")["jobs.typed"].verdict == COMPATIBLE


# -- the user's own bugs ------------------------------------------------------------------


def test_missing_module_is_an_error(probe_app):
    v = probe_app.check("no_such_module_xyz")["no_such_module_xyz"]
    assert v.verdict == ERROR
    assert "No module named 'no_such_module_xyz'" in v.reason


def test_syntax_error_is_an_error(probe_app):
    probe_app.write({"jobs.broken": "def job(:\n    pass\n"})
    v = probe_app.check("jobs.broken")["jobs.broken"]
    assert v.verdict == ERROR
    assert "SyntaxError" in v.reason


def test_missing_function_is_an_error(probe_app):
    probe_app.write({"jobs.nofunc": "def job(): pass\n"})
    v = probe_app.check("jobs.nofunc:other")["jobs.nofunc:other"]
    assert v.verdict == ERROR
    assert "no function 'other'" in v.reason


# -- the probe process --------------------------------------------------------------------


def test_each_candidate_gets_a_fresh_interpreter(probe_app):
    # the module counts its imports in a file: two targets importing it must each see
    # a first import, i.e. two interpreters, not one reused
    log = probe_app.root / "imports.log"
    probe_app.write(
        {
            "jobs.counter": f"open({str(log)!r}, 'a').write('x')\n",
            "jobs.one": "import jobs.counter\n",
            "jobs.two": "import jobs.counter\n",
        }
    )
    result = probe_app.check("jobs.one", "jobs.two", jobs=1)
    assert {v.verdict for v in result.values()} == {COMPATIBLE}
    assert log.read_text() == "xx"


def test_native_thread_pools_get_one_thread_unless_the_job_sizes_them(probe_app, monkeypatch):
    """A probe imports and never computes: thread pools a library starts at load time
    (OpenBLAS spins two threads ~0.1 s each) get one thread, and a size the job's own
    environment sets is kept."""
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    probe_app.write(
        {
            "jobs.threads": (
                "import os\n"
                "seen = (os.environ.get('OPENBLAS_NUM_THREADS'), os.environ.get('OMP_NUM_THREADS'))\n"
                "assert seen == ('1', '3'), seen\n"
            )
        }
    )
    v = probe_app.check("jobs.threads", cache=False)["jobs.threads"]
    assert v.verdict == COMPATIBLE, v.reason


def test_target_python_other_than_the_parent(probe_app):
    py311 = "/root/.pyenv/versions/3.11.7/bin/python3.11"
    import os

    if not os.path.exists(py311):
        pytest.skip("no Python 3.11 interpreter to probe")
    v = probe_app.check("json", python=py311)["json"]
    assert v.verdict == "unsupported"
    assert "3.11" in v.reason


def test_protocol_version_mismatch_is_the_targets_verdict_not_the_runs(monkeypatch, tmp_path):
    """A worker that answers in another protocol cannot be trusted: that target is
    reported as a probe failure, and the run goes on."""
    from subcompat import _transport

    monkeypatch.setattr(_transport, "PROTOCOL", 99)
    with probe.Prober(sys.executable, timeout=20) as prober:
        result = prober.probe("json")
    (trial,) = result.trials
    assert trial.status == "crash" and "protocol violation" in trial.error["msg"]


def test_probe_a_venv_without_subcompat_installed(probe_app, tmp_path):
    """The child is stdlib-only: it runs in any Python >= 3.13 venv."""
    import subprocess

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    first = probe_app.check("json", "sc_single", python=python)
    assert first["json"].verdict == COMPATIBLE
    assert first["sc_single"].verdict == INCOMPATIBLE  # PYTHONPATH still reaches the fixture site
    started = probe.STATS["children_started"]
    again = probe_app.check("json", "sc_single", python=python)
    assert all(v.cached for v in again.values())
    assert probe.STATS["children_started"] == started  # interpreter identity came from the cache


def test_deferred_import_of_a_soft_fallback_package_is_degraded(probe_app):
    probe_app.write({"jobs.later": "def job():\n    import sc_softpkg\n    return sc_softpkg.dumps(1)\n"})
    v = probe_app.check("jobs.later")["jobs.later"]
    assert v.verdict == DEGRADED
    assert [d.module for d in v.degraded] == ["sc_softpkg._speedups"]
    assert v.degraded[0].import_line == 2


def test_a_package_that_fails_in_a_sub_interpreter_costs_one_diagnosis(probe_app):
    """The modules inside a package whose ``__init__`` fails in a sub-interpreter build on
    its diagnosis: each still gets its own fresh sub-interpreter and its own main-interpreter
    import (forked on top of the package: a module broken everywhere is still an ``error``),
    and the verdicts are those each module gets probed on its own."""
    probe_app.write(
        {
            "pkgx.__init__": "import sc_single\n",
            "pkgx.a": "X = 1\n",
            "pkgx.b": "import pkgx.a\n",
            "pkgx.c": "import sc_multi_nogil\n",
            "pkgx.broken": "raise RuntimeError('broken everywhere')\n",
        }
    )
    targets = ["pkgx", "pkgx.a", "pkgx.b", "pkgx.c", "pkgx.broken"]
    before = probe.STATS["workers_forked"]
    together = probe_app.check(*targets, cache=False, jobs=1)
    forks_together = probe.STATS["workers_forked"] - before
    alone = {}
    before = probe.STATS["workers_forked"]
    for t in targets:
        alone.update(probe_app.check(t, cache=False, jobs=1))
    forks_alone = probe.STATS["workers_forked"] - before
    for t in targets:
        assert together[t].verdict == alone[t].verdict, t
        assert culprit_names(together[t]) == culprit_names(alone[t]), t
    assert together["pkgx.a"].verdict == INCOMPATIBLE
    assert culprit_names(together["pkgx.a"]) == ["sc_single"]
    assert culprit_names(together["pkgx.c"]) == ["sc_multi_nogil", "sc_single"]
    assert together["pkgx.broken"].verdict == ERROR
    assert forks_together < forks_alone


def test_a_heavy_package_is_imported_once_for_all_the_modules_inside_it(probe_app):
    """The modules of a failing package get their main-interpreter imports forked from a
    worker that imported their package once. A package inside it that takes long to
    import (here 0.6 s) gets a worker of its own; one that adds nothing to it
    (``tests``) does not, even when it was the first to wait for that worker's import.
    Each main import of ``heavy.sub`` is counted in a file: one for its own check, one
    for the worker its modules share."""
    log = probe_app.root / "sub-imports.log"
    probe_app.write(
        {
            "heavy.__init__": "import sc_single\n",
            "heavy.sub.__init__": f"import time\ntime.sleep(0.6)\nopen({str(log)!r}, 'a').write('s')\n",
            "heavy.sub.a": "X = 1\n",
            "heavy.sub.b": "Y = 2\n",
            "heavy.sub.tests.__init__": "",
            "heavy.sub.tests.t1": "import heavy.sub.a\n",
            "heavy.sub.tests.t2": "import heavy.sub.b\n",
        }
    )
    targets = ["heavy", "heavy.sub", "heavy.sub.tests", "heavy.sub.tests.t1", "heavy.sub.tests.t2"]
    result = probe_app.check(*targets, cache=False, jobs=1)
    assert {v.verdict for v in result.values()} == {INCOMPATIBLE}
    assert all(culprit_names(v) == ["sc_single"] for v in result.values())
    assert log.read_text() == "ss"
