"""subcompat's per-module verdicts against the ground truth of ``benchmarks/ground_truth.py``
(a script that never imports subcompat: each module imported in a fresh isolated
sub-interpreter and in a main interpreter).

Real wheels (flask with its optional dependencies absent, markupsafe and multidict with
their C accelerators), checked installed and copied into a project as first-party source
(where the deferred-import analysis applies), plus a first-party app over the compiled
fixtures for the cases those wheels lack (a guarded and an unguarded single-phase
extension, another platform's module, a deferred import of a module broken everywhere).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from _apps import write_app
from _req import require_or_skip

pytestmark = pytest.mark.needs_subinterpreters

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import ground_truth  # noqa: E402

PACKAGES = ("flask", "markupsafe", "multidict")

FIXTURE_APP = {
    "gtapp": """
        def __getattr__(name):
            try:
                from gtapp import _absent_dep  # needs a module nobody installed
            except ImportError:
                return None
            raise AttributeError(name)
    """,
    "gtapp._absent_dep": "import no_such_module_gt\n",
    "gtapp.soft": """
        try:
            import sc_single
        except ImportError:
            sc_single = None

        def run():
            try:
                import sc_single as again
            except ImportError:
                return None
            return again
    """,
    "gtapp.hard": "import sc_single\n",
    "gtapp.win": """
        import sys

        def console():
            if sys.platform == "win32":
                import winonly_console_gt
                return winonly_console_gt
            return None
    """,
    "gtapp.uses_bug": """
        def run():
            from gtapp import bug
            return bug
    """,
    "gtapp.bug": 'raise RuntimeError("broken in every interpreter")\n',
}


def _score(targets, ground, **check_kw):
    from subcompat.check import check

    report = check(list(targets), cache=None, timeout=60, jobs=2, **check_kw)
    entries = [
        {"target": v.target, "verdict": v.verdict, "culprits": [c.to_json() for c in v.culprits]}
        for v in report.verdicts
    ]
    return ground_truth.score({"modules": entries}, ground)


def _assert_sound(score, what):
    assert score["unsafe"] == [], f"{what}: compatible where the sub-interpreter import fails"
    assert score["error_where_main_works"] == [], f"{what}: error where a main interpreter imports it"
    assert score["guarded_only_incompatible"] == [], f"{what}: incompatible only for a guarded import"


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    """The packages copied into a project, and the ground truth taken there (the files
    are the installed ones byte for byte, so it is the installed packages' truth too)."""
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    require_or_skip(not missing, f"{missing} not installed in this test env (pip install -e '.[test]')")
    project = tmp_path_factory.mktemp("project")
    for package in PACKAGES:
        where = os.path.dirname(importlib.util.find_spec(package).origin)
        shutil.copytree(where, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    ground = ground_truth.truth(PACKAGES, path=str(project), timeout=60)
    assert len(ground["modules"]) >= 25 and ground["modules"]["flask"]["sub"] == "ok"
    return project, ground


def test_installed_packages_agree_with_the_ground_truth(copies):
    _, ground = copies
    score = _score(ground["modules"], ground)
    _assert_sound(score, "installed")
    assert score["agree"] == score["total"], score["disagree"]


def test_first_party_copies_agree_with_the_ground_truth(copies, monkeypatch):
    project, ground = copies
    monkeypatch.chdir(project)
    flask_file = subprocess.run(
        [sys.executable, "-c", "import flask; print(flask.__file__)"],
        capture_output=True,
        text=True,
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project)},
    ).stdout.strip()
    assert flask_file.startswith(str(project))  # the copy, not site-packages
    monkeypatch.setenv("PYTHONPATH", str(project))
    score = _score(ground["modules"], ground, sys_path=[str(project), *sys.path])
    _assert_sound(score, "first-party copies")
    assert score["agree"] >= 0.97 * score["total"], score["disagree"]


def test_a_fixture_app_agrees_with_the_ground_truth(fixture_site, tmp_path, monkeypatch):
    project = write_app(tmp_path / "app", FIXTURE_APP)
    monkeypatch.chdir(project)
    path = os.pathsep.join([str(project), str(fixture_site)])
    monkeypatch.setenv("PYTHONPATH", path)
    ground = ground_truth.truth(["gtapp"], path=path, timeout=60)
    rows = ground["modules"]
    assert rows["gtapp.hard"]["sub"] != "ok" and rows["gtapp.hard"]["main"] == "ok"
    assert rows["gtapp.bug"]["main"].startswith("RuntimeError")
    score = _score(rows, ground, sys_path=[str(project), str(fixture_site), *sys.path])
    _assert_sound(score, "fixture app")
    assert score["agree"] == score["total"], score["disagree"]
