"""Deferred imports: which get a fresh interpreter, and which a main interpreter retries.

A job can pass its own import and fail later, on an import made inside a function or a
PEP 562 ``__getattr__``: the job's trial runs the ones its first-party source makes, and
those left after a failure get fresh interpreters, each name once a target whatever
re-imports it (a fixpoint, so a ``__getattr__`` that imports itself ends). The verdict's
rule for one that failed depends on whether it fails in a main interpreter too, so those
are retried there; and only a failure makes that main check worth its cost.
"""

from __future__ import annotations

import dataclasses

from subcompat._facts import SUBINTERP_MESSAGE
from subcompat._records import Trial, blame_key, parse_error, parse_failures
from subcompat.discover import Edge

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable

    from subcompat._records import RawPending, RawSource, RawTrial, TrialStatus
    from subcompat._target import Target

MAX_BLAME = 32  # deferred imports retried in the main interpreter, per target


def needs_main(trials: list[Trial]) -> bool:
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


def blame_candidates(module: str, trials: list[Trial]) -> list[str]:
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


def drain(
    run: Target,
    module: str,
    pending: list[RawPending],
    sources: list[RawSource],
    trials: list[Trial],
    absorb: Callable[[RawTrial], None],
    preload: tuple[str, ...],
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
            preload=preload,
            skip=sorted(tried),
        )
        sources = []
        absorb(nxt.raw)
        new = lazy_trials(nxt.raw)
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


def lazy_trials(raw: RawTrial) -> list[Trial]:
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


def _sub_only(t: Trial) -> bool:
    """Failed only for the sub-interpreter reason (every extension that failed said so)."""
    return bool(t.failures) and all(SUBINTERP_MESSAGE in f.msg for f in t.failures)
