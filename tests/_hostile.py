"""Hostile job modules, the apps they are placed in, and a capped, watched CLI run.

The catalogue (``BEHAVIOURS``) is module-level source text: each behaviour runs when the
module holding it is imported. ``write_hostile_app`` places it in a job one of four ways
(``PLACEMENTS``) next to two well-behaved neighbours that notice a contaminated probe.

``run_check`` runs ``subcompat check`` as a child under an address-space cap
(``prlimit``), in its own session, with a hard timeout, a fresh empty ``TMPDIR`` and a
unique marker in its environment; it reports the exit, the JSON, the wall time, the peak
memory of the CLI and everything it waited for (``wait4``), and any process still
carrying the marker after it exited (double-forked, ``setsid`` ones too, found through
``/proc/*/environ``). Whatever is left is killed before ``run_check`` returns, so a
failing probe never leaves a spinner behind on a shared machine.
"""

from __future__ import annotations

import json
import os
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _apps import write_app

from subcompat.report import JSON_SCHEMA, parse_report

ROOT = Path(__file__).resolve().parents[1]  # this checkout: the CLI under test is its subcompat

#: every process of a run carries this (plus a fresh uuid) in its environment
MARKER_VAR = "SUBCOMPAT_TEST_MARKER"
#: the cap on each process of a run, as the machine's other users need it
AS_CAP = 6_000_000_000
#: ``--memory`` for every run, and the margin the peak may exceed it by
MEMORY_MIB = 1024
MEMORY_MARGIN_MIB = 200
#: the CLI is ``python -c CLI_BOOT ROOT check ...``; the token lets a sitecustomize
#: (which runs in every interpreter) stay quiet in the CLI process itself, whose stdout
#: no probe can protect, and speak up in the probe's processes and sub-interpreters
CLI_TOKEN = "subcompat_hostile_cli"
CLI_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); "
    f"from subcompat.cli import main; sys.exit(main())  # {CLI_TOKEN}"
)

VERDICTS = frozenset({"compatible", "degraded", "incompatible", "crash", "timeout", "error"})
ANY = VERDICTS
#: An import that fails, crashes, hangs or bombs in every interpreter, wherever it is
#: placed (README, verdicts: ``crash``/``timeout`` only when a main interpreter gets
#: through the same import; ``compatible`` only when every deferred import loads).
EVERYWHERE = frozenset({"error"})
#: The same in a deferred import: no sub-interpreter finding (README, "Deferred imports"):
#: the job module imports, so ``compatible``, with a warning (reached from the job's
#: body) or a note (a ``__getattr__`` the job never reaches) that says what happened.
DEFERRED_EVERYWHERE = frozenset({"compatible"})
#: ... and when it eats the budget in both interpreters (a hang, a memory bomb), what is
#: left unchecked makes it ``timeout`` (not cached), or ``compatible`` if nothing was left.
DEFERRED_BUDGET = frozenset({"compatible", "timeout"})

# -- the modules around the hostile one ------------------------------------------------

#: Checked before and after the hostile target. Each fails to import when the process or
#: interpreter it runs in was contaminated by an earlier job: another cwd (its sibling is
#: found through the cwd entry of sys.path), the hostile values in the environment, a
#: 0o777 umask, a crippled recursion limit, a replaced builtins.open.
NEIGHBOUR = '''\
"""A well-behaved job module that refuses to import into a contaminated probe."""
import builtins
import os
import sys

import good_sib  # first-party sibling, resolved through the cwd entry of sys.path

_problems = []
if os.getcwd() != {app!r}:
    _problems.append("cwd is %r" % os.getcwd())
for _key in ("HOME", "PYTHONPATH", "TMPDIR"):
    if os.environ.get(_key) == "/nonexistent":
        _problems.append("$%s was changed" % _key)
if "SUBCOMPAT_HOSTILE_TOUCHED" in os.environ or "PATH" not in os.environ:
    _problems.append("the environment was changed")
_mask = os.umask(0o022)
os.umask(_mask)
if _mask == 0o777:
    _problems.append("umask is 0o777")
if sys.getrecursionlimit() < 200:
    _problems.append("recursion limit %d" % sys.getrecursionlimit())
if type(builtins.open).__name__ != "builtin_function_or_method":
    _problems.append("builtins.open was replaced")
if _problems:
    raise ImportError("{name} imported into a contaminated probe: " + "; ".join(_problems))


def job():
    import good_lazy  # a deferred first-party import: the probe follows it

    return good_sib.VALUE + good_lazy.VALUE
'''

