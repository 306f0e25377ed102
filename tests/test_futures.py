"""AutoPoolExecutor with real pools: real sub-interpreters, processes and compiled fixtures.

Every wait is bounded: a future left pending or a shutdown that hangs fails the test."""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from concurrent.futures import wait

import pytest
from _req import require_or_skip

BOUND = 90  # seconds for any wait; a probe is at most 30 s

# Reports where it ran: (in the main interpreter?, pid).
WHERE = """
import os

def where(*_):
    import _interpreters
    return _interpreters.get_current() == _interpreters.get_main(), os.getpid()
"""


@pytest.fixture
def app(probe_app, monkeypatch):
    """Writes modules (under a package unique to the test) and makes them importable
    here, in the probe and in the fallback's processes."""
    package = f"fx{uuid.uuid4().hex[:10]}"
    monkeypatch.syspath_prepend(str(probe_app.site))
    monkeypatch.syspath_prepend(str(probe_app.root))

    def write(files: dict[str, str]) -> dict[str, object]:
        import importlib

        probe_app.write({f"{package}.{name}": source for name, source in files.items()})
        importlib.invalidate_caches()
        return {name: importlib.import_module(f"{package}.{name}") for name in files}

    write.cache_dir = str(probe_app.cache_dir)  # type: ignore[attr-defined]
    write.root = probe_app.root  # type: ignore[attr-defined]
    return write


def results(futures, bound: float = BOUND):
    done, pending = wait(futures, timeout=bound)
    assert not pending, f"{len(pending)} future(s) still pending after {bound} s"
    return [f.result() for f in futures]


def close(executor, wait_: bool = True, cancel: bool = False, bound: float = BOUND) -> None:
    """shutdown(), failing instead of hanging."""
    worker = threading.Thread(target=executor.shutdown, kwargs={"wait": wait_, "cancel_futures": cancel})
    worker.start()
    worker.join(bound)
    assert not worker.is_alive(), f"shutdown(wait={wait_}) still running after {bound} s"


def executor(app, max_workers=2, **kw):
    from subcompat.futures import AutoPoolExecutor

    return AutoPoolExecutor(max_workers, cache_dir=app.cache_dir, **kw)


def interpreters_now() -> int:
    import _interpreters

    return len(_interpreters.list_all())


def gone(pid: int) -> bool:
    """No such process, or a zombie waiting for its parent (it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


needs_subinterpreters = pytest.mark.needs_subinterpreters


@needs_subinterpreters
def test_compatible_runs_in_a_subinterpreter_incompatible_in_a_process(app):
    mods = app({"ok": WHERE, "bad": "import sc_single\n" + WHERE})
    ok, bad = mods["ok"], mods["bad"]
    before = interpreters_now()
    pool = executor(app)
    try:
        futures = [pool.submit(ok.where) for _ in range(6)] + [pool.submit(bad.where) for _ in range(4)]
        got = results(futures)
        assert interpreters_now() > before  # the pool's, alive until shutdown
        assert pool.route_of(ok.where).executor == "subinterpreter"
        assert pool.route_of(bad.where).executor == "process"
        assert "sc_single" in pool.route_of(bad.where).why
    finally:
        close(pool)
    assert {g for g in got[:6]} == {(False, os.getpid())}  # a sub-interpreter of this process
    assert all(main and pid != os.getpid() for main, pid in got[6:])
    stats = pool.stats()
    assert stats["probes"] == 2 and stats["route.subinterpreter"] == 6 and stats["route.process"] == 4
    assert interpreters_now() == before, "an interpreter outlived shutdown"
    assert all(gone(pid) for _, pid in got[6:]), "a fallback process outlived shutdown"


@needs_subinterpreters
def test_thread_fallback_and_a_real_package(app):
    pytest.importorskip("ujson", reason="ujson (the test extra) is not installed")
    mods = app({"realpkg": "import ujson\n" + WHERE + "\ndef dumps(x):\n    return ujson.dumps(x)\n"})
    mod = mods["realpkg"]
    pool = executor(app, fallback="thread")
    try:
        where, dumped = results([pool.submit(mod.where), pool.submit(mod.dumps, {"a": 1})])
        route = pool.route_of(mod.dumps)
    finally:
        close(pool)
    assert where == (True, os.getpid()) and dumped == '{"a":1}'
    assert (route.route, route.executor) == ("fallback", "thread") and "ujson" in route.why


@needs_subinterpreters
def test_degraded_goes_to_the_fallback_unless_the_policy_allows_it(app):
    src = "import sc_softpkg\n" + WHERE + "\ndef fast():\n    return sc_softpkg.HAS_SPEEDUPS\n"
    mod = app({"soft": src})["soft"]
    default, allowed = executor(app, fallback="thread"), executor(app, degraded="subinterpreter")
    try:
        on_fallback = results([default.submit(mod.where), default.submit(mod.fast)])
        in_sub = results([allowed.submit(mod.where), allowed.submit(mod.fast)])
        assert default.route_of(mod.fast).why.startswith("degraded")
        assert allowed.route_of(mod.fast).executor == "subinterpreter"
    finally:
        close(default)
        close(allowed)
    assert on_fallback == [(True, os.getpid()), True]  # the accelerator, on the fast path
    assert in_sub == [(False, os.getpid()), False]  # the slow path, as the policy accepted


@needs_subinterpreters
def test_lazy_import_in_the_job_body_is_routed_before_it_runs(app):
    src = WHERE + "\ndef lazy():\n    import sc_single\n    return sc_single.answer()\n"
    mod = app({"lazy": src})["lazy"]
    pool = executor(app)
    try:
        assert results([pool.submit(mod.lazy)]) == [42]
        assert pool.route_of(mod.lazy).executor == "process"
        assert pool.stats().get("reroutes", 0) == 0
    finally:
        close(pool)


MIXED = """
def heavy():
    import sc_single  # deferred: reached from heavy only
    return sc_single.answer()

