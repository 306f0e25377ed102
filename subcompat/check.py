"""The pipeline end to end: cache lookup, probe the misses, decide, remember.

This is what the CLI, the chancy executor and the pytest plugin call.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

from subcompat._records import FILE_CHANGED
from subcompat.cache import Cache, environment_key
from subcompat.probe import DEFAULT_MEMORY_MB, Interpreter, Prober
from subcompat.report import Report
from subcompat.route import DEFAULT_POLICY, Policy
from subcompat.verdict import INCOMPATIBLE, UNSUPPORTED, Culprit, Verdict, decide, short_name

#: What each supported runtime imports in every sub-interpreter before a job runs.
RUNTIMES: dict[str, tuple[str, ...]] = {
    "none": (),
    "chancy": ("chancy.executors.sub",),
}


def known_interpreter(python: str | None, cache: Cache | None) -> Interpreter | None:
    """The target interpreter without starting it, when that is possible."""
    if python is None or os.path.abspath(python) == os.path.abspath(sys.executable):
        return Interpreter.current()
    if cache is not None:
        info = cache.get_interpreter(os.path.abspath(python))
        if info is not None:
            return Interpreter.from_json(info)
    return None


def check(
    targets: Sequence[str],
    *,
    python: str | None = None,
    cache: Cache | None = None,
    timeout: float = 30.0,
    memory_mb: int | None = DEFAULT_MEMORY_MB,
    jobs: int | None = None,
    policy: Policy = DEFAULT_POLICY,
    runtime: str = "none",
    sys_path: Sequence[str] | None = None,
    progress: Callable[[int, int, str | None], None] | None = None,
) -> Report:
    """``timeout`` is one target's whole probe budget; ``memory_mb`` the address space
    of each probe worker. ``sys_path`` resolves targets with the caller's path (an
    executor passes its worker's ``sys.path``); by default the probe child's own.
    ``progress(done, total, probing)`` is told as each target finishes (``probing``: the
    first one still running).

    Each verdict that is a fact about the code (``Verdict.lasting``: ``error`` ones too,
    and with their warnings and notes) is cached as soon as it is decided, so a run cut
    short keeps what it found; one a limit, an outside kill or a probe failure decided is not."""
    started = time.perf_counter()
    preload = RUNTIMES[runtime]
    interp = known_interpreter(python, cache)
    env = environment_key(python, preload, sys_path)
    found: dict[str, Verdict] = {}
    if interp is not None and interp.unsupported:
        verdicts = tuple(Verdict(t, UNSUPPORTED, interp.python, interp.unsupported) for t in targets)
        return Report(interp.python, verdicts, policy, time.perf_counter() - started)
    if interp is not None and cache is not None:
        for target in targets:
            hit = cache.get_job(interp.key, env, target)
            if hit is not None:
                found[target] = _as_cached(hit)
    misses = [t for t in dict.fromkeys(targets) if t not in found]
    probed = 0
    if misses:
        with Prober(
            python, timeout=timeout, memory_mb=memory_mb, jobs=jobs, preload=preload, sys_path=sys_path
        ) as prober:
            interp = prober.interpreter()
            if cache is not None:
                if python is not None:
                    cache.put_interpreter(os.path.abspath(python), interp.to_json())
                prober.recall = cache.recall(interp.key)
            tally = _Tally(progress, len(dict.fromkeys(targets)), misses)
            probed = _probe_misses(prober, cache, interp.key, env, misses, found, tally)
    assert interp is not None
    return Report(
        interp.python,
        tuple(found[t] for t in targets),
        policy,
        time.perf_counter() - started,
        probed=probed,
    )


def check_module(
    module: str, cache: Cache, *, timeout: float, policy: Policy, runtime: str = "none"
) -> Verdict:
    """One module's verdict for an executor: probed with the caller's ``sys.path``, in one
    child; ``cache`` is closed after."""
    try:
        report = check(
            [module], cache=cache, timeout=timeout, jobs=1, policy=policy, runtime=runtime, sys_path=sys.path
        )
    finally:
        cache.close()
    return report.verdicts[0]


class _Tally:
    """Tells ``progress(done, total, probing)`` as each target is settled."""

    def __init__(
        self, progress: Callable[[int, int, str | None], None] | None, total: int, pending: list[str]
    ) -> None:
        self.progress, self.total, self.pending = progress, total, dict.fromkeys(pending)
        self._tell()

    def done(self, target: str) -> None:
        self.pending.pop(target, None)
        self._tell()

    def _tell(self) -> None:
        if self.progress is not None:
            self.progress(self.total - len(self.pending), self.total, next(iter(self.pending), None))


def _probe_misses(
    prober: Prober,
    cache: Cache | None,
    key: str,
    env: str,
    misses: list[str],
    found: dict[str, Verdict],
    tally: _Tally,
) -> int:
    """Probe what no other process is probing, then wait for the rest (a fleet cache:
    another worker's verdict, or the claim when that worker died or took too long).
    How many were probed here."""
    mine, others = cache.claim(key, env, misses) if cache is not None else (misses, [])
    probed = _probe_and_keep(prober, cache, key, env, mine, found, tally)
    for target in others:  # one at a time: no claim is held while waiting for another
        assert cache is not None
        hit = cache.wait_for(key, env, target)
        if hit is not None:
            found[target] = _as_cached(hit)
            tally.done(target)
        else:
            probed += _probe_and_keep(prober, cache, key, env, [target], found, tally)
    return probed


def _probe_and_keep(
    prober: Prober,
    cache: Cache | None,
    key: str,
    env: str,
    targets: list[str],
    found: dict[str, Verdict],
    tally: _Tally,
) -> int:
    since_ns = time.time_ns()  # stamps: what changes after this was not what was probed
    for result in prober.iter_probe(targets) if targets else ():
        verdict = decide(result)
        changed = _changed_since(verdict, since_ns)
        if changed and not verdict.transient:
            from dataclasses import replace

            verdict = replace(verdict, transient=FILE_CHANGED, notes=(*verdict.notes, changed))
        found[result.target] = verdict = _shared(verdict)  # shared: the cache writes each list once
        if cache is not None:
            if verdict.lasting:
                cache.put_job(key, env, verdict)
                cache.put_extensions(key, verdict.extensions)
            cache.release(key, env, result.target)
        tally.done(result.target)
    return len(targets)


def _changed_since(verdict: Verdict, since_ns: int) -> str:
    """Why the verdict may not describe the files as they are now (one changed, or went,
    after its probe began: a job that writes files, an editor saving), or ""."""
    for path in (*verdict.files, *verdict.dist_stamps):
        try:
            st = os.stat(path)
        except OSError:
            return f"{path} disappeared during the check (reported, not cached)"
        if max(st.st_mtime_ns, st.st_ctime_ns) >= since_ns:
            return f"{path} changed during the check (reported, not cached)"
    return ""


def _as_cached(v: Verdict) -> Verdict:
    """The cache hands out its culprit and extension lists shared already (hashing every
    record again cost a warm pandas 1.7 s)."""
    from dataclasses import replace
    from sys import intern

    return replace(v, cached=True, files=tuple(intern(f) for f in v.files))


#: one object for each distinct culprit, extension verdict and file of this process's
#: verdicts: the modules of one package name the same ones (memory follows the report)
_SHARED: dict[object, object] = {}
TYPE_CHECKING = False  # typing costs ~3 ms at start-up
if TYPE_CHECKING:
    from typing import Any


def _shared(v: Verdict) -> Verdict:
    from dataclasses import replace
    from sys import intern

    def one(x: Any) -> Any:
        return _SHARED.setdefault(x, x)  # keyed by itself: an equal value, one object

    return replace(
        v,
        culprits=tuple(one(c) for c in v.culprits),
        degraded=tuple(one(c) for c in v.degraded),
        extensions=tuple(one(e) for e in v.extensions),
        files=tuple(intern(f) for f in v.files),
    )


def record_runtime_failure(
    target: str,
    message: str,
    *,
    cache: Cache,
    runtime: str = "none",
    sys_path: Sequence[str] | None = None,
) -> Verdict:
    """A job failed in a sub-interpreter on an import the probe could not see (built
    from a non-literal name, say): remember its module as incompatible. The entry keeps
    the probed file stamps, so it is re-probed once any of those files change."""
    interp = Interpreter.current()
    env = environment_key(None, RUNTIMES[runtime], sys_path)
    previous = cache.get_job(interp.key, env, target)
    culprit = Culprit(
        short_name(message) or target, None, None, None, f"failed at run time in a sub-interpreter: {message}"
    )
    verdict = Verdict(
        target,
        INCOMPATIBLE,
        interp.python,
        reason=f"run time: {message}",
        culprits=(*(previous.culprits if previous else ()), culprit),
        files=previous.files if previous else (),
        dist_stamps=previous.dist_stamps if previous else (),
    )
    cache.put_job(interp.key, env, verdict)
    return verdict
