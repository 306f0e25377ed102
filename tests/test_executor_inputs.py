"""AutoFallbackExecutor's inputs on their own: executor_options, the verdict file, and the
exceptions a sub-interpreter pool hands back (real pools, real files, no worker)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest
from _req import require_or_skip

try:
    from subcompat import chancy as auto
except ImportError as exc:  # chancy is an optional dependency
    auto = None
    _why = str(exc)


@pytest.fixture(autouse=True)
def _needs_chancy() -> None:
    if sys.version_info < (3, 13):  # a property of the env: tox installs chancy on 3.13+ only
        pytest.skip("chancy is installed on Python >= 3.13 only (the unsupported-Python env has none)")
    require_or_skip(auto is not None, f"subcompat.chancy is not importable: {auto is None and _why}")


# -- executor_options ------------------------------------------------------------------


def _special_paths(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "file").write_text("{}")
    (tmp_path / "dir").mkdir()
    os.mkfifo(tmp_path / "fifo")
    return {k: str(tmp_path / k) for k in ("file", "dir", "fifo")}


BAD_OPTIONS = [
    ({"falback": "process"}, "unknown executor_options 'falback' (valid: fallback, degraded"),
    ({"fallback": "fork"}, "executor_options['fallback'] must be one of 'process', 'thread', not 'fork'"),
    ({"fallback": ["process"]}, "executor_options['fallback'] must be one of"),
    ({"degraded": "sometimes"}, "executor_options['degraded'] must be one of 'fallback', 'subinterpreter'"),
    ({"probe_timeout": float("nan")}, "executor_options['probe_timeout'] must be finite and > 0, not nan"),
    ({"probe_timeout": float("inf")}, "executor_options['probe_timeout'] must be finite and > 0, not inf"),
    ({"probe_timeout": -1}, "executor_options['probe_timeout'] must be finite and > 0, not -1"),
    ({"probe_timeout": 0}, "executor_options['probe_timeout'] must be finite and > 0, not 0"),
    ({"probe_timeout": "30"}, "executor_options['probe_timeout'] must be a number of seconds, not '30'"),
    ({"probe_timeout": True}, "executor_options['probe_timeout'] must be a number of seconds, not True"),
    ({"cache_dir": 5}, "executor_options['cache_dir'] must be a path, not 5"),
    ({"cache_dir": "{file}"}, "executor_options['cache_dir'] must be a directory"),
    ({"verdicts": "{dir}/missing.json"}, "executor_options['verdicts'] does not exist"),
    ({"verdicts": "{dir}"}, "executor_options['verdicts'] must be a regular file (it is a directory)"),
    ({"verdicts": "{fifo}"}, "executor_options['verdicts'] must be a regular file (it is a FIFO)"),
    ({"verdicts": ""}, "executor_options['verdicts'] must be a path, not ''"),
    ({"verdicts": {"path": "x"}}, "executor_options['verdicts'] must be a path"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_each_invalid_option_is_one_error_naming_it(tmp_path, options, message):
    paths = _special_paths(tmp_path)
    options = {k: v.format(**paths) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(auto.OptionsError) as caught:
        auto.AutoFallbackExecutor(worker=None, queue=None, **options)
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)  # what callers caught before


def test_valid_options_are_taken_as_given(tmp_path):
    paths = _special_paths(tmp_path)
    config = auto.validate_options(
        {"fallback": "thread", "degraded": "subinterpreter", "probe_timeout": 5, "verdicts": paths["file"]}
    )
    assert (config.policy.fallback, config.policy.degraded) == ("thread", "subinterpreter")
    assert config.probe_timeout == 5.0 and config.verdicts == paths["file"] and config.cache_dir is None


# -- the verdict file ------------------------------------------------------------------------


def _write(path: Path, modules: list, python: str | None = None) -> str:
    path.write_text(json.dumps({"schema": 1, "python": python or auto.PYTHON, "modules": modules}))
    return str(path)


def _entry(target: str, verdict: str = "compatible", **extra) -> dict:
    return {"target": target, "verdict": verdict, **extra}


def test_only_entries_that_can_be_trusted_are_used(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    for name in ("a", "b", "dist"):
        (app / f"{name}.py").write_text("")
    a, b, dist = (str(app / f"{n}.py") for n in ("a", "b", "dist"))
    path = _write(
        tmp_path / "verdicts.json",
        [
            _entry("app.fresh", files=[a], dist_stamps=[]),
            _entry("app.edited", files=[b]),
            _entry("app.unfingerprinted"),
            _entry("app.slow", "incompatible"),  # the fallback: safe without fingerprints
            _entry("app.moved", files=[str(app / "gone.py")]),
            _entry("app.other_python", files=[a], python="3.0.0"),
            _entry("app.split:one", files=[a]),
            _entry("app.split:two", "incompatible", files=[a]),
            _entry("app.reinstalled", files=[a], dist_stamps=[dist]),
            _entry("app.weird", "great", files=[a]),
            _entry("app.garbled", files="a.py"),
            5,
            {"target": 3},
        ],
    )
    later = os.stat(path).st_mtime_ns + 5 * 10**9
    for changed in (b, dist):
        os.utime(changed, ns=(later, later))
    seed = auto.load_verdicts(path)
    assert seed.refused is None
    assert {m: r.executor for m, r in seed.routes.items()} == {
        "app.fresh": "subinterpreter",
        "app.slow": "process",
        "app.split:one": "subinterpreter",  # routes are per job function
        "app.split:two": "process",
    }
    assert all(r.why.endswith("(verdict file)") for r in seed.routes.values())
    why = seed.ignored
    assert set(why) == {
        "app.edited",
        "app.unfingerprinted",
        "app.moved",
        "app.other_python",
        "app.reinstalled",
        "app.weird",
        "app.garbled",
    }
    assert why["app.edited"] == f"{b} changed after the verdict file was written"
    assert why["app.reinstalled"] == f"{dist} changed after the verdict file was written"
    assert why["app.moved"].endswith("gone.py is gone")
    assert why["app.unfingerprinted"].startswith("no fingerprints")
    assert why["app.other_python"] == f"made by Python 3.0.0, this is {auto.PYTHON}"
    assert why["app.garbled"] == "malformed fingerprints"


def test_a_file_from_another_python_seeds_nothing(tmp_path):
    path = _write(tmp_path / "v.json", [_entry("app.slow", "incompatible")], python="3.12.1")
    seed = auto.load_verdicts(path)
    assert seed.routes == {} and list(seed.ignored) == ["app.slow"]


def test_an_oversized_file_is_refused_without_being_read(tmp_path):
    big = tmp_path / "huge.json"
    with open(big, "wb") as fh:
        fh.truncate(170 * 10**6)  # sparse: costs no disk
    started = time.perf_counter()
    seed = auto.load_verdicts(str(big))
    elapsed = time.perf_counter() - started
    assert seed.refused == f"{170 * 10**6} bytes, more than the {16 << 20} allowed"
    assert elapsed < 0.5, elapsed  # one fstat; reading 170 MB takes longer than that here
    print(f"170 MB file refused in {elapsed * 1000:.2f} ms")


def test_a_fifo_in_place_of_the_file_cannot_block_the_reader(tmp_path):
    """start-up checked a regular file; by the time the thread opens it, it is a FIFO."""
    fifo = tmp_path / "verdicts.json"
    os.mkfifo(fifo)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(auto.load_verdicts, str(fifo))
    try:
        seed = future.result(timeout=10)
    finally:
        if not future.done():  # a blocked open: give it a writer so the thread can end
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pool.shutdown()
    assert seed.refused == "not a regular file (a FIFO)"


@pytest.mark.parametrize(
    "text, refused",
    [
        ("[" * 2_000_000 + "]" * 2_000_000, "nested deeper than 32 levels"),
        ("[" * 5_000_000, "not JSON: its brackets do not balance"),
        ('{"schema": 1, "modules": [' + "{" * 40 + "}" * 40 + "]}", "nested deeper than 32 levels"),
    ],
)
def test_deep_nesting_is_refused_before_the_parser_recurses(tmp_path, text, refused):
    path = tmp_path / "deep.json"
    path.write_text(text)
    done: dict[str, object] = {}
    # a thread with a small stack: where a recursive parse would overflow first
    old = threading.stack_size(512 * 1024)
    try:
        thread = threading.Thread(target=lambda: done.update(seed=auto.load_verdicts(str(path))))
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join(60)
    assert done["seed"].refused == refused


def test_brackets_inside_strings_do_not_count(tmp_path):
    notes = ["[[[[[[[[[[" * 10, '"quoted {{{{{{{{{{"', "back\\slash [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["]
    path = _write(tmp_path / "v.json", [_entry("app.slow", "incompatible", notes=notes)])
    seed = auto.load_verdicts(path)
    assert seed.refused is None and list(seed.routes) == ["app.slow"]


def test_a_report_near_the_size_limit_loads_whole(tmp_path):
    """15 MiB of entries: all used, and the time it takes is the figure to know."""
    modules, size = [], 0
    while size < (15 << 20):
        entry = _entry(f"app.m{len(modules)}", "incompatible", notes=["x" * 200], culprits=[{"chain": ["a"]}])
        modules.append(entry)
        size += len(json.dumps(entry))
    path = _write(tmp_path / "big.json", modules)
    started = time.perf_counter()
    seed = auto.load_verdicts(path)
    elapsed = time.perf_counter() - started
    assert seed.refused is None and len(seed.routes) == len(modules)
    print(f"{os.path.getsize(path) / 2**20:.1f} MiB, {len(modules)} entries loaded in {elapsed:.2f} s")


# -- the sub-interpreter ImportError in exception chains --------------------------------


MESSAGE = "module sc_single does not support loading in subinterpreters"


def _raise(exc: BaseException, *, cause: BaseException | None = None, context: BaseException | None = None):
    try:
        if context is not None:
            try:
                raise context
            except BaseException:
                raise exc from cause
        raise exc from cause
    except BaseException as caught:
        return caught


def test_the_import_error_is_found_under_cause_and_context():
    hidden = _raise(
        RuntimeError("args not shareable"), cause=ValueError("unrelated"), context=ImportError(MESSAGE)
    )
    assert hidden.__cause__ is not None  # the old walk followed the cause only, and missed it
    assert auto.is_subinterpreter_import_error(hidden)
    assert auto.subinterpreter_import_message(hidden) == MESSAGE
    suppressed = _raise(RuntimeError("need sc_single"), context=ImportError(MESSAGE))
    suppressed.__suppress_context__ = True  # `raise ... from None` in the job's own code
    assert auto.is_subinterpreter_import_error(suppressed)
    grouped = BaseExceptionGroup("jobs", [ValueError("x"), ImportError(MESSAGE)])
    assert auto.is_subinterpreter_import_error(grouped)
    assert not auto.is_subinterpreter_import_error(_raise(ImportError("No module named 'x'")))


def test_the_walk_is_bounded_and_cycle_safe():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__cause__ = b, a
    assert not auto.is_subinterpreter_import_error(a)
    deep: BaseException = ImportError(MESSAGE)
    for i in range(10_000):
        outer = RuntimeError(str(i))
        outer.__cause__ = deep
        deep = outer
    started = time.perf_counter()
    assert not auto.is_subinterpreter_import_error(deep)  # past CHAIN_LIMIT: not looked at
    assert time.perf_counter() - started < 0.1

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    assert auto.is_subinterpreter_import_error(_raise(Unprintable(), cause=ImportError(MESSAGE)))


def _pool():
    """The pool chancy's SubInterpreterExecutor runs jobs in, built by chancy itself."""
    from chancy import Queue
    from chancy.executors.sub import SubInterpreterExecutor

    return SubInterpreterExecutor(None, Queue("inputs", concurrency=1)).pool


