"""Parent side of the probe's processes: one zygote per probing thread, one worker per target.

The zygote (``_child.py``) is a process of the target interpreter that never runs
job code; it forks a worker on request and reaps it (with everything the worker left
behind) when told. Requests to the zygote travel on a SOCK_SEQPACKET socket, one
message each; a worker gets its own stream socket, passed with the fork request.

The worker channel is not trusted: job code runs in the worker and can write to any
of its descriptors. Every request carries an id and a per-worker random nonce; a line
that is not JSON, or does not echo both, is a protocol violation and ends the worker.
What a reply holds is typed in ``_records`` (``Raw*``) and parsed there into records.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from subcompat._bounded import Refused, read_tail
from subcompat._reap import kill_and_reap

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    import subprocess
    from typing import Any, Literal, NoReturn

PROTOCOL = 1
MAX_REPLY = 64 << 20
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHILD = os.path.join(_HERE, "_child.py")
_BOOT = (
    "import sys;p=sys.argv[1];"
    "exec(compile(open(p,encoding='utf-8').read(),p,'exec'),"
    "{'__name__':'__subcompat_child__','__file__':p,'__builtins__':__builtins__})"
)

#: Counts of what this process did, for tests and benchmarks ("a warm run spawns no child").
STATS = {"children_started": 0, "workers_forked": 0, "trials": 0, "pairs": 0}


#: Native thread pools a library starts when it is loaded (OpenBLAS at dlopen: two threads
#: that spin ~0.1 s each, in every worker that so much as tries numpy's core). A probe
#: imports and never computes: one thread each, unless the job's environment says otherwise.
ONE_THREAD = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def isolated_env(env: dict[str, str] | None) -> dict[str, str]:
    """The zygote's start-up environment: no ``PYTHONPATH`` and a safe path, so the
    project's files (a root ``types.py`` or ``signal.py``) cannot stand in for the
    stdlib the probe's own code imports. The held-back values travel in
    ``SUBCOMPAT_JOB_ENV``; the zygote puts them back and gives the job the ``sys.path``
    it would have had (``_child._job_sys_path``). Native thread pools not sized by the
    job's environment get one thread (``ONE_THREAD``)."""
    out = dict(os.environ if env is None else env)
    for key in ONE_THREAD:
        out.setdefault(key, "1")
    held = {key: out.pop(key, None) for key in ("PYTHONPATH", "PYTHONSAFEPATH")}
    out["SUBCOMPAT_JOB_ENV"] = json.dumps(held)
    out["PYTHONSAFEPATH"] = "1"
    return out


MAX_CRUMBS = 4 << 20  # the tail of a worker's breadcrumbs that is read
MAX_TAIL = 64 << 10  # of a worker's output, kept in memory (the rest is read and dropped)


def _fresh_file(path: str) -> None:
    """An empty regular file at ``path``, whatever job code left there (a FIFO, a symlink
    to /dev/zero, nothing: the scratch directory removed), created anew."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except IsADirectoryError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, flags, 0o600)
    os.close(fd)


class ProbeError(Exception):
    """The probe itself could not run (bad interpreter path, protocol mismatch)."""


class ChildGone(Exception):
    """A worker (or zygote) stopped answering: ``status`` is ``crash`` or ``timeout``."""

    def __init__(
        self,
        status: Literal["crash", "timeout"],
        signal_no: int | None,
        detail: str,
        *,
        ours: bool = False,
        probe_failure: bool = False,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.signal = signal_no
        self.detail = detail
        self.ours = ours  # we killed it (timeout, violation), not the job or the OS
        self.probe_failure = probe_failure  # it answered that its own code failed: no finding


_STRAYS = {"contain": False, "subreaper": False}


def contain_strays() -> None:
    """Make this process (the CLI) a child subreaper once it starts a zygote: a worker
    that left its process group, cleared its parent-death signal and killed its zygote
    is reparented here, not to init, and ``sweep_strays`` ends it before the CLI exits.
    Not for a library's host process: it would change how that process reaps."""
    _STRAYS["contain"] = True


def _subreaper() -> None:
    if _STRAYS["contain"] and not _STRAYS["subreaper"]:
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
            _STRAYS["subreaper"] = True
        except (OSError, AttributeError):
            pass


