"""A real project and a busy CI: what an ordinary project (not an attacker) does to the probe.

Each class runs the real CLI (started as the ``subcompat`` command is, capped, watched by ``_hostile``):
slow imports on a loaded machine, project files named like stdlib modules, missing
targets by the hundred, files that change during a check, inputs that are not regular
files, an ASCII stdout, and jobs that damage the probe's scratch, flood their output,
stop or kill their zygote. The contract of ``_hostile.contract_problems`` holds in each.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from _hostile import (
    AS_CAP,
    MEMORY_MIB,
    NEIGHBOURS,
    PRELUDE,
    ROOT,
    contract_problems,
    new_run_dirs,
    run_env,
    run_started,
    verdict_problems,
    write_hostile_app,
)
from _hostile import _Drain as Drain
from _req import require_or_skip

pytestmark = pytest.mark.needs_subinterpreters


@pytest.fixture(autouse=True)
def _linux_tools():
    require_or_skip(sys.platform == "linux" and os.path.isdir("/proc"), "needs Linux /proc")
    require_or_skip(shutil.which("prlimit"), "needs prlimit (util-linux) to cap each run")
    require_or_skip(hasattr(os, "pidfd_open"), "needs os.pidfd_open")


#: the ``subcompat`` console script's start: its own directory, not the project's, is first
#: on its path (``python -m`` would put the project root there; on 3.14 CPython's runpy then
#: imports a root ``types.py`` before any subcompat code runs)
SCRIPT_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from subcompat.cli import main; sys.exit(main())"
)


def _cli(args, *, cwd, env):
    """``subcompat ARGS`` as the installed command runs it, in the project root."""
    proc = subprocess.Popen(
        ["prlimit", f"--as={AS_CAP}", sys.executable, "-P", "-c", SCRIPT_BOOT, str(ROOT), *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    out, err = Drain(proc.stdout), Drain(proc.stderr)
    out.start()
    err.start()
    return proc, out, err


def run(app, args, *, base, timeout=4.0, env_extra=None, json_format=True):
    """One capped CLI run in ``app``; a ``_hostile.Run``."""
    marker, tmpdir = new_run_dirs(base)
    empty = base / "pythonpath"
    empty.mkdir(exist_ok=True)
    env = run_env(marker=marker, tmpdir=tmpdir, pythonpath=[empty], extra=env_extra)
    args = list(args)
    if args and args[0] == "check":
        args += ["--timeout", f"{timeout:g}", "--memory", str(MEMORY_MIB)]
        if json_format:
            args += ["--format", "json"]
        if "--cache-dir" not in args:
            args.append("--no-cache")
    return run_started(_cli, args, app=app, env=env, marker=marker, tmpdir=tmpdir, timeout=timeout)


def _clean(problems, what, r):
    assert not problems, "\n".join([f"{what}:", *(f"  - {p}" for p in problems), "  " + r.summary()])


# -- 1. a slow import on a busy machine is not a bug --------------------------------------

SLOW = (
    PRELUDE
    + """
import time as _time

_t = _time.monotonic()
while _time.monotonic() - _t < {seconds}:  # CPU, in every interpreter
    pass


def job():
    return 1
