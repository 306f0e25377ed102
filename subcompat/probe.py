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
run) failed the same way builds on the package's diagnosis (``_inherit``).

Two standing workers serve the whole probe, one request at a time: a *pair* worker
whose two live isolated interpreters load every extension new to this run that a
sub-interpreter loaded (what a pool does: state one process shares between
interpreters shows there), and a *sampler* whose main interpreter imports installed
packages, never job code, for the accelerators they load there and skip in a
sub-interpreter without a word.

This module schedules targets over threads and zygotes; the rest of the stage is split
by what each part decides: ``_target`` (one target's trials, budget halves, trial cap and
main-interpreter check), ``_deferred`` (which deferred imports get fresh interpreters and
which a main one retries), ``_facts`` (extension-file trials, facts for the whole run),
``_pairs`` (the two-live-interpreters check), ``_sample`` (the sampler's questions),
``_inherit`` (a module building on its package's diagnosis), ``_interpreter`` (the target
interpreter's identity and cache key), ``_records`` (``Trial``, ``ProbeResult`` and the
records inside them, parsed once from the child's JSON), ``_seen`` (what a target's
trials saw, merged into one tree), ``_transport`` (the processes and their channel, this
side), ``_child`` and ``_trial`` (the other side).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

from subcompat._deferred import blame_candidates, drain, lazy_trials, needs_main
from subcompat._facts import SUBINTERP_MESSAGE as SUBINTERP_MESSAGE  # re-exported: learn, verdict
from subcompat._facts import FileFacts
from subcompat._inherit import Inheritance
from subcompat._interpreter import RULES, Interpreter
from subcompat._pairs import PairChecks
from subcompat._records import (
    PROBE_FAILURE,
    ProbeResult,
    Trial,
    TrialError,
    blame_key,
    is_memory_error,
    split_target,
)
from subcompat._records import TRIAL_CAP as TRIAL_CAP  # re-exported, as before the split
from subcompat._sample import Sampling
from subcompat._seen import Seen, name_trials
from subcompat._target import MAX_TRIALS as MAX_TRIALS  # re-exported, as before the split
from subcompat._target import Target
from subcompat._transport import STATS, ChildGone, ProbeError, Worker, Zygote
from subcompat.discover import ModuleInfo, ModuleTree

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

DEFAULT_MEMORY_MB = 4096  # address space of one worker (RLIMIT_AS)
MAX_TIMEOUT_S = 86400.0
MIN_MEMORY_MB = 128  # below this an interpreter barely starts


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


UNDER_WORKERS = 3  # standing main-check workers per probing thread, each on its own package


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
        self._interp: Interpreter | None = None
        self._ids = 0
        self._facts = FileFacts(self)  # extension files' trials, for the whole run
        self._pairs = PairChecks(self)  # the standing pair worker, shared by all threads
        self._sampling = Sampling(self)  # installed packages' main-interpreter loads
        self._inheritance = Inheritance(self, self._facts)  # packages among this run's targets

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

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _under_worker(self, under: str) -> Worker:
        """This thread's standing worker for main checks inside the package ``under``
        (forked from its lean zygote, importing ``under`` at its first request; a new one
        when it was lost). The ``UNDER_WORKERS`` last used are kept: scipy's leaves go
        scipy.sparse, scipy.sparse.linalg, scipy.sparse again, and each new one imports
        its package again (scipy.stats: 1-2 s)."""
        held: dict[str, Worker] | None = getattr(self._local, "under", None)
        if held is None:
            held = self._local.under = {}
        worker = held.pop(under, None)
        if worker is not None and (worker.exit is not None or not worker.zygote.alive):
            worker.discard()
            worker = None
        if worker is None:
            worker = self._zygote(lean=True).fork(self.memory_bytes)
            while len(held) >= UNDER_WORKERS:
                held.pop(next(iter(held))).discard()  # the least recently used
        held[under] = worker  # most recently used last
        return worker

    def _drop_under_worker(self, worker: Worker) -> None:
        held: dict[str, Worker] = getattr(self._local, "under", None) or {}
        for under, mine in list(held.items()):
            if mine is worker:
                del held[under]
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
        targets = _in_probe_order(list(dict.fromkeys(targets)))
        self._inheritance.expect(targets)
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
            return self._inheritance.publish(target, self._probe(target, interp))
        except Exception as exc:
            module = split_target(target)[0]
            msg = f"the probe could not finish this target: {_text(exc)}"
            trial = Trial("job", module, "crash", TrialError(PROBE_FAILURE, msg))
            return self._inheritance.publish(
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
        run = Target(self, self._zygote())
        try:
            job = run.trial("job", module, mode="job", name=module, function=function, preload=self.preload)
            trials.append(job.trial)
            seen.absorb(job.raw)
            inherited = self._inheritance.inherit(run, target, job.trial, seen, interp, started)
            if inherited is not None:
                return inherited
            trials.extend(lazy_trials(job.raw))
            drain(run, module, job.raw.get("pending", []), [], trials, seen.absorb, self.preload)
            if needs_main(trials) or seen.missing:
                # Something failed: is it broken in the main interpreter too, and which
                # extensions of the tree did the sub-interpreter never reach? Are the
                # names it lacked there in a main interpreter?
                main, main_raw = run.main(module, function, blame_candidates(module, trials), seen.missing)
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
                    drain(run, module, [], sources, trials, seen.absorb, self.preload)
            for package in self._sampling.untried_packages(seen, interp):
                seen.sample(package, self._sampling.main_loads(run, package))
            skipped = seen.skipped()
            trials.extend(
                self._facts.extension_trials(run, seen.modules, seen.loaded, trials, interp, skipped)
            )
            trials.extend(self._pairs.pair_trials(run, seen.modules, seen.loaded, trials, skipped))
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


def _in_probe_order(targets: list[str]) -> list[str]:
    """One subpackage (``scipy.stats``) after the other, so that its modules share the
    worker that imported it (``_inherit``: each new one imports its package again, 1-2 s
    for ``scipy.stats``). Within one, the packages that hold other targets come first,
    outermost first (the modules inside them may build on their results), then the rest
    by name."""
    modules = {split_target(t)[0] for t in targets}
    holders = {".".join(parts[:i]) for parts in (m.split(".") for m in modules) for i in range(1, len(parts))}

    def key(target: str) -> tuple[list[str], bool, int, str]:
        module = split_target(target)[0]
        parts = module.split(".")
        if module in holders:
            return (parts[:2], False, len(parts), target)
        return (parts[:2], True, 0, target)

    return sorted(targets, key=key)


def _text(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:
        return type(exc).__name__
