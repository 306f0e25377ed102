"""Hostile job code cannot break the probe.

Each hostile behaviour (``_hostile.BEHAVIOURS``) is placed in a job four ways (at import,
in a deferred import in the job's body, in a PEP 562 ``__getattr__``, in an import cycle)
and checked as ``good_a:job HOSTILE good_b:job --jobs 1``, through the real CLI, capped.
Whatever the hostile target's verdict, the run must keep the contract:

- no traceback on stderr; exit 0, 1 or 2, matching the verdicts; stdout one JSON
  document with one entry per target, in order;
- both neighbours stay ``compatible`` (they refuse to import into a contaminated probe);
- within budget: each ``elapsed_s`` <= S + 2, the whole run <= 3 S + 15;
- peak memory <= ``--memory`` + 200 MiB;
- no process of the run left behind (double-forked, ``setsid`` ones included), nothing
  left in ``TMPDIR``.

Some behaviours have a verdict of their own (``Behaviour.at_import`` / ``deferred``).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time

import pytest
from _hostile import (
    BEHAVIOURS,
    HOSTILE_TARGET,
    NEIGHBOURS,
    PLACEMENTS,
    PRELUDE,
    contract_problems,
    finish_run,
    new_run_dirs,
    placed,
    run_check,
    run_env,
    start_cli,
    verdict_problems,
    wait_until,
    write_hostile_app,
)
from _req import require_or_skip

pytestmark = pytest.mark.needs_subinterpreters

PLACEMENT_IDS = {
    "import": "at-import",
    "deferred": "in-job-body",
    "getattr": "in-pep562-getattr",
    "cycle": "in-import-cycle",
}


@pytest.fixture(autouse=True)
def _linux_tools():
    require_or_skip(sys.platform == "linux" and os.path.isdir("/proc"), "needs Linux /proc")
    require_or_skip(shutil.which("prlimit"), "needs prlimit (util-linux) to cap each run")
    require_or_skip(hasattr(os, "pidfd_open"), "needs os.pidfd_open")


def _pythonpath(tmp_path, site_modules=None, *extra):
    """An empty dir (or the given ones); a dir of ``site_modules`` goes first."""
    paths = [*extra]
    if site_modules:
        site = tmp_path / "site-hostile"
        site.mkdir()
        for name, source in site_modules.items():
            (site / f"{name}.py").write_text(source)
        paths.insert(0, site)
    if not paths:
        empty = tmp_path / "pythonpath"
        empty.mkdir()
        paths.append(empty)
    return paths


def _assert_clean(problems, what, *runs):
    assert not problems, "\n".join(
        [f"{what}:", *(f"  - {p}" for p in problems), *("  " + r.summary() for r in runs)]
    )


def test_neighbours_alone_are_compatible(tmp_path):
    """The baseline every hostile case compares against."""
    app = write_hostile_app(tmp_path / "app", {})
    run = run_check(app, NEIGHBOURS, timeout=3, base=tmp_path, pythonpath=_pythonpath(tmp_path))
    problems = contract_problems(run, NEIGHBOURS, timeout=3)
    problems += [p for n in NEIGHBOURS for p in verdict_problems(run, n, frozenset({"compatible"}), None)]
    _assert_clean(problems, "the neighbours alone", run)


@pytest.mark.parametrize(
    ("behaviour", "placement"),
    [pytest.param(b, p, id=f"{b}-{PLACEMENT_IDS[p]}") for b in BEHAVIOURS for p in PLACEMENTS],
)
def test_hostile_module_cannot_break_the_probe(tmp_path, behaviour, placement):
    b = BEHAVIOURS[behaviour]
    app = write_hostile_app(tmp_path / "app", placed(b, placement))
    targets = [NEIGHBOURS[0], HOSTILE_TARGET, NEIGHBOURS[1]]
    run = run_check(app, targets, timeout=b.timeout, base=tmp_path, pythonpath=_pythonpath(tmp_path, b.site))
    problems = contract_problems(run, targets, timeout=b.timeout)
    problems += verdict_problems(run, HOSTILE_TARGET, b.allowed(placement), b.reason)
    _assert_clean(problems, f"{b.name} ({b.doc}) {PLACEMENT_IDS[placement]}", run)


# -- PEP 562 __getattr__ that misleads the probe -------------------------------------------

RAISING_GETATTR = """\
def job():
    import sc_single  # single-phase init: never loads in an isolated interpreter

    return sc_single.answer()


def __getattr__(name):
    raise RuntimeError("hostile module __getattr__: " + name)
"""

SELF_REIMPORT = """\
def job():
    import sc_single  # single-phase init: never loads in an isolated interpreter

    return sc_single.answer()


def __getattr__(name):
    from mypkg.selfref import _table  # asks itself again: a loop, not an AttributeError

    return _table[name]
