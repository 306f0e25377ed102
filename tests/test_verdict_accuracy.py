"""Verdicts that rest on more than "did the import succeed": names that exist only with an
accelerator, extensions that misbehave with two live interpreters, accelerators a package
never tries in a sub-interpreter."""

from __future__ import annotations

import importlib
import os

import pytest
from _req import require_or_skip

from subcompat.verdict import COMPATIBLE, DEGRADED, INCOMPATIBLE

pytestmark = pytest.mark.needs_subinterpreters


def only_culprit(v):
    assert len(v.culprits) == 1, v.culprits
    return v.culprits[0]


# -- C-only names (sc_softpkg defines CFast only when its accelerator loads) ---------------


@pytest.mark.parametrize(
    ("source", "line", "use"),
    [
        ("import sc_softpkg\n\nFAST = sc_softpkg.CFast\n", 3, "sc_softpkg.CFast"),
        ("from sc_softpkg import CFast\n", 1, "from sc_softpkg import CFast"),
        ("import sc_softpkg\n\n\ndef job():\n    return sc_softpkg.CFast.answer()\n", 5, "sc_softpkg.CFast"),
        (
            "def job():\n    from sc_softpkg import CFast\n    return CFast\n",
            2,
            "from sc_softpkg import CFast",
        ),
        ("import sc_softpkg as sp\n\n\ndef job():\n    return sp.CFast\n", 5, "sc_softpkg.CFast"),
    ],
    ids=["module-attribute", "module-from-import", "body-attribute", "body-from-import", "alias"],
)
def test_c_only_name_is_incompatible_naming_the_name_and_the_accelerator(probe_app, source, line, use):
    probe_app.write({"jobs.fast": source})
    v = probe_app.check("jobs.fast")["jobs.fast"]
    assert v.verdict == INCOMPATIBLE, v.reason
    c = only_culprit(v)
    assert c.module == "sc_softpkg.CFast"
    assert c.kind == "c-only-name"
    assert c.accelerator == "sc_softpkg._speedups"
    assert c.import_file and c.import_file.endswith("jobs/fast.py") and c.import_line == line
    assert (c.distribution, c.version) == ("sc-softpkg", "1.0")
    assert f"`{use}`" in c.reason and "single-phase init" in c.reason
    assert [d.module for d in v.degraded] == ["sc_softpkg._speedups"]


def test_importing_the_package_without_its_c_only_names_stays_degraded(probe_app):
    probe_app.write({"jobs.plain": "import sc_softpkg\n\n\ndef job(x):\n    return sc_softpkg.dumps(x)\n"})
    v = probe_app.check("jobs.plain")["jobs.plain"]
    assert v.verdict == DEGRADED, v.reason
    assert v.culprits == ()
    assert [d.module for d in v.degraded] == ["sc_softpkg._speedups"]


def test_feature_checked_c_only_names_stay_degraded(probe_app):
    """A name used under ``try``/``except ImportError``, ``hasattr`` or a flag derived from
    it works in a sub-interpreter: the package's fallback runs."""
    probe_app.write(
        {
            "jobs.careful": """
        import sc_softpkg

        try:
            from sc_softpkg import CFast as Impl
        except ImportError:
            Impl = None
        HAS_C = hasattr(sc_softpkg, "CFast")


        def job():
            if sc_softpkg.HAS_SPEEDUPS:
                return sc_softpkg.CFast.answer()
            if HAS_C:
                return sc_softpkg.CFast
            return sc_softpkg.CFast if hasattr(sc_softpkg, "CFast") else None
    """
        }
    )
    v = probe_app.check("jobs.careful")["jobs.careful"]
    assert v.verdict == DEGRADED, v.reason
    assert v.culprits == ()


def test_a_name_missing_in_every_interpreter_is_not_a_sub_interpreter_problem(probe_app):
    probe_app.write({"jobs.typo": "import sc_softpkg\n\n\ndef job():\n    return sc_softpkg.no_such_name\n"})
    v = probe_app.check("jobs.typo")["jobs.typo"]
    assert v.verdict == DEGRADED, v.reason
    assert v.culprits == ()


def real(name: str):
    """A small real package from the ``test`` extra: required in CI."""
    try:
        return importlib.import_module(name)
    except ImportError:
        require_or_skip(False, f"{name} is not installed in this test env (pip install -e '.[test]')")