"""
)


def test_a_slow_import_is_blamed_only_on_an_equal_main_check(tmp_path):
    """Two imports that each need more than half the budget, side by side (--jobs 2, both
    cores busy): each is a transient ``timeout`` giving both figures, or an ``error``
    whose main-interpreter check had at least the time the sub-interpreter trial had."""
    app = write_hostile_app(
        tmp_path / "app", {"slow_a": SLOW.format(seconds=1.6), "slow_b": SLOW.format(seconds=1.6)}
    )
    targets = ["slow_a:job", "slow_b:job"]
    r = run(app, ["check", *targets, "--jobs", "2"], base=tmp_path, timeout=2)
    problems = contract_problems(r, targets, timeout=2, neighbours=())
    for t in targets:
        m = r.module(t) or {}
        reason = str(m.get("reason"))
        if not m.get("transient"):
            problems.append(f"{t}: not transient: {m}")
        sub = re.search(r"still running after ([\d.]+)s", reason)
        main = re.search(r"(?:no answer within|check had) ([\d.]+)s", reason)
        if m.get("verdict") == "error" and main and sub and float(main[1]) < float(sub[1]):
            problems.append(f"{t}: blamed on a main check shorter than the sub-interpreter trial: {reason}")
        if m.get("verdict") == "timeout" and not (sub and main):
            problems.append(f"{t}: a timeout without both figures: {reason}")
        if m.get("verdict") not in ("timeout", "error"):
            problems.append(f"{t}: {m.get('verdict')}")
    _clean(problems, "slow imports with --jobs 2", r)


# -- 2. project files named like stdlib modules --------------------------------------------

SHADOWS = {
    # each leaves a mark when imported: the probe must never import them for itself
    "types": (
        "import os\nopen(os.environ['SHADOW_MARKS'] + '/types', 'w').close()\nos.environ['SHADOWED'] = '1'\n"
    ),
    "signal": "SIGTERM = 15  # a constant, nothing else: the real signal module is not here\n",
    "json": "raise ImportError('the project root json.py shadows the stdlib json')\n",
    "socket": "raise ImportError('the project root socket.py shadows the stdlib socket')\n",
    "typing": "raise ImportError('the project root typing.py shadows the stdlib typing')\n",
    "queue": "raise ImportError('the project root queue.py shadows the stdlib queue')\n",
    "ast": "raise ImportError('the project root ast.py shadows the stdlib ast')\n",
    "email": "raise ImportError('the project root email.py shadows the stdlib email')\n",
    "csv": "raise ImportError('the project root csv.py shadows the stdlib csv')\n",
}


def test_stdlib_named_project_files_do_not_reach_the_probe(tmp_path):
    marks = tmp_path / "marks"
    marks.mkdir()
    files = dict(SHADOWS)
    files["uses_json"] = "import json\n\n\ndef job():\n    return json\n"
    app = write_hostile_app(tmp_path / "app", files)
    targets = [NEIGHBOURS[0], "uses_json:job", NEIGHBOURS[1]]
    r = run(app, ["check", *targets], base=tmp_path, env_extra={"SHADOW_MARKS": str(marks)})
    problems = contract_problems(r, targets, timeout=4)
    # the job that does import the shadow gets what it gets in production: broken everywhere
    problems += verdict_problems(r, "uses_json:job", frozenset({"error"}), r"root json\.py shadows")
    if os.listdir(marks):
        problems.append(f"the probe imported the project's {os.listdir(marks)}")
    _clean(problems, "stdlib-named files at the project root", r)


# -- 3. missing targets are resolved in the parent ------------------------------------------


def test_missing_targets_are_settled_before_any_worker(tmp_path, monkeypatch):
    """500 targets that are nowhere: the probe answers each with the import's own error
    and forks no worker for them (a directory listing, or one question to a zygote)."""
    from subcompat import probe
    from subcompat.verdict import decide

    (tmp_path / "here.py").write_text("def job():\n    return 1\n")
    monkeypatch.chdir(tmp_path)
    missing = [f"nowhere_{i}:job" for i in range(250)] + [f"nowhere_pkg_{i}.sub" for i in range(250)]
    before = probe.STATS["workers_forked"]
    with probe.Prober(timeout=10, jobs=2, sys_path=[str(tmp_path), *sys.path[1:]]) as prober:
        results = prober.probe_many([*missing, "here:job"])
    forked = probe.STATS["workers_forked"] - before
    verdicts = [decide(r) for r in results]
    assert forked <= 3, f"{forked} workers forked for one importable target"  # its trial, pair, main
    for t, v in zip(missing, verdicts, strict=False):
        top = t.partition(":")[0].partition(".")[0]
        assert v.verdict == "error" and f"No module named '{top}'" in v.reason, (t, v.reason)
    assert verdicts[-1].verdict == "compatible", verdicts[-1]


def test_missing_targets_through_the_cli(tmp_path):
    """The CLI explains each one (where it looked) and its neighbours keep their verdict."""
    app = write_hostile_app(tmp_path / "app", {})
    missing = [f"nowhere_{i}:job" for i in range(300)]
    targets = [NEIGHBOURS[0], *missing, NEIGHBOURS[1]]
    r = run(app, ["check", *targets], base=tmp_path)
    problems = contract_problems(r, targets, timeout=4)
    for t in missing:
        m = r.module(t) or {}
        if m.get("verdict") != "error" or "not importable" not in str(m.get("reason")):
            problems.append(f"{t}: {m.get('verdict')} {str(m.get('reason'))[:200]}")
            break
    _clean(problems, "300 missing targets", r)


# -- 4. files that change during the check ----------------------------------------------

SELF_EDIT = """\
import os