SUPPORT = {
    "good_sib": "VALUE = 1\n",
    "good_lazy": "import good_sib\n\nVALUE = good_sib.VALUE + 1\n",
}

NEIGHBOURS = ("good_a:job", "good_b:job")


def neighbour_files(app: Path) -> dict[str, str]:
    files = dict(SUPPORT)
    for name in ("good_a", "good_b"):
        files[name] = NEIGHBOUR.replace("{app!r}", repr(str(app))).replace("{name}", name)
    return files


#: Every hostile module starts with this: who am I running in, and a fork that works
#: even where isolated sub-interpreters refuse ``os.fork`` (behind Python's back).
PRELUDE = '''\
import os as _os
import sys as _sys


def _in_sub():
    """True in a sub-interpreter, False in the main interpreter."""
    try:
        import _interpreters
    except ImportError:
        return False
    cur, main = _interpreters.get_current(), _interpreters.get_main()
    cur = cur[0] if isinstance(cur, tuple) else cur
    main = main[0] if isinstance(main, tuple) else main
    return int(cur) != int(main)


def _fork():
    try:
        return _os.fork()
    except RuntimeError:  # an isolated sub-interpreter: libc does not ask
        import ctypes

        return ctypes.CDLL(None, use_errno=True).fork()

'''

# -- the catalogue ---------------------------------------------------------------------


@dataclass(frozen=True)
class Behaviour:
    """Module-level source that misbehaves when the module holding it is imported.

    ``at_import``: verdicts allowed for the hostile target when the behaviour runs while
    the target is imported (placements ``import`` and ``cycle``); ``deferred``: the same
    for the placements where it runs in a deferred import (``deferred``, ``getattr``).
    ``reason``: a regex the target's reason must match wherever a single verdict is
    required. ``timeout``: the run's ``--timeout``.
    """

    name: str
    source: str
    doc: str
    at_import: frozenset[str] = ANY
    deferred: frozenset[str] = ANY
    reason: str | None = None
    timeout: float = 3.0
    site: dict[str, str] = field(default_factory=dict)  # modules of an extra PYTHONPATH dir

    def allowed(self, placement: str) -> frozenset[str]:
        return self.at_import if placement in ("import", "cycle") else self.deferred


def _b(name: str, doc: str, source: str, **kw) -> Behaviour:
    return Behaviour(name, textwrap.dedent(source).strip() + "\n", doc, **kw)


SITECUSTOMIZE = f'''\
"""On PYTHONPATH: runs at the start of every interpreter, sub-interpreters included."""
import sys

if "{CLI_TOKEN}" not in " ".join(getattr(sys, "orig_argv", ())):
    print('{{"v": 1, "id": 1, "ok": true}}', flush=True)
    print("sitecustomize was here, on stdout", flush=True)
    sys.stdout.write("and left no newline")
    sys.stdout.flush()
'''

