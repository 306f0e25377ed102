"""CPython's own ``test.test_concurrent_futures``, with AutoPoolExecutor as the executor.

The interpreter's test package provides the tests (pyenv's 3.13.0 ships it; CI adds it to the
others with ``pythons testsuite``); nothing of it is in this repo. Its executor-generic
classes (and the thread/process-specific ones that use public API only) are rebuilt here
once per fallback: the thread flavour where the suite uses ``ThreadPoolExecutor``, the
process flavour (forkserver) where it uses ``ProcessPoolExecutor``.

Every test left out is in ``EXCLUDED`` with its reason; the README lists them too."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import tempfile
import unittest

import pytest
from _req import require_or_skip

from subcompat.futures import AutoProcessPoolExecutor, AutoThreadPoolExecutor


def _have_suite() -> bool:
    try:
        return importlib.util.find_spec("test.test_concurrent_futures") is not None
    except ImportError:
        return False


HAVE = _have_suite() and sys.version_info >= (3, 13)
WHY_ABSENT = (
    f"Python {sys.version.split()[0]} has no test.test_concurrent_futures "
    "(add it with: pythons testsuite 3.13 3.14 3.15)"
)


def test_stdlib_suite_present() -> None:
    """Required in CI on 3.13+: without the package, nothing below is collected. On 3.11
    (no sub-interpreters: every call takes the fallback) the suite is not run."""
    if sys.version_info < (3, 13):
        pytest.skip("the stdlib suite runs on 3.13+; this Python has no sub-interpreters to route to")
    require_or_skip(HAVE, WHY_ABSENT)


# One probe cache for the whole run: each module of the suite is probed once.
_CACHE = tempfile.mkdtemp(prefix="subcompat-stdlib-futures-")

# test name (method, or Class.method for one class) -> why it is not run here.
THREADS = "reads ThreadPoolExecutor._threads (a private attribute of that class)"
PROCESSES = "reads ProcessPoolExecutor._processes (a private attribute of that class)"
BY_NAME = (
    "its script imports the executor class from concurrent.futures by name; "
    "the same script on AutoPoolExecutor is in tests/test_futures.py"
)
FORCE = "mocks ProcessPoolExecutor._force_shutdown (a private method of that class)"
MANAGER = "reads or patches ProcessPoolExecutor's manager-thread internals (private to that class)"
EXCLUDED: dict[str, str] = {
    "test_interpreter_shutdown": BY_NAME,
    "test_submit_after_interpreter_shutdown": BY_NAME,
    "test_hang_gh83386": BY_NAME,
    "AutoThreadPoolSpecific.test_idle_thread_reuse": THREADS,
    "AutoThreadPoolSpecific.test_saturation": THREADS,
    "AutoThreadShutdownSpecific.test_threads_terminate": THREADS,
    "AutoProcessPoolSpecific.test_saturation": PROCESSES,
    "AutoProcessPoolSpecific.test_idle_process_reuse_one": PROCESSES,
    "AutoProcessPoolSpecific.test_idle_process_reuse_multiple": PROCESSES,
    "AutoProcessPoolSpecific.test_killed_child": PROCESSES,
    "AutoProcessPoolSpecific.test_max_tasks_per_child": PROCESSES,
    "AutoProcessShutdownSpecific.test_processes_terminate": PROCESSES,
    # 3.14+
    "AutoProcessPoolSpecific.test_broken_process_pool_traceback": PROCESSES,
    "AutoProcessPoolSpecific.test_force_shutdown_workers": PROCESSES,
    "AutoProcessPoolSpecific.test_force_shutdown_workers_stops_pool": PROCESSES,
    "AutoProcessPoolSpecific.test_terminate_workers": FORCE,
    "AutoProcessPoolSpecific.test_kill_workers": FORCE,
    "AutoProcessPoolSpecific.test_force_shutdown_workers_invalid_op": FORCE,
    "AutoProcessPoolSpecific.test_gc_during_max_tasks_worker_exit_gh152967": MANAGER,
    "AutoProcessPoolSpecific.test_force_shutdown_during_max_tasks_worker_exit": MANAGER,
    "AutoProcessPoolSpecific.test_failed_worker_replacement_breaks_pool": MANAGER,
    "test_shutdown_no_wait_max_tasks_gh119592": MANAGER,
    # an open bug, not a limit (README "Using with concurrent.futures"):
    "AutoProcessPoolSpecific.test_python_finalization_error": (
        "known hang: after a thread-flavour executor ran a call in a sub-interpreter in the same "
        "process, shutdown() waits forever once threads cannot start; passes alone"
    ),
    "AutoProcessDeadlock.test_shutdown_deadlock_pickle": (
        "reads ProcessPoolExecutor._executor_manager_thread (a private attribute of that class)"
    ),
}


class AutoThread(AutoThreadPoolExecutor):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("cache_dir", _CACHE)
        super().__init__(*args, **kwargs)


class AutoProcess(AutoProcessPoolExecutor):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("cache_dir", _CACHE)
        super().__init__(*args, **kwargs)


def _build() -> dict[str, type]:
    pkg = "test.test_concurrent_futures"
    util = importlib.import_module(f"{pkg}.util")
    mods = {
        name: importlib.import_module(f"{pkg}.{name}")
        for name in (
            "executor",
            "test_shutdown",
            "test_wait",
            "test_as_completed",
            "test_init",
            "test_deadlock",
            "test_thread_pool",
            "test_process_pool",
        )
    }

    class ThreadMixin(util.ThreadPoolMixin):
        executor_type = AutoThread

    class ProcessMixin(util.ProcessPoolForkserverMixin):
        executor_type = AutoProcess

    generic = [
        mods["executor"].ExecutorTest,
        mods["test_shutdown"].ExecutorShutdownTest,
        mods["test_wait"].WaitTests,
        mods["test_as_completed"].AsCompletedTests,
    ]
    made: dict[str, type] = {}
    base = util.BaseTestCase

    def make(name: str, bases: tuple[type, ...]) -> None:
        cls = type(name, bases, {"__module__": __name__})
        for attr in dir(cls):
            if not attr.startswith("test"):
                continue
            reason = EXCLUDED.get(f"{name}.{attr}") or EXCLUDED.get(attr)
            if reason:
                setattr(cls, attr, unittest.skip(reason)(getattr(cls, attr)))
        made[name] = cls

    for flavour, mixin in (("Thread", ThreadMixin), ("Process", ProcessMixin)):
        for test in generic:
            make(f"Auto{flavour}{test.__name__}", (mixin, test, base))
        init = mods["test_init"]
        make(f"Auto{flavour}Initializer", (init.InitializerMixin, mixin, base))
        make(f"Auto{flavour}FailingInitializer", (init.FailingInitializerMixin, mixin, base))
    tp, pp = mods["test_thread_pool"], mods["test_process_pool"]
    make("AutoThreadPoolSpecific", (ThreadMixin, tp.ThreadPoolExecutorTest))
    make("AutoThreadShutdownSpecific", (ThreadMixin, mods["test_shutdown"].ThreadPoolShutdownTest))
    make("AutoThreadWaitSpecific", (ThreadMixin, mods["test_wait"].ThreadPoolWaitTests))
    make("AutoProcessPoolSpecific", (ProcessMixin, pp.ProcessPoolExecutorTest, base))
    make("AutoProcessShutdownSpecific", (ProcessMixin, mods["test_shutdown"].ProcessPoolShutdownTest, base))
    make("AutoProcessDeadlock", (ProcessMixin, mods["test_deadlock"].ExecutorDeadlockTest, base))
    return made


# The suite's modules and functions probed once, before any test: the suite times its calls against each
# other (a 1.5 s sleep must finish after a multiplication), and a first probe can take longer
# than that on a loaded machine. A service that has seen its modules has them cached too.
MODULES = [
    "test.test_concurrent_futures." + name
    for name in ("executor", "test_shutdown", "test_wait", "test_as_completed", "test_init")
    + ("test_deadlock", "test_thread_pool", "test_process_pool")
]


@pytest.fixture(autouse=True)
def _bounded():
    """A test of this suite that hangs ends this test process (with every thread's stack)
    instead of the whole run: each one is seconds long."""
    import faulthandler

    faulthandler.dump_traceback_later(BOUND_S, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


BOUND_S = 240


def warm_targets() -> list[str]:
    """What the pool judges the suite's calls as: each module (a bound method, a callable
    object) and each of its own module-level functions (``module:function``, routing is
    per callable)."""
    import types

    from subcompat.futures import callable_target

    targets = list(MODULES)
    for name in MODULES:
        for fn in vars(importlib.import_module(name)).values():
            if isinstance(fn, types.FunctionType) and fn.__module__ == name and fn.__name__ != "setUpModule":
                targets.append(callable_target(fn, name, fn.__qualname__))
    return list(dict.fromkeys(targets))


@pytest.fixture(scope="module", autouse=True)
def _probed() -> None:
    if not HAVE:
        return
    from subcompat.cache import Cache
    from subcompat.check import check

    cache = Cache(_CACHE)
    try:
        check(warm_targets(), cache=cache, jobs=2, sys_path=sys.path)
    finally:
        cache.close()


if HAVE:
    globals().update(_build())
