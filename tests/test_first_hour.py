"""A newcomer's first hour (issue 15): where targets are imported from, what a run says
while it works, and errors that point at the fix. Every test runs the real CLI in a
child process, probing real modules in real sub-interpreters."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from _apps import write_app

import subcompat
from subcompat import cli, config

REPO = Path(subcompat.__file__).resolve().parent.parent
README = REPO / "README.md"


def run(*args: str, cwd: Path, pythonpath: str = "", **kw) -> subprocess.CompletedProcess[str]:
    """The CLI of this tree (not an installed copy), with ``pythonpath`` before it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (pythonpath, str(REPO)) if p)}
    env.update(kw.pop("env", {}))
    kw.setdefault("stdout", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, "-m", "subcompat", *args],
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        timeout=300,
        **kw,
    )


def verdicts(proc: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return {m["target"]: m for m in json.loads(proc.stdout)["modules"]}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project as a newcomer lays it out: pyproject.toml at the root, jobs in a package."""
    monkeypatch.setenv("SUBCOMPAT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "proj"
    write_app(root, {"app.jobs": "import json\n", "app.other": "import os\n\ndef main():\n    pass\n"})
    (root / "pyproject.toml").write_text('[project]\nname = "app"\n\n[tool.subcompat]\njobs = ["app.jobs"]\n')
    (root / "docs" / "deep").mkdir(parents=True)
    return root


# -- import root ---------------------------------------------------------------------


@pytest.mark.needs_subinterpreters
def test_run_from_a_subdirectory_imports_from_the_project_root(project):
    proc = run("check", "--format", "json", "--no-cache", cwd=project / "docs" / "deep")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc)["app.jobs"]["verdict"] == "compatible"
    assert f"importing from {project} (holds pyproject.toml; then the current directory)" in proc.stderr


@pytest.mark.needs_subinterpreters
def test_modules_beside_you_still_import_from_a_subdirectory(project):
    """What `make demo` does: `cd examples && subcompat check shop.jobs...` in a repository
    whose pyproject.toml is one level up."""
    write_app(project / "examples", {"shop.jobs.reports": "import json\n"})
    proc = run(
        "check", "shop.jobs.reports", "app.jobs", "--format", "json", "--no-cache", cwd=project / "examples"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {t: m["verdict"] for t, m in verdicts(proc).items()} == {
        "shop.jobs.reports": "compatible",
        "app.jobs": "compatible",
    }


@pytest.mark.needs_subinterpreters
def test_path_names_the_root(project, tmp_path):
    proc = run("check", "app.other", "--path", str(project), "--format", "json", "--no-cache", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc)["app.other"]["verdict"] == "compatible"
    assert f"importing from {project} (--path)" in proc.stderr


def test_path_that_is_not_a_directory_is_one_line(tmp_path):
    proc = run("check", "x", "--path", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"subcompat: error: --path {tmp_path / 'nope'}: not a directory"
    ]


@pytest.mark.needs_subinterpreters
def test_a_file_target_is_its_module(project):
    proc = run(
        "check", "../../app/jobs.py", "../../app/other.py:main", "--format", "json", "--no-cache",
        cwd=project / "docs" / "deep",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(verdicts(proc)) == {"app.jobs", "app.other:main"}
    assert "app/jobs.py is module app.jobs" in proc.stderr


@pytest.mark.needs_subinterpreters
def test_a_file_outside_the_root_is_imported_from_its_own_directory(project, tmp_path):
    write_app(tmp_path / "elsewhere" / "src", {"tools.nightly": "import json\n"})
    proc = run("check", str(tmp_path / "elsewhere/src/tools/nightly.py"), "--format", "json", "--no-cache",
               cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc)["tools.nightly"]["verdict"] == "compatible"


def test_a_missing_file_target_is_one_line(project):
    proc = run("check", "app/nothere.py", cwd=project)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith(f"subcompat: error: {project / 'app/nothere.py'}: no such file")


@pytest.mark.needs_subinterpreters
def test_an_unimportable_target_says_where_it_looked_and_where_it_is(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBCOMPAT_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "srclayout"
    write_app(root / "src", {"pkg.jobs": "import json\n"})
    (root / "pyproject.toml").write_text('[project]\nname = "pkg"\n')
    proc = run("check", "pkg.jobs", "--format", "json", "--no-cache", cwd=root)
    assert proc.returncode == 2
    reason = verdicts(proc)["pkg.jobs"]["reason"]
    assert "bug in the module" not in reason
    assert f"pkg.jobs is not importable (No module named 'pkg'); looked in {root}" in reason
    assert f"pass --path {root / 'src'}" in reason
    # and the fix it names works
    fixed = run("check", "pkg.jobs", "--path", str(root / "src"), "--format", "json", "--no-cache", cwd=root)
    assert verdicts(fixed)["pkg.jobs"]["verdict"] == "compatible"


@pytest.mark.needs_subinterpreters
def test_a_broken_module_is_still_a_bug_in_the_module(project):
    write_app(project, {"app.bad": "import not_a_module_anywhere_15\n"})
    proc = run("check", "app.bad", "--format", "json", "--no-cache", cwd=project)
    assert proc.returncode == 2
    assert "is not importable" not in verdicts(proc)["app.bad"]["reason"]


# -- target names --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ñame", "app.jobs", "app.jobs:run", "_x.y_2:f", "app.jobs:Jobs.run"])
def test_valid_names(name):
    assert config.is_target_name(name)


@pytest.mark.parametrize(
    "name", ["app.jobs\n", "app..jobs", "1app", "app.jobs:", "a:b:c", "a-b", "", "a:B.", "a:.f"]
)
def test_invalid_names(name):
    assert not config.is_target_name(name)


def test_a_trailing_newline_is_a_usage_error(tmp_path):
    proc = run("check", "app.jobs\n", cwd=tmp_path)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "is not a module name" in proc.stderr


@pytest.mark.needs_subinterpreters
def test_a_unicode_module_name_is_probed(project):
    write_app(project, {"app.ñame": "import json\n"})
    proc = run("check", "app.ñame", "--format", "json", "--no-cache", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc)["app.ñame"]["verdict"] == "compatible"


# -- progress --------------------------------------------------------------------------


def _stderr_on_a_terminal(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a real pseudo-terminal and stdout on a pipe."""
    import pty

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "subcompat", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


@pytest.mark.needs_subinterpreters
def test_progress_on_a_terminal_and_quiet_in_a_pipe(project):
    args = ("check", "app.jobs", "app.other", "--no-cache", "--jobs", "1", "--format", "json")
    code, out, err = _stderr_on_a_terminal(*args, cwd=project)
    assert code == 0, err
    assert "[0/2] probing app.jobs" in err and "[1/2] probing app.other" in err and "[2/2] done" in err
    assert err.rstrip(" \r\n").endswith("\x1b[K")  # the line is erased at the end
    assert json.loads(out)["modules"]  # stdout untouched
    piped = run(*args, cwd=project)
    assert piped.returncode == 0 and "probing" not in piped.stderr and "\r" not in piped.stderr


@pytest.mark.needs_subinterpreters
def test_progress_never_keeps_a_terminal_quiet(project):
    code, _, err = _stderr_on_a_terminal(
        "check", "app.jobs", "--no-cache", "--progress", "never", cwd=project
    )
    assert code == 0 and "probing" not in err


# -- output to a closed pipe -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("cache", "show", "--format", "json"),
        ("cache", "show"),
        ("check", "json", "--format", "json", "--no-cache"),
    ],
)
def test_a_reader_that_went_away_is_no_traceback(args, tmp_path):
    read, write = os.pipe()
    os.close(read)  # `| head` that has already exited: every write fails with EPIPE
    try:
        proc = run(*args, cwd=tmp_path, stdout=write, env={"SUBCOMPAT_CACHE_DIR": str(tmp_path / "c")})
    finally:
        os.close(write)
    assert proc.returncode == cli.EXIT_BROKEN_PIPE  # 141, as a shell reports a SIGPIPE death
    assert proc.stderr == ""


