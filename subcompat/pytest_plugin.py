"""pytest plugin (entry point ``pytest11``), inactive unless asked for.

``pytest --subcompat`` (or ``subcompat = true`` in the pytest ini) adds one test per job
module configured in ``[tool.subcompat]``; it fails with the culprit report. The
``run_in_subinterpreter`` fixture (also importable as a function) runs a module-level
callable in a fresh isolated sub-interpreter and returns its result or re-raises its
exception, so a project can test its own jobs there.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
from collections.abc import Callable

import pytest

from subcompat._support import no_subinterpreters

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

    from _pytest._code.code import TerminalRepr

_REPORT_KEY = pytest.StashKey["dict[str, Any]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("subcompat")
    group.addoption(
        "--subcompat",
        action="store_true",
        default=False,
        help="add one test per [tool.subcompat] job module: may it run in a sub-interpreter?",
    )
    parser.addini("subcompat", "enable the subcompat job checks", type="bool", default=False)


def _active(config: pytest.Config) -> bool:
    return bool(config.getoption("subcompat") or config.getini("subcompat"))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    if not _active(config):
        return
    from subcompat import config as config_mod

    cfg = config_mod.load(config.rootpath)
    targets = config_mod.expand_jobs(cfg.jobs, [str(config.rootpath), *sys.path])
    if not targets:
        raise pytest.UsageError("subcompat: --subcompat given but [tool.subcompat] lists no jobs")
    items.extend(JobItem.from_parent(session, name=f"subcompat::{t}", target=t) for t in targets)


class JobItem(pytest.Item):
    """May this job module run in an isolated sub-interpreter?"""

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def _verdicts(self) -> dict[str, Any]:
        stash = self.config.stash
        if _REPORT_KEY not in stash:  # one probe run for all job items
            from subcompat import config as config_mod
            from subcompat.cache import Cache
            from subcompat.check import check
            from subcompat.route import Policy

            cfg = config_mod.load(self.config.rootpath)
            items = [i.target for i in self.session.items if isinstance(i, JobItem)]
            cache = Cache()
            try:
                report = check(
                    items, cache=cache, timeout=cfg.timeout, policy=Policy(cfg.fallback, cfg.degraded)
                )
            finally:
                cache.close()
            verdicts = config_mod.apply_overrides(report.verdicts, cfg)
            stash[_REPORT_KEY] = {"report": report, "verdicts": {v.target: v for v in verdicts}}
        return stash[_REPORT_KEY]

    def runtest(self) -> None:
        from subcompat.report import Report, render_text

        data = self._verdicts()
        verdict = data["verdicts"][self.target]
        if verdict.verdict == "unsupported":
            pytest.skip(f"subcompat: {verdict.reason}")
        report = Report(data["report"].python, (verdict,), data["report"].policy)
        if report.exit_code() != 0:
            raise JobIncompatible(render_text(report))

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, JobIncompatible):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[str, int | None, str]:
        return str(self.config.rootpath / "pyproject.toml"), None, f"subcompat: {self.target}"


class JobIncompatible(Exception):
    pass


class SubinterpreterUnavailable(RuntimeError):
    pass


_CALL = """
import pickle, sys, os
sys.path[:] = PATH
fd = FD
try:
    func, args, kwargs = pickle.loads(PAYLOAD)
    outcome = ("ok", func(*args, **kwargs))
except BaseException as exc:
    import traceback
    text = "".join(traceback.format_exception(exc))
    try:
        pickle.dumps(exc)
        outcome = ("raise", exc, text)
    except Exception:
        outcome = ("raise-text", type(exc).__name__, str(exc), text)
try:
    data = pickle.dumps(outcome)
except Exception as exc:
    data = pickle.dumps(("raise-text", "TypeError", f"result cannot cross interpreters: {exc}", ""))
with os.fdopen(fd, "wb") as out:
    out.write(data)
"""


def run_in_subinterpreter(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """Call ``func(*args, **kwargs)`` in a fresh isolated sub-interpreter.

    ``func`` must be importable by name (a module-level function); arguments and result
    cross the boundary pickled, in memory. Exceptions are re-raised with the
    sub-interpreter's traceback attached as a note.
    """
    too_old = no_subinterpreters()
    if too_old:
        raise SubinterpreterUnavailable(f"{too_old} (3.13+)")
    try:
        import _interpreters
    except ImportError as exc:  # pragma: no cover - builds without sub-interpreters
        raise SubinterpreterUnavailable(str(exc)) from None
    payload = pickle.dumps((func, args, kwargs))
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []

    def drain() -> None:
        with os.fdopen(read_fd, "rb") as src:
            chunks.append(src.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    code = f"PATH = {list(sys.path)!r}\nFD = {write_fd}\nPAYLOAD = {payload!r}\n" + _CALL
    iid = _interpreters.create("isolated")
    try:
        failed = _interpreters.exec(iid, code)
    finally:
        _interpreters.destroy(iid)
    if failed is not None:  # the call script itself failed (e.g. func's module cannot load)
        try:
            os.close(write_fd)
        except OSError:
            pass
        reader.join()
        error = _rebuild(failed.type.__name__, failed.msg)
        error.add_note(getattr(failed, "formatted", ""))
        raise error
    reader.join()
    outcome = pickle.loads(chunks[0])  # in-memory, from the interpreter we just ran
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "raise":
        raised, text = outcome[1], outcome[2]
    else:
        raised, text = _rebuild(outcome[1], outcome[2]), outcome[3]
    raised.add_note("in the sub-interpreter:\n" + text)
    raise raised


def _rebuild(type_name: str, message: str) -> BaseException:
    import builtins

    cls = getattr(builtins, type_name, None)
    if isinstance(cls, type) and issubclass(cls, BaseException):
        return cls(message)
    return RuntimeError(f"{type_name}: {message}")


@pytest.fixture(name="run_in_subinterpreter")
def run_in_subinterpreter_fixture() -> Callable[..., Any]:
    """The :func:`run_in_subinterpreter` helper; skips where there are no sub-interpreters."""
    if no_subinterpreters():
        pytest.skip("sub-interpreters need Python 3.13+")
    return run_in_subinterpreter
