"""Stage 2, probe: import each candidate in a fresh sub-interpreter, in a child process.

The child (``_child.py``) runs under the target interpreter and may die or hang on any
candidate; this side restarts it, records ``crash`` (with the signal) or ``timeout``,
names the extension from the breadcrumb the trial left, and carries on.

Per target: one trial of the job module (which also scans the job's first-party source
and runs its deferred imports); deferred imports left over after a failure get fresh
interpreters; and only when something failed, a fresh *process* imports the job in its
main interpreter (is it broken everywhere? which extensions did the sub-interpreter
never reach?) and each such extension is loaded on its own, so every culprit is named.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from subcompat.discover import Edge, ModuleInfo, ModuleTree

try:  # builtin; ``hashlib`` would initialise OpenSSL first (~2 ms of every start-up)
    from _sha2 import sha256
except ImportError:  # pragma: no cover - a build without it
    from hashlib import sha256

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    import subprocess
    from typing import Any

PROTOCOL = 1
SUBINTERP_MESSAGE = "does not support loading in subinterpreters"
_HERE = os.path.dirname(os.path.abspath(__file__))
_CHILD = os.path.join(_HERE, "_child.py")
_BOOT = (
    "import sys;p=sys.argv[1];"
    "exec(compile(open(p,encoding='utf-8').read(),p,'exec'),"
    "{'__name__':'__subcompat_child__','__file__':p,'__builtins__':__builtins__})"
)

#: Counts of what this process did, for tests and benchmarks ("a warm run spawns no child").
STATS = {"children_started": 0, "trials": 0}


class ProbeError(Exception):
    """The probe itself could not run (bad interpreter path, protocol mismatch)."""


class _ChildGone(Exception):
    def __init__(self, status: str, signal_no: int | None, detail: str) -> None:
        super().__init__(detail)
        self.status = status  # crash | timeout
        self.signal = signal_no
        self.detail = detail


@dataclass(frozen=True)
class Interpreter:
    """The target interpreter, as its own child reports it."""

    python: str
    implementation: str
    cache_tag: str | None
    abiflags: str
    build: str
    executable: str
    backend: str | None
    unsupported: str | None
    can_classify: bool
    sys_path: tuple[str, ...] = ()
    can_fork: bool = False  # main-interpreter imports fork from a pristine child

    @property
    def key(self) -> str:
        """Identity for cache keys: a rebuilt or upgraded interpreter is another key."""
        raw = "|".join([self.implementation, self.python, str(self.cache_tag), self.abiflags, self.build])
        return sha256(raw.encode()).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sys_path"] = list(self.sys_path)
        return data

    @classmethod
    def current(cls) -> Interpreter:
        """This process's interpreter, described exactly as a child would describe it."""
        from subcompat import _child

        return cls.from_json(_child.describe_interpreter(_child.Backend(), []))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interpreter:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["sys_path"] = tuple(kwargs.get("sys_path") or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class Trial:
    """One candidate in one fresh interpreter (or, for kind ``main``, a fresh process)."""

    kind: str  # job | lazy | extension | classify | main
    candidate: str
    status: str  # ok | failed | crash | timeout | missing
    error: dict[str, Any] | None = None
    failures: tuple[dict[str, Any], ...] = ()  # extension loads that raised, from the hook
    culprit: dict[str, Any] | None = None  # for crash/timeout: the extension being loaded
    signal: int | None = None
    edge: Edge | None = None
    file: str | None = None
    cached: bool = False
    shared_gil: bool | None = None  # extension loads with a shared GIL (multi-phase, no slot)
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class ProbeResult:
    """Everything the probe saw for one target; the verdict stage reads only this."""

    target: str
    interpreter: Interpreter
    tree: ModuleTree
    trials: tuple[Trial, ...] = ()
    elapsed_s: float = 0.0
    loaded: frozenset[str] = field(default_factory=frozenset)  # extensions loaded in a sub


def split_target(target: str) -> tuple[str, str | None]:
    module, _, function = target.partition(":")
    return module, (function or None)


class _Child:
    """One child process of the target interpreter."""

    def __init__(self, python: str, workdir: str, env: dict[str, str] | None, cwd: str | None):
        self.python = python
        self.workdir = workdir
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None  # subprocess is imported when one starts
        self.crumbs = ""
        self.stderr_path = ""
        self._buf = b""
        self._ids = 0

    def start(self) -> None:
        import subprocess
        import tempfile

        fd, self.crumbs = tempfile.mkstemp(prefix="crumbs-", dir=self.workdir)
        os.close(fd)
        fd, self.stderr_path = tempfile.mkstemp(prefix="stderr-", dir=self.workdir)
        with os.fdopen(fd, "wb") as err:
            try:
                self.proc = subprocess.Popen(
                    [self.python, "-X", "faulthandler", "-c", _BOOT, _CHILD],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    cwd=self.cwd,
                    env=self.env,
                    bufsize=0,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProbeError(f"cannot start {self.python}: {exc.strerror or exc}") from None
        STATS["children_started"] += 1
        self._buf = b""

    def ensure_started(self) -> _Child:
        if self.proc is None:
            self.start()
        return self

    def request(self, op: str, timeout: float, **fields: Any) -> dict[str, Any]:
        self.ensure_started()
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self._ids += 1
        with open(self.crumbs, "w"):
            pass
        line = json.dumps({"v": PROTOCOL, "id": self._ids, "op": op, **fields}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
        except (BrokenPipeError, OSError):
            self._died()
        import selectors

        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0 or not sel.select(left):
                    self.kill()
                    raise _ChildGone("timeout", None, f"no answer within {timeout:g}s")
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    self._died()
                self._buf += chunk
        raw, _, self._buf = self._buf.partition(b"\n")
        reply = json.loads(raw)
        if reply.get("v") != PROTOCOL:
            raise ProbeError(f"child speaks protocol {reply.get('v')!r}, expected {PROTOCOL}")
        if not reply.get("ok"):
            raise ProbeError(f"probe child failed on {op}: {reply.get('error')}")
        return reply

    def _died(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        self.proc = None
        sig = -code if code < 0 else None
        detail = f"killed by signal {sig} ({signal.Signals(sig).name})" if sig else f"exited with {code}"
        raise _ChildGone("crash", sig, detail)

    def breadcrumb(self) -> dict[str, Any] | None:
        """The extension whose load was under way when the child died, if any."""
        open_loads: list[str] = []
        candidate = None
        try:
            with open(self.crumbs, encoding="utf-8", errors="replace") as fh:
                for line in fh.read().splitlines():
                    if line.startswith("*"):
                        candidate = line[1:]
                    elif line.startswith("+"):
                        open_loads.append(line[1:])
                    elif line.startswith("-") and open_loads:
                        open_loads.pop()
        except OSError:
            return None
        if not open_loads:
            return {"name": None, "file": None, "candidate": candidate} if candidate else None
        name, _, file = open_loads[-1].partition("\t")
        return {"name": name, "file": file or None, "candidate": candidate}

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            with open(self.stderr_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - limit))
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            import subprocess

            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.kill()


Recall = Callable[[ModuleInfo], "Trial | None"]


class Prober:
    """Runs trials for many targets on ``jobs`` children in parallel."""

    def __init__(
        self,
        python: str | None = None,
        *,
        timeout: float = 30.0,
        jobs: int | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        recall: Recall | None = None,
        preload: Sequence[str] = (),
        sys_path: Sequence[str] | None = None,
    ) -> None:
        """``preload``: modules the runtime imports in every sub-interpreter before
        the job (chancy's job wrapper); what they load or skip is not the job's.
        ``sys_path``: resolve targets with this path instead of the child's own (a
        worker whose sys.path was changed at run time passes its own)."""
        self.python = python or sys.executable
        self.timeout = timeout
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.cwd = cwd
        self.env = env
        self.recall = recall
        self.preload = tuple(preload)
        self.sys_path = list(sys_path) if sys_path is not None else None
        self._workdir: str | None = None
        self._local = threading.local()
        self._children: list[_Child] = []
        self._idle: list[_Child] = []
        self._lock = threading.Lock()
        self._ext_memo: dict[str, Trial] = {}
        self._interp: Interpreter | None = None

    @property
    def workdir(self) -> str:
        """Scratch space for children (results, breadcrumbs), made when the first starts."""
        if self._workdir is None:
            import tempfile

            self._workdir = tempfile.mkdtemp(prefix="subcompat-")
        return self._workdir

    # -- lifecycle ----------------------------------------------------------
    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for child in self._children:  # every child starts exiting at once, then each is reaped
            if child.proc is not None and child.proc.stdin is not None:
                try:
                    child.proc.stdin.close()
                except OSError:
                    pass
        for child in self._children:
            child.close()
        self._children.clear()
        self._idle.clear()
        if self._workdir is not None:
            import shutil

            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _child(self) -> _Child:
        child = getattr(self._local, "child", None)
        if child is None:
            with self._lock:
                child = self._idle.pop() if self._idle else None
            if child is None:
                child = _Child(self.python, self.workdir, self.env, self.cwd)
                with self._lock:
                    self._children.append(child)
            self._local.child = child
        return child

    def interpreter(self) -> Interpreter:
        if self._interp is None:
            try:
                reply = self._child().request("hello", timeout=max(self.timeout, 30.0))
            except _ChildGone as gone:
                raise ProbeError(f"{self.python} did not start a probe: {gone.detail}") from None
            self._interp = Interpreter.from_json(reply)
            with self._lock:  # the first thread that probes takes this child over
                self._idle.append(self._local.child)
            self._local.child = None
        return self._interp

    # -- probing ------------------------------------------------------------
    def probe_many(self, targets: Iterable[str]) -> list[ProbeResult]:
        targets = list(targets)
        interp = self.interpreter()
        if interp.unsupported or not targets:
            return [ProbeResult(t, interp, ModuleTree(split_target(t)[0])) for t in targets]
        if self.jobs == 1 or len(targets) == 1:
            return [self.probe(t) for t in targets]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(self.jobs, len(targets))) as pool:
            return list(pool.map(self.probe, targets))

    def probe(self, target: str) -> ProbeResult:
        interp = self.interpreter()
        module, function = split_target(target)
        started = time.perf_counter()
        if interp.unsupported:
            return ProbeResult(target, interp, ModuleTree(module))
        modules: dict[str, ModuleInfo] = {}
        edges: dict[str, Edge] = {}
        loaded: set[str] = set()
        trials: list[Trial] = []

        def absorb(raw: dict[str, Any], in_sub: bool = True) -> None:
            failed = {f["name"] for f in raw.get("failures", ())}
            failed.update(f["name"] for lz in raw.get("lazy", ()) for f in lz.get("failures", ()))
            for m in raw.get("modules", ()):
                info = ModuleInfo.from_json(m)
                modules.setdefault(info.name, info)
                if in_sub and info.extension and info.name not in failed:
                    loaded.add(info.name)
            for name, (importer, file, line, how) in raw.get("edges", {}).items():
                edges.setdefault(name, Edge(importer, file, line, how))

        job = self._trial("job", module, mode="job", name=module, function=function, preload=self.preload)
        trials.append(job.trial)
        absorb(job.raw)
        trials.extend(self._lazy_trials(job.raw))
        self._drain(module, job.raw.get("pending", []), [], trials, absorb)
        if self._needs_main(trials):
            # Something failed: is it broken in the main interpreter too, and which
            # extensions of the tree did the sub-interpreter never reach?
            lazy_failed = [
                t.candidate for t in trials if t.kind == "lazy" and t.status == "failed" and not t.failures
            ]
            main, main_raw = self._main(module, function, lazy_failed)
            trials.extend(main)
            absorb(main_raw, in_sub=False)
            if job.trial.status != "ok" and main[0].status == "ok":
                # the job never reached its deferred imports: scan the tree main saw
                sources = [
                    [m.name, m.file, m.file.endswith("__init__.py"), False]
                    for m in modules.values()
                    if m.origin == "first_party" and m.file and m.file.endswith(".py")
                ]
                self._drain(module, [], sources, trials, absorb)
        trials.extend(self._extension_trials(modules, loaded, trials, interp))
        tree = ModuleTree(module, tuple(sorted(modules.values(), key=lambda m: m.name)), edges)
        return ProbeResult(
            target, interp, tree, tuple(trials), time.perf_counter() - started, frozenset(loaded)
        )

    @staticmethod
    def _needs_main(trials: list[Trial]) -> bool:
        """Only a failure makes the main-interpreter import worth its cost: to tell a
        module broken everywhere from one broken here, and to reach the extensions the
        sub-interpreter never got to. An import that succeeded while skipping
        accelerators with the sub-interpreter message needs neither."""
        for t in trials:
            if t.status not in ("ok", "missing"):
                return True
            if any(SUBINTERP_MESSAGE not in f.get("msg", "") for f in t.failures):
                return True
        return False

    def _drain(
        self,
        module: str,
        pending: list[list[Any]],
        sources: list[list[Any]],
        trials: list[Trial],
        absorb: Callable[[dict[str, Any]], None],
    ) -> None:
        """Deferred imports left after a failure, each batch in a fresh interpreter."""
        while pending or sources:
            nxt = self._trial(
                "lazy",
                pending[0][0] if pending else module,
                mode="lazy",
                name=module,
                pending=pending,
                sources=sources,
                preload=self.preload,
                skip=sorted({(t.culprit or {}).get("candidate") or "" for t in trials} - {""}),
            )
            sources = []
            absorb(nxt.raw)
            trials.extend(self._lazy_trials(nxt.raw))
            if nxt.trial.status in ("crash", "timeout"):
                culprit = nxt.trial.culprit or {}
                names = [p[0] for p in pending]
                cand = culprit.get("candidate")
                at = names.index(cand) if cand in names else 0
                trials.append(dataclasses.replace(nxt.trial, candidate=cand or nxt.trial.candidate))
                pending = pending[at + 1 :]
            else:
                pending = nxt.raw.get("pending", [])

    def _lazy_trials(self, raw: dict[str, Any]) -> list[Trial]:
        out = []
        for entry in raw.get("lazy", ()):
            importer, file, line, how = entry["edge"]
            error = entry.get("error")
            status = "ok" if error is None else ("missing" if entry.get("missing") else "failed")
            out.append(
                Trial(
                    "lazy",
                    entry["module"],
                    status,
                    error,
                    failures=tuple(entry.get("failures", ())),
                    edge=Edge(importer, file, line, how),
                )
            )
        return out

    def _extension_trials(
        self,
        modules: dict[str, ModuleInfo],
        loaded: set[str],
        trials: list[Trial],
        interp: Interpreter,
    ) -> list[Trial]:
        """One record per extension that failed or that no sub-interpreter reached.

        Unreached ones are loaded on their own in a fresh interpreter; failed ones
        are classified (does it load with a shared GIL?). Results are memoised per
        file for this run and recalled from the cache across runs.
        """
        failed: dict[str, dict[str, Any]] = {}
        for t in trials:
            for f in t.failures:
                failed.setdefault(f["name"], f)
        settled = {t.culprit["name"] for t in trials if t.culprit}
        if not failed and not settled and all(t.status in ("ok", "missing") for t in trials):
            return []
        todo: dict[str, ModuleInfo] = {
            m.name: m for m in modules.values() if m.extension and m.file and m.name not in loaded
        }
        for name, f in failed.items():
            if name not in todo and f.get("file"):
                todo[name] = modules.get(name) or ModuleInfo(name, f["file"], "unknown", True)
        out: list[Trial] = []
        for name, info in sorted(todo.items()):
            if name in settled:
                continue
            memo = self._remember(info)
            if memo is not None:
                out.append(dataclasses.replace(memo, candidate=name, cached=True))
                continue
            if name in failed:  # the hook saw it fail; only the classification is missing
                f = failed[name]
                trial = Trial(
                    "extension", name, "failed", {"type": f["type"], "msg": f["msg"]}, failures=(f,)
                )
            else:
                trial = self._trial("extension", name, mode="load", name=name, file=info.file).trial
            if (
                trial.status == "failed"
                and interp.can_classify
                and SUBINTERP_MESSAGE in (trial.error or {}).get("msg", "")
            ):
                shared = self._trial(
                    "classify", name, mode="load", name=name, file=info.file, shared_gil=True
                ).trial
                trial = dataclasses.replace(trial, shared_gil=shared.status == "ok")
            trial = dataclasses.replace(trial, file=info.file)
            with self._lock:
                self._ext_memo[info.file or name] = trial
            out.append(trial)
        return out

    def _remember(self, info: ModuleInfo) -> Trial | None:
        assert info.file
        with self._lock:
            memo = self._ext_memo.get(info.file)
        if memo is None and self.recall is not None:
            memo = self.recall(info)
        return memo

    class _Run:
        def __init__(self, trial: Trial, raw: dict[str, Any]):
            self.trial = trial
            self.raw = raw

    def _trial(self, kind: str, candidate: str, **req: Any) -> Prober._Run:
        child = self._child().ensure_started()
        STATS["trials"] += 1
        started = time.perf_counter()
        try:
            raw = child.request(
                "trial",
                timeout=self.timeout,
                workdir=self.workdir,
                breadcrumb=child.crumbs,
                sys_path=self.sys_path,
                **req,
            )
        except _ChildGone as gone:
            culprit = child.breadcrumb()
            child.kill()
            err = {"type": gone.status, "msg": gone.detail, "stderr": child.stderr_tail()}
            trial = Trial(
                kind,
                candidate,
                gone.status,
                err,
                culprit=culprit,
                signal=gone.signal,
                elapsed_s=time.perf_counter() - started,
            )
            return self._Run(trial, {})
        error = raw.get("error")
        status = "ok" if error is None else "failed"
        trial = Trial(
            kind,
            candidate,
            status,
            error,
            failures=tuple(raw.get("failures", ())),
            elapsed_s=time.perf_counter() - started,
        )
        return self._Run(trial, raw)

    def _main(
        self, module: str, function: str | None, extra: list[str]
    ) -> tuple[list[Trial], dict[str, Any]]:
        """Import in the main interpreter of a fresh process: broken everywhere? And
        the whole tree, with who imported what, where the sub-interpreter stopped short.

        Where the target can fork, each thread keeps one pristine child that only forks
        these processes (no interpreter start-up per import); otherwise a new child."""
        names = [module, *extra]
        reuse = self.interpreter().can_fork
        child = getattr(self._local, "forker", None) if reuse else None
        if child is None:
            child = _Child(self.python, self.workdir, self.env, self.cwd)
            if reuse:
                self._local.forker = child
                with self._lock:
                    self._children.append(child)
        started = time.perf_counter()
        try:
            reply = child.ensure_started().request(
                "main",
                timeout=self.timeout * len(names) + 30,
                workdir=self.workdir,
                breadcrumb=child.crumbs,
                lazy=False,
                mode="job",
                names=names,
                function=function,
                timeout_s=self.timeout,
            )
            runs, status = reply["runs"], reply["status"]
            sig, detail = reply.get("signal"), reply.get("detail")
        except _ChildGone as gone:
            runs, status, sig, detail = [], gone.status, gone.signal, gone.detail
        finally:
            if not reuse:
                child.close()
        if runs:  # module origins and distributions, looked up outside the forking child
            describer = self._child().ensure_started()
            try:
                runs = [describer.request("describe", timeout=60.0, result=r)["result"] for r in runs]
            except _ChildGone as gone:
                raise ProbeError(f"probe child lost while describing {module}: {gone.detail}") from None
        elapsed = time.perf_counter() - started
        out: list[Trial] = []
        for name, run in zip(names, runs, strict=False):
            error = run.get("error")
            out.append(Trial("main", name, "ok" if error is None else "failed", error, elapsed_s=elapsed))
        if len(runs) < len(names):
            err = {"type": status, "msg": detail, "stderr": child.stderr_tail()}
            culprit = child.breadcrumb()
            out.append(
                Trial("main", names[len(runs)], status, err, culprit=culprit, signal=sig, elapsed_s=elapsed)
            )
            if status == "timeout" and reuse:
                child.kill()  # it answered, but be sure nothing it forked lingers
        return out, (runs[0] if runs else {})