def sweep_strays(wait_s: float = 2.0) -> int:
    """Kill and reap every child this process still has (call once its own are done):
    how many there were. Linux ``/proc``; nothing elsewhere."""
    if not _STRAYS["subreaper"]:
        return 0
    killed = 0
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        pids = _own_children()
        if not pids:
            break
        killed += kill_and_reap(pids)
    return killed


def _own_children() -> set[int]:
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as fh:
                pids.update(int(p) for p in fh.read().split())
        except (OSError, ValueError):
            continue
    return pids


_CONTAIN: list[list[str]] = []


def containment_prefix() -> list[str]:
    """The command that puts a zygote in a PID namespace of its own, where the machine
    allows it (root, util-linux ``unshare``; ``SUBCOMPAT_CONTAIN=off`` turns it off): the
    zygote is that namespace's init, so when it ends the kernel ends every process in
    it, whatever they did (``setsid``, no parent-death signal), and job code cannot kill
    or stop it. ``/proc`` is the namespace's own. Elsewhere: [] (sessions, parent-death
    signals and subreapers, as always). Tried once per process."""
    if not _CONTAIN:
        _CONTAIN.append(_try_namespace())
    return _CONTAIN[0]


def containment() -> str:
    """Which containment the probe's processes run under: ``pid-namespace`` or ``process-groups``."""
    return "pid-namespace" if containment_prefix() else "process-groups"


