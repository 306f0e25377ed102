"""A real project and a busy CI: what an ordinary project (not an attacker) does to the probe.

Each class runs the real CLI (``python -m subcompat``, capped, watched by ``_hostile``):
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
import time

import pytest
from _hostile import (
    AS_CAP,
    MEMORY_MIB,
    NEIGHBOURS,
    PRELUDE,
    ROOT,
    budget,
    contract_problems,
    finish_run,
    kill_marked,
    new_run_dirs,
    run_env,
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


def _cli(args, *, cwd, env):
    """``python -m subcompat ARGS`` as a user runs it: the current directory is first on
    the CLI's own path (runpy), so a project's json.py is right there."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    )
    proc = subprocess.Popen(
        ["prlimit", f"--as={AS_CAP}", sys.executable, "-m", "subcompat", *args],
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


def run(app, args, *, base, timeout=3.0, env_extra=None, json_format=True):
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
    started = time.monotonic()
    proc, out, err = _cli(args, cwd=app, env=env)
    try:
        return finish_run(
            proc,
            out,
            err,
            args=args,
            marker=marker,
            tmpdir=tmpdir,
            started=started,
            hard_timeout_s=budget(timeout) + 30,
        )
    finally:
        kill_marked(marker, wait_s=2.0)


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
    problems = contract_problems(r, targets, timeout=3)
    # the job that does import the shadow gets what it gets in production: broken everywhere
    problems += verdict_problems(r, "uses_json:job", frozenset({"error"}), r"root json\.py shadows")
    if os.listdir(marks):
        problems.append(f"the probe imported the project's {os.listdir(marks)}")
    _clean(problems, "stdlib-named files at the project root", r)


# -- 3. missing targets are resolved in the parent ------------------------------------------


def test_missing_targets_cost_no_process(tmp_path):
    """400 targets that do not exist beside two that do: each missing one is an error
    saying where it was looked for, found without a worker (a fraction of a ms each)."""
    app = write_hostile_app(tmp_path / "app", {})
    missing = [f"nowhere_{i}:job" for i in range(200)] + [f"good_a.nope_{i}" for i in range(200)]
    targets = [NEIGHBOURS[0], *missing, NEIGHBOURS[1]]
    r = run(app, ["check", *targets], base=tmp_path)
    problems = contract_problems(r, targets, timeout=3)
    for t in missing:
        m = r.module(t) or {}
        if m.get("verdict") != "error" or "not importable" not in str(m.get("reason")):
            problems.append(f"{t}: {m.get('verdict')} {str(m.get('reason'))[:200]}")
            break
    slow = [t for t in missing if (r.module(t) or {}).get("elapsed_s", 1) > 0.01]
    if slow:
        problems.append(f"{len(slow)} missing targets took more than 10 ms each, e.g. {r.module(slow[0])}")
    _clean(problems, "400 missing targets", r)
