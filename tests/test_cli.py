"""The CLI contract: exit codes, JSON schema, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from subcompat.report import parse_report


def find_python(version: str) -> str | None:
    """A real interpreter (not a pyenv shim) on PATH or under pyenv."""
    import glob
    import shutil

    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if "shims" not in p)
    found = shutil.which(f"python{version}", path=path)
    if found:
        return found
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = sorted(glob.glob(f"{root}/versions/{version}*/bin/python{version}"))
    return candidates[-1] if candidates else None


PY311 = find_python("3.11") or "/nonexistent/python3.11"


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "subcompat", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("subcompat: error: "), proc.stderr


@pytest.fixture
def cli_app(probe_app):
    probe_app.write(
        {
            "jobs.good": "import json\n",
            "jobs.soft": "import sc_softpkg\n",
            "jobs.bad": "import sc_single\n",
            "jobs.broken": "def f(:\n",
        }
    )
    env = {"PYTHONPATH": os.environ["PYTHONPATH"], "SUBCOMPAT_CACHE_DIR": str(probe_app.cache_dir)}
    return lambda *args: run_cli(*args, cwd=probe_app.root, env=env)


@pytest.mark.needs_subinterpreters
class TestExitCodes:
    def test_compatible_is_0(self, cli_app):
        assert cli_app("check", "jobs.good").returncode == 0

    def test_degraded_is_0_unless_strict(self, cli_app):
        assert cli_app("check", "jobs.soft").returncode == 0
        assert cli_app("check", "jobs.soft", "--strict").returncode == 1

    def test_incompatible_is_1(self, cli_app):
        proc = cli_app("check", "jobs.good", "jobs.bad")
        assert proc.returncode == 1
        assert "sc_single" in proc.stdout

    def test_error_verdict_is_2_with_its_reason(self, cli_app):
        proc = cli_app("check", "jobs.broken")
        assert proc.returncode == 2
        assert "SyntaxError" in proc.stdout and "Traceback" not in proc.stdout + proc.stderr

    def test_unknown_module_is_2(self, cli_app):
        proc = cli_app("check", "nowhere_to_be_found")
        assert proc.returncode == 2
        assert "No module named 'nowhere_to_be_found'" in proc.stdout

    def test_unsupported_python_is_3(self, cli_app):
        if not os.path.exists(PY311):
            pytest.skip("no Python 3.11 to probe")
        proc = cli_app("check", "json", "--python", PY311)
        assert proc.returncode == 3, proc.stderr
        assert "unsupported" in proc.stdout


@pytest.mark.needs_subinterpreters
def test_json_schema(cli_app):
    proc = cli_app("check", "jobs.good", "jobs.soft", "jobs.bad", "--format", "json", "--no-cache")
    assert proc.returncode == 1
    raw = json.loads(proc.stdout)
    assert raw["schema"] == 2
    # a culprit is written once, in the report's table; each module refers to it by index
    assert all(
        isinstance(m["culprits"], str) and isinstance(m["files"], str) for m in raw["modules"]
    )  # runs: "0-3,7"
    data = parse_report(raw)  # each module with its own copies back
    assert data["python"].startswith("3.")
    by_target = {m["target"]: m for m in data["modules"]}
    assert [m["target"] for m in data["modules"]] == ["jobs.good", "jobs.soft", "jobs.bad"]
    for m in data["modules"]:
        assert {"target", "verdict", "culprits", "degraded", "route", "elapsed_s"} <= set(m)
        assert m["route"] in ("subinterpreter", "fallback")
        for c in m["culprits"] + m["degraded"]:
            assert {"module", "file", "distribution", "version", "reason"} <= set(c)
    assert by_target["jobs.good"]["route"] == "subinterpreter"
    assert by_target["jobs.soft"]["verdict"] == "degraded"
    assert by_target["jobs.soft"]["route"] == "fallback"
    assert by_target["jobs.bad"]["culprits"][0]["module"] == "sc_single"


def test_usage_errors_are_one_line(tmp_path):
    for args in (
        ("check",),
        ("check", "not-a-module"),
        ("check", "x", "--timeout", "-1"),
        ("check", "x", "--format", "yaml"),
        ("frobnicate",),
    ):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stderr)
        assert_one_line_error(proc)


def test_bad_interpreter_path_is_one_line(tmp_path):
    proc = run_cli("check", "json", "--python", str(tmp_path / "nope" / "python"), cwd=tmp_path)
    assert proc.returncode == 2
    assert_one_line_error(proc)


def test_unsupported_on_this_python(tmp_path):
    """On Python < 3.13 the toolkit installs and reports 'unsupported' cleanly."""
    if sys.version_info >= (3, 13):
        pytest.skip("this interpreter has sub-interpreters; covered by TestExitCodes")
    proc = run_cli(
        "check", "json", "--format", "json", cwd=tmp_path, env={"SUBCOMPAT_CACHE_DIR": str(tmp_path / "c")}
    )
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["modules"][0]["verdict"] == "unsupported"
    assert data["modules"][0]["route"] == "fallback"


def test_cache_show_and_clear(tmp_path):
    env = {"SUBCOMPAT_CACHE_DIR": str(tmp_path / "c")}
    show = run_cli("cache", "show", "--format", "json", cwd=tmp_path, env=env)
    assert show.returncode == 0 and json.loads(show.stdout)["jobs"] == []
    clear = run_cli("cache", "clear", cwd=tmp_path, env=env)
    assert clear.returncode == 0 and "cleared 0" in clear.stdout


def test_module_entry_point_and_version(tmp_path):
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("subcompat ")


def test_older_parent_probes_a_313_target(tmp_path):
    """The parent may be any Python >= 3.11; the probe runs under the target."""
    from _req import require_or_skip

    target = find_python("3.13")
    require_or_skip(target, "no python3.13 on PATH to probe from this interpreter")
    (tmp_path / "jobmod.py").write_text("import json\n")
    proc = run_cli("check", "jobmod", "--python", target, "--format", "json", "--no-cache", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["python"].startswith("3.13") and data["modules"][0]["verdict"] == "compatible"


@pytest.mark.needs_subinterpreters
def test_a_package_target_is_every_module_in_it(probe_app):
    """`check pkg` answers for each job module of the package, not for its __init__."""
    probe_app.write(
        {
            "tasks.__init__": "",
            "tasks.a": "import json\n",
            "tasks.b": "import sc_single\n",
            "tasks.sub.__init__": "",
            "tasks.sub.c": "import json\n",
        }
    )
    env = {"PYTHONPATH": os.environ["PYTHONPATH"], "SUBCOMPAT_CACHE_DIR": str(probe_app.cache_dir)}
    proc = run_cli("check", "tasks", "tasks.a:run_me", "--format", "json", cwd=probe_app.root, env=env)
    assert proc.returncode == 2, proc.stderr  # an error verdict (no run_me) wins over incompatible
    verdicts = {m["target"]: m["verdict"] for m in json.loads(proc.stdout)["modules"]}
    assert verdicts == {
        "tasks": "compatible",
        "tasks.a": "compatible",
        "tasks.b": "incompatible",
        "tasks.sub": "compatible",
        "tasks.sub.c": "compatible",
        "tasks.a:run_me": "error",
    }