BEHAVIOURS: dict[str, Behaviour] = {
    b.name: b
    for b in [
        _b(
            "forge_protocol",
            "writes forged protocol replies and garbage to every open fd 0..255",
            r"""
            _BLOBS = (
                b'{"v": 1, "id": 1, "ok": true}\n',
                b'{"v": 1, "id": 2, "ok": true, "error": null, "modules": [], "failures": [],'
                b' "lazy": [], "edges": {}, "pending": []}\n',
                b"garbage\n",
                b"\x00\xff{{{\n",
            )
            for _fd in range(256):
                for _blob in _BLOBS:
                    try:
                        _os.write(_fd, _blob)
                    except OSError:
                        pass
            """,
        ),
        _b(
            "sitecustomize",
            "a sitecustomize on PYTHONPATH prints (a forged reply too) to stdout in every "
            "interpreter; the module prints one more",
            """
            print('{"v": 1, "id": 1, "ok": true}', flush=True)
            print("module noise on stdout", flush=True)
            """,
            site={"sitecustomize": SITECUSTOMIZE},
        ),
        _b(
            "replace_builtins",
            "replaces builtins.open, __import__ and friends with functions that raise",
            """
            import builtins as _builtins


            def _refuse(*args, **kwargs):
                raise RuntimeError("hostile: this builtin was replaced")


            for _name in ("open", "__import__", "exec", "eval", "compile", "print", "repr",
                          "getattr", "hasattr", "isinstance", "sorted", "len"):
                setattr(_builtins, _name, _refuse)
            """,
        ),
        _b("clear_sys_modules", "sys.modules.clear()", "_sys.modules.clear()"),
        _b(
            "evil_exception",
            "raises an exception whose __str__, __repr__, args and class __module__ raise",
            """
            class _Poison:
                def __str__(self):
                    raise RuntimeError("hostile str")

                __repr__ = __str__

                def __eq__(self, other):
                    raise RuntimeError("hostile eq")

                def __hash__(self):
                    raise RuntimeError("hostile hash")


            class _Evil(Exception):
                __module__ = _Poison()

                def __str__(self):
                    raise RuntimeError("hostile __str__")

                def __repr__(self):
                    raise RuntimeError("hostile __repr__")

                def __reduce__(self):
                    raise RuntimeError("hostile __reduce__")

                @property
                def args(self):
                    raise RuntimeError("hostile args")


            raise _Evil()
            """,
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"_Evil",
        ),
        _b(
            "lazy_proxy",
            "puts lazy proxies in sys.modules (one raising from __getattr__, one from "
            "__getattribute__, __spec__ and __file__ included) and replaces itself by one",
            """
            class _LazyProxy:
                def __getattr__(self, name):
                    raise RuntimeError("hostile lazy proxy: " + name)


            class _OpaqueProxy:
                def __getattribute__(self, name):
                    raise RuntimeError("hostile opaque proxy: " + name)


            _sys.modules["hostile_lazy_proxy"] = _LazyProxy()
            _sys.modules["hostile_opaque_proxy"] = _OpaqueProxy()
            _sys.modules[__name__] = _LazyProxy()
            """,
        ),
        _b(
            "process_state",
            "sets PYTHONPATH, HOME and TMPDIR to /nonexistent, removes PATH, os.chdir('/'), os.umask(0o777)",
            """
            for _key in ("PYTHONPATH", "HOME", "TMPDIR"):
                _os.environ[_key] = "/nonexistent"
            _os.environ["SUBCOMPAT_HOSTILE_TOUCHED"] = "1"
            _os.environ.pop("PATH", None)
            _os.chdir("/")
            _os.umask(0o777)
            """,
        ),
        _b(
            "signal_state",
            "SIG_IGN for SIGTERM, SIGINT, SIGHUP and SIGCHLD (where the interpreter may), then "
            "blocks every signal in the importing thread (inherited by whatever it starts)",
            """
            import signal as _signal

            for _name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGCHLD"):
                try:
                    _signal.signal(getattr(_signal, _name), _signal.SIG_IGN)
                except ValueError:  # not the main thread of the main interpreter
                    pass
            _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
            """,
        ),
        _b(
            "alarm",
            "signal.alarm(1) and a 1 s ITIMER_PROF: the process that imported it dies later",
            """
            import signal as _signal

            _signal.alarm(1)
            _signal.setitimer(_signal.ITIMER_PROF, 1.0)
            """,
        ),
        _b(
            "fork_spin",
            "forks (behind Python's back in a sub-interpreter); the child spins forever",
            """
            if _fork() == 0:
                while True:
                    pass
            """,
        ),
        _b(
            "double_fork_setsid",
            "two double forks + setsid: one grandchild sleeps forever, one reads stdin forever",
            """
            import time as _time


            def _read_stdin_forever():
                while True:
                    try:
                        if not _os.read(0, 65536):
                            _time.sleep(3600)
                    except OSError:
                        _time.sleep(3600)


            def _sleep_forever():
                while True:
                    _time.sleep(3600)


            for _forever in (_sleep_forever, _read_stdin_forever):
                _pid = _fork()
                if _pid == 0:
                    try:
                        _os.setsid()
                        if _fork() == 0:
                            _forever()
                    finally:
                        _os._exit(0)
                _os.waitpid(_pid, 0)
            """,
        ),
        _b(
            "teardown_hang",
            "starts a non-daemon thread that spins forever and registers an atexit callback "
            "that never returns",
            """
            import atexit as _atexit
            import threading as _threading
            import time as _time


            def _spin():
                while True:
                    pass


            def _linger():
                while True:
                    _time.sleep(3600)


            _threading.Thread(target=_spin, name="hostile-spinner", daemon=False).start()
            _atexit.register(_linger)
            """,
        ),
        _b(
            "system_exit",
            "raise SystemExit(3)",
            "raise SystemExit(3)",
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"SystemExit",
        ),
        _b(
            "keyboard_interrupt",
            "raise KeyboardInterrupt",
            "raise KeyboardInterrupt",
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"KeyboardInterrupt",
        ),
        _b(
            "flood_output",
            "prints 50 MB to stdout and 50 MB to stderr (half through sys, half straight "
            "to fds 1 and 2, no newline)",
            """
            _text = "x" * (1 << 20)
            _raw = b"y" * (1 << 20)
            for _ in range(25):
                print(_text, end="", file=_sys.stdout)
                print(_text, end="", file=_sys.stderr)
            _sys.stdout.flush()
            _sys.stderr.flush()
            for _ in range(25):
                for _fd in (1, 2):
                    try:
                        _os.write(_fd, _raw)
                    except OSError:
                        pass
            """,
        ),
        _b(
            "deep_recursion",
            "recurses 300k deep (Python and through C), then leaves the interpreter a "
            "recursion limit just above its own depth",
            """
            _sys.setrecursionlimit(300_000)


            def _down(n):
                return _down(n + 1)


            def _through_c(n):
                return list(map(_through_c, [n + 1]))


            for _f in (_down, _through_c):
                try:
                    _f(0)
                except RecursionError:
                    pass
            _frame, _depth = _sys._getframe(), 0
            while _frame is not None:
                _frame, _depth = _frame.f_back, _depth + 1
            _sys.setrecursionlimit(_depth + 8)
            """,
        ),
        _b("close_fds", "os.closerange(0, 256)", "_os.closerange(0, 256)"),
        _b(
            "stdio_sabotage",
            "points fds 0, 1 and 2 at /dev/null (replies written there vanish) and sets "
            "sys.stdin/stdout/stderr and the __std*__ ones to None",
            """
            _null = _os.open(_os.devnull, _os.O_RDWR)
            for _fd in (0, 1, 2):
                _os.dup2(_null, _fd)
            _sys.stdin = _sys.stdout = _sys.stderr = None
            _sys.__stdin__ = _sys.__stdout__ = _sys.__stderr__ = None
            """,
        ),
        _b(
            "nonblocking_fds",
            "sets O_NONBLOCK on every open fd 0..255 (shared with whoever holds them)",
            """
            for _fd in range(256):
                try:
                    _os.set_blocking(_fd, False)
                except OSError:
                    pass
            """,
        ),
        _b(
            "kill_parent",
            "os.kill(os.getppid(), SIGKILL) (only if the parent belongs to this test run)",
            """
            import signal as _signal

            _ppid = _os.getppid()
            _mine = "%s=%s" % ("SUBCOMPAT_TEST_MARKER", _os.environ.get("SUBCOMPAT_TEST_MARKER", ""))
            try:
                with open("/proc/%d/environ" % _ppid, "rb") as _fh:
                    _theirs = _fh.read().split(b"\\0")
            except OSError:
                _theirs = []
            if _mine.encode() in _theirs and _ppid > 1:
                _os.kill(_ppid, _signal.SIGKILL)
            """,
        ),
        _b(
            "kill_own_group",
            "os.killpg(own group, SIGKILL) (only if the group leader belongs to this test run)",
            """
            import signal as _signal

            _leader = _os.getpgid(0)
            _mine = "%s=%s" % ("SUBCOMPAT_TEST_MARKER", _os.environ.get("SUBCOMPAT_TEST_MARKER", ""))
            try:
                with open("/proc/%d/environ" % _leader, "rb") as _fh:
                    _theirs = _fh.read().split(b"\\0")
            except OSError:
                _theirs = []
            if _mine.encode() in _theirs and _leader > 1:  # a group of this test run
                _os.killpg(_leader, _signal.SIGKILL)
            """,
        ),
        _b(
            "break_import_system",
            "a meta-path finder that raises for every name; path hooks and caches cleared",
            """
            class _Refuse:
                @staticmethod
                def find_spec(name, path=None, target=None):
                    raise RuntimeError("hostile finder refuses " + name)


            _sys.meta_path.insert(0, _Refuse)
            _sys.path_hooks.clear()
            _sys.path_importer_cache.clear()
            """,
        ),
        _b(
            "patch_stdlib",
            "replaces os.write/read/replace/unlink/..., io.open and json.dump(s)/load(s) "
            "with functions that raise",
            """
            import io as _io
            import json as _json


            def _refuse(*args, **kwargs):
                raise RuntimeError("hostile: patched")


            for _mod, _names in (
                (_os, ("write", "read", "replace", "unlink", "open", "close", "fspath", "getcwd",
                       "stat", "kill", "waitpid", "_exit")),
                (_io, ("open",)),
                (_json, ("dump", "dumps", "load", "loads")),
            ):
                for _name in _names:
                    setattr(_mod, _name, _refuse)
            """,
        ),
        _b(
            "rlimits",
            "lowers RLIMIT_NOFILE to 16 and RLIMIT_FSIZE to 0 for the whole process",
            """
            import resource as _resource

            for _limit, _value in ((_resource.RLIMIT_NOFILE, 16), (_resource.RLIMIT_FSIZE, 0)):
                try:
                    _resource.setrlimit(_limit, (_value, _value))
                except (ValueError, OSError):
                    pass
            """,
        ),
        # -- the ones with a verdict of their own -----------------------------------------
        _b(
            "segfault",
            "ctypes.string_at(0) in every interpreter",
            """
            import ctypes as _ctypes

            _ctypes.string_at(0)
            """,
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"SIGSEGV",
        ),
        _b(
            "os_exit",
            "os._exit(3) in every interpreter",
            "_os._exit(3)",
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"(?i)exit\w*\D{0,40}\b3\b",
        ),
        _b(
            "abort",
            "os.abort() in every interpreter",
            "_os.abort()",
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"SIGABRT",
        ),
        _b(
            "hang",
            "while True: pass, in every interpreter",
            """
            while True:
                pass
            """,
            at_import=EVERYWHERE,
            deferred=DEFERRED_BUDGET,
            reason=r"(?i)no answer within|time(d)?[ -]?out",
            timeout=4.0,
        ),
        _b(
            "hang_in_sub",
            "while True: pass, only in a sub-interpreter",
            """
            if _in_sub():
                while True:
                    pass
            """,
            at_import=frozenset({"timeout"}),
            deferred=frozenset({"timeout"}),
        ),
        _b(
            "input",
            "input() at import: must meet EOF, not block",
            "input()",
            at_import=EVERYWHERE,
            deferred=DEFERRED_EVERYWHERE,
            reason=r"EOFError",
        ),
        _b(
            "memory_bomb",
            "allocates (and touches) 100 MiB chunks until something gives",
            """
            _hoard = []
            while True:
                _hoard.append(b"\\x01" * (100 << 20))
            """,
            at_import=EVERYWHERE,
            deferred=DEFERRED_BUDGET,
            reason=r"(?i)memory.*(limit|1024)|(limit|1024).*memory",
            timeout=6.0,  # room to fill 1 GiB twice (sub, then main) on a loaded machine
        ),
    ]
}