def test_cache_show_creates_nothing(tmp_path):
    cache_dir = tmp_path / "c"
    for args in (("cache", "show"), ("cache", "show", "--format", "json"), ("cache", "clear")):
        proc = run(*args, cwd=tmp_path, env={"SUBCOMPAT_CACHE_DIR": str(cache_dir)})
        assert proc.returncode == 0, proc.stderr
    assert not cache_dir.exists()


# -- a missing dependency is a broken deploy ------------------------------------------------


@pytest.mark.needs_subinterpreters
def test_a_missing_deferred_dependency_warns_and_fails_strict(project):
    optional = (
        "def run():\n    try:\n        import not_installed_opt_15\n"
        "    except ModuleNotFoundError:\n        pass\n"
    )
    write_app(project, {"app.sender": "def run():\n    import not_installed_dep_15\n    return 1\n"})
    write_app(project, {"app.optional": optional})
    proc = run("check", "app.sender", "--format", "json", cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    entry = verdicts(proc)["app.sender"]
    assert entry["verdict"] == "compatible"
    assert len(entry["warnings"]) == 1 and "missing dependency" in entry["warnings"][0]
    assert "not_installed_dep_15" in entry["warnings"][0]
    strict = run("check", "app.sender", "--strict", cwd=project)  # from the cache: same answer
    assert strict.returncode == 1
    assert "warning: missing dependency" in strict.stdout and "cached" in strict.stdout
    optional = run("check", "app.optional", "--format", "json", "--strict", cwd=project)
    assert optional.returncode == 0, optional.stdout + optional.stderr  # it copes: not a broken deploy
    entry = verdicts(optional)["app.optional"]
    assert entry["warnings"] == [] and any("not_installed_opt_15" in n for n in entry["notes"])
    github = run("check", "app.sender", "--format", "github", cwd=project)
    assert github.stdout.startswith("::warning title=subcompat%3A app.sender::missing dependency")


# -- config that cannot act --------------------------------------------------------------


@pytest.mark.needs_subinterpreters
def test_assume_incompatible_on_a_pure_python_module_warns(project):
    (project / "pyproject.toml").write_text(
        '[tool.subcompat]\njobs = ["app.jobs"]\n'
        'assume_incompatible = [{module = "json.decoder", reason = "slow"},\n'
        '                       {module = "app.jobs", reason = "x"}]\n'
    )
    proc = run("check", "--format", "json", "--no-cache", cwd=project)
    assert proc.returncode == 1  # the rule on the job module itself acts
    assert verdicts(proc)["app.jobs"]["verdict"] == "incompatible"
    warned = [line for line in proc.stderr.splitlines() if "warning" in line]
    assert warned == [
        "subcompat: warning: assume_incompatible: 'json.decoder' is pure Python, so the rule matched "
        "nothing: it applies to extension modules and job modules; "
        "name the job module that imports it instead"
    ]


# -- unsupported Pythons ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "says"),
    [
        ("3.12", "C API (PEP 684) but no supported Python API"),
        ("3.11", "(C API in 3.12, Python module in 3.13)"),
    ],
)
def test_unsupported_python_says_what_is_missing(version, says, tmp_path):
    from test_cli import find_python

    python = find_python(version)
    if python is None:
        pytest.skip(f"no Python {version} to probe")
    proc = run("check", "json", "--python", python, "--format", "json", "--no-cache", cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert says in verdicts(proc)["json"]["reason"]


# -- help and README ---------------------------------------------------------------------------


def _parsers():
    import argparse

    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, subs.choices


def test_every_option_has_help_text():
    parser, commands = _parsers()
    for name, sub in [("", parser), *commands.items()]:
        for action in sub._actions:
            if action.dest in ("help", "command"):
                continue
            assert action.help, f"subcompat {name} {action.option_strings or action.dest}: no help text"


def test_readme_synopsis_lists_every_command_and_option():
    text = README.read_text(encoding="utf-8")
    synopsis = re.search(r"```\n(subcompat check .*?)```", text, re.S)
    assert synopsis, "no synopsis block in README.md"
    block = synopsis.group(1)
    parser, commands = _parsers()
    for name, sub in commands.items():
        assert re.search(rf"^subcompat {name}\b", block, re.M), f"README synopsis lacks `subcompat {name}`"
        for action in sub._actions:
            for option in action.option_strings:
                if option.startswith("--") and option != "--help":
                    assert option in block, f"README synopsis lacks {option} of `subcompat {name}`"
    assert "--version" in block