@pytest.mark.needs_subinterpreters
def test_what_a_real_pool_raises_for_an_import_is_recognised(fixture_site, monkeypatch):
    """The job's own import fails in the sub-interpreter: on every Python."""
    import importlib

    monkeypatch.syspath_prepend(str(fixture_site))
    with _pool() as pool:
        future = pool.submit(importlib.import_module, "sc_single")
        with pytest.raises(BaseException) as caught:
            future.result(timeout=60)
    assert auto.subinterpreter_import_message(caught.value).endswith(MESSAGE)


@pytest.mark.needs_subinterpreters
@pytest.mark.skipif(sys.version_info < (3, 14), reason="3.13's backport hangs on this instead of raising")
def test_not_shareable_error_from_a_real_pool_is_recognised(fixture_site, monkeypatch):
    """3.14+: what the sub-interpreter must unpickle needs a module it cannot load, and the
    pool raises NotShareableError with the ImportError's text down its chain."""
    import operator
    from concurrent.interpreters import NotShareableError

    monkeypatch.syspath_prepend(str(fixture_site))
    import sc_single

    with _pool() as pool:
        with pytest.raises(NotShareableError) as caught:
            pool.submit(operator.pos, sc_single.answer).result(timeout=60)
    found = auto.subinterpreter_import_message(caught.value)
    assert found is not None and MESSAGE in found