# -- placements -------------------------------------------------------------------------

PLACEMENTS = ("import", "deferred", "getattr", "cycle")
HOSTILE_TARGET = "hostile:job"


def placed(behaviour: Behaviour, placement: str) -> dict[str, str]:
    """The hostile app's modules; the target is always ``hostile:job``."""
    body = PRELUDE + behaviour.source
    if placement == "import":  # in the job module itself
        return {"hostile": body + "\n\ndef job():\n    return 42\n"}
    if placement == "deferred":  # a deferred import in the job's body
        return {
            "hostile": "def job():\n    import hostile_impl\n\n    return hostile_impl\n",
            "hostile_impl": body,
        }
    if placement == "getattr":  # a deferred import in a PEP 562 module __getattr__
        return {
            "hostile": (
                "def job():\n    return 42\n\n\n"
                "def __getattr__(name):\n    import hostile_impl\n\n"
                "    return getattr(hostile_impl, name)\n"
            ),
            "hostile_impl": body,
        }
    if placement == "cycle":  # hostile imports hostile_cycle, which imports hostile
        return {
            "hostile": "import hostile_cycle\n\n\ndef job():\n    return hostile_cycle\n",
            "hostile_cycle": "import hostile  # the cycle\n" + body + "\nVALUE = 1\n",
        }
    raise ValueError(placement)