with open(__file__, "a") as _fh:  # a job that writes files: here, its own source
    _fh.write("# rewritten while it was being checked\\n")


def job():
    return 1
"""


def test_a_file_changed_during_the_check_is_reported_not_cached(tmp_path):
    app = write_hostile_app(tmp_path / "app", {"self_edit": SELF_EDIT})
    cache = tmp_path / "cache"
    targets = [NEIGHBOURS[0], "self_edit:job", NEIGHBOURS[1]]
    args = ["check", *targets, "--cache-dir", str(cache)]
    first = run(app, args, base=tmp_path)
    second = run(app, args, base=tmp_path)
    problems = []
    for r in (first, second):
        problems += contract_problems(r, targets, timeout=4)
        m = r.module("self_edit:job") or {}
        if m.get("cached") or "changed during the check" not in str(m.get("transient")):
            problems.append(f"self_edit: cached={m.get('cached')} transient={m.get('transient')!r}")
        if not any("changed during the check" in n for n in m.get("notes", ())):
            problems.append(f"self_edit: no note in the report: {m.get('notes')}")
    if not all((second.module(n) or {}).get("cached") for n in NEIGHBOURS):
        problems.append("the neighbours, unchanged, were not cached")
    _clean(problems, "a job that rewrites its own source", second)


# -- 5. inputs that are not regular files --------------------------------------------------


def _one_line_error(r, what):
    problems = []
    if r.hard_timeout:
        problems.append(f"{what}: still running after {r.wall_s:.0f}s")
    if r.returncode != 2:
        problems.append(f"{what}: exit {r.returncode}, expected 2")
    if "Traceback" in r.stderr or len(r.stderr.strip().splitlines()) != 1:
        problems.append(f"{what}: stderr is not one line: {r.stderr[:300]!r}")
    if r.peak_rss_mib > 300:
        problems.append(f"{what}: peak RSS {r.peak_rss_mib:.0f} MiB")
    return problems


def test_inputs_that_are_not_regular_files(tmp_path):
    app = write_hostile_app(tmp_path / "app", {})
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / "pyproject.toml").write_text("[tool.subcompat]\njobs = " + "[" * 100_000 + "]" * 100_000 + "\n")
    problems = []
    for what, args, cwd in [
        ("--baseline FIFO", ["check", NEIGHBOURS[0], "--baseline", str(fifo)], app),
        ("--baseline /dev/zero", ["check", NEIGHBOURS[0], "--baseline", "/dev/zero"], app),
        ("matrix FIFO", ["matrix", str(fifo)], app),
        ("matrix /dev/zero", ["matrix", "/dev/zero"], app),
        ("a TOML nested 100,000 deep", ["check"], deep),
        ("a 100 KB target name", ["check", "a" * 100_000], app),
    ]:
        r = run(cwd, args, base=tmp_path)
        problems += _one_line_error(r, what)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("fmt", ["text", "markdown"])
def test_an_ascii_stdout_gets_ascii(tmp_path, fmt, fixture_site):
    """A culprit line carries the report's symbols; on an ASCII stdout they degrade."""
    app = write_hostile_app(
        tmp_path / "app", {"uses_single": "import sc_single\n\n\ndef job():\n    return 1\n"}
    )
    env = {"PYTHONIOENCODING": "ascii", "PYTHONPATH": str(fixture_site)}
    r = run(
        app,
        ["check", NEIGHBOURS[0], "uses_single:job", "--format", fmt],
        base=tmp_path,
        env_extra=env,
        json_format=False,
    )
    assert r.returncode == 1, r.summary()
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stdout.isascii() and "sc_single" in r.stdout, r.stdout