def test_pyyaml_c_loader_by_name(probe_app):
    """The case from the field: PyYAML skips its libyaml binding in a sub-interpreter,
    so ``yaml.CSafeLoader`` is gone there."""
    yaml = real("yaml")
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("this PyYAML was built without libyaml: CSafeLoader is missing everywhere")
    probe_app.write(
        {
            "jobs.conf": "import yaml\n\n\ndef job(d):\n    return yaml.load(d, Loader=yaml.CSafeLoader)\n",
            "jobs.plainyaml": "import yaml\n\n\ndef job(doc):\n    return yaml.safe_load(doc)\n",
        }
    )
    found = probe_app.check("jobs.conf", "jobs.plainyaml")
    c = only_culprit(found["jobs.conf"])
    assert found["jobs.conf"].verdict == INCOMPATIBLE
    assert (c.module, c.accelerator, c.import_line) == ("yaml.CSafeLoader", "yaml._yaml", 5)
    assert found["jobs.plainyaml"].verdict == DEGRADED


# -- two live interpreters at once (sc_shared keeps a process-wide dict) ---------------------


def test_process_wide_state_shared_by_two_live_interpreters_is_incompatible(probe_app):
    from subcompat.probe import Prober

    probe_app.write({"jobs.shared": "import sc_shared\n\n\ndef job():\n    sc_shared.remember('k', 1)\n"})
    with Prober(timeout=30, jobs=1) as prober:
        result = prober.probe("jobs.shared")
    (job,) = [t for t in result.trials if t.kind == "job"]
    assert (job.status, job.failures) == ("ok", ())  # alone in one interpreter it loads fine
    assert "sc_shared" in result.loaded
    v = probe_app.check("jobs.shared")["jobs.shared"]
    assert v.verdict == INCOMPATIBLE, v.reason
    c = only_culprit(v)
    assert (c.module, c.kind, c.distribution) == ("sc_shared", "shared-state", None)
    assert "shares process-wide state between two live interpreters" in c.reason
    assert "module attribute cache is one object in both" in c.reason
    assert c.import_file.endswith("jobs/shared.py") and c.import_line == 1
    (ext,) = [e for e in v.extensions if e.module == "sc_shared"]
    assert ext.verdict == INCOMPATIBLE and "two live interpreters" in ext.message


def test_an_extension_that_crashes_a_second_live_interpreter_is_incompatible(probe_app):
    probe_app.write({"jobs.second": "import sc_second_crash\n"})
    v = probe_app.check("jobs.second")["jobs.second"]
    assert v.verdict == INCOMPATIBLE, v.reason
    c = only_culprit(v)
    assert (c.module, c.kind) == ("sc_second_crash", "two-interpreters")
    assert "crashed the process when two live interpreters used it at once" in c.reason
    assert "SIGSEGV" in c.reason


def test_clean_multi_phase_extension_passes_the_two_interpreter_check(probe_app):
    v = probe_app.check("sc_multi_ok")["sc_multi_ok"]
    assert v.verdict == COMPATIBLE, v.reason
    (ext,) = v.extensions
    assert ext.verdict == COMPATIBLE and "two live ones at once" in ext.reason


def test_two_interpreter_results_are_memoised_and_cached_per_extension_file(probe_app):
    """Within a run one check per file; across runs the extension cache answers."""
    from subcompat import probe

    probe_app.write(
        {
            "jobs.s1": "import sc_shared\n",
            "jobs.s2": "import sc_shared\nimport sc_multi_ok\n",
            "jobs.s3": "import sc_shared\nimport sc_multi_ok\nVALUE = 3\n",
        }
    )
    before = probe.STATS["pairs"]
    first = probe_app.check("jobs.s1", "jobs.s2", jobs=1)
    assert probe.STATS["pairs"] - before == 3  # standing worker: s1, s2 (sc_multi_ok); sc_shared again alone
    later = probe.STATS["pairs"]
    again = probe_app.check("jobs.s3")["jobs.s3"]
    assert probe.STATS["pairs"] == later  # both extension files answered from the cache
    for v in (*first.values(), again):
        assert v.verdict == INCOMPATIBLE and [c.module for c in v.culprits] == ["sc_shared"]


