"""The pytest plugin, through pytest's own pytester."""

from __future__ import annotations

import sys

import pytest

pytest_plugins = ["pytester"]


def test_plugin_is_inactive_unless_asked(pytester):
    pytester.makepyfile(test_x="def test_ok():\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert "subcompat::" not in result.stdout.str()


@pytest.mark.needs_subinterpreters
def test_one_item_per_job_failing_with_the_report(pytester, fixture_site, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(fixture_site))
    monkeypatch.syspath_prepend(str(fixture_site))
    monkeypatch.setenv("SUBCOMPAT_CACHE_DIR", str(pytester.path / ".cache"))
    pytester.makepyprojecttoml('[tool.subcompat]\njobs = ["jobs"]\n')
    pytester.mkpydir("jobs")
    pytester.path.joinpath("jobs", "good.py").write_text("import json\n")
    pytester.path.joinpath("jobs", "bad.py").write_text("import sc_single\n")
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess("--subcompat", "-v")
    result.assert_outcomes(passed=2, failed=1)
    out = result.stdout.str()
    assert "subcompat::jobs.good PASSED" in out and "subcompat::jobs.bad FAILED" in out
    assert "sc_single" in out and "single-phase init" in out


@pytest.mark.needs_subinterpreters
def test_ini_switch_activates(pytester, monkeypatch):
    monkeypatch.setenv("SUBCOMPAT_CACHE_DIR", str(pytester.path / ".cache"))
    pytester.makepyprojecttoml(
        '[tool.subcompat]\njobs = ["jobmod"]\n[tool.pytest.ini_options]\nsubcompat = true\n'
    )
    pytester.makepyfile(jobmod="import json\n")
    result = pytester.runpytest_subprocess("-v")
    result.assert_outcomes(passed=1)


def square(x):
    return x * x


def refuse():
    import sc_single  # noqa: F401


def raise_value():
    raise ValueError("bad value 7")


@pytest.mark.needs_subinterpreters
def test_run_in_subinterpreter_returns_and_reraises(run_in_subinterpreter, fixture_site, monkeypatch):
    monkeypatch.syspath_prepend(str(fixture_site))
    assert run_in_subinterpreter(square, 7) == 49
    with pytest.raises(ValueError, match="bad value 7") as err:
        run_in_subinterpreter(raise_value)
    assert any("in the sub-interpreter" in n for n in err.value.__notes__)
    with pytest.raises(ImportError, match="does not support loading in subinterpreters"):
        run_in_subinterpreter(refuse)


def test_helper_is_clear_on_old_pythons():
    from subcompat.pytest_plugin import SubinterpreterUnavailable, run_in_subinterpreter

    if sys.version_info >= (3, 13):
        pytest.skip("covered by test_run_in_subinterpreter_returns_and_reraises")
    with pytest.raises(SubinterpreterUnavailable, match="3.13"):
        run_in_subinterpreter(square, 2)
