"""Stage 2, probe: import each candidate in a fresh sub-interpreter, in a child process.

Processes (``_transport.py`` here, ``_child.py`` there): each probing thread has a
zygote of the target interpreter that never runs job code; every target gets workers
forked from it, so no target sees what another did, and a worker that dies or hangs
costs only its own target: this side records ``crash`` (with the signal) or
``timeout``, names the extension from the breadcrumb the trial left, and carries on.

Per target, within one wall-clock budget (``timeout``) and a trial budget: one trial
of the job module (which also scans the job's first-party source, runs its deferred
imports and checks the names that source takes from other modules); deferred imports
left over after a failure get fresh interpreters, each name tried once (a fixpoint
over what was tried); and only when something failed or a name was missing, a fresh
*process* imports the job (and what failed or hung) in its main interpreter: is it
broken everywhere? which extensions did the sub-interpreter never reach? are the
missing names there? Each such extension is then loaded on its own, so every culprit
is named. Sub-interpreter trials get half the budget; the other half is kept for that
main check, so it always has at least the time a hung sub-interpreter trial had: a
main check cut shorter than that proves nothing (a slow import on a busy machine), and
the verdict is then a transient ``timeout`` that gives both figures. An extension
file's trials are facts for the whole run (one thread trials a file, the rest wait for
it), outside a target's budget and trial cap; a module whose package (a target of this
run) failed the same way builds on the package's diagnosis (``Prober._inherit``).

Two standing workers serve the whole probe, one request at a time: a *pair* worker
whose two live isolated interpreters load every extension new to this run that a
sub-interpreter loaded (what a pool does: state one process shares between
interpreters shows there), and a *sampler* whose main interpreter imports installed
packages, never job code, for the accelerators they load there and skip in a
sub-interpreter without a word.

This module orchestrates; the rest of the stage is split by concept: ``_interpreter``
(the target interpreter's identity and cache key), ``_records`` (``Trial``,
``ProbeResult`` and the records inside them, parsed once from the child's JSON),
``_seen`` (what a target's trials saw, merged into one tree), ``_transport`` (the
processes and their channel, this side), ``_child`` and ``_trial`` (the other side).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from subcompat._interpreter import RULES, Interpreter
from subcompat._records import (
    PROBE_FAILURE,
    TRIAL_CAP,
    ExtensionFailure,
    ProbeResult,
    Trial,
    TrialError,
    blame_key,
    is_memory_error,
    parse_breadcrumb,
    parse_error,
    parse_failures,
    split_target,
)
from subcompat._seen import Seen, name_trials
from subcompat._transport import MAX_REPLY, STATS, ChildGone, ProbeError, Worker, Zygote
from subcompat.discover import Edge, ModuleInfo, ModuleTree

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

    from subcompat._records import RawPending, RawSource, RawTrial, TrialKind, TrialStatus

__all__ = [
    "PROBE_FAILURE",
    "RULES",
    "STATS",
    "Interpreter",
    "ProbeError",
    "ProbeResult",
    "Prober",
    "Trial",
    "blame_key",
    "is_memory_error",
    "split_target",
]

SUBINTERP_MESSAGE = "does not support loading in subinterpreters"
DEFAULT_MEMORY_MB = 4096  # address space of one worker (RLIMIT_AS)
MAX_TRIALS = 64  # per target, of its own trials (job, deferred imports): each a fresh interpreter
FACT_KINDS = ("extension", "classify")  # trials of a file, facts for the whole run: not capped per target
SUB_SHARE = 1 / 2  # of the budget, for sub-interpreter trials; the rest checks main (as long)
MAX_TIMEOUT_S = 86400.0
MIN_MAIN_S = 1.0  # a main-interpreter check cut shorter than this proves no hang
MIN_MEMORY_MB = 128  # below this an interpreter barely starts
PAIR_MARK = "two live interpreters"  # in every finding of the pair check (and so in the cache)
MIN_PAIR_S = 1.0  # budget a pair check needs at least
MAX_BLAME = 32  # deferred imports retried in the main interpreter, per target
MAX_PAIRS = 4  # pair workers per target (a crash blames one extension; the rest go again)


def timeout_problem(value: object) -> str | None:
    """Why ``value`` is not a usable per-target budget, or None (one rule for CLI and config)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
        return f"must be a positive number of seconds up to {MAX_TIMEOUT_S:g}, not {value!r}"  # nan too
    return None