def test_the_shared_state_fixture_really_leaks_between_interpreters(fixture_site):
    """What the probe infers from object identity, shown directly: what one interpreter
    stores, the other sees."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(fixture_site)!r})
        import _interpreters as I
        a, b = (I.create(I.new_config("isolated")) for _ in range(2))
        I.exec(a, "import sc_shared; sc_shared.remember('from_a', 1)")
        I.exec(b, "import sc_shared; assert 'from_a' in sc_shared.cache, sc_shared.cache")
        print("leaked")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "leaked", out.stderr


# -- accelerators a package never tries in a sub-interpreter ------------------------------


@pytest.mark.parametrize(
    "source",
    ["import sc_careful\n", "def job():\n    import sc_careful\n    return sc_careful.dumps(1)\n"],
    ids=["at-import", "deferred"],
)
def test_an_accelerator_the_package_never_tries_is_degraded_and_named(probe_app, source):
    """sc_careful asks ``_interpreters`` where it runs and skips its accelerator in a
    sub-interpreter without trying it: no load fails, only a main interpreter shows it."""
    probe_app.write({"jobs.careful": source})
    v = probe_app.check("jobs.careful")["jobs.careful"]
    assert v.verdict == DEGRADED, v.reason
    (d,) = v.degraded
    assert (d.module, d.kind, d.distribution) == ("sc_careful._speedups", "single-phase", "sc-careful")
    assert "never tried in the sub-interpreter" in d.reason
    assert d.chain[-2:] == ("sc_careful", "sc_careful._speedups")


def test_a_wholesale_fallback_names_the_accelerators_it_never_tried(probe_app):
    """sc_wholesale gives up after _first fails: _second, which would load, is skipped too."""
    v = probe_app.check("sc_wholesale")["sc_wholesale"]
    assert v.verdict == DEGRADED, v.reason
    first, second = v.degraded
    assert (first.module, first.kind) == ("sc_wholesale._first", "single-phase")
    assert (second.module, second.kind) == ("sc_wholesale._second", "never-tried")
    assert "only the package keeps it out" in second.reason
    # _second is fine on its own: nothing about the file is cached as incompatible
    assert [e.module for e in v.extensions if e.verdict == INCOMPATIBLE] == ["sc_wholesale._first"]


def test_a_failing_package_names_each_extension_that_fails_as_a_culprit(probe_app):
    """sc_strict's import dies at _first; _second, which a main interpreter loads with it
    and which fails on its own too, is a culprit as well, not a pure-Python fallback
    (h5py on 3.13: 1 culprit and 24 extensions reported as "falls back")."""
    v = probe_app.check("sc_strict")["sc_strict"]
    assert v.verdict == INCOMPATIBLE, v.reason
    assert [(c.module, c.kind) for c in v.culprits] == [
        ("sc_strict._first", "single-phase"),
        ("sc_strict._second", "single-phase"),
    ]
    assert v.degraded == ()


def test_a_package_its_importer_gives_up_on_names_every_accelerator(probe_app):
    """sc_brittle's own import fails on _first and the job swallows that: the package is
    not in the sub-interpreter at all, yet _second, which it would load, is named too."""
    probe_app.write(
        {"jobs.soft": "try:\n    import sc_brittle\nexcept ImportError:\n    sc_brittle = None\n"}
    )
    v = probe_app.check("jobs.soft")["jobs.soft"]
    assert v.verdict == DEGRADED, v.reason
    assert [(d.module, d.kind) for d in v.degraded] == [
        ("sc_brittle._first", "single-phase"),
        ("sc_brittle._second", "never-tried"),
    ]
    assert v.degraded[1].chain[-2:] == ("sc_brittle", "sc_brittle._second")


@pytest.mark.parametrize(
    ("module", "asked"),
    [("sc_careful", ["sc_careful"]), ("sc_softpkg", []), ("sc_optional", []), ("sc_multi_ok", [])],
)
def test_a_main_interpreter_is_asked_only_about_packages_with_untried_extension_files(
    probe_app, module, asked
):
    """The differential imports a package in a main interpreter only when it keeps
    extension files in its own directory that the sub-interpreter neither loaded nor
    tried (sc_optional's lies in a subpackage nobody imports); never job code, and no
    main pass of the job for it."""
    from subcompat.probe import Prober

    with Prober(timeout=30, jobs=1) as prober:
        result = prober.probe(module)
        assert sorted(prober._sampling._loads_memo) == asked
    assert [t for t in result.trials if t.kind == "main"] == []


def test_a_package_that_hangs_a_main_interpreter_costs_the_budget_not_the_verdict(probe_app):
    """sc_mainhang loads fine in a sub-interpreter and hangs in a main one: asking the
    sampler about its untried extension file ends with the budget, and says nothing."""
    import time

    started = time.monotonic()
    v = probe_app.check("sc_mainhang", timeout=3)["sc_mainhang"]
    assert time.monotonic() - started < 3 + 5
    assert v.verdict == COMPATIBLE, v.reason


def test_requests_names_both_charset_normalizer_accelerators(probe_app):
    """requests swallows charset_normalizer's failed import (its first compiled module,
    ``cd``); ``md``, which the same import loads in a main interpreter, is named too."""
    real("requests")
    cn = real("charset_normalizer")
    files = os.listdir(os.path.dirname(cn.__file__))
    if not any(n.startswith("md.") and not n.endswith(".py") for n in files):
        pytest.skip("this charset_normalizer wheel is pure Python")
    probe_app.write({"jobs.web": "import requests\n\n\ndef job(url):\n    return requests.get(url)\n"})
    v = probe_app.check("jobs.web")["jobs.web"]
    assert v.verdict == DEGRADED, v.reason
    assert v.culprits == ()
    assert [d.module for d in v.degraded] == ["charset_normalizer.cd", "charset_normalizer.md"]
    assert all(d.distribution == "charset-normalizer" for d in v.degraded)
    assert v.degraded[1].chain[:2] == ("jobs.web", "requests")