def _try_namespace() -> list[str]:
    import shutil
    import subprocess

    if os.environ.get("SUBCOMPAT_CONTAIN", "").lower() in ("off", "0", "no") or not hasattr(os, "geteuid"):
        return []
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return []
    prefix = [unshare, "--pid", "--fork", "--mount-proc", "--kill-child"]
    try:
        done = subprocess.run(
            [*prefix, "true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return prefix if done.returncode == 0 else []


def _stopped(pid: int) -> bool:
    """Is ``pid`` stopped (``T``) or traced (``t``)? Linux ``/proc``; False elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read(4096)
        return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] in (b"T", b"t")
    except (OSError, ValueError):
        return False


def describe_exit(sig: int | None, code: int | None) -> str:
    if sig:
        try:
            return f"killed by signal {sig} ({signal.Signals(sig).name})"
        except ValueError:
            return f"killed by signal {sig}"
    if code is None:
        return "the probe process was lost"
    return f"exited with {code}"


class Zygote:
    """A pristine process of the target interpreter that forks workers."""

    def __init__(
        self, python: str, workdir: str, env: dict[str, str] | None, cwd: str | None, *, warm: bool = True
    ) -> None:
        """``warm``: workers come with the parser, the trial script and the installed
        distributions loaded (trial workers); a lean zygote forks main-pass workers,
        whose ``sys.modules`` must hold nothing the job did not ask for."""
        self.warm = warm
        self.python = python
        self.workdir = workdir
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: socket.socket | None = None
        self.stderr_path = ""
        self._serial = 0
        self._calls = threading.Lock()  # one request on the control socket at a time

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        import socket
        import subprocess
        import tempfile

        _subreaper()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        os.makedirs(self.workdir, 0o700, exist_ok=True)  # a job may have removed it
        fd, self.stderr_path = tempfile.mkstemp(prefix="zygote-", dir=self.workdir)
        try:
            with os.fdopen(fd, "wb") as err:
                self.proc = subprocess.Popen(
                    [
                        *containment_prefix(),
                        self.python,
                        *("-X", "faulthandler", "-c", _BOOT, _CHILD, str(theirs.fileno())),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=err,
                    stderr=err,
                    cwd=self.cwd,
                    env=isolated_env(self.env),
                    pass_fds=(theirs.fileno(),),
                    start_new_session=True,
                )
        except OSError as exc:
            ours.close()
            raise ProbeError(f"cannot start {self.python}: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        self.ctl = ours
        STATS["children_started"] += 1

    def call(self, op: str, timeout: float, fds: tuple[int, ...] = (), **fields: Any) -> dict[str, Any]:
        """One request and its reply. Serialised: a worker another thread uses (the
        standing pair worker) is reaped through the zygote that forked it."""
        with self._calls:
            return self._call(op, timeout, fds, **fields)

    def _call(self, op: str, timeout: float, fds: tuple[int, ...], **fields: Any) -> dict[str, Any]:
        import socket

        if not self.alive:
            self.close()
            self.start()
        assert self.ctl is not None
        message = json.dumps({"op": op, **fields}).encode()
        try:
            if fds:
                socket.send_fds(self.ctl, [message], list(fds))
            else:
                self.ctl.sendall(message)
            raw = self._reply(timeout)
        except (OSError, TimeoutError) as exc:
            self.kill()
            raise ChildGone("crash", None, f"probe zygote lost ({exc.__class__.__name__})") from None
        if not raw:
            self.kill()
            raise ChildGone("crash", None, "probe zygote lost")
        reply: dict[str, Any] = json.loads(raw)
        if not reply.get("ok"):
            raise ProbeError(f"probe zygote failed on {op}: {reply.get('error')}")
        return reply

    def _reply(self, timeout: float) -> bytes:
        """The zygote's reply, waited for in slices: a zygote that job code stopped
        (SIGSTOP, a tracer) is seen within a slice and taken down, not waited on."""
        import select

        assert self.ctl is not None and self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if select.select([self.ctl], [], [], min(left, 0.1))[0]:
                return self.ctl.recv(1 << 20)
            if _stopped(self.proc.pid):
                raise TimeoutError("stopped")

    def hello(self, timeout: float) -> dict[str, Any]:
        return self.call("hello", timeout)

    def absent(self, names: list[str], sys_path: list[str] | None, timeout: float) -> list[str]:
        """The top-level ``names`` that this interpreter's finders find nowhere (the
        zygote looks, nothing is imported)."""
        reply = self.call("locate", timeout, names=names, sys_path=sys_path)
        return [n for n in reply.get("absent", ()) if isinstance(n, str)]

    def fork(self, memory_bytes: int | None) -> Worker:
        import socket

        self._serial += 1
        os.makedirs(self.workdir, 0o700, exist_ok=True)  # a job may have removed it
        stem = os.path.join(self.workdir, f"w{os.getpid()}-{id(self):x}-{self._serial}")
        ours, theirs = socket.socketpair()
        out_r, out_w = os.pipe()  # the worker's stdout and stderr: drained here, tail kept
        os.set_blocking(out_r, False)
        try:
            reply = self.call(
                "fork",
                timeout=60.0,
                fds=(theirs.fileno(), out_w),
                workdir=self.workdir,
                stderr=stem + ".err",
                memory=memory_bytes,
                warm=self.warm,
            )
        except BaseException:
            ours.close()
            os.close(out_r)
            raise
        finally:
            theirs.close()
            os.close(out_w)
        STATS["workers_forked"] += 1
        return Worker(self, int(reply["pid"]), ours, stem, out_r)

    def reap(self, pid: int) -> dict[str, Any]:
        """Kill ``pid``'s process group, reap it and its strays: its signal, exit code
        and peak RSS. A lost zygote took its workers with it (PR_SET_PDEATHSIG)."""
        if not self.alive:
            return {}
        try:
            return self.call("reap", timeout=15.0, pid=pid)
        except (ChildGone, ProbeError):
            return {}

    def kill(self) -> None:
        """Take the zygote down now; its workers follow (PR_SET_PDEATHSIG)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None

    def close(self) -> None:
        """Ask the zygote to finish (it kills its workers first), then make sure.
        The goodbye tells it we are alive and clean up ourselves; a zygote that sees
        its socket close without one knows its parent died, and removes the scratch."""
        if self.ctl is not None:
            try:
                self.ctl.sendall(b'{"op": "bye"}')
            except OSError:
                pass
            try:
                self.ctl.shutdown(2)  # SHUT_RDWR
            except OSError:
                pass
        if self.proc is not None:
            import subprocess

            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


class Worker:
    """One forked worker: requests and replies as JSON lines on its own socket."""

    def __init__(
        self, zygote: Zygote, pid: int, sock: socket.socket, stem: str, out: int | None = None
    ) -> None:
        self.zygote = zygote
        self.out = out  # read end of the worker's output pipe
        self.tail = bytearray()  # the last MAX_TAIL bytes of that output
        self.pid = pid
        self.sock: socket.socket | None = sock
        self.stem = stem
        self.crumbs = stem + ".crumbs"
        self.stderr_path = stem + ".err"
        self.nonce = os.urandom(12).hex()
        self._ids = 0
        self._buf = b""
        self.exit: tuple[int | None, int | None] | None = None
        self.maxrss_kb: int | None = None

    def request(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply; ``ChildGone`` if none comes."""
        if self.sock is None:
            raise ChildGone("crash", None, "worker already gone")
        self._ids += 1
        _fresh_file(self.crumbs)
        line = json.dumps({"v": PROTOCOL, "id": self._ids, "nonce": self.nonce, "op": op, **fields}) + "\n"
        try:
            self.sock.sendall(line.encode())
        except OSError:
            self._gone()
        import selectors

        deadline = time.monotonic() + max(0.0, timeout)
        with selectors.DefaultSelector() as sel:
            sel.register(self.sock, selectors.EVENT_READ)
            if self.out is not None:
                sel.register(self.out, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                events = sel.select(left) if left > 0 else []
                if not events:
                    self.close()
                    raise ChildGone("timeout", None, f"no answer within {timeout:g}s", ours=True)
                ready = {key.fd for key, _ in events}
                if self.out is not None and self.out in ready and not self._drain():
                    sel.unregister(self.out)  # every writer is gone: nothing more to read
                    os.close(self.out)
                    self.out = None
                if self.sock.fileno() not in ready:
                    continue
                try:
                    chunk = self.sock.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    self._gone()
                self._buf += chunk
                if len(self._buf) > MAX_REPLY:
                    self._violation("a reply larger than the probe accepts")
        raw, _, self._buf = self._buf.partition(b"\n")
        try:
            reply = json.loads(raw)
        except ValueError:
            reply = None
        if (
            not isinstance(reply, dict)
            or reply.get("v") != PROTOCOL
            or reply.get("id") != self._ids
            or reply.get("nonce") != self.nonce
        ):
            self._violation("a line that is not the worker's reply")
        if not reply.get("ok"):
            self.close()
            raise ChildGone(
                "crash",
                None,
                f"the probe could not finish: {reply.get('error')}",
                ours=True,
                probe_failure=True,
            )
        return reply

    def _violation(self, what: str) -> NoReturn:
        self.close()
        raise ChildGone(
            "crash",
            None,
            f"protocol violation: the probe's channel carried {what} (job code wrote to it)",
            ours=True,
        )

    def _gone(self) -> None:
        sig, code = self.close()
        raise ChildGone("crash", sig, describe_exit(sig, code))

    def _drain(self) -> bool:
        """Read what the worker's output pipe holds (bounded), keeping the tail; False
        once every writer has closed it."""
        assert self.out is not None
        for _ in range(256):  # at most 16 MiB a call: a flood cannot keep us here
            try:
                chunk = os.read(self.out, 1 << 16)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            self.tail += chunk
            if len(self.tail) > MAX_TAIL:
                del self.tail[: len(self.tail) - MAX_TAIL]
        return True

    def close(self) -> tuple[int | None, int | None]:
        """Kill and reap this worker and everything it started; (signal, exit code)."""
        if self.exit is None:
            if self.sock is not None:
                self.sock.close()
                self.sock = None
            reaped = self.zygote.reap(self.pid)
            self.exit = (reaped.get("signal"), reaped.get("code"))
            self.maxrss_kb = reaped.get("maxrss_kb")
            if self.out is not None:  # what it wrote before it died (a faulthandler dump)
                self._drain()
                os.close(self.out)
                self.out = None
        return self.exit

    def discard(self) -> None:
        """Remove the worker's files once what they say has been read."""
        self.close()
        for path in (self.crumbs, self.stderr_path):
            try:
                os.unlink(path)
            except OSError:
                pass

    def breadcrumb(self) -> dict[str, Any] | None:
        """The extension whose load was under way when the worker died, if any."""
        open_loads: list[str] = []
        candidate = None
        try:
            text = read_tail(self.crumbs, MAX_CRUMBS).decode("utf-8", "replace")
        except (OSError, Refused):
            return None
        for line in text.splitlines():
            if line.startswith("*"):
                candidate = line[1:]
            elif line == ".":
                candidate = None
            elif line.startswith("+"):
                open_loads.append(line[1:])
            elif line.startswith("-") and open_loads:
                open_loads.pop()
        if not open_loads:
            return {"name": None, "file": None, "candidate": candidate} if candidate else None
        name, _, file = open_loads[-1].partition("\t")
        return {"name": name, "file": file or None, "candidate": candidate}

    def stderr_tail(self, limit: int = 16 << 10) -> str:
        if self.out is not None:
            self._drain()
        if self.tail:
            return bytes(self.tail[-limit:]).decode("utf-8", "replace")
        try:
            return read_tail(self.stderr_path, limit).decode("utf-8", "replace")
        except (OSError, Refused):
            return ""
