"""Whether an extension that loads in one sub-interpreter also behaves in two live ones.

A pool runs one module in many interpreters of one process at once: state the module
keeps per process (a static type, a C global, a cached object) shows only there. Every
extension new to this run goes to one standing worker whose two interpreters already
hold what earlier targets checked; what differs there (or kills it) is checked once more
alone, in a fresh pair, before it counts, since the standing worker's history is not the
extension's. A hang in little more time than one import took is the budget's, not the
extension's.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from subcompat._records import PROBE_FAILURE, Trial, TrialError, parse_breadcrumb
from subcompat._target import external_kill, lost_kind
from subcompat._transport import STATS, ChildGone

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

    from subcompat._target import Host, Target
    from subcompat._transport import Worker, Zygote
    from subcompat.discover import ModuleInfo

PAIR_MARK = "two live interpreters"  # in every finding of the pair check (and so in the cache)
MIN_PAIR_S = 1.0  # budget a pair check needs at least
MAX_PAIRS = 4  # pair workers per target (a crash blames one extension; the rest go again)


class PairChecks:
    """The run's pair checks: memoised by file, one standing pair worker for all threads."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._pair_memo: dict[str, Trial] = {}
        self._pair: Worker | None = None  # the standing pair worker, shared by all threads
        self._pair_lock = threading.Lock()

    def pair_trials(
        self,
        run: Target,
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
            found, lost = self.pair(run, {n: str(info.file) for n, info in todo.items()}, fresh=False)
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
            found, lost = self.pair(run, {name: str(info.file)}, fresh=True)
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
    def _pair_budget(run: Target, job_s: float, names: dict[str, ModuleInfo], out: list[Trial]) -> bool:
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
        if self.host.recall is None:
            return None
        cached = self.host.recall(info)
        if cached is None:
            return None
        if cached.status == "ok":
            return Trial("pair", info.name, "ok", file=info.file, cached=True)
        if cached.error is not None and PAIR_MARK in cached.error.msg:
            return dataclasses.replace(cached, kind="pair", status="failed")
        return None

    def pair(self, run: Target, exts: dict[str, str], fresh: bool) -> tuple[dict[str, Any], Trial | None]:
        """Extensions (name: file) in two live interpreters at once (``_child.op_pair``): what each looked
        like, or the trial of the one the worker died or hung on. ``fresh``: in a worker
        forked for it; else in the probe's standing pair worker, whose two interpreters
        already hold what earlier targets checked (no interpreter to create; one request
        at a time, whichever thread asks)."""
        STATS["pairs"] += 1
        if not fresh:
            with self._pair_lock:
                return self._pair_request(run, self._pair_worker(run.zygote), exts)
        worker = run.fork()
        try:
            return self._pair_request(run, worker, exts)
        finally:
            worker.close()

    def _pair_request(
        self, run: Target, worker: Worker, exts: dict[str, str]
    ) -> tuple[dict[str, Any], Trial | None]:
        started = time.perf_counter()
        names = list(exts)
        try:
            reply = run.request(worker, "pair", run.deadline, names=names, files=[exts[n] for n in names])
            return reply.get("results", {}), None
        except ChildGone as gone:
            crumb = parse_breadcrumb(worker.breadcrumb())
            blamed = crumb.name if crumb is not None and crumb.name in names else names[0]
            err = run.lost_error(worker, lost_kind(gone), gone.detail, external_kill(gone))
            elapsed = time.perf_counter() - started
            return {}, Trial("pair", blamed, gone.status, err, signal=gone.signal, elapsed_s=elapsed)

    def _pair_worker(self, zygote: Zygote) -> Worker:
        """The standing pair worker (under ``_pair_lock``): forked on first need, or again
        after it was lost, from the asking thread's zygote; killed with it at close."""
        worker = self._pair
        if worker is None or worker.exit is not None or not worker.zygote.alive:
            worker = self._pair = zygote.fork(self.host.memory_bytes)
        return worker