"""


@pytest.mark.parametrize("target", ["ga_raise:job", "ga_raise"], ids=["function-target", "module-target"])
def test_raising_getattr_does_not_hide_an_incompatible_job(tmp_path, fixture_site, target):
    app = write_hostile_app(tmp_path / "app", {"ga_raise": RAISING_GETATTR})
    targets = [NEIGHBOURS[0], target, NEIGHBOURS[1]]
    run = run_check(
        app, targets, timeout=4, base=tmp_path, pythonpath=_pythonpath(tmp_path, None, fixture_site)
    )
    problems = contract_problems(run, targets, timeout=4)
    problems += verdict_problems(run, target, frozenset({"incompatible"}), None)
    m = run.module(target) or {}
    if m.get("verdict") == "incompatible" and "sc_single" not in [c.get("module") for c in m["culprits"]]:
        problems.append(f"culprits {m['culprits']} do not name sc_single")
    _assert_clean(problems, f"raising PEP 562 __getattr__, target {target}", run)


def test_self_reimporting_getattr_terminates_as_incompatible(tmp_path, fixture_site):
    app = write_hostile_app(tmp_path / "app", {"mypkg.selfref": SELF_REIMPORT})
    target = "mypkg.selfref:job"
    targets = [NEIGHBOURS[0], target, NEIGHBOURS[1]]
    run = run_check(
        app, targets, timeout=4, base=tmp_path, pythonpath=_pythonpath(tmp_path, None, fixture_site)
    )
    problems = contract_problems(run, targets, timeout=4)
    problems += verdict_problems(run, target, frozenset({"incompatible"}), None)
    _assert_clean(problems, "PEP 562 __getattr__ re-importing itself", run)


# -- the CLI itself is signalled while an import hangs -------------------------------------


def _exited(pid: int) -> bool:
    """Has the child exited? (without reaping it: finish_run does that)"""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGKILL], ids=lambda s: s.name)
def test_signalled_cli_leaves_nothing_behind(tmp_path, sig):
    sentinel = tmp_path / "hanging-now"
    hang = (
        PRELUDE
        + f"open({str(sentinel)!r}, 'w').close()\nwhile True:\n    pass\n\n\ndef job():\n    return 1\n"
    )
    app = write_hostile_app(tmp_path / "app", {"stuck": hang})
    marker, tmpdir = new_run_dirs(tmp_path)
    args = ["check", NEIGHBOURS[0], "stuck:job", NEIGHBOURS[1], "--format", "json", "--timeout", "60"]
    args += ["--memory", "1024", "--jobs", "1", "--no-cache"]
    env = run_env(marker=marker, tmpdir=tmpdir, pythonpath=_pythonpath(tmp_path))
    proc, out, err = start_cli(args, cwd=app, env=env)
    in_hang = False
    try:
        wait_until(lambda: sentinel.exists() or _exited(proc.pid), 60)
        in_hang = sentinel.exists() and not _exited(proc.pid)
    finally:
        os.kill(proc.pid, sig if in_hang else signal.SIGKILL)  # an exited one is a zombie: harmless
        run = finish_run(
            proc,
            out,
            err,
            args=args,
            marker=marker,
            tmpdir=tmpdir,
            started=time.monotonic(),
            hard_timeout_s=10,
        )
    assert in_hang, "the probe never reached the hanging import: " + run.summary()
    problems = []
    if run.hard_timeout:
        problems.append(f"the CLI did not exit within 10 s of {sig.name}")
    if sig != signal.SIGKILL and "Traceback (most recent call last)" in run.stderr:
        problems.append("a traceback on stderr")
    if run.leftovers:
        problems.append(f"{len(run.leftovers)} process(es) left behind: " + " | ".join(run.leftovers[:4]))
    if run.tmp_left:
        problems.append(f"TMPDIR not empty: {run.tmp_left[:6]}")
    _assert_clean(problems, f"{sig.name} to the CLI during a hanging import", run)


# -- a timeout is transient ----------------------------------------------------------------

SLOW_IN_SUB = (
    PRELUDE
    + """
if _in_sub():  # slow only in a sub-interpreter: a hang at --timeout 0.5, fine at 10
    import time

    time.sleep(1.5)


def job():
    return 42
"""
)


def test_timeout_is_not_served_from_the_cache(tmp_path):
    """A timeout says as much about the budget as about the module: the next run with a
    longer --timeout probes again instead of serving ``"cached": true`` timeouts."""
    app = write_hostile_app(tmp_path / "app", {"slow": SLOW_IN_SUB})
    cache = tmp_path / "cache"
    pp = _pythonpath(tmp_path)
    first = run_check(app, ["slow:job"], timeout=0.5, base=tmp_path, pythonpath=pp, cache_dir=cache)
    second = run_check(app, ["slow:job"], timeout=10, base=tmp_path, pythonpath=pp, cache_dir=cache)
    problems = [f"first run: {p}" for p in contract_problems(first, ["slow:job"], timeout=0.5, neighbours=())]
    problems += [f"first run: {p}" for p in verdict_problems(first, "slow:job", frozenset({"timeout"}), None)]
    problems += [
        f"second run: {p}" for p in contract_problems(second, ["slow:job"], timeout=10, neighbours=())
    ]
    m = second.module("slow:job") or {}
    if m.get("cached") is True and m.get("verdict") == "timeout":
        problems.append("second run: the first run's timeout came back from the cache")
    problems += [
        f"second run: {p}" for p in verdict_problems(second, "slow:job", frozenset({"compatible"}), None)
    ]
    _assert_clean(
        problems, "slow only in a sub-interpreter: --timeout 0.5, then 10, one cache", first, second
    )
