"""One target's trials, within its own budgets: what a worker that is lost or a budget
that runs out means for the target, and how long its main-interpreter check may take.

The wall-clock budget is cut in two equal halves (sub-interpreter trials, then the
main-interpreter check) because a main check cut shorter than a hung sub-interpreter
trial proves nothing; the trial cap bounds only what the target itself asks for, never
the facts about files every target shares. Part of the probe stage: ``probe.py``
schedules targets, this module runs one.
"""

from __future__ import annotations

import os
import signal
import time

from subcompat._records import (
    PROBE_FAILURE,
    TRIAL_CAP,
    Trial,
    TrialError,
    parse_breadcrumb,
    parse_error,
    parse_failures,
)
from subcompat._transport import MAX_REPLY, STATS, ChildGone

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any, Protocol

    from subcompat._records import RawTrial, TrialKind, TrialStatus
    from subcompat._transport import Worker, Zygote
    from subcompat.discover import ModuleInfo

    class Host(Protocol):
        """What a target's trials (and the run's facts, pairs and samples) read of the
        ``Prober`` that runs them: its settings, read when used (``recall`` is set after
        the interpreter is known), and where workers come from."""

        timeout: float
        memory_mb: int | None
        memory_bytes: int | None
        sys_path: list[str] | None
        recall: Callable[[ModuleInfo], Trial | None] | None

        @property
        def workdir(self) -> str: ...

        @property
        def limits(self) -> dict[str, float]: ...

        def _zygote(self, lean: bool = False) -> Zygote: ...

        def _under_worker(self, under: str) -> Worker: ...

        def _drop_under_worker(self, worker: Worker) -> None: ...

        def _next_id(self) -> int: ...


MAX_TRIALS = 64  # per target, of its own trials (job, deferred imports): each a fresh interpreter
FACT_KINDS = ("extension", "classify")  # trials of a file, facts for the whole run: not capped per target
SUB_SHARE = 1 / 2  # of the budget, for sub-interpreter trials; the rest checks main (as long)
MIN_MAIN_S = 1.0  # a main-interpreter check cut shorter than this proves no hang


class Run:
    def __init__(self, trial: Trial, raw: RawTrial):
        self.trial = trial
        self.raw = raw


class Target:
    """One target's probe: its budget, its workers, and the trials it has run."""

    def __init__(self, prober: Host, zygote: Zygote) -> None:
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

    def fork(self) -> Worker:
        worker = self.zygote.fork(self.prober.memory_bytes)
        self.workers.append(worker)
        return worker

    def request(self, worker: Worker, op: str, deadline: float, **req: Any) -> Any:
        """The worker's reply to ``op`` (JSON; its shape is the op's ``Raw*`` type)."""
        return worker.request(
            op,
            timeout=deadline - time.monotonic(),
            workdir=self.prober.workdir,
            breadcrumb=worker.crumbs,
            sys_path=self.prober.sys_path,
            **req,
        )

    def _spent(self, kind: TrialKind, candidate: str, why: str) -> Run:
        return Run(Trial(kind, candidate, "timeout", TrialError("budget", why)), {})

    def trial(self, kind: TrialKind, candidate: str, **req: Any) -> Run:
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
                self.worker = self.fork()
            raw = self.request(self.worker, "trial", deadline, **req)
        except ChildGone as gone:
            return Run(self._lost(kind, candidate, gone, time.perf_counter() - started), {})
        error = parse_error(raw.get("error"))
        trial = Trial(
            kind,
            candidate,
            "ok" if error is None else "failed",
            error,
            failures=parse_failures(raw.get("failures")),
            elapsed_s=time.perf_counter() - started,
        )
        return Run(trial, raw)

    def _lost(self, kind: TrialKind, candidate: str, gone: ChildGone, elapsed: float) -> Trial:
        worker, self.worker = self.worker, None
        culprit = parse_breadcrumb(worker.breadcrumb()) if worker is not None else None
        detail = gone.detail
        if gone.status == "timeout":
            detail = f"timeout: still running after {elapsed:.1f}s of the {self.budget:g}s budget"
            self.hung_s = max(self.hung_s, elapsed)
        err = self.lost_error(worker, lost_kind(gone), detail, external_kill(gone))
        return Trial(
            kind, candidate, gone.status, err, culprit=culprit, signal=gone.signal, elapsed_s=elapsed
        )

    def lost_error(self, worker: Worker | None, kind: str, msg: str, external: bool) -> TrialError:
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
            self.request(
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
            external = external_kill(gone)
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
                self.worker = self.fork()
            describer = self.worker
            grace = self.deadline + 10.0  # our own code: a little past the budget
            runs = [self.request(describer, "describe", grace, result=r)["result"] for r in runs]
        elapsed = time.perf_counter() - started
        out = []
        for name, run in zip(names, runs, strict=False):
            error = parse_error(run.get("error"))
            out.append(Trial("main", name, "ok" if error is None else "failed", error, elapsed_s=elapsed))
        if len(runs) < len(names):
            err = self.lost_error(worker, kind or status, detail, external)
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
            reply = self.request(
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
            self.worker = self.fork()
        grace = self.deadline + 10.0  # our own code: a little past the budget
        raw = self.request(self.worker, "describe", grace, result=runs[0])["result"]
        error = parse_error(raw.get("error"))
        # the module's own import on top of its package: not the package's import, which
        # the worker did first if this was its first request (``_inherit`` weighs packages
        # by this: what a package adds to the one its modules' worker imported)
        under_s = reply.get("under_s")
        elapsed = time.perf_counter() - started - (under_s if isinstance(under_s, float) else 0.0)
        trial = Trial("main", module, "ok" if error is None else "failed", error, elapsed_s=elapsed)
        return [trial], raw

    def finish(self) -> None:
        for worker in self.workers:
            worker.discard()
        self.workers.clear()
        self.worker = None


def lost_kind(gone: ChildGone) -> str:
    """The error type of a lost trial: a worker that answered that the probe's own code
    failed found nothing about the module (``PROBE_FAILURE``: an error, never cached)."""
    return PROBE_FAILURE if gone.probe_failure else gone.status


def external_kill(gone: ChildGone) -> bool:
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