def memory_problem(value: object) -> str | None:
    """Why ``value`` is not a usable memory limit in MiB (0: no limit), or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number of MiB, not {value!r}"
    if value != 0 and not MIN_MEMORY_MB <= value <= 1 << 24:
        return f"must be 0 (no limit) or between {MIN_MEMORY_MB} and {1 << 24} MiB, not {value!r}"
    return None


Recall = Callable[[ModuleInfo], "Trial | None"]


class _Run:
    def __init__(self, trial: Trial, raw: RawTrial):
        self.trial = trial
        self.raw = raw


class _Target:
    """One target's probe: its budget, its workers, and the trials it has run."""

    def __init__(self, prober: Prober, zygote: Zygote) -> None:
        self.prober = prober
        self.zygote = zygote
        self.budget = prober.timeout
        self.started = time.monotonic()
        self.deadline = self.started + self.budget
        self.sub_deadline = self.started + self.budget * SUB_SHARE
        self.worker: Worker | None = None
        self.workers: list[Worker] = []
        self.count = 0
        self.hung_s = 0.0  # the longest sub-interpreter trial that timed out

    def _fork(self) -> Worker:
        worker = self.zygote.fork(self.prober.memory_bytes)
        self.workers.append(worker)
        return worker

    def _request(self, worker: Worker, op: str, deadline: float, **req: Any) -> Any:
        """The worker's reply to ``op`` (JSON; its shape is the op's ``Raw*`` type)."""
        return worker.request(
            op,
            timeout=deadline - time.monotonic(),
            workdir=self.prober.workdir,
            breadcrumb=worker.crumbs,
            sys_path=self.prober.sys_path,
            **req,
        )

    def _spent(self, kind: TrialKind, candidate: str, why: str) -> _Run:
        return _Run(Trial(kind, candidate, "timeout", TrialError("budget", why)), {})

    def trial(self, kind: TrialKind, candidate: str, **req: Any) -> _Run:
        """One fresh sub-interpreter in this target's worker (a new worker after a loss)."""
        fact = kind in FACT_KINDS
        if self.count >= MAX_TRIALS and not fact:
            return self._spent(kind, candidate, f"{TRIAL_CAP} reached ({MAX_TRIALS} fresh interpreters)")
        deadline = self.sub_deadline
        if fact:  # a file's trial is the run's, not this target's: a budget of its own
            deadline = max(deadline, time.monotonic() + self.budget * SUB_SHARE)
        elif deadline <= time.monotonic():
            return self._spent(kind, candidate, f"timeout: probe budget of {self.budget:g}s used up")
        self.count += not fact
        STATS["trials"] += 1
        started = time.perf_counter()
        try:
            if self.worker is None:
                self.worker = self._fork()
            raw = self._request(self.worker, "trial", deadline, **req)
        except ChildGone as gone:
            return _Run(self._lost(kind, candidate, gone, time.perf_counter() - started), {})
        error = parse_error(raw.get("error"))
        trial = Trial(
            kind,
            candidate,
            "ok" if error is None else "failed",
            error,
            failures=parse_failures(raw.get("failures")),
            elapsed_s=time.perf_counter() - started,
        )
        return _Run(trial, raw)

    def _lost(self, kind: TrialKind, candidate: str, gone: ChildGone, elapsed: float) -> Trial:
        worker, self.worker = self.worker, None
        culprit = parse_breadcrumb(worker.breadcrumb()) if worker is not None else None
        detail = gone.detail
        if gone.status == "timeout":
            detail = f"timeout: still running after {elapsed:.1f}s of the {self.budget:g}s budget"
            self.hung_s = max(self.hung_s, elapsed)
        err = self._lost_error(worker, _lost_kind(gone), detail, _external(gone))
        return Trial(
            kind, candidate, gone.status, err, culprit=culprit, signal=gone.signal, elapsed_s=elapsed
        )

    def _lost_error(self, worker: Worker | None, kind: str, msg: str, external: bool) -> TrialError:
        """What a lost worker tells: its last output, and whether it was starved, not
        stuck (it died or hung with its peak RSS at the limit)."""
        limit = self.prober.memory_mb
        peak = worker.maxrss_kb if worker is not None else None
        starved = bool(limit and peak and peak >= limit * 1024 * 0.9)
        if starved:
            assert peak is not None
            msg += f" (the worker reached the memory limit: {peak >> 10} of {limit} MiB, --memory)"
            if kind == PROBE_FAILURE:  # our code failed for want of memory the job took: a crash
                kind = "crash"
        stderr = worker.stderr_tail() if worker is not None else ""
        return TrialError(kind, msg, stderr=stderr, external=external, memory_limit=starved)

    def main(
        self,
        module: str,
        function: str | None,
        extra: list[str],
        refs: Iterable[tuple[str, str]] = (),
    ) -> tuple[list[Trial], RawTrial]:
        """Import in the main interpreter of a fresh worker: broken everywhere? And the
        whole tree, with who imported what, where the sub-interpreter stopped short;
        and whether the (module, name) pairs ``refs`` exist there."""
        names = [module, *extra]
        started = time.perf_counter()
        status: TrialStatus = "ok"
        sig, detail, external = None, "", False
        kind = ""  # the error type, when not the status itself
        worker = None
        stem = ""
        try:
            if self.deadline <= time.monotonic():
                raise ChildGone(
                    "timeout", None, f"timeout: probe budget of {self.budget:g}s used up", ours=True
                )
            # at least as long as the longest hung sub-interpreter trial (a few ms of fork
            # and start-up past the budget at most: the halves are equal)
            deadline = max(self.deadline, time.monotonic() + self.hung_s + 0.1)
            worker = self.prober._zygote(lean=True).fork(self.prober.memory_bytes)
            self.workers.append(worker)
            stem = worker.stem + ".main"
            self._request(
                worker,
                "main",
                deadline,
                lazy=False,
                mode="job",
                names=names,
                function=function,
                stem=stem,
                refs=[list(pair) for pair in refs],
            )
        except ChildGone as gone:
            status, sig, detail = gone.status, gone.signal, gone.detail
            external = _external(gone)
            if gone.probe_failure:
                kind = PROBE_FAILURE
            if status == "timeout":
                spent = time.perf_counter() - started
                detail = f"timeout: no answer within {spent:.1f}s in a main interpreter"
                if spent < max(MIN_MAIN_S, self.hung_s):  # less than the sub-interpreter had: no proof
                    kind = "budget"
                    detail = (
                        f"timeout: the main-interpreter check had {spent:.1f}s of the {self.budget:g}s "
                        f"budget, less than the {self.hung_s:.1f}s the sub-interpreter trial ran: "
                        "not evidence of a hang"
                    )
        finally:
            if worker is not None:
                worker.close()  # with anything the job forked
        runs = _read_runs(stem, len(names)) if stem else []
        if runs:  # module origins and distributions, looked up where no job code ran
            if self.worker is None:
                self.worker = self._fork()
            describer = self.worker
            grace = self.deadline + 10.0  # our own code: a little past the budget
            runs = [self._request(describer, "describe", grace, result=r)["result"] for r in runs]
        elapsed = time.perf_counter() - started
        out = []
        for name, run in zip(names, runs, strict=False):
            error = parse_error(run.get("error"))
            out.append(Trial("main", name, "ok" if error is None else "failed", error, elapsed_s=elapsed))
        if len(runs) < len(names):
            err = self._lost_error(worker, kind or status, detail, external)
            culprit = parse_breadcrumb(worker.breadcrumb()) if worker else None
            out.append(
                Trial("main", names[len(runs)], status, err, culprit=culprit, signal=sig, elapsed_s=elapsed)
            )
        return out, (runs[0] if runs else {})

    def main_under(
        self, module: str, function: str | None, under: str
    ) -> tuple[list[Trial], RawTrial] | None:
        """``main`` for a module of the package ``under`` (whose own import fails in a
        sub-interpreter and passes in a main one): forked from this thread's standing
        worker that imported ``under`` in its main interpreter once (``_child.op_main_under``),
        not a fresh process that imports it again. None when that gave no complete run
        (the fork crashed or hung, the worker was lost): the caller checks it the usual way."""
        if self.deadline <= time.monotonic():
            return None
        worker = self.prober._under_worker(under)
        stem = f"{worker.stem}.main{self.prober._next_id()}"
        started = time.perf_counter()
        try:
            reply = self._request(
                worker,
                "main_under",
                self.deadline,
                under=under,
                lazy=False,
                mode="job",
                names=[module],
                function=function,
                stem=stem,
                refs=[],
            )
        except ChildGone:
            self.prober._drop_under_worker(worker)
            _read_runs(stem, 1)  # scratch left behind
            return None
        runs = _read_runs(stem, 1)
        if reply.get("state") != "done" or reply.get("status") != 0 or not runs:
            return None
        if self.worker is None:
            self.worker = self._fork()
        grace = self.deadline + 10.0  # our own code: a little past the budget
        raw = self._request(self.worker, "describe", grace, result=runs[0])["result"]
        error = parse_error(raw.get("error"))
        elapsed = time.perf_counter() - started
        trial = Trial("main", module, "ok" if error is None else "failed", error, elapsed_s=elapsed)
        return [trial], raw

    def pair(self, exts: dict[str, str], fresh: bool) -> tuple[dict[str, Any], Trial | None]:
        """Extensions (name: file) in two live interpreters at once (``_child.op_pair``): what each looked
        like, or the trial of the one the worker died or hung on. ``fresh``: in a worker
        forked for it; else in the probe's standing pair worker, whose two interpreters
        already hold what earlier targets checked (no interpreter to create; one request
        at a time, whichever thread asks)."""
        STATS["pairs"] += 1
        if not fresh:
            with self.prober._pair_lock:
                return self._pair_request(self.prober._pair_worker(self.zygote), exts)
        worker = self._fork()
        try:
            return self._pair_request(worker, exts)
        finally:
            worker.close()

    def _pair_request(self, worker: Worker, exts: dict[str, str]) -> tuple[dict[str, Any], Trial | None]:
        started = time.perf_counter()
        names = list(exts)
        try:
            reply = self._request(worker, "pair", self.deadline, names=names, files=[exts[n] for n in names])
            return reply.get("results", {}), None
        except ChildGone as gone:
            crumb = parse_breadcrumb(worker.breadcrumb())
            blamed = crumb.name if crumb is not None and crumb.name in names else names[0]
            err = self._lost_error(worker, _lost_kind(gone), gone.detail, _external(gone))
            elapsed = time.perf_counter() - started
            return {}, Trial("pair", blamed, gone.status, err, signal=gone.signal, elapsed_s=elapsed)

    def finish(self) -> None:
        for worker in self.workers:
            worker.discard()
        self.workers.clear()
        self.worker = None