def write_hostile_app(root: Path, files: dict[str, str]) -> Path:
    """The neighbours and their first-party helpers plus ``files``, under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    return write_app(root, {**neighbour_files(root), **files})


# -- processes carrying a marker ---------------------------------------------------------


def _has_marker(pid: int | str, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return needle in fh.read().split(b"\0")
    except OSError:  # vanished, or a zombie (reads empty anyway)
        return False


def marker_pids(marker: str) -> list[int]:
    """Live processes whose environment carries ``MARKER_VAR=marker``."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != me and _has_marker(e, needle)]


def describe_pid(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid, sid = fields[0], fields[1], fields[3]
    except (OSError, ValueError):
        return f"{pid} (gone)"
    return f"pid {pid} state={state} ppid={ppid} sid={sid}: {cmd[:160]}"


def rss_kib(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            pass
    return total


def kill_marked(marker: str, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process carrying the marker (each pid re-checked just before: only
    processes of this run), until none is left or ``wait_s`` passed; returns survivors."""
    needle = f"{MARKER_VAR}={marker}".encode()
    deadline = time.monotonic() + wait_s
    while True:
        pids = marker_pids(marker)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            if _has_marker(pid, needle):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        time.sleep(0.05)


def tree_listing(path: Path) -> list[str]:
    if not path.exists():
        return []
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Bounded poll: True as soon as ``predicate()`` is, False after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


# -- one capped, watched CLI run ---------------------------------------------------------

_KEEP = 64 << 20  # at most this much of each stream is kept


class _Drain(threading.Thread):
    """Reads a pipe to its end, keeping the first ``_KEEP`` bytes."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.chunks: list[bytes] = []
        self.size = 0

    def run(self) -> None:
        try:
            while chunk := self.stream.read1(1 << 16):
                if self.size < _KEEP:
                    self.chunks.append(chunk)
                self.size += len(chunk)
        except (OSError, ValueError):
            return

    def text(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")


@dataclass
class Run:
    args: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    stdout_bytes: int
    wall_s: float
    peak_rss_mib: float  # wait4: the CLI and every descendant it (transitively) reaped; 0 if
    # not above this test process's own peak (see _cli_peak_kib)
    peak_sum_rss_mib: float  # polled: all marked processes at once
    leftovers: list[str]  # marked processes still alive a bounded while after the CLI exited
    tmp_left: list[str]  # what was left in TMPDIR
    hard_timeout: bool
    tmpdir: Path
    marker: str
    report: dict | None = None
    json_error: str | None = None

    def module(self, target: str) -> dict | None:
        for m in (self.report or {}).get("modules", ()):
            if m.get("target") == target:
                return m
        return None

    def summary(self) -> str:
        verdicts = ", ".join(
            f"{m.get('target')}={m.get('verdict')}({m.get('elapsed_s')}s)"
            for m in (self.report or {}).get("modules", ())
        )
        return (
            f"exit={self.returncode} wall={self.wall_s:.1f}s peak={self.peak_rss_mib:.0f}MiB "
            f"[{verdicts or 'no report'}]\n  stderr: {_clip(self.stderr)}\n  stdout: {_clip(self.stdout)}"
        )


def _clip(text: str, n: int = 600) -> str:
    text = text.strip()
    return text if len(text) <= n else text[: n // 2] + f" ...[{len(text) - n} chars]... " + text[-n // 2 :]


def cli_command(args: Sequence[str]) -> list[str]:
    return ["prlimit", f"--as={AS_CAP}", sys.executable, "-c", CLI_BOOT, str(ROOT), *args]


def start_cli(
    args: Sequence[str], *, cwd: Path, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], _Drain, _Drain]:
    proc = subprocess.Popen(
        cli_command(args),
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # nothing a run does can signal the test's process group
    )
    out, err = _Drain(proc.stdout), _Drain(proc.stderr)
    out.start()
    err.start()
    return proc, out, err


def run_env(
    *, marker: str, tmpdir: Path, pythonpath: Sequence[Path | str], extra: dict[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUBCOMPAT_", "PYTEST_"))}
    env.update(
        {
            MARKER_VAR: marker,
            "TMPDIR": str(tmpdir),
            "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
            "NO_COLOR": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    env.update(extra or {})
    return env


def new_run_dirs(base: Path) -> tuple[str, Path]:
    marker = uuid.uuid4().hex
    tmpdir = base / f"tmp-{marker[:8]}"
    tmpdir.mkdir(parents=True)
    return marker, tmpdir


def _cli_peak_kib(maxrss_kib: int) -> int:
    """The CLI's own peak RSS from wait4, or 0 when it cannot be told apart from ours: Linux
    records the old address space's high-water mark at exec, and a (v)forked child's old
    address space is this process's, so ``ru_maxrss`` is never below our own peak (a test
    process grown to 700 MiB made every CLI "use" 700 MiB). A CLI that really grows past
    our peak shows its own figure."""
    ours = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss_kib if maxrss_kib > ours else 0


def finish_run(
    proc: subprocess.Popen[bytes],
    out: _Drain,
    err: _Drain,
    *,
    args: list[str],
    marker: str,
    tmpdir: Path,
    started: float,
    hard_timeout_s: float,
    on_tick: Callable[[], None] | None = None,
) -> Run:
    """Wait (pidfd, bounded) for the CLI, measure, look for leftovers, clean up."""
    peak_sum = 0
    timed_out = False
    pidfd = os.pidfd_open(proc.pid)
    try:
        while True:
            left = started + hard_timeout_s - time.monotonic()
            if left <= 0:
                timed_out = True
                os.kill(proc.pid, signal.SIGKILL)
                select.select([pidfd], [], [], 10)
                break
            if select.select([pidfd], [], [], min(0.25, left))[0]:
                break
            peak_sum = max(peak_sum, rss_kib(marker_pids(marker)))
            if on_tick is not None:
                on_tick()
    finally:
        os.close(pidfd)
    _, status, usage = os.wait4(proc.pid, 0)
    cli_peak_kib = _cli_peak_kib(usage.ru_maxrss)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    # children clean up after their parent is gone (PDEATHSIG etc.): a bounded wait
    wait_until(lambda: not marker_pids(marker) and not tree_listing(tmpdir), 5.0)
    leftovers = [describe_pid(p) for p in marker_pids(marker)]
    tmp_left = tree_listing(tmpdir)
    kill_marked(marker)
    out.join(10)
    err.join(10)
    for stream in (proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    shutil.rmtree(tmpdir, ignore_errors=True)
    run = Run(
        args=args,
        returncode=proc.returncode,
        stdout=out.text(),
        stderr=err.text(),
        stdout_bytes=out.size,
        wall_s=wall,
        peak_rss_mib=cli_peak_kib / 1024,
        peak_sum_rss_mib=peak_sum / 1024,
        leftovers=leftovers,
        tmp_left=tmp_left,
        hard_timeout=timed_out,
        tmpdir=tmpdir,
        marker=marker,
    )
    try:
        run.report = json.loads(run.stdout)
        run.report = parse_report(run.report)  # culprits and files written once, by reference
    except ValueError as exc:
        run.json_error = f"{exc}"
    return run


def run_check(
    app: Path,
    targets: Sequence[str],
    *,
    timeout: float,
    base: Path,
    pythonpath: Sequence[Path | str] = (),
    memory: int = MEMORY_MIB,
    jobs: int = 1,
    cache_dir: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Run:
    """``subcompat check TARGETS --format json --timeout S --memory M --jobs N`` in ``app``."""
    marker, tmpdir = new_run_dirs(base)
    args = ["check", *targets, "--format", "json", "--timeout", f"{timeout:g}"]
    args += ["--memory", str(memory), "--jobs", str(jobs)]
    args += ["--cache-dir", str(cache_dir)] if cache_dir is not None else ["--no-cache"]
    env = run_env(marker=marker, tmpdir=tmpdir, pythonpath=pythonpath, extra=extra_env)
    return run_started(start_cli, args, app=app, env=env, marker=marker, tmpdir=tmpdir, timeout=timeout)


def run_started(
    start: Callable[..., tuple[subprocess.Popen[bytes], _Drain, _Drain]],
    args: list[str],
    *,
    app: Path,
    env: dict[str, str],
    marker: str,
    tmpdir: Path,
    timeout: float,
) -> Run:
    """Start the CLI with ``start(args, cwd=app, env=env)``, wait for it within the
    run's hard bound, measure, and kill whatever of the run is left."""
    started = time.monotonic()
    proc, out, err = start(args, cwd=app, env=env)
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


def budget(timeout: float) -> float:
    """The whole run's wall-time budget."""
    return 3 * timeout + 15


# -- the contract -------------------------------------------------------------------------


def expected_exit(verdicts: Sequence[str]) -> int:
    if "error" in verdicts:
        return 2
    if any(v in ("incompatible", "crash", "timeout") for v in verdicts):
        return 1
    return 0


def contract_problems(
    run: Run,
    targets: Sequence[str],
    *,
    timeout: float,
    neighbours: Sequence[str] = NEIGHBOURS,
    memory: int = MEMORY_MIB,
) -> list[str]:
    """Everything the run got wrong, apart from the hostile target's own verdict."""
    problems = []
    if run.hard_timeout:
        problems.append(f"the CLI was still running after {run.wall_s:.0f}s and was killed")
    if run.returncode not in (0, 1, 2):
        problems.append(f"exit code {run.returncode}")
    if "Traceback (most recent call last)" in run.stderr:
        problems.append("a traceback on stderr")
    if run.report is None:
        problems.append(f"stdout ({run.stdout_bytes} bytes) is not one JSON document: {run.json_error}")
    else:
        mods = run.report.get("modules") or []
        if run.report.get("schema") != JSON_SCHEMA or not isinstance(run.report.get("python"), str):
            problems.append(f"no schema {JSON_SCHEMA} / python in the report")
        if [m.get("target") for m in mods] != list(targets):
            problems.append(f"report targets {[m.get('target') for m in mods]} != {list(targets)}")
        for m in mods:
            if m.get("verdict") not in VERDICTS:
                problems.append(f"{m.get('target')}: verdict {m.get('verdict')!r}")
            if "reason" not in m or "culprits" not in m:
                problems.append(f"{m.get('target')}: no reason/culprits")
            elapsed = m.get("elapsed_s")
            if not isinstance(elapsed, (int, float)) or elapsed > timeout + 2:
                problems.append(f"{m.get('target')}: elapsed_s {elapsed} > {timeout:g}+2")
        for n in neighbours:
            m = run.module(n)
            if m is not None and m.get("verdict") != "compatible":
                problems.append(f"neighbour {n} is {m.get('verdict')}: {_clip(str(m.get('reason')), 300)}")
        verdicts = [m.get("verdict") for m in mods]
        if run.returncode in (0, 1, 2) and run.returncode != expected_exit(verdicts):
            problems.append(f"exit code {run.returncode} for verdicts {verdicts}")
    if run.wall_s > budget(timeout):
        problems.append(f"wall time {run.wall_s:.1f}s > {budget(timeout):g}s")
    limit = memory + MEMORY_MARGIN_MIB
    if run.peak_rss_mib > limit:
        problems.append(f"peak RSS {run.peak_rss_mib:.0f} MiB > {limit} MiB")
    if run.peak_sum_rss_mib > limit:
        problems.append(f"marked processes held {run.peak_sum_rss_mib:.0f} MiB at once > {limit} MiB")
    if run.leftovers:
        problems.append(f"{len(run.leftovers)} process(es) left behind: " + " | ".join(run.leftovers[:4]))
    if run.tmp_left:
        problems.append(f"TMPDIR not empty: {run.tmp_left[:6]}")
    return problems


def verdict_problems(run: Run, target: str, allowed: frozenset[str], reason: str | None) -> list[str]:
    m = run.module(target)
    if m is None:
        return [f"no verdict for {target}"]
    problems = []
    if m.get("verdict") not in allowed:
        problems.append(f"{target} is {m.get('verdict')!r}, expected one of {sorted(allowed)}")
    said = "\n".join(
        [str(m.get("reason") or ""), *map(str, m.get("warnings") or ()), *map(str, m.get("notes") or ())]
    )
    if reason is not None and len(allowed) == 1 and not re.search(reason, said):
        problems.append(f"{target} reason {_clip(said, 300)!r} does not match {reason!r}")
    return problems