# -- 6. one target's damage does not reach the next -----------------------------------------

DAMAGE = {
    "rm_scratch": PRELUDE
    + """
import shutil as _shutil
import tempfile as _tempfile

for _d in _os.listdir(_tempfile.gettempdir()):  # the probe's scratch directory, gone
    if _d.startswith("subcompat-"):
        _shutil.rmtree(_os.path.join(_tempfile.gettempdir(), _d), ignore_errors=True)


def job():
    return 1
""",
    "flood": PRELUDE
    + """
for _ in range(40):  # 40 MB at import, and a last line worth keeping
    print("x" * (1 << 20), end="")
_sys.stdout.flush()
_os.write(2, b"\\nthe last words of flood\\n")
with open(_os.environ["FLOOD_STAT"], "w") as _fh:
    _fh.write(str(_os.fstat(1).st_size))
_os.abort()
""",
    "stop_zygote": PRELUDE
    + """
import signal as _signal

if _in_sub():  # the worker's parent is its zygote
    _os.kill(_os.getppid(), _signal.SIGSTOP)


def job():
    return 1
""",
    "escape": PRELUDE
    + """
import ctypes as _ctypes
import signal as _signal
import time as _time

# the worker's parent, read before the fork: read after it, a worker already gone made the
# child an orphan of the zygote, whose own parent (the CLI) it then killed (CI, load 5)
_zygote = _os.getppid()
if _fork() == 0:
    _os.setsid()
    _ctypes.CDLL(None, use_errno=True).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG: none
    try:
        _os.kill(_zygote, _signal.SIGKILL)
    except OSError:
        pass
    _time.sleep(600)
    _os._exit(0)


def job():
    return 1
""",
}


CONTAIN = ["auto", "off"]  # auto: a PID namespace where the machine allows it; off: the fallback


@pytest.mark.parametrize("contain", CONTAIN)
@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damage_stays_with_its_target(tmp_path, name, contain):
    """``good_a DAMAGE good_b``: the neighbours stay compatible, the run keeps its budget,
    nothing is left behind (the contract), and what each kind of damage needs besides;
    under either containment."""
    stat = tmp_path / "flood-stat"
    app = write_hostile_app(tmp_path / "app", {name: DAMAGE[name]})
    targets = [NEIGHBOURS[0], f"{name}:job" if name != "flood" else name, NEIGHBOURS[1]]
    args = ["check", *targets, "--jobs", "1"]  # one after the other: the damage comes first
    env = {"FLOOD_STAT": str(stat), "SUBCOMPAT_CONTAIN": contain}
    r = run(app, args, base=tmp_path, timeout=4, env_extra=env)
    problems = contract_problems(r, targets, timeout=4)
    if name == "flood":
        size = int(stat.read_text()) if stat.exists() else -1
        if size != 0:
            problems.append(f"the worker's stdout is a file of {size} bytes, not a pipe")
        m = r.module("flood") or {}
        if not any("the last words of flood" in n for n in m.get("notes", ())):
            problems.append(f"the output's tail is not in the report: {m.get('notes')}")
    _clean(problems, name, r)