def _lost_kind(gone: ChildGone) -> str:
    """The error type of a lost trial: a worker that answered that the probe's own code
    failed found nothing about the module (``PROBE_FAILURE``: an error, never cached)."""
    return PROBE_FAILURE if gone.probe_failure else gone.status


def _sub_only(t: Trial) -> bool:
    """Failed only for the sub-interpreter reason (every extension that failed said so)."""
    return bool(t.failures) and all(SUBINTERP_MESSAGE in f.msg for f in t.failures)


def _external(gone: ChildGone) -> bool:
    """Not us: the OOM killer, or someone's kill -9."""
    return not gone.ours and gone.signal == signal.SIGKILL


def _read_runs(stem: str, count: int) -> list[RawTrial]:
    """The main pass's runs, in order, up to the first one it did not finish."""
    import json

    from subcompat._bounded import Refused, read_regular

    runs: list[RawTrial] = []
    for i in range(count):
        path = f"{stem}-{i}.json"
        try:  # bounded, non-blocking: the job ran in the process that wrote it
            raw, _ = read_regular(path, MAX_REPLY)
            run = json.loads(raw.decode("utf-8", "replace"))
            os.unlink(path)
        except (OSError, Refused, ValueError, RecursionError):
            break
        if not isinstance(run, dict):
            break
        runs.append(run)  # type: ignore[arg-type]  # the child's JSON: RawTrial's shape
    return runs


