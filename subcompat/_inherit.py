"""A module inside a failing package builds on the package's diagnosis.

A module cannot import where its package cannot: when a target failed in its fresh
interpreter exactly as a package of it (a target of the same run, probed first) failed
in its own, probing the module in full would find the package's culprits again at the
price of the package's probe. What stays the module's own is what can differ: its main
interpreter import (forked on top of the package), and the extensions only it loads.
"""

from __future__ import annotations

import dataclasses
import threading
import time

from subcompat._records import ProbeResult, split_target
from subcompat.discover import ModuleTree

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from subcompat._facts import FileFacts
    from subcompat._interpreter import Interpreter
    from subcompat._records import Trial
    from subcompat._seen import Seen
    from subcompat._target import Host, Target

_FACT_TRIALS = ("extension", "classify", "pair")  # what a package's probe proved about files
HEAVY_S = 0.25  # a package whose own main import takes this long is worth a worker of its own


class Inheritance:
    """Packages among this run's targets: their results, for the modules inside them."""

    def __init__(self, host: Host, facts: FileFacts) -> None:
        self.host = host
        self.facts = facts
        self._lock = threading.Lock()
        self._packages: dict[str, threading.Event] = {}
        self._package_results: dict[str, ProbeResult] = {}

    def expect(self, targets: Iterable[str]) -> None:
        """Packages among ``targets`` of modules among them: those modules may wait for their
        results (``publish``)."""
        modules = {split_target(t)[0] for t in targets}
        for name in modules:
            parts = name.split(".")
            for i in range(1, len(parts)):
                if ".".join(parts[:i]) in modules:
                    self._packages.setdefault(".".join(parts[:i]), threading.Event())

    def publish(self, target: str, result: ProbeResult) -> ProbeResult:
        """A package's result, for the modules inside it that wait for it."""
        event = self._packages.get(target)
        if event is not None:
            with self._lock:
                self._package_results[target] = result
            event.set()
        return result

    def inherit(
        self, run: Target, target: str, job: Trial, seen: Seen, interp: Interpreter, started: float
    ) -> ProbeResult | None:
        """A module cannot import where its package cannot: when the job's own fresh
        interpreter failed exactly as a package of it (a target of this run) failed in
        its own, a package that imports in a main interpreter, the package's diagnosis is
        this module's too (its extensions' trials are facts about files, not about a
        target). What stays the module's own: its job trial, its main-interpreter import
        (on top of the package, forked: ``Target.main_under``), which tells a module
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
        own_exts = self.facts.extension_trials(run, seen.modules, seen.loaded, [job, *main], interp)
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
            limits=self.host.limits,
            skipped=package.skipped,
        )

    def _package_of(self, module: str, run: Target) -> tuple[str, ProbeResult] | None:
        """(name, result) of a package of ``module`` among this run's targets whose own
        import failed in a sub-interpreter and passed in a main one (waited for while it
        is probed, within this target's budget): the innermost one whose own import cost
        ``HEAVY_S`` in a main interpreter, else the outermost. The module's main check
        forks from a worker that imported that package: a module of ``scipy.stats`` does
        not import ``scipy.stats`` (1.2 s) again for itself, and the modules of pandas'
        many light test packages share one worker that imported pandas (each new package
        costs the worker a fresh import)."""
        found = None
        for name, result, main_s in self._failing_packages(module, run):
            found = name, result
            if main_s >= HEAVY_S:
                break
        return found

    def _failing_packages(self, module: str, run: Target) -> Iterator[tuple[str, ProbeResult, float]]:
        """Innermost first: (name, result, its main import's time)."""
        parts = module.split(".")
        for i in range(len(parts) - 1, 0, -1):
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
            yield name, result, pmain.elapsed_s


def _first_trial(result: ProbeResult, kind: str) -> Trial | None:
    return next((t for t in result.trials if t.kind == kind), None)