def hidden():
    import importlib
    return importlib.import_module("sc_" + "single").answer()  # a name the probe cannot read

class Jobs:
    @staticmethod
    def pure():
        return where()

    @classmethod
    def made(cls):
        return cls.__name__, where()

    def on(self):
        return where()

class SubJobs(Jobs):
    pass
"""


@needs_subinterpreters
def test_each_callable_is_judged_as_its_own_target(app):
    """A function, a class and its static/class methods by ``module:name`` (a method as
    its class); a method bound to an instance, a subclass's inherited classmethod, a
    callable object and a rebound name by the whole module. Through a partial too."""
    import functools

    from subcompat.futures import _routing_target

    mod = app({"mixed": WHERE + MIXED})["mixed"]
    name = mod.__name__
    target = lambda fn: _routing_target(fn)[0]  # noqa: E731
    assert target(mod.where) == f"{name}:where" and target(mod.heavy) == f"{name}:heavy"
    assert target(functools.partial(mod.heavy)) == f"{name}:heavy"
    assert target(mod.Jobs) == target(mod.Jobs.pure) == target(mod.Jobs.made) == f"{name}:Jobs"
    assert target(mod.Jobs.on) == f"{name}:Jobs"  # the plain function, self passed as an argument
    assert target(mod.Jobs().on) == name  # self may be of any subclass
    assert target(mod.SubJobs.made) == name  # bound to a class other than its own
    assert target(mod.SubJobs) == f"{name}:SubJobs"
    mod.alias = mod.where
    mod.where = functools.wraps(mod.alias)(lambda *a: mod.alias(*a))
    assert target(mod.alias) == name  # its qualname no longer names it


@needs_subinterpreters
def test_routing_is_per_callable_not_per_module(app):
    """One function of a module imports (in its body) an extension that never loads in a
    sub-interpreter: it alone goes to the process pool; its neighbours, the class's
    static method included, keep the sub-interpreter."""
    mod = app({"mixed": WHERE + MIXED})["mixed"]
    pool = executor(app)
    try:
        pure = [pool.submit(mod.where) for _ in range(4)] + [pool.submit(mod.Jobs.pure) for _ in range(2)]
        heavy = [pool.submit(mod.heavy) for _ in range(3)]
        got, answers = results(pure), results(heavy)
        assert pool.route_of(mod.where).executor == "subinterpreter"
        assert pool.route_of(mod.Jobs.pure).executor == "subinterpreter"
        assert pool.route_of(mod.heavy).executor == "process"
        assert "sc_single" in pool.route_of(mod.heavy).why
        stats = pool.stats()
    finally:
        close(pool)
    assert set(got) == {(False, os.getpid())} and answers == [42] * 3
    assert stats["probes"] == 3  # where, Jobs, heavy: one each
    assert stats["route.subinterpreter"] == 6 and stats["route.process"] == 3
    assert stats.get("reroutes", 0) == 0


@needs_subinterpreters
def test_a_reroute_learnt_for_one_function_leaves_its_neighbour_in_place(app):
    """``hidden`` imports by a built name: probed compatible, it fails in the
    sub-interpreter, is learnt incompatible (in the cache too, for ``mod:hidden``) and
    re-run on the fallback; ``where`` of the same module stays in sub-interpreters."""
    from subcompat.cache import Cache

    mod = app({"mixed": WHERE + MIXED})["mixed"]
    pool = executor(app)
    try:
        assert results([pool.submit(mod.where)]) == [(False, os.getpid())]
        assert results([pool.submit(mod.hidden) for _ in range(3)]) == [42] * 3
        assert pool.route_of(mod.hidden).why.startswith("learned at run time")
        after = results([pool.submit(mod.where) for _ in range(4)])
        assert pool.route_of(mod.where).executor == "subinterpreter"
        stats = pool.stats()
    finally:
        close(pool)
    assert set(after) == {(False, os.getpid())}
    # each hidden call ran on the process pool: sent there again, or straight once learnt
    assert 1 <= stats["reroutes"] <= 3 and stats["route.process"] == 3
    assert stats["route.subinterpreter"] == 5 + stats["reroutes"]
    cache = Cache(app.cache_dir)
    try:
        cached = {j["target"]: j["verdict"] for j in cache.summary()["jobs"]}
    finally:
        cache.close()
    assert cached[f"{mod.__name__}:hidden"] == "incompatible"
    assert cached[f"{mod.__name__}:where"] == "compatible"


def compatible_until_probed(app, tmp_path):
    """A module that imports an incompatible extension only once a flag file exists:
    probed (and cached) compatible without it, then the flag is set."""
    flag = tmp_path / "flag"
    src = f"import os\nif os.path.exists({str(flag)!r}):\n    import sc_single\n" + WHERE
    mod = app({"hidden": src})["hidden"]
    probed = executor(app)
    try:
        assert results([probed.submit(mod.where)]) == [(False, os.getpid())]
    finally:
        close(probed)
    flag.touch()
    return mod


@needs_subinterpreters
def test_an_import_the_probe_cannot_see_is_learnt_and_rerun_once(app, tmp_path):
    """The module imports an incompatible extension only when a flag file exists: the
    probe (no flag) says compatible; then every call fails in the sub-interpreter at
    import (3.13: the backport would hang, gh-125864; 3.14+: NotShareableError)."""
    mod = compatible_until_probed(app, tmp_path)
    first = executor(app)  # compatible, from the cache; fresh sub-interpreters now fail
    try:
        got = results([first.submit(mod.where) for _ in range(3)])
        stats = first.stats()
        assert first.route_of(mod.where).why.startswith("learned at run time")
    finally:
        close(first)
    assert stats.get("probes") == 1 and all(main and pid != os.getpid() for main, pid in got)
    assert 1 <= stats["reroutes"] <= 3 and stats["route.process"] == stats["reroutes"]
    second = executor(app)  # the cache remembers it
    try:
        assert results([second.submit(mod.where)])[0][0] is True
        assert second.route_of(mod.where).route == "fallback"
        assert second.stats().get("reroutes", 0) == 0
    finally:
        close(second)


@needs_subinterpreters
def test_once_learnt_the_calls_still_waiting_for_the_subinterpreters_move_too(app, tmp_path):
    """200 calls of a module the cache says is compatible but no longer is: the first
    refusal moves the calls still waiting in the lane to the fallback, instead of each
    being sent to a sub-interpreter to fail there."""
    mod = compatible_until_probed(app, tmp_path)
    pool = executor(app)
    try:
        got = results([pool.submit(mod.where) for _ in range(200)])
        stats = pool.stats()
    finally:
        close(pool)
    assert all(main and pid != os.getpid() for main, pid in got)
    assert stats["reroutes"] == stats["route.process"] == 200
    assert stats["batches.subinterpreter"] <= 40, stats  # not one failing task per call


@needs_subinterpreters
def test_interpreter_pool_fails_fast_on_a_module_it_cannot_import(app, tmp_path):
    """The pool AutoPoolExecutor uses raises (3.13's backport, patched, no longer hangs)
    with the sub-interpreter ImportError in the exception chain."""
    from subcompat.futures import interpreter_pool_class
    from subcompat.learn import subinterpreter_import_message

    cls, why = interpreter_pool_class()
    require_or_skip(cls is not None, f"no InterpreterPoolExecutor: {why}")
    mod = app({"top": "import sc_single\n" + WHERE})["top"]
    from subcompat import _worker

    pool = cls(1, initializer=_worker.start, initargs=(list(sys.path),))
    try:
        future = pool.submit(mod.where)
        wait([future], timeout=BOUND)
        assert future.done(), "the interpreter pool left the future pending"
        message = subinterpreter_import_message(future.exception())
        assert message is not None and "sc_single" in message
    finally:
        close(pool)


@needs_subinterpreters
def test_segfault_on_import_runs_on_the_fallback(app):
    mod = app({"segv": "import sc_segv\n" + WHERE})["segv"]
    pool = executor(app)
    try:
        main, pid = results([pool.submit(mod.where)])[0]
        route = pool.route_of(mod.where)
    finally:
        close(pool)
    assert main and pid != os.getpid()
    assert route.why.startswith("crash") and "sc_segv" in route.why


@needs_subinterpreters
@pytest.mark.parametrize("fallback", ["process", "thread"])
def test_job_exceptions_propagate_unchanged(app, fallback):
    src = textwrap.dedent(
        """
        class JobError(Exception):
            pass

        def fail(x):
            raise JobError("bad input", x)
        """
    )
    mods = app({"fails": src, "fails_bad": "import sc_single\n" + src})
    pool = executor(app, fallback=fallback)
    try:
        futures = [pool.submit(mods["fails"].fail, 1), pool.submit(mods["fails_bad"].fail, 2)]
        wait(futures, timeout=BOUND)
        errors = [f.exception(timeout=0) for f in futures]
        routes = [pool.route_of(m.fail).executor for m in (mods["fails"], mods["fails_bad"])]
    finally:
        close(pool)
    assert routes == ["subinterpreter", fallback]
    assert type(errors[0]) is mods["fails"].JobError and errors[0].args == ("bad input", 1)
    assert type(errors[1]) is mods["fails_bad"].JobError and errors[1].args == ("bad input", 2)
    assert pool.stats().get("reroutes", 0) == 0


@needs_subinterpreters
def test_map_with_chunks_keeps_order_on_both_routes(app):
    src = "def square(x, y=0):\n    return x * x + y\n"
    mods = app({"sq": src, "sq_bad": "import sc_single\n" + src})
    pool = executor(app)
    try:
        for mod in (mods["sq"], mods["sq_bad"]):
            got = pool.map(mod.square, range(23), itertools.repeat(1), timeout=BOUND, chunksize=5)
            assert list(got) == [x * x + 1 for x in range(23)]
        assert list(pool.map(mods["sq"].square, range(4), timeout=BOUND)) == [0, 1, 4, 9]
        stats = pool.stats()
    finally:
        close(pool)
    assert stats["route.process"] == 5  # 23 calls in chunks of 5
    assert stats["route.subinterpreter"] == 5 + 4
    with pytest.raises(ValueError):
        pool.map(mods["sq"].square, range(3), chunksize=0)


@needs_subinterpreters
def test_one_probe_per_module_off_the_callers_thread(app, caplog):
    mod = app({"many": WHERE})["many"]
    pool = executor(app)
    caplog.set_level(logging.DEBUG, logger="subcompat.futures")
    try:
        futures = [pool.submit(mod.where) for _ in range(40)]
        assert pool.route_of(mod.where) is None  # submit returned before the probe ended
        got = results(futures)
    finally:
        close(pool)
    assert set(got) == {(False, os.getpid())}
    assert pool.stats()["probes"] == 1
    lines = [r.getMessage() for r in caplog.records if "-> subinterpreter: compatible" in r.getMessage()]
    assert len(lines) == 40 and "many.where" in lines[0]


@needs_subinterpreters
def test_shutdown_while_probing_completes_every_call(app):
    mods = app({"p1": WHERE, "p2": "import sc_single\n" + WHERE})
    before = interpreters_now()
    pool = executor(app)
    futures = [pool.submit(mods["p1"].where) for _ in range(3)] + [pool.submit(mods["p2"].where)]
    assert pool.route_of(mods["p1"].where) is None
    close(pool, wait_=True)
    assert all(f.done() for f in futures)
    got = [f.result(timeout=0) for f in futures]
    assert got[:3] == [(False, os.getpid())] * 3 and got[3][0] is True
    with pytest.raises(RuntimeError):
        pool.submit(mods["p1"].where)
    assert interpreters_now() == before and gone(got[3][1])


@needs_subinterpreters
def test_shutdown_without_waiting_and_with_cancel(app):
    mods = app({"q1": WHERE, "q2": WHERE})
    nowait = executor(app)
    futures = [nowait.submit(mods["q1"].where) for _ in range(3)]
    close(nowait, wait_=False, bound=5)  # returns at once: the probe is still running
    assert results(futures) == [(False, os.getpid())] * 3
    cancelling = executor(app)
    futures = [cancelling.submit(mods["q2"].where) for _ in range(3)]
    close(cancelling, cancel=True)
    assert all(f.cancelled() for f in futures)  # they were waiting for the probe
    assert not wait(futures, timeout=BOUND).not_done


@needs_subinterpreters
def test_a_failing_probe_routes_to_the_fallback(app, monkeypatch, caplog):
    """The probe's child process cannot start (its interpreter is gone)."""
    mod = app({"pf": WHERE})["pf"]
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    pool = executor(app, fallback="thread")
    try:
        assert results([pool.submit(mod.where) for _ in range(3)]) == [(True, os.getpid())] * 3
        route = pool.route_of(mod.where)
    finally:
        close(pool)
    assert route.why.startswith("unknown: the probe failed") and pool.stats()["probe_errors"] == 1
    assert any("probing" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@needs_subinterpreters
def test_a_main_defined_function_runs_on_the_fallback(app, tmp_path):
    """Run as a real script: the function's module is __main__."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os
            from subcompat.futures import AutoPoolExecutor

            def double(x):
                return x * 2, os.getpid()

            if __name__ == "__main__":
                with AutoPoolExecutor(2, cache_dir={app.cache_dir!r}) as pool:
                    futures = [pool.submit(double, i) for i in range(4)]
                    got = [f.result(timeout=60) for f in futures]
                    print(pool.route_of(double).executor, pool.route_of(double).why)
                    print([x for x, _ in got], all(pid != os.getpid() for _, pid in got))
                    print(pool.stats())
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("process defined in __main__")
    assert lines[1] == "[0, 2, 4, 6] True"
    assert "probes" not in lines[2]  # nothing to probe
    assert "Traceback" not in done.stderr


@needs_subinterpreters
def test_bad_options_are_refused_with_a_clear_error(app):
    from subcompat.futures import AutoPoolExecutor

    for kw, error in [
        ({"fallback": "fork"}, ValueError),
        ({"degraded": "maybe"}, ValueError),
        ({"max_workers": 0}, ValueError),
        ({"probe_timeout": float("nan")}, ValueError),
        ({"probe_timeout": "10"}, TypeError),
        ({"initializer": 3}, TypeError),
        ({"max_batch": 0}, ValueError),
        ({"max_batch": 2.5}, TypeError),
    ]:
        with pytest.raises(error) as caught:
            AutoPoolExecutor(**kw)
        assert str(caught.value)


def test_without_subinterpreters_everything_runs_on_the_fallback_with_one_warning():
    """The py311 env runs this one in-process (3.13+ have sub-interpreters)."""
    if sys.version_info >= (3, 13):
        pytest.skip("Python >= 3.13 has sub-interpreters; this runs in the py311 env")
    from subcompat.futures import AutoPoolExecutor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = AutoPoolExecutor(2, fallback="thread")
        try:
            got = results([pool.submit(pow, 2, i) for i in range(5)])
            mapped = list(pool.map(abs, [-1, -2, -3], chunksize=2, timeout=BOUND))
            route = pool.route_of(pow)
        finally:
            close(pool)
    assert got == [1, 2, 4, 8, 16] and mapped == [1, 2, 3]
    assert route.executor == "thread" and "no isolated sub-interpreters" in route.why
    runtime = [str(w.message) for w in caught if w.category is RuntimeWarning]
    assert (
        len(runtime) == 1 and "no isolated sub-interpreters; every call runs on the thread pool" in runtime[0]
    )
    assert "probes" not in pool.stats()


@needs_subinterpreters
def test_the_example_runs(tmp_path):
    for package in ("attrs", "msgpack", "ujson"):
        pytest.importorskip(package, reason=f"{package} (the test extra) is not installed")
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    env["SUBCOMPAT_CACHE_DIR"] = str(tmp_path / "cache")
    done = subprocess.run(
        [sys.executable, "futures_demo.py"],
        capture_output=True,
        text=True,
        timeout=BOUND,
        env=env,
        cwd=examples,
    )
    assert done.returncode == 0, done.stderr
    routes = {line.split()[0]: line.split()[2] for line in done.stdout.splitlines() if " -> " in line}
    assert routes == {
        "shop.jobs.reports.daily_report": "subinterpreter",
        "shop.jobs.serialize.pack": "process",
        "shop.jobs.pricing.quote": "process",
        "__main__.total": "process",
    }
    assert "Traceback" not in done.stderr


@needs_subinterpreters
def test_the_initializer_runs_in_every_inner_pool(app):
    mods = app(
        {
            "init": "STATE = {}\ndef init(value):\n    STATE['v'] = value\n"
            "def read():\n    return STATE.get('v')\n",
            "init_bad": "import sc_single\ndef read():\n    from . import init\n"
            "    return init.STATE.get('v')\n",
        }
    )
    pool = executor(app, initializer=mods["init"].init, initargs=("ready",))
    try:
        got = results([pool.submit(mods["init"].read), pool.submit(mods["init_bad"].read)])
        routes = [pool.route_of(m.read).executor for m in (mods["init"], mods["init_bad"])]
    finally:
        close(pool)
    assert routes == ["subinterpreter", "process"] and got == ["ready", "ready"]


# -- lanes: how calls reach the inner pools -----------------------------------------------

OUTCOMES = """
import os, signal, threading

def half(x):
    if x % 7 == 3:
        raise ValueError("not this one", x)
    return x // 2

def send_back(x):
    return threading.Lock() if x == 5 else x

def same(x):
    return x

class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")

def leave(x):
    if x == 3:
        raise SystemExit(7)
    if x == 4:
        raise KeyboardInterrupt
    if x == 5:
        raise Unprintable()
    return x

def spin(n):
    total = 0
    for i in range(n):
        total += i % 3
    return total

class Odd(Exception):
    def __init__(self, a, b):  # pickles, but cannot be rebuilt from its args
        super().__init__(a + b)

def odd(x, log):
    with open(log, "a") as f:
        f.write(f"{x}\\n")
    if x == 7:
        raise Odd("a", "b")
    return x

def die(kill):
    if kill:
        os.kill(os.getpid(), signal.SIGKILL)
    return os.getpid()
"""


@needs_subinterpreters
@pytest.mark.parametrize("fallback", ["process", "thread"])
def test_small_calls_share_pool_tasks_and_keep_their_own_outcomes(app, fallback):
    mods = app({"oc": OUTCOMES, "oc_bad": "import sc_single\n" + OUTCOMES})
    pool = executor(app, fallback=fallback)
    try:
        futures = {m: [pool.submit(mods[m].half, x) for x in range(300)] for m in mods}
        wait([f for fs in futures.values() for f in fs], timeout=BOUND)
        stats = pool.stats()
    finally:
        close(pool)
    for fs in futures.values():
        for x, future in enumerate(fs):
            if x % 7 == 3:
                error = future.exception(timeout=0)
                assert type(error) is ValueError and error.args == ("not this one", x)
            else:
                assert future.result(timeout=0) == x // 2
    for route in ("subinterpreter", fallback):
        assert stats[f"route.{route}"] == 300
        assert stats[f"batches.{route}"] <= 150, stats  # waiting calls left together
    remote = futures["oc"][3].exception(timeout=0).__cause__
    assert "ValueError: ('not this one', 3)" in str(remote) and "in half" in str(remote)


@needs_subinterpreters
def test_a_call_on_an_idle_pool_goes_alone_and_long_calls_are_never_grouped(app):
    mod = app({"idle": OUTCOMES})["idle"]
    pool = executor(app)
    try:
        for x in (0, 1, 2, 4, 5):  # one at a time: nothing waits, nothing is held back
            assert results([pool.submit(mod.half, x)]) == [x // 2]
        assert pool.stats()["batches.subinterpreter"] == 5
        assert results([pool.submit(mod.spin, 300_000) for _ in range(10)]) == [mod.spin(300_000)] * 10
        stats = pool.stats()
    finally:
        close(pool)
    assert stats["batches.subinterpreter"] == 15  # each call takes well over a batch's worth


@needs_subinterpreters
def test_max_batch_one_sends_every_call_alone(app):
    mod = app({"one": OUTCOMES})["one"]
    pool = executor(app, max_batch=1)
    try:
        assert results([pool.submit(mod.same, x) for x in range(100)]) == list(range(100))
        stats = pool.stats()
    finally:
        close(pool)
    assert stats["batches.subinterpreter"] == stats["route.subinterpreter"] == 100


def _with_notes(exc: BaseException) -> str:
    return " ".join([str(exc), *getattr(exc, "__notes__", ())])


@needs_subinterpreters
@pytest.mark.parametrize("where", ["oc", "oc_bad"])
def test_a_call_that_cannot_be_sent_fails_alone(app, where):
    """One argument and one result in 200 cannot be pickled: those two calls fail with
    the pickling error, every other call of their batches completes."""
    mods = app({"oc": OUTCOMES, "oc_bad": "import sc_single\n" + OUTCOMES})
    mod = mods[where]
    pool = executor(app)
    try:
        args = [threading.Lock() if x == 50 else x for x in range(100)]
        sent = [pool.submit(mod.same, a) for a in args]
        back = [pool.submit(mod.send_back, x) for x in range(100)]
        wait(sent + back, timeout=BOUND)
        stats = pool.stats()
    finally:
        close(pool)
    failed = {i for i, f in enumerate(sent) if f.exception(timeout=0) is not None}
    why = _chain_text(sent[50].exception())  # a pickling error, or 3.14's NotShareableError
    assert failed == {50} and ("pickle" in why or "cross-interpreter data" in why) and "lock" in why
    assert [f.result() for i, f in enumerate(sent) if i != 50] == [x for x in range(100) if x != 50]
    assert [i for i, f in enumerate(back) if f.exception(timeout=0) is not None] == [5]
    assert "cannot be sent back" in _with_notes(back[5].exception())
    assert [f.result() for i, f in enumerate(back) if i != 5] == [x for x in range(100) if x != 5]
    route = "subinterpreter" if where == "oc" else "process"
    assert stats[f"batches.{route}"] < 200 and stats.get("reroutes", 0) == 0


@needs_subinterpreters
@pytest.mark.parametrize("where", ["oc", "oc_bad"])
def test_an_outcome_that_cannot_be_unpickled_here_fails_its_call_only_and_nothing_runs_twice(
    app, tmp_path, where
):
    mods = app({"oc": OUTCOMES, "oc_bad": "import sc_single\n" + OUTCOMES})
    log = tmp_path / "ran.log"
    pool = executor(app)
    try:
        futures = [pool.submit(mods[where].odd, x, str(log)) for x in range(150)]
        wait(futures, timeout=BOUND)
        stats = pool.stats()
    finally:
        close(pool)
    assert sorted(map(int, log.read_text().split())) == list(range(150))  # each call ran once
    assert [i for i, f in enumerate(futures) if f.exception(timeout=0) is not None] == [7]
    assert "cannot be unpickled here" in _with_notes(futures[7].exception())
    assert [f.result() for i, f in enumerate(futures) if i != 7] == [x for x in range(150) if x != 7]
    assert sum(n for k, n in stats.items() if k.startswith("batches.")) < 150


@needs_subinterpreters
@pytest.mark.parametrize("where", ["oc", "oc_bad"])
def test_a_call_that_exits_or_is_interrupted_is_its_own_outcome(app, where):
    """SystemExit, KeyboardInterrupt and an exception whose str() raises, inside batches:
    each is its call's exception; the worker and the other calls go on."""
    mods = app({"oc": OUTCOMES, "oc_bad": "import sc_single\n" + OUTCOMES})
    pool = executor(app)
    try:
        futures = [pool.submit(mods[where].leave, x) for x in range(120)]
        wait(futures, timeout=BOUND)
        after = results([pool.submit(mods[where].same, 1)])
    finally:
        close(pool)
    errors = {i: f.exception(timeout=0) for i, f in enumerate(futures) if f.exception(timeout=0)}
    assert sorted(errors) == [3, 4, 5] and after == [1]
    assert type(errors[3]) is SystemExit and errors[3].code == 7
    assert type(errors[4]) is KeyboardInterrupt
    assert type(errors[5]).__name__ == "Unprintable"
    returned = [f.result() for i, f in enumerate(futures) if i not in errors]
    assert returned == [x for x in range(120) if x not in (3, 4, 5)]


def _chain_text(exc: BaseException) -> str:
    text = []
    while exc is not None and len(text) < 10:
        text.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(text)


@needs_subinterpreters
def test_a_process_pool_killed_by_a_call_is_replaced_for_the_next_calls(app):
    from concurrent.futures.process import BrokenProcessPool

    mod = app({"killer": "import sc_single\n" + OUTCOMES})["killer"]
    pool = executor(app)
    try:
        first = results([pool.submit(mod.die, False)])[0]  # this pool works...
        killed = pool.submit(mod.die, True)  # ...until a call SIGKILLs its worker
        wait([killed], timeout=BOUND)
        assert isinstance(killed.exception(timeout=0), BrokenProcessPool)
        after = results([pool.submit(mod.die, False) for _ in range(3)])[0]
    finally:
        close(pool)
    assert pool.route_of(mod.die).executor == "process"
    assert gone(first) and gone(after), "a fallback process outlived shutdown"


@needs_subinterpreters
def test_an_initializer_that_cannot_load_in_a_subinterpreter_sends_every_call_to_the_fallback(app, caplog):
    mods = app(
        {
            "ini_bad": "import sc_single\nSTATE = {}\ndef init(v):\n    STATE['v'] = v\n",
            "ini_job": "import sys\ndef read():\n    done = sys.modules.get(__package__ + '.ini_bad')\n"
            "    return done and done.STATE.get('v')\n",
        }
    )
    pool = executor(app, initializer=mods["ini_bad"].init, initargs=("ready",))
    try:
        assert results([pool.submit(mods["ini_job"].read) for _ in range(4)]) == ["ready"] * 4
        assert results([pool.submit(mods["ini_job"].read)]) == ["ready"]
        route = pool.route_of(mods["ini_job"].read)
        stats = pool.stats()
    finally:
        close(pool)
    assert route.executor == "process" and "interpreter pool is broken" in route.why
    assert stats["route.process"] == 5 and 1 <= stats["reroutes"] <= 4
    warned = [r for r in caplog.records if "interpreter pool is broken" in r.getMessage()]
    assert len(warned) == 1


@needs_subinterpreters
def test_map_with_a_buffer_reads_its_input_lazily(app):
    mod = app({"buf": OUTCOMES})["buf"]
    pool = executor(app)
    try:
        got = list(itertools.islice(pool.map(mod.spin, itertools.count(), buffersize=4, timeout=BOUND), 10))
        submitted = pool.stats()["route.subinterpreter"]
        chunked = pool.map(mod.spin, range(30), buffersize=2, chunksize=4, timeout=BOUND)
        assert list(chunked) == [mod.spin(n) for n in range(30)]
        for bad, error in ((0, ValueError), (1.5, TypeError), (True, TypeError)):
            with pytest.raises(error):
                pool.map(mod.spin, range(3), buffersize=bad)
    finally:
        close(pool)
    assert got == [mod.spin(n) for n in range(10)]
    assert 10 <= submitted <= 10 + 4  # an endless input: only the buffer ran ahead


@needs_subinterpreters
def test_a_call_still_waiting_in_the_lane_can_be_cancelled(app):
    """One worker, two calls held in the thread fallback: the third waits in the lane,
    where cancel() still takes it back, and it never runs."""
    gate = "import sc_single, threading\nSTARTED, OPEN, RAN = threading.Event(), threading.Event(), []\n"
    gate += "def held(i):\n    RAN.append(i)\n    STARTED.set()\n    return OPEN.wait(90)\n"
    mod = app({"gate": gate})["gate"]
    pool = executor(app, fallback="thread", max_workers=1)
    try:
        futures = [pool.submit(mod.held, i) for i in range(3)]
        assert mod.STARTED.wait(BOUND)
        assert futures[2].cancel()
        assert not wait([futures[2]], timeout=BOUND).not_done  # wait() hears of it at once
        mod.OPEN.set()
        assert not wait(futures, timeout=BOUND).not_done
    finally:
        close(pool)
    assert [f.result(timeout=0) for f in futures[:2]] == [True, True]
    assert futures[2].cancelled() and mod.RAN == [0, 1]


# -- a drop-in for the stdlib pools (issue 23; tests/test_stdlib_futures.py runs their suite) --

EXIT_JOB = """
import time

def say(word):
    time.sleep(0.3)
    print(word, flush=True)
"""


@needs_subinterpreters
@pytest.mark.parametrize("fallback", ["thread", "process"])
def test_calls_submitted_just_before_exit_run_and_submit_from_atexit_raises(app, tmp_path, fallback):
    """The stdlib suite's two interpreter-exit tests, on AutoPoolExecutor: their scripts
    import the pool class from concurrent.futures by name, so they are rebuilt here."""
    mods = app({"exitjob": EXIT_JOB})
    module = mods["exitjob"].__name__
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import atexit
            from subcompat.futures import AutoPoolExecutor
            from {module} import say

            def run_last():
                try:
                    t.submit(id, None)
                except RuntimeError as exc:
                    print("runtime-error:", exc, flush=True)

            if __name__ == "__main__":  # (forkserver imports this module too)
                atexit.register(run_last)
                t = AutoPoolExecutor(3, fallback={fallback!r}, cache_dir={app.cache_dir!r})
                t.submit(say, "apple")  # its module not probed yet: it waits for the probe
                t.submit(pow, 2, 3)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=BOUND, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "apple",
        "runtime-error: cannot schedule new futures after interpreter shutdown",
    ], done.stderr
    assert "Traceback" not in done.stderr


@needs_subinterpreters
def test_each_flavour_takes_its_stdlib_pools_arguments(app):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    from subcompat.futures import AutoPoolExecutor, AutoProcessPoolExecutor, AutoThreadPoolExecutor

    spawn = multiprocessing.get_context("spawn")
    pool = AutoPoolExecutor(2, spawn, cache_dir=app.cache_dir)  # ProcessPoolExecutor(2, spawn)
    assert isinstance(pool, AutoProcessPoolExecutor) and isinstance(pool, ProcessPoolExecutor)
    assert pool._mp_context is spawn
    close(pool)
    pool = AutoPoolExecutor(2, "worker", fallback="thread", cache_dir=app.cache_dir)
    assert isinstance(pool, AutoThreadPoolExecutor) and isinstance(pool, ThreadPoolExecutor)
    assert pool.submit(lambda: threading.current_thread().name).result(BOUND).startswith("worker_")
    close(pool)
    with pytest.raises(ValueError, match="fork"):
        AutoPoolExecutor(2, multiprocessing.get_context("fork"), max_tasks_per_child=1)
    with AutoPoolExecutor(1, max_tasks_per_child=1, cache_dir=app.cache_dir) as pool:
        assert pool._mp_context.get_start_method() == "spawn"  # as ProcessPoolExecutor chooses
        pids = {pool.submit(os.getpid).result(BOUND) for _ in range(3)}
        assert len(pids) == 3  # one process per call


@needs_subinterpreters
def test_asyncio_takes_the_thread_flavour_as_its_default_executor(app):
    import asyncio

    from subcompat.futures import AutoPoolExecutor

    mods = app({"plain": "def triple(x):\n    return 3 * x\n"})

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_default_executor(AutoPoolExecutor(2, fallback="thread", cache_dir=app.cache_dir))
        return await loop.run_in_executor(None, mods["plain"].triple, 5)

    assert asyncio.run(main()) == 15


@needs_subinterpreters
@pytest.mark.parametrize("fallback", ["thread", "process"])
def test_arguments_that_cannot_enter_a_subinterpreter_run_on_the_fallback(app, fallback):
    """The module is compatible; the call's argument (an Event) is not shareable: measured
    when the call is sent, it runs where the stdlib pool would run it."""
    mods = app(
        {"waits": "def is_set(event):\n    return event.is_set()\n\ndef truth(x):\n    return bool(x)\n"}
    )
    pool = executor(app, fallback=fallback)
    try:
        assert pool.submit(mods["waits"].truth, 1).result(BOUND) is True  # probed, compatible
        if fallback == "thread":
            event = threading.Event()
            event.set()
            assert pool.submit(mods["waits"].is_set, event).result(BOUND) is True
        else:  # a process pool cannot take it either: the stdlib's error, from the fallback
            with pytest.raises(TypeError, match="pickle"):
                pool.submit(mods["waits"].is_set, threading.Event()).result(BOUND)
        stats = pool.stats()
        assert stats.get(f"route.{fallback}", 0) == 1 and stats["route.subinterpreter"] == 1
    finally:
        close(pool)


@needs_subinterpreters
def test_a_manager_proxy_works_in_a_subinterpreter(app):
    import multiprocessing

    mods = app({"proxied": "def put(d, k):\n    d[k] = k * 2\n    return len(d)\n"})
    with multiprocessing.get_context("spawn").Manager() as manager:
        shared = manager.dict()
        pool = executor(app)
        try:
            assert results([pool.submit(mods["proxied"].put, shared, k) for k in (1, 2)])[-1] >= 1
            assert dict(shared) == {1: 2, 2: 4}
            assert pool.stats().get("route.subinterpreter") == 2
        finally:
            close(pool)


@needs_subinterpreters
def test_a_c_function_runs_outside_this_process(app):
    """os._exit in a sub-interpreter would end the caller; in the fallback it ends a
    worker process, as with ProcessPoolExecutor."""
    from concurrent.futures.process import BrokenProcessPool

    pool = executor(app)
    try:
        with pytest.raises(BrokenProcessPool):
            pool.submit(os._exit, 1).result(BOUND)
        assert pool.route_of(os._exit).executor == "process"
        assert "C function" in pool.route_of(os._exit).why
    finally:
        close(pool)


def released(ref, bound: float = BOUND) -> bool:
    """``ref``'s object is freed, within ``bound``: the thread that delivered it lets go of
    it just after the caller got it (as the stdlib's own test_free_reference waits for)."""
    import gc

    deadline = time.monotonic() + bound
    while True:
        gc.collect()
        if ref() is None:
            return True
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.005)


@needs_subinterpreters
def test_no_reference_is_kept_past_a_call(app):
    import weakref

    mods = app(
        {"objs": "class Box:\n    def get(self):\n        return Box()\n\ndef make(_):\n    return Box()\n"}
    )
    pool = executor(app, fallback="thread")
    try:
        box = mods["objs"].Box()
        gone = weakref.ref(box)
        pool.submit(box.get).result(BOUND)  # the timing table keys by name, not by the method
        del box
        assert released(gone)
        for obj in pool.map(mods["objs"].make, range(8)):
            ref = weakref.ref(obj)
            del obj
            assert released(ref)  # map's iterator does not hold the last result, nor the lane
    finally:
        close(pool)