class Prober:
    """Runs trials for many targets on ``jobs`` zygotes in parallel."""

    def __init__(
        self,
        python: str | None = None,
        *,
        timeout: float = 30.0,
        memory_mb: int | None = DEFAULT_MEMORY_MB,
        jobs: int | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        recall: Recall | None = None,
        preload: Sequence[str] = (),
        sys_path: Sequence[str] | None = None,
    ) -> None:
        """``timeout``: wall-clock budget of one target's whole probe. ``memory_mb``:
        address-space limit of each worker (None or 0: none). ``preload``: modules the
        runtime imports in every sub-interpreter before the job (chancy's job wrapper);
        what they load or skip is not the job's. ``sys_path``: resolve targets with this
        path instead of the child's own (a worker whose sys.path changed at run time)."""
        self.python = python or sys.executable
        self.timeout = timeout
        self.memory_mb = memory_mb or None
        self.memory_bytes = (memory_mb << 20) if memory_mb else None
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.cwd = cwd
        self.env = env
        self.recall = recall
        self.preload = tuple(preload)
        self.sys_path = list(sys_path) if sys_path is not None else None
        self._workdir: str | None = None
        self._local = threading.local()
        self._zygotes: list[Zygote] = []
        self._idle: list[Zygote] = []
        self._lock = threading.Lock()
        self._ext_memo: dict[str, Trial] = {}
        self._ext_busy: dict[str, threading.Event] = {}  # files a thread is trialing now
        self._pair_memo: dict[str, Trial] = {}
        self._dir_memo: dict[str, tuple[str, ...]] = {}
        self._pair: Worker | None = None  # the standing pair worker, shared by all threads
        self._pair_lock = threading.Lock()
        self._sampler: Worker | None = None  # imports installed packages in a main interpreter
        self._sampler_lock = threading.Lock()
        self._loads_memo: dict[str, list[ModuleInfo]] = {}
        self._interp: Interpreter | None = None
        # packages among this run's targets: their results, for the modules inside them
        self._packages: dict[str, threading.Event] = {}
        self._package_results: dict[str, ProbeResult] = {}
        self._ids = 0

    @property
    def workdir(self) -> str:
        """Scratch space for workers (results, breadcrumbs), made when the first starts."""
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
        with self._lock:
            zygotes = list(self._zygotes)
            self._zygotes.clear()
            self._idle.clear()
        for zygote in zygotes:  # every zygote starts finishing at once, then each is reaped
            if zygote.ctl is not None:
                try:
                    zygote.ctl.shutdown(2)
                except OSError:
                    pass
        for zygote in zygotes:
            zygote.close()
        if self._workdir is not None:
            import shutil

            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def abort(self) -> None:
        """Stop now (a signal, an interrupt): every zygote and worker is killed."""
        with self._lock:
            zygotes = list(self._zygotes)
        for zygote in zygotes:
            zygote.kill()

    def _pair_worker(self, zygote: Zygote) -> Worker:
        """The standing pair worker (under ``_pair_lock``): forked on first need, or again
        after it was lost, from the asking thread's zygote; killed with it at close."""
        worker = self._pair
        if worker is None or worker.exit is not None or not worker.zygote.alive:
            worker = self._pair = zygote.fork(self.memory_bytes)
        return worker

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _under_worker(self, under: str) -> Worker:
        """This thread's standing worker for main checks inside the package ``under``
        (forked from its lean zygote; a new one when the package changes or it was lost)."""
        held = getattr(self._local, "under", None)
        if held is not None and (held[0] != under or held[1].exit is not None or not held[1].zygote.alive):
            held[1].discard()
            held = None
        if held is None:
            held = self._local.under = (under, self._zygote(lean=True).fork(self.memory_bytes))
        return held[1]

    def _drop_under_worker(self, worker: Worker) -> None:
        held = getattr(self._local, "under", None)
        if held is not None and held[1] is worker:
            self._local.under = None
        worker.discard()

    def _zygote(self, lean: bool = False) -> Zygote:
        if lean:  # main-pass workers: one lean zygote per thread, started on first need
            zygote = getattr(self._local, "lean", None)
            if zygote is None:
                zygote = self._local.lean = Zygote(self.python, self.workdir, self.env, self.cwd, warm=False)
                with self._lock:
                    self._zygotes.append(zygote)
            return zygote
        zygote = getattr(self._local, "zygote", None)
        if zygote is None:
            with self._lock:
                zygote = self._idle.pop() if self._idle else None
            if zygote is None:
                zygote = Zygote(self.python, self.workdir, self.env, self.cwd)
                with self._lock:
                    self._zygotes.append(zygote)
            self._local.zygote = zygote
        return zygote

    def interpreter(self) -> Interpreter:
        if self._interp is None:
            try:
                reply = self._zygote().hello(timeout=max(self.timeout, 30.0))
            except ChildGone as gone:
                raise ProbeError(f"{self.python} did not start a probe: {gone.detail}") from None
            self._interp = Interpreter.from_json(reply)
            with self._lock:  # the first thread that probes takes this zygote over
                self._idle.append(self._local.zygote)
            self._local.zygote = None
        return self._interp

    # -- probing ------------------------------------------------------------
    def probe_many(self, targets: Iterable[str]) -> list[ProbeResult]:
        order = list(targets)
        done = {r.target: r for r in self.iter_probe(order)}
        return [done[t] for t in order]

    def iter_probe(self, targets: Iterable[str]) -> Iterator[ProbeResult]:
        """Results as each target finishes (so each can be cached at once)."""
        targets = list(dict.fromkeys(targets))
        # a package before the modules inside it: they may build on its result (_inherit)
        targets.sort(key=lambda t: split_target(t)[0].count("."))
        modules = {split_target(t)[0] for t in targets}
        for name in modules:
            parts = name.split(".")
            for i in range(1, len(parts)):
                if ".".join(parts[:i]) in modules:
                    self._packages.setdefault(".".join(parts[:i]), threading.Event())
        interp = self.interpreter()
        if interp.unsupported or not targets:
            for t in targets:
                yield ProbeResult(t, interp, ModuleTree(split_target(t)[0]))
            return
        absent = self._absent(targets, interp)
        for t in targets:
            if t in absent:
                yield absent[t]
        targets = [t for t in targets if t not in absent]
        if not targets:
            return
        if self.jobs == 1 or len(targets) == 1:
            for t in targets:
                yield self.probe(t)
            return
        from concurrent.futures import ThreadPoolExecutor, as_completed

        pool = ThreadPoolExecutor(max_workers=min(self.jobs, len(targets)))
        try:
            futures = [pool.submit(self.probe, t) for t in targets]
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            self.abort()  # threads waiting on killed workers return at once
            raise
        finally:
            pool.shutdown(wait=True)

    def _absent(self, targets: list[str], interp: Interpreter) -> dict[str, ProbeResult]:
        """Targets whose top-level module is nowhere on the job's path, settled here with
        the error an import gives, before any worker: from directory listings
        (``_locate``), or with one question to a zygote when the interpreter has import
        hooks of its own (an editable install)."""
        from subcompat._locate import Locator

        path = self.sys_path if self.sys_path is not None else list(interp.sys_path)
        locator = Locator(interp, path)
        tops = sorted({split_target(t)[0].partition(".")[0] for t in targets})
        if locator.usable:
            gone = {top for top in tops if locator.certainly_missing(top)}
        else:
            try:
                gone = set(self._zygote().absent(tops, self.sys_path, timeout=max(self.timeout, 10.0)))
            except (ChildGone, ProbeError):
                gone = set()
        out = {}
        for t in targets:
            module = split_target(t)[0]
            top = module.partition(".")[0]
            if top in gone:
                error = TrialError("ModuleNotFoundError", f"No module named {top!r}")
                trials = (Trial("job", module, "failed", error), Trial("main", module, "failed", error))
                out[t] = ProbeResult(t, interp, ModuleTree(module), trials, limits=self.limits)
        return out

    def probe(self, target: str) -> ProbeResult:
        """Whatever goes wrong while probing ``target`` is ``target``'s verdict, never the run's."""
        interp = self.interpreter()
        started = time.perf_counter()
        if interp.unsupported:
            return ProbeResult(target, interp, ModuleTree(split_target(target)[0]))
        try:
            return self._publish(target, self._probe(target, interp))
        except Exception as exc:
            module = split_target(target)[0]
            msg = f"the probe could not finish this target: {_text(exc)}"
            trial = Trial("job", module, "crash", TrialError(PROBE_FAILURE, msg))
            return self._publish(
                target,
                ProbeResult(
                    target,
                    interp,
                    ModuleTree(module),
                    (trial,),
                    time.perf_counter() - started,
                    limits=self.limits,
                ),
            )

    def _publish(self, target: str, result: ProbeResult) -> ProbeResult:
        """A package's result, for the modules inside it that wait for it."""
        event = self._packages.get(target)
        if event is not None:
            with self._lock:
                self._package_results[target] = result
            event.set()
        return result

    @property
    def limits(self) -> dict[str, float]:
        out: dict[str, float] = {"timeout_s": self.timeout}
        if self.memory_mb:
            out["memory_mb"] = self.memory_mb
        return out

    def _probe(self, target: str, interp: Interpreter) -> ProbeResult:
        module, function = split_target(target)
        started = time.perf_counter()
        seen = Seen()
        trials: list[Trial] = []
        run = _Target(self, self._zygote())
        try:
            job = run.trial("job", module, mode="job", name=module, function=function, preload=self.preload)
            trials.append(job.trial)
            seen.absorb(job.raw)
            inherited = self._inherit(run, target, job.trial, seen, interp, started)
            if inherited is not None:
                return inherited
            trials.extend(self._lazy_trials(job.raw))
            self._drain(run, module, job.raw.get("pending", []), [], trials, seen.absorb)
            if self._needs_main(trials) or seen.missing:
                # Something failed: is it broken in the main interpreter too, and which
                # extensions of the tree did the sub-interpreter never reach? Are the
                # names it lacked there in a main interpreter?
                main, main_raw = run.main(
                    module, function, self._blame_candidates(module, trials), seen.missing
                )
                trials.extend(main)
                seen.absorb(main_raw, in_sub=False)
                trials.extend(name_trials(seen.missing, main_raw, job.trial, main[0], seen.modules))
                if job.trial.status != "ok" and main[0].status == "ok":
                    # the job never reached its deferred imports: scan the tree main saw
                    sources = [
                        [m.name, m.file, m.file.endswith("__init__.py"), False]
                        for m in seen.modules.values()
                        if m.origin == "first_party" and m.file and m.file.endswith(".py")
                    ]
                    self._drain(run, module, [], sources, trials, seen.absorb)
            for package in self._untried_packages(seen, interp):
                seen.sample(package, self._main_loads(run, package))
            skipped = seen.skipped()
            trials.extend(self._extension_trials(run, seen.modules, seen.loaded, trials, interp, skipped))
            trials.extend(self._pair_trials(run, seen.modules, seen.loaded, trials, skipped))
        finally:
            run.finish()
        tree = ModuleTree(module, tuple(sorted(seen.modules.values(), key=lambda m: m.name)), seen.edges)
        return ProbeResult(
            target,
            interp,
            tree,
            tuple(trials),
            time.perf_counter() - started,
            frozenset(seen.loaded),
            limits=self.limits,
            skipped=skipped,
            depends_on=frozenset(seen.depends_on),
        )

    def _inherit(
        self, run: _Target, target: str, job: Trial, seen: Seen, interp: Interpreter, started: float
    ) -> ProbeResult | None:
        """A module cannot import where its package cannot: when the job's own fresh
        interpreter failed exactly as a package of it (a target of this run) failed in
        its own, a package that imports in a main interpreter, the package's diagnosis is
        this module's too (its extensions' trials are facts about files, not about a
        target). What stays the module's own: its job trial, its main-interpreter import
        (on top of the package, forked: ``_Target.main_under``), which tells a module
        broken everywhere (``error``) from one its package keeps out, and the extensions
        only that import loads (each on its own, as for any target). Not searched: the
        module's own deferred imports (its import never gets that far). None: probe it
        in full."""
        module, function = split_target(target)
        if job.status != "failed" or job.error is None or seen.missing:
            return None
        found = self._package_of(module, run)
        if found is None:
            return None
        under, package = found
        own = {f.name for f in job.failures}
        pjob = _first_trial(package, "job")
        assert pjob is not None and pjob.error is not None
        if (job.error.type, job.error.msg) != (pjob.error.type, pjob.error.msg) or own != {
            f.name for f in pjob.failures
        }:
            return None
        checked = run.main_under(module, function, under)
        if checked is None:
            return None
        main, main_raw = checked
        seen.absorb(main_raw, in_sub=False)
        facts = [dataclasses.replace(t, cached=True) for t in package.trials if t.kind in _FACT_TRIALS]
        # the module's own extensions beyond its package's (one alone each, memoised by file)
        own_exts = self._extension_trials(run, seen.modules, seen.loaded, [job, *main], interp)
        known = {(t.kind, t.candidate) for t in facts}
        facts += [t for t in own_exts if (t.kind, t.candidate) not in known]
        modules = {m.name: m for m in package.tree.modules}
        for name, info in seen.modules.items():
            modules.setdefault(name, info)
        edges = {**package.tree.edges, **seen.edges}
        return ProbeResult(
            target,
            interp,
            ModuleTree(module, tuple(sorted(modules.values(), key=lambda m: m.name)), edges),
            (job, *main, *facts),
            time.perf_counter() - started,
            package.loaded | frozenset(seen.loaded),
            limits=self.limits,
            skipped=package.skipped,
        )

    def _package_of(self, module: str, run: _Target) -> tuple[str, ProbeResult] | None:
        """(name, result) of the outermost package of ``module`` among this run's targets
        whose own import failed in a sub-interpreter and passed in a main one (waited for
        while it is probed, within this target's budget)."""
        parts = module.split(".")
        for i in range(1, len(parts)):
            name = ".".join(parts[:i])
            event = self._packages.get(name)
            if event is None or not event.wait(max(0.0, run.sub_deadline - time.monotonic())):
                continue
            with self._lock:
                result = self._package_results.get(name)
            if result is None or result.target != name or result.transient:
                continue
            pjob = _first_trial(result, "job")
            pmain = next((t for t in result.trials if t.kind == "main" and t.candidate == name), None)
            if pjob is None or pjob.status != "failed" or pjob.error is None:
                continue
            if pmain is None or pmain.status != "ok":
                continue
            return name, result
        return None

    def _untried_packages(self, seen: Seen, interp: Interpreter) -> list[str]:
        """The installed packages the sub-interpreter imported (or tried to: one whose own
        import failed on an extension, which its importer swallowed) that keep extension
        files in their own directory it neither loaded nor tried: a main interpreter may load
        what the sub-interpreter skipped without a word (the package checked for one first,
        or fell back wholesale). Only these are worth asking a main interpreter about."""
        suffixes = tuple(interp.ext_suffixes)
        if not suffixes:
            return []
        return [
            package
            for package, directory in sorted(seen.packages_met().items())
            if any(f not in seen.sub_files for f in self._extension_files(directory, suffixes))
        ]

    def _main_loads(self, run: _Target, package: str) -> list[ModuleInfo]:
        """The extension modules importing ``package`` loads in a main interpreter, once
        per run: asked of the probe's standing sampler worker, whose main interpreter
        imports installed packages only, never job code. Empty if it could not tell."""
        with self._lock:
            known = self._loads_memo.get(package)
        if known is not None:
            return known
        with self._sampler_lock:
            if self._sampler is None or self._sampler.exit is not None or not self._sampler.zygote.alive:
                self._sampler = run.zygote.fork(self.memory_bytes)
            try:
                reply = run._request(self._sampler, "loads", run.deadline, package=package)
            except ChildGone:  # it killed or hung a main interpreter: no answer, asked once
                reply = {}
        found = [ModuleInfo.from_json(m) for m in reply.get("modules", ())]
        with self._lock:
            self._loads_memo[package] = found
        return found

    def _extension_files(self, directory: str, suffixes: tuple[str, ...]) -> tuple[str, ...]:
        """The extension files directly in ``directory`` (real paths), once per run."""
        with self._lock:
            found = self._dir_memo.get(directory)
        if found is None:
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            found = tuple(os.path.realpath(os.path.join(directory, n)) for n in names if n.endswith(suffixes))
            with self._lock:
                self._dir_memo[directory] = found
        return found

    @staticmethod
    def _needs_main(trials: list[Trial]) -> bool:
        """Only a failure makes the main-interpreter import worth its cost: to tell a
        module broken everywhere from one broken here, and to reach the extensions the
        sub-interpreter never got to. An import that succeeded while skipping
        accelerators with the sub-interpreter message needs neither."""
        for t in trials:
            if t.status not in ("ok", "missing"):
                return True
            if any(SUBINTERP_MESSAGE not in f.msg for f in t.failures):
                return True
        return False

    @staticmethod
    def _blame_candidates(module: str, trials: list[Trial]) -> list[str]:
        """Deferred imports to retry in the main interpreter (does it fail there too? the
        verdict's rule depends on it): those that failed other than with the
        sub-interpreter message, and those that crashed or hung."""
        out: dict[str, None] = {}
        for t in trials:
            if t.status in ("crash", "timeout"):
                name = blame_key(t, module)
            elif t.kind == "lazy" and t.status == "failed" and not _sub_only(t):
                name = t.candidate  # failed, and not (only) for the sub-interpreter reason
                # `from pkg import sub`: the submodule may be what failed
                for attr in t.fromlist:
                    out[f"{name}.{attr}"] = None
            else:
                continue
            if name != module:
                out[name] = None
        return list(out)[:MAX_BLAME]

    def _drain(
        self,
        run: _Target,
        module: str,
        pending: list[RawPending],
        sources: list[RawSource],
        trials: list[Trial],
        absorb: Callable[[RawTrial], None],
    ) -> None:
        """Deferred imports left after a failure, each batch in a fresh interpreter.

        A fixpoint over what was tried: a name is attempted once per target, whatever
        re-imports it, so a module whose ``__getattr__`` imports itself ends."""
        tried = {t.candidate for t in trials if t.kind == "lazy"}
        tried.update(t.culprit.candidate or "" for t in trials if t.culprit)
        tried.discard("")
        while True:
            pending = [p for p in pending if p[0] not in tried]
            if not pending and not sources:
                return
            before = len(tried)
            nxt = run.trial(
                "lazy",
                pending[0][0] if pending else module,
                mode="lazy",
                name=module,
                pending=pending,
                sources=sources,
                preload=self.preload,
                skip=sorted(tried),
            )
            sources = []
            absorb(nxt.raw)
            new = self._lazy_trials(nxt.raw)
            trials.extend(new)
            tried.update(t.candidate for t in new)
            if nxt.trial.status in ("crash", "timeout"):
                crumb = nxt.trial.culprit.candidate if nxt.trial.culprit else None
                cand = crumb or (pending[0][0] if pending else None)
                trials.append(dataclasses.replace(nxt.trial, candidate=cand or nxt.trial.candidate))
                if cand is None or nxt.trial.lost_to_budget:
                    return
                tried.add(cand)
                names = [p[0] for p in pending]
                pending = pending[names.index(cand) + 1 :] if cand in names else pending
            else:
                pending = nxt.raw.get("pending", [])
            if len(tried) == before:  # nothing new was attempted: done
                return

    def _lazy_trials(self, raw: RawTrial) -> list[Trial]:
        out = []
        for entry in raw.get("lazy", ()):
            importer, file, line, how = entry["edge"]
            error = parse_error(entry.get("error"))
            status: TrialStatus = "ok" if error is None else ("missing" if entry.get("missing") else "failed")
            out.append(
                Trial(
                    "lazy",
                    entry["module"],
                    status,
                    error,
                    failures=parse_failures(entry.get("failures")),
                    edge=Edge(importer, file, line, how),
                    fromlist=tuple(str(x) for x in entry.get("fromlist") or ()),
                )
            )
        return out

    def _extension_trials(
        self,
        run: _Target,
        modules: dict[str, ModuleInfo],
        loaded: set[str],
        trials: list[Trial],
        interp: Interpreter,
        skipped: frozenset[str] = frozenset(),
    ) -> list[Trial]:
        """One record per extension that failed or that no sub-interpreter reached (or
        tried: ``skipped``).

        Unreached ones are loaded on their own in a fresh interpreter; failed ones
        are classified (does it load with a shared GIL?). Results are memoised per
        file for this run and recalled from the cache across runs.
        """
        failed: dict[str, ExtensionFailure] = {}
        for t in trials:
            for f in t.failures:
                failed.setdefault(f.name, f)
        settled = {t.culprit.name for t in trials if t.culprit and t.culprit.name}
        quiet = all(t.status in ("ok", "missing") for t in trials)
        if not failed and not settled and not skipped and quiet:
            return []
        todo: dict[str, ModuleInfo] = {
            m.name: m for m in modules.values() if m.extension and m.file and m.name not in loaded
        }
        for name, f in failed.items():
            if name not in todo and f.file:
                todo[name] = modules.get(name) or ModuleInfo(name, f.file, "unknown", True)
        out: list[Trial] = []
        later: list[tuple[str, ModuleInfo]] = []  # files another thread is trialing now
        for name, info in sorted(todo.items()):
            if name in settled:
                continue
            state = self._known_or_claimed(name, info, out)
            if state == "claimed":
                out.append(self._extension_trial(run, name, info, failed.get(name), interp))
            elif state == "busy":
                later.append((name, info))
        for name, info in later:  # the other thread's trials: wait for them, then read them
            self._wait_file(str(info.file))
            if self._known_or_claimed(name, info, out) == "claimed":  # it gave up (crash, hang)
                out.append(self._extension_trial(run, name, info, failed.get(name), interp))
        return out

    def _known_or_claimed(self, name: str, info: ModuleInfo, out: list[Trial]) -> str:
        """``known``: what is known of ``info``'s file (this run, the cache) is appended to
        ``out``; ``claimed``: this thread trials it now (``_extension_trial`` releases it);
        ``busy``: another thread is trialing it."""
        memo = self._remember(info)
        if memo is not None:
            out.append(dataclasses.replace(memo, candidate=name, cached=True))
            return "known"
        with self._lock:
            if str(info.file) in self._ext_busy:
                return "busy"
            self._ext_busy[str(info.file)] = threading.Event()
        return "claimed"

    def _wait_file(self, file: str) -> None:
        with self._lock:
            busy = self._ext_busy.get(file)
        if busy is not None:
            busy.wait(self.timeout)

    def _release_file(self, file: str) -> None:
        with self._lock:
            busy = self._ext_busy.pop(file, None)
        if busy is not None:
            busy.set()

    def _extension_trial(
        self, run: _Target, name: str, info: ModuleInfo, failure: ExtensionFailure | None, interp: Interpreter
    ) -> Trial:
        """What ``info``'s file does on its own in a fresh interpreter (and, refused there,
        with a shared GIL): a fact for the whole run, memoised by file (the claim on it
        released after, whatever happens)."""
        try:
            return self._extension_fact(run, name, info, failure, interp)
        finally:
            self._release_file(str(info.file))

    def _extension_fact(
        self, run: _Target, name: str, info: ModuleInfo, failure: ExtensionFailure | None, interp: Interpreter
    ) -> Trial:
        if failure is not None:  # the hook saw it fail; only the classification is missing
            trial = Trial("extension", name, "failed", failure.error, failures=(failure,))
        else:
            trial = run.trial("extension", name, mode="load", name=name, file=info.file).trial
        if (
            trial.status == "failed"
            and interp.can_classify
            and trial.error is not None
            and SUBINTERP_MESSAGE in trial.error.msg
        ):
            shared = run.trial(
                "classify", name, mode="load", name=name, file=info.file, shared_gil=True
            ).trial
            trial = dataclasses.replace(trial, shared_gil=shared.status == "ok")
        trial = dataclasses.replace(trial, file=info.file)
        if trial.status in ("ok", "failed"):  # a hang or a crash is not a fact about the file
            with self._lock:
                self._ext_memo[info.file or name] = trial
        return trial

    def _pair_trials(
        self,
        run: _Target,
        modules: dict[str, ModuleInfo],
        loaded: set[str],
        trials: list[Trial],
        skipped: frozenset[str] = frozenset(),
    ) -> list[Trial]:
        """Every extension that loads in a fresh sub-interpreter, checked in two live ones
        at once, as a pool runs them: one ``pair`` trial each (``ok``, or what differed).

        Memoised per file for this run, recalled from the extension cache across runs.
        New ones go to the probe's standing pair worker; whatever differs there (or kills
        it: blamed on the extension under way, the rest tried again) is checked once more
        alone, in a fresh pair, before it counts: the standing worker's history is not the
        extension's."""
        out, todo = self._pair_todo(modules, loaded, trials, skipped)
        job_s = next((t.elapsed_s for t in trials if t.kind == "job"), 0.0)
        suspects: dict[str, ModuleInfo] = {}
        for _ in range(MAX_PAIRS):
            if not todo or not self._pair_budget(run, job_s, todo, out):
                break
            found, lost = run.pair({n: str(info.file) for n, info in todo.items()}, fresh=False)
            for name, seen in found.items():
                info = todo.pop(name, None)
                if info is None:
                    continue
                if seen.get("state") in ("ok", "unchecked"):
                    out.append(self._pair_seen(name, info, seen))
                else:
                    suspects[name] = info
            if lost is None:
                break  # what was not answered is not checked
            suspects[lost.candidate] = todo.pop(lost.candidate)
        for name, info in suspects.items():
            if not self._pair_budget(run, job_s, {name: info}, out):
                continue
            found, lost = run.pair({name: str(info.file)}, fresh=True)
            if lost is not None:
                out.append(self._pair_lost(lost, info, job_s))
            elif name in found:
                out.append(self._pair_seen(name, info, found[name]))
        return out

    def _pair_todo(
        self, modules: dict[str, ModuleInfo], loaded: set[str], trials: list[Trial], skipped: frozenset[str]
    ) -> tuple[list[Trial], dict[str, ModuleInfo]]:
        """(what is known already, what is left to check): the extensions that loaded in
        a sub-interpreter, with the job or on their own (not those its package skips).
        CPython's own are taken as they are: its test suite runs them in many interpreters,
        and they are most of what a cold check would spend here."""
        alone = {t.candidate for t in trials if t.kind == "extension" and t.status == "ok"} - skipped
        known: list[Trial] = []
        todo: dict[str, ModuleInfo] = {}
        for name in sorted(loaded | alone):
            info = modules.get(name)
            if info is None or not info.file:
                continue
            if info.origin == "stdlib":
                known.append(Trial("pair", name, "ok", file=info.file))
                continue
            memo = self._pair_known(info)
            if memo is not None:
                known.append(dataclasses.replace(memo, candidate=name))
            else:
                todo[name] = info
        return known, todo

    @staticmethod
    def _pair_budget(run: _Target, job_s: float, names: dict[str, ModuleInfo], out: list[Trial]) -> bool:
        """Enough budget left for a pair check? If not, each name is a budget trial."""
        if run.deadline - time.monotonic() >= max(MIN_PAIR_S, 2 * job_s):
            return True
        why = f"timeout: probe budget of {run.budget:g}s used up before the {PAIR_MARK} check"
        out.extend(Trial("pair", n, "timeout", TrialError("budget", why)) for n in names)
        return False

    def _pair_seen(self, name: str, info: ModuleInfo, seen: dict[str, Any]) -> Trial:
        """The trial for what a pair saw of ``name`` (``missing``: it could not be
        imported by name there, so nothing was compared), memoised for this run."""
        state = seen.get("state")
        if state == "ok":
            trial = Trial("pair", name, "ok", file=info.file)
        elif state == "unchecked":
            trial = Trial("pair", name, "missing", TrialError(state, str(seen.get("detail"))), file=info.file)
        else:
            if state == "shared":
                attrs = ", ".join(seen.get("attrs") or ())
                msg = (
                    f"shares process-wide state between {PAIR_MARK}: "
                    f"module attribute {attrs} is one object in both"
                )
            else:
                msg = f"fails in the second of {PAIR_MARK} ({seen.get('detail')}), though one alone loads it"
            trial = Trial("pair", name, "failed", TrialError(str(state), msg), file=info.file)
        with self._lock:
            self._pair_memo[info.file or name] = trial
        return trial

    def _pair_lost(self, lost: Trial, info: ModuleInfo, job_s: float) -> Trial:
        """A pair that died or hung. A hang in little more time than one interpreter took
        to import the job proves nothing: the budget ran out."""
        err = lost.error or TrialError(lost.status)
        what = "hung" if lost.status == "timeout" else "crashed the process"
        if lost.status == "timeout" and lost.elapsed_s < max(MIN_PAIR_S, 3 * job_s):
            err = dataclasses.replace(
                err, type="budget", msg=f"timeout: probe budget used up during the {PAIR_MARK} check"
            )
        else:
            err = dataclasses.replace(err, msg=f"{what} when {PAIR_MARK} used it at once ({err.msg})")
        trial = dataclasses.replace(lost, error=err, file=info.file)
        if lost.status == "crash" and not err.external and err.type != PROBE_FAILURE:
            with self._lock:
                self._pair_memo[info.file or lost.candidate] = trial
        return trial

    def _pair_known(self, info: ModuleInfo) -> Trial | None:
        """This file's two-interpreter result: from this run, or from the extension cache
        (compatible there means it passed; this check's own failures say so)."""
        assert info.file
        with self._lock:
            memo = self._pair_memo.get(info.file)
        if memo is not None:
            return dataclasses.replace(memo, cached=True)
        if self.recall is None:
            return None
        cached = self.recall(info)
        if cached is None:
            return None
        if cached.status == "ok":
            return Trial("pair", info.name, "ok", file=info.file, cached=True)
        if cached.error is not None and PAIR_MARK in cached.error.msg:
            return dataclasses.replace(cached, kind="pair", status="failed")
        return None

    def _remember(self, info: ModuleInfo) -> Trial | None:
        assert info.file
        with self._lock:
            memo = self._ext_memo.get(info.file)
        if memo is None and self.recall is not None:
            memo = self.recall(info)
        return memo


_FACT_TRIALS = ("extension", "classify", "pair")  # what a package's probe proved about files


def _first_trial(result: ProbeResult, kind: str) -> Trial | None:
    return next((t for t in result.trials if t.kind == kind), None)


def _text(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__
