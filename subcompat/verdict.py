"""Stage 3, verdict: turn what the probe saw into one answer per target, with culprits.

The bar: a target is ``compatible`` only if its job module and every deferred import
its source makes loaded in fresh isolated sub-interpreters with no extension failing on
the way. Everything else names why.

Reads only the probe's typed records (``ProbeResult``, ``Trial``); ``decide`` runs one
pass per kind of finding (``_PASSES``), each adding to ``_Findings``. Binary reading is
not done here: ``_toolchain`` (with ``_elffile``) says which toolchain built a culprit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from dataclasses import dataclass

from subcompat._records import TRANSIENT_CAUSES, TrialError, parse_error
from subcompat._toolchain import MARKERS as _TOOLCHAINS  # noqa: F401 - read by the tests
from subcompat._toolchain import toolchain_of
from subcompat.discover import Edge, ModuleInfo, ModuleTree
from subcompat.probe import (
    PROBE_FAILURE,
    SUBINTERP_MESSAGE,
    ProbeResult,
    Trial,
    blame_key,
    is_memory_error,
    split_target,
)
from subcompat.reach import Facts, Guard, ImportSite, Reach, catches, other_platform

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from subcompat._records import RawError

    Records = Callable[[Any, Any], tuple[Any, ...]]  # (record class, JSON list) -> records

COMPATIBLE = "compatible"
DEGRADED = "degraded"
INCOMPATIBLE = "incompatible"
CRASH = "crash"
TIMEOUT = "timeout"
ERROR = "error"
UNSUPPORTED = "unsupported"
UNKNOWN = "unknown"
SKIPPED = "skipped (package fell back): "  # a degraded extension's reason starts so

#: Worst first: a target's verdict is the worst thing found in its tree.
SEVERITY = {
    CRASH: 6,
    TIMEOUT: 5,
    INCOMPATIBLE: 4,
    ERROR: 3,
    UNKNOWN: 3,
    UNSUPPORTED: 2,
    DEGRADED: 1,
    COMPATIBLE: 0,
}

_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_SHORT_NAME = re.compile(r"module (?P<name>[\w.]+) does not support loading in subinterpreters")


@dataclass(frozen=True)
class Culprit:
    """An extension (or module) that stops or degrades a target in a sub-interpreter."""

    module: str
    file: str | None
    distribution: str | None
    version: str | None
    reason: str
    status: str = INCOMPATIBLE  # incompatible | crash | timeout | degraded
    kind: str | None = None  # single-phase | multi-phase-no-gil | pyo3 | ...
    toolchain: str | None = None
    chain: tuple[str, ...] = ()
    import_file: str | None = None  # the first-party line that pulls it in (or uses it)
    import_line: int | None = None
    accelerator: str | None = None  # for a C-only name: the skipped extension behind it

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["chain"] = list(self.chain)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Culprit:
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        kwargs["chain"] = tuple(kwargs.get("chain") or ())
        return cls(**kwargs)


@dataclass(frozen=True)
class Verdict:
    """The answer for one target, handed to the cache, the router and the reports."""

    target: str
    verdict: str
    python: str
    reason: str = ""
    culprits: tuple[Culprit, ...] = ()
    degraded: tuple[Culprit, ...] = ()
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()  # a broken deploy (a dependency missing): fails under --strict
    files: tuple[str, ...] = ()  # what the verdict depends on: first-party and extension files
    dist_stamps: tuple[str, ...] = ()
    extensions: tuple[ExtensionVerdict, ...] = ()
    elapsed_s: float = 0.0
    cached: bool = False
    # "" for a fact about the code, else the TransientCause that decided it (never cached);
    # annotated str: the cache checks a row's fields against their annotations
    transient: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == COMPATIBLE

    @property
    def lasting(self) -> bool:
        """A fact about the code, kept in the cache under its stamps: ``error`` too (the
        module fails in a main interpreter), with its warnings and notes. Not one a limit,
        an outside kill or a probe failure decided, nor ``unsupported`` (the interpreter's)."""
        return self.verdict != UNSUPPORTED and not self.transient

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "verdict": self.verdict,
            "python": self.python,
            "reason": self.reason,
            "culprits": [c.to_json() for c in self.culprits],
            "degraded": [c.to_json() for c in self.degraded],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "files": list(self.files),
            "dist_stamps": list(self.dist_stamps),
            "extensions": [e.to_json() for e in self.extensions],
            "elapsed_s": round(self.elapsed_s, 4),
            "cached": self.cached,
            "transient": self.transient or None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], records: Records | None = None) -> Verdict:
        """``records`` decodes a list of culprits or extension verdicts (the cache's one
        shares the lists that recur across the modules of one package)."""
        decode = records or _records
        return cls(
            target=data["target"],
            verdict=data["verdict"],
            python=data.get("python", ""),
            reason=data.get("reason", ""),
            culprits=decode(Culprit, data.get("culprits", ())),
            degraded=decode(Culprit, data.get("degraded", ())),
            notes=tuple(data.get("notes", ())),
            warnings=tuple(data.get("warnings", ())),
            files=tuple(data.get("files", ())),
            dist_stamps=tuple(data.get("dist_stamps", ())),
            extensions=decode(ExtensionVerdict, data.get("extensions", ())),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            cached=bool(data.get("cached", False)),
            transient=_transient(data.get("transient")),
        )


def _records(cls: Any, items: Any) -> tuple[Any, ...]:
    return tuple(cls.from_json(item) for item in items)


def _transient(value: object) -> str:
    """A stored cause as the vocabulary has it; anything else that is set is no fact either."""
    if not value:
        return ""
    return value if isinstance(value, str) and value in TRANSIENT_CAUSES else "a probe failure"


@dataclass(frozen=True)
class ExtensionVerdict:
    """One extension module file on its own: what the cache keeps across jobs."""

    module: str
    file: str
    verdict: str  # compatible | incompatible | crash | timeout
    distribution: str | None = None
    version: str | None = None
    reason: str = ""
    kind: str | None = None
    shared_gil: bool | None = None
    message: str = ""  # the interpreter's own error text

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExtensionVerdict:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def explain(
    error: TrialError | RawError | None, shared_gil: bool | None, toolchain: str | None
) -> tuple[str, str | None]:
    """(reason, kind) for an extension that failed to load in a sub-interpreter."""
    error = parse_error(error)
    msg = _msg(error)
    if "PyO3" in msg:
        return msg, "pyo3"
    if "Interpreter change detected" in msg:
        return "Cython module that can only be loaded into one interpreter per process", "cython"
    # A patch release of 3.13 runs a single-phase module's init in the main interpreter
    # for an isolated one and, if it raises there, says only this: the file still decides.
    switched = "failed to import from subinterpreter" in msg and shared_gil is False
    if SUBINTERP_MESSAGE in msg or switched:
        if shared_gil is True:
            reason = (
                "multi-phase init without per-interpreter GIL support "
                "(no Py_mod_multiple_interpreters slot): loads only with a shared GIL"
            )
            kind = "multi-phase-no-gil"
        elif shared_gil is False:
            reason = (
                "single-phase init (legacy PyInit, no module state): never loads in an isolated interpreter"
            )
            kind = "single-phase"
        else:
            reason = "does not support loading in subinterpreters"
            kind = None
        if toolchain:
            reason += f"; built with {toolchain}"
        return reason, kind
    return (error.short if error else "failed to load"), None


def decide(result: ProbeResult) -> Verdict:
    """One verdict per target: the passes below each add what they find to ``_Findings``,
    worst first wins; then errors and an unfinished probe have their say."""
    interp = result.interpreter
    tree = result.tree
    base = Verdict(
        target=result.target,
        verdict=UNSUPPORTED,
        python=interp.python,
        files=tuple(sorted({*_dependency_files(tree), *result.depends_on})),
        dist_stamps=tuple(sorted({m.dist_stamp for m in tree.modules if m.dist_stamp})),
        elapsed_s=result.elapsed_s,
    )
    if interp.unsupported:
        return dataclasses.replace(base, reason=interp.unsupported)
    ev = _Evidence(result)
    found = _Findings()
    for rule in _PASSES:
        rule(ev, found)
    ext_verdicts = _extension_verdicts(result, ev.exts, found.culprits, found.degraded)
    worst, reason = _conclude(result, found)
    return dataclasses.replace(
        base,
        verdict=worst,
        reason=reason,
        culprits=tuple(sorted(found.culprits.values(), key=lambda c: c.module)),
        degraded=tuple(sorted(found.degraded.values(), key=lambda c: c.module)),
        notes=tuple(found.notes),
        warnings=tuple(found.warnings),
        extensions=ext_verdicts,
        transient=result.transient or "",
    )


class _Evidence:
    """The trials of one probe result, indexed once for every pass."""

    def __init__(self, result: ProbeResult) -> None:
        self.result = result
        self.tree = result.tree
        self.module = split_target(result.target)[0]
        self.job = _first(result.trials, "job")
        self.main = next((t for t in result.trials if t.kind == "main" and t.candidate == self.module), None)
        self.exts = {t.candidate: t for t in result.trials if t.kind == "extension"}
        # a job whose import stopped on a C-only name: the name is the culprit, the
        # extensions its package skipped on the way are degraded
        self.on_a_name = any(
            t.kind == "name" and t.status == "failed" and t.error is not None and t.error.at_import
            for t in result.trials
        )

    @functools.cached_property
    def reach(self) -> Reach:
        """What the target reaches of the first-party code the probe saw (``reach``)."""
        tree = self.tree
        known = {m.name: m.file for m in tree.first_party if m.file}
        for t in self.result.trials:
            if t.edge is not None and t.edge.file and t.edge.importer not in known:
                known[t.edge.importer] = t.edge.file
        imported = [
            m
            for m in known
            if m in tree.edges
            and all(tree.edges[x].how == "import" for x in tree.chain(m)[1:] if x in tree.edges)
        ]
        facts = Facts.of(self.result.interpreter.python)
        return Reach(self.module, split_target(self.result.target)[1], known, imported, facts)

    @functools.cached_property
    def _sites(self) -> dict[str, list[ImportSite]]:
        """Every import site of the known first-party files, by the module it imports
        (``from pkg import sub`` counts for ``pkg.sub`` too)."""
        out: dict[str, list[ImportSite]] = {}
        for name in list(self.reach.known):
            defs = self.reach.defs(name)
            for site in defs.sites if defs is not None else ():
                out.setdefault(site.module, []).append(site)
                for attr in site.fromlist:
                    out.setdefault(f"{site.module}.{attr}", []).append(site)
        return out

    def sites_of(self, t: Trial) -> tuple[ImportSite, ...]:
        return tuple(self._sites.get(t.candidate, ()))

    def main_of(self, name: str) -> Trial | None:
        return next((m for m in self.result.trials if m.kind == "main" and m.candidate == name), None)

    def culprit(
        self,
        name: str,
        file: str | None,
        error: TrialError | None,
        status: str,
        shared_gil: bool | None = None,
    ) -> Culprit:
        """``name`` as a culprit: where it is, what built it, and why it failed."""
        ext = self.exts.get(name)
        if shared_gil is None and ext is not None:
            shared_gil = ext.shared_gil
        info = _lookup(self.tree, name, file)
        tc = toolchain_of(file or (info.file if info else None))
        if status == CRASH:
            why = f"crashed the interpreter while loading in a sub-interpreter ({_msg(error)})"
            kind = None
        elif status == TIMEOUT:
            why, kind = f"did not finish loading in a sub-interpreter ({_msg(error)})", None
        else:
            why, kind = explain(error, shared_gil, tc)
        edge = _first_party_edge(self.tree, name)
        return Culprit(
            module=name,
            file=file or (info.file if info else None),
            distribution=info.distribution if info else None,
            version=info.version if info else None,
            reason=why,
            status=status,
            kind=kind,
            toolchain=tc,
            chain=tuple(self.tree.chain(name)) if info else (),
            import_file=edge.file if edge else None,
            import_line=edge.line if edge else None,
        )


@dataclass
class _Findings:
    """What the passes of ``decide`` found so far."""

    worst: str = COMPATIBLE
    reason: str = ""
    culprits: dict[str, Culprit] = dataclasses.field(default_factory=dict)
    degraded: dict[str, Culprit] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)  # a broken deploy: fails under --strict
    errors: list[str] = dataclasses.field(default_factory=list)  # broken anywhere, or the probe broke
    unfinished: list[str] = dataclasses.field(default_factory=list)  # the budget ran out first
    judged: set[str] = dataclasses.field(default_factory=set)  # settled by ``judge``: no culprit elsewhere
    _warned: set[str] = dataclasses.field(default_factory=set)

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def warn(self, key: str, msg: str) -> None:
        """One warning per ``key`` (a missing module): the first place that needs it says so."""
        if key not in self._warned:
            self._warned.add(key)
            self.warnings.append(msg)

    def worse(self, verdict: str, why: str) -> None:
        if SEVERITY[verdict] > SEVERITY[self.worst]:
            self.worst, self.reason = verdict, why

    def add(self, c: Culprit) -> None:
        prev = self.culprits.get(c.module)
        if prev is None or SEVERITY[c.status] > SEVERITY[prev.status]:
            self.culprits[c.module] = c


def _at_edge(c: Culprit, edge: Edge | None) -> Culprit:
    """``c`` pointing at the import statement ``edge`` (a deferred import's)."""
    return dataclasses.replace(
        c, import_file=edge.file if edge else None, import_line=edge.line if edge else None
    )


def _crashes_and_hangs(ev: _Evidence, found: _Findings) -> None:
    """Crashes and hangs, wherever they happened; blamed on sub-interpreters only when a
    main interpreter got through the same import."""
    trials = ev.result.trials
    main_lost = {
        t.candidate: t
        for t in trials
        if t.kind == "main" and t.status in (CRASH, TIMEOUT) and not t.lost_to_budget
    }
    for t in trials:
        if t.status not in (CRASH, TIMEOUT):
            continue
        if t.lost_to_budget:
            found.unfinished.append(f"{_msg(t.error)} before {t.candidate} was checked")
            continue
        if t.error is not None and t.error.type == PROBE_FAILURE:
            found.errors.append(_msg(t.error))
            continue
        if t.kind == "pair":  # one interpreter got through: _pair_failures
            continue
        tail = _output_tail(t.error.stderr if t.error else "")
        if tail:  # the worker's output is kept as a tail (64 KiB): its last lines say most
            note = f"last output of the process that ran {t.candidate} ({t.kind}): {tail}"
            if note not in found.notes:
                found.notes.append(note)
        crumb = t.culprit
        name = (crumb and (crumb.name or crumb.candidate)) or t.candidate
        file = (crumb and crumb.file) or t.file
        key = blame_key(t, ev.module)
        same = main_lost.get(key)
        if key != ev.module and not (t.kind == "main" and t.candidate == ev.module):
            # a deferred import crashed or hung: the rule for deferred imports decides
            everywhere = t.kind == "main" or same is not None
            sites = tuple(ev._sites.get(key, ()))
            reached = not sites or any(ev.reach.site_reached(x) for x in sites)
            outcome = judge(reached=reached, fails_in_main=everywhere, guarded=False)
            if outcome == "note":
                found.note(
                    f"deferred import {key} {'hangs' if t.status == TIMEOUT else 'crashes'} in a "
                    f"sub-interpreter ({_msg(t.error)}) but is not reached from {ev.result.target} "
                    f"({_places(sites)})"
                )
                continue
            if outcome == "warning":
                found.warn(key, f"deferred import {key}: {_everywhere(same or t, name)}")
                continue
        elif t.kind == "main" or same is not None:
            found.errors.append(_everywhere(same or t, name))
            continue
        found.add(ev.culprit(name, file, t.error, t.status))
        found.worse(t.status, f"{name}: {t.error.msg if t.error else t.status}")


def _job_failure(ev: _Evidence, found: _Findings) -> None:
    """The job module itself failed to import in a sub-interpreter."""
    job, main = ev.job, ev.main
    if job is None or job.status != "failed":
        return
    if main is not None and main.status == "failed":
        msg = _limit_reason(main.error, ev.result) or _short_error(main.error)
        found.worse(ERROR, f"fails in the main interpreter too, so this is a bug in the module: {msg}")
        return
    if main is not None and main.status in (CRASH, TIMEOUT):
        return  # counted by _crashes_and_hangs
    for f in () if ev.on_a_name else job.failures:
        found.add(ev.culprit(f.name, f.file, f.error, INCOMPATIBLE))
    if not job.failures and not ev.on_a_name:  # failed without an extension failing: use the message
        name = _map_short_name(ev.tree, job.error)
        if name:
            found.add(ev.culprit(name, None, job.error, INCOMPATIBLE))
    found.worse(INCOMPATIBLE, _short_error(job.error))


#: what one failing deferred import (or PEP 562 import, or name) means: see ``judge``
Outcome = str  # incompatible | degraded | note | warning


def judge(*, reached: bool, fails_in_main: bool, guarded: bool, gated: bool = False) -> Outcome:
    """The one rule for an import first-party code defers (a function body, a PEP 562
    ``__getattr__``, a name taken from a module) that failed in a sub-interpreter.

    Code the target never reaches is a note. A failure a main interpreter shares (not
    installed, another platform's module, a bug in that code) is no sub-interpreter
    finding: a note when the code copes (a ``try`` that catches it, an ``if`` on the
    platform or Python version), else a warning. A failure only a sub-interpreter has
    is a culprit: ``degraded`` when a ``try`` catches it (the code has a fallback),
    ``incompatible`` when nothing does. Never ``error``: that is for the job module."""
    if not reached:
        return "note"
    if fails_in_main:
        return "note" if guarded or gated else "warning"
    return DEGRADED if guarded else INCOMPATIBLE


@dataclass(frozen=True)
class _Judged:
    outcome: Outcome
    site: ImportSite | None  # the site that decided (None: only the probe's edge is known)
    guard: Guard | None
    sites: tuple[ImportSite, ...]  # every site of the import, reached or not


def _judge_import(ev: _Evidence, t: Trial, fails_in_main: bool, error_type: str) -> _Judged:
    """``judge`` over every place first-party code imports ``t.candidate``: the worst
    reached site decides (one unguarded reached site is enough for ``incompatible``)."""
    sites = ev.sites_of(t)
    if not sites:  # the source is not readable here: the probe's edge, taken as reached
        guarded = t.edge is not None and t.edge.optional and error_type == "ModuleNotFoundError"
        return _Judged(judge(reached=True, fails_in_main=fails_in_main, guarded=guarded), None, None, ())
    best: _Judged | None = None
    rank = {INCOMPATIBLE: 4, "warning": 3, DEGRADED: 2, "note": 1}
    for site in sites:
        guard = catches(site.guards, error_type)
        reached = ev.reach.site_reached(site)
        outcome = judge(
            reached=reached, fails_in_main=fails_in_main, guarded=guard is not None, gated=_gated(site, t)
        )
        # among notes, the one about the target's own code (an if false here) says most
        if best is None or (rank[outcome], _never_here(ev, site)) > (
            rank[best.outcome],
            _never_here(ev, best.site),
        ):
            best = _Judged(outcome, site, guard, sites)
    assert best is not None
    return best


def _never_here(ev: _Evidence, site: ImportSite | None) -> bool:
    """Code the target reaches, where an ``if`` false on this interpreter skips the import."""
    return site is not None and site.never is not None and ev.reach.code_reached(site)


def _gated(site: ImportSite, t: Trial) -> bool:
    """Under an ``if`` on the platform or the Python version, or named for another platform."""
    return site.gate is not None or other_platform([t.candidate, *site.tested])


def _fails_in_main(ev: _Evidence, t: Trial) -> tuple[bool, str, TrialError | None, str]:
    """(fails in a main interpreter too, the error type that decides, its error, the
    module that failed: ``pkg.sub`` for ``from pkg import sub``)."""
    if t.status == "missing":
        return True, "ModuleNotFoundError", t.error, t.candidate
    if t.failures and all(SUBINTERP_MESSAGE in f.msg for f in t.failures):
        return False, t.error.type if t.error else "ImportError", t.error, t.candidate
    for name in (t.candidate, *(f"{t.candidate}.{attr}" for attr in t.fromlist)):
        main = ev.main_of(name)
        if main is None or main.error is None:
            continue
        if main.status in (CRASH, TIMEOUT) and not main.lost_to_budget and main.error.type != PROBE_FAILURE:
            # it died in a main interpreter too (a crash, a hang, the memory limit): the
            # guard is judged against the error the sub-interpreter raised
            return True, t.error.type if t.error else "ImportError", main.error, name
        if main.status != "failed":
            continue
        if name != t.candidate and _missing_module(main.error) == name:
            continue  # `from pkg import name`: a name, not a submodule
        return True, main.error.type, main.error, name
    if (
        not t.failures
        and t.error is not None
        and t.error.type == "ModuleNotFoundError"
        and ev.main_of(t.candidate) is None
    ):
        # not retried in main (past the cap): a module not found is not found there either
        return True, t.error.type, t.error, t.candidate
    # sub-only, or not known (not retried): taken as sub-only
    return False, t.error.type if t.error else "ImportError", t.error, t.candidate


def _missing_module(error: TrialError | None) -> str | None:
    m = _NO_MODULE.search(error.msg) if error and error.type == "ModuleNotFoundError" else None
    return m.group(1) if m else None


def _places(sites: tuple[ImportSite, ...], limit: int = 3) -> str:
    shown = ", ".join(s.where for s in sites[:limit])
    return shown + (f" and {len(sites) - limit} more" if len(sites) > limit else "")


def _deferred_imports(ev: _Evidence, found: _Findings) -> None:
    """Deferred imports that failed in a sub-interpreter, each through ``judge``."""
    for t in ev.result.trials:
        if t.kind != "lazy" or t.status not in ("failed", "missing"):
            continue
        fails_main, error_type, error, label = _fails_in_main(ev, t)
        j = _judge_import(ev, t, fails_main, error_type)
        found.judged.update(f.name for f in t.failures)
        found.judged.add(t.candidate)
        edge = _site_edge(j.site) if j.site else t.edge
        because = (
            (_limit_reason(error, ev.result) or _short_error(error)) if fails_main else _short_error(t.error)
        )
        if j.outcome == "note" and j.site is not None and j.site.never:
            found.note(
                f"deferred import {t.candidate} ({because}) never runs on this interpreter: "
                f"it sits under {j.site.never} at {_places((j.site,))}"
            )
            continue
        if j.outcome == "note" and j.site is not None and not ev.reach.site_reached(j.site):
            found.note(
                f"deferred import {t.candidate} ({because}) is not reached from {ev.result.target}: "
                f"only through {', '.join(dict.fromkeys(ev.reach.where(s) for s in j.sites))} "
                f"({_places(j.sites)})"
            )
            continue
        if fails_main:
            missing = _missing_module(error)
            places = _places(j.sites) if j.sites else (_edge_where(t.edge) or "?")
            if j.outcome == "note":
                if j.guard is not None:
                    why = (
                        f"the code copes (try at {_short_file(j.site)}:{j.guard.line})"
                        if j.site
                        else "optional"
                    )
                    found.note(
                        f"optional deferred import {label} fails in a main interpreter too ({because}); {why}"
                    )
                else:
                    found.note(
                        f"deferred import {label} is for another platform or Python version "
                        f"({because}; imported at {places})"
                    )
            elif missing is not None:
                found.warn(
                    missing,
                    f"missing dependency: {missing} is not installed in this environment "
                    f"(needed by deferred import {label}, imported at {places}): "
                    "the job fails when it reaches it",
                )
            else:
                found.warn(
                    label,
                    f"deferred import {label} fails in a main interpreter too ({because}; imported at "
                    f"{places}): a bug or a missing piece of this environment, not a sub-interpreter problem",
                )
            continue
        why = f"deferred import {t.candidate}: {_short_error(t.error)}"
        if t.failures:
            culprits = [_at_edge(ev.culprit(f.name, f.file, f.error, INCOMPATIBLE), edge) for f in t.failures]
        else:
            culprits = [
                _at_edge(Culprit(t.candidate, None, None, None, _short_error(t.error), INCOMPATIBLE), edge)
            ]
        if j.outcome == DEGRADED:
            assert j.guard is not None
            where = f"{_short_file(j.site)}:{j.guard.line}" if j.site else "a try"
            for c in culprits:
                if c.module not in found.culprits:
                    found.degraded[c.module] = dataclasses.replace(
                        c,
                        status=DEGRADED,
                        reason=f"{c.reason}; the import sits in a try that catches it ({where}): "
                        "the code runs its fallback in a sub-interpreter",
                    )
            found.worse(DEGRADED, f"{why} (caught by the try at {where})")
            continue
        for c in culprits:
            found.add(c)
        found.worse(INCOMPATIBLE, why)


def _site_edge(site: ImportSite) -> Edge:
    return Edge(site.importer, site.file, site.line, "function" if site.unit else "import")


def _short_file(site: ImportSite | None) -> str:
    return site.where.rpartition(":")[0] if site else "?"


def _edge_where(edge: Edge | None) -> str | None:
    return f"{os.path.basename(edge.file or '?')}:{edge.line}" if edge else None


def _swallowed_failures(ev: _Evidence, found: _Findings) -> None:
    """Extensions the hook saw fail while the import still succeeded: loaded on a retry
    (unsafe), or skipped for a pure-Python fallback (degraded)."""
    result = ev.result
    for t in result.trials:
        if t.kind not in ("job", "lazy") or (t.status != "ok" and not (t.kind == "job" and ev.on_a_name)):
            continue
        for f in t.failures:
            name = f.name
            if name in found.culprits:
                continue
            if name in result.loaded:
                c = ev.culprit(name, f.file, f.error, INCOMPATIBLE)
                retry = (
                    "failed, then loaded on a retry in the same interpreter (CPython gh-104621); not safe: "
                )
                found.add(dataclasses.replace(c, reason=retry + c.reason))
                found.worse(INCOMPATIBLE, f"{name} loaded only on retry after failing")
            elif SUBINTERP_MESSAGE in f.msg or _loads_in_main(result, name):
                c = ev.culprit(name, f.file, f.error, DEGRADED)
                if t.edge is not None:  # reached through a deferred import: point at it
                    c = _at_edge(c, t.edge)
                found.degraded[name] = dataclasses.replace(c, reason=SKIPPED + c.reason)
                found.worse(DEGRADED, f"{name} skipped in the sub-interpreter; slower pure-Python fallback")


def _never_tried_accelerators(ev: _Evidence, found: _Findings) -> None:
    """Accelerators the same import loads in a main interpreter and the sub-interpreter
    never tried (the package checked for one first, or fell back wholesale)."""
    result = ev.result
    for name in sorted(result.skipped - found.culprits.keys() - found.degraded.keys()):
        alone = ev.exts.get(name)
        if alone is not None and alone.status == "failed" and found.worst not in (COMPATIBLE, DEGRADED):
            continue  # the target fails anyway, and so would this: a culprit (``_failed_alone``)
        found.degraded[name] = _never_tried(name, result, alone)
        found.worse(DEGRADED, f"{name} skipped in the sub-interpreter; slower pure-Python fallback")


def _missing_names(ev: _Evidence, found: _Findings) -> None:
    """Names first-party code takes from a module, there in a main interpreter only."""
    for t in ev.result.trials:
        if t.kind == "name" and t.status == "failed":
            where = f"{os.path.basename(t.edge.file or '?')}:{t.edge.line}" if t.edge else "?"
            edge = t.edge
            reached = ev.reach.reached(edge.importer, edge.file, edge.line) if edge else None
            if judge(reached=reached is not False, fails_in_main=False, guarded=False) == "note":
                found.note(
                    f"{t.candidate} does not exist in a sub-interpreter (used at {where}), "
                    f"in code {ev.result.target} does not reach"
                )
                continue
            found.add(_name_culprit(t, ev.result, found.degraded, ev.exts))
            found.worse(INCOMPATIBLE, f"{t.candidate} does not exist in a sub-interpreter (used at {where})")


def _pair_failures(ev: _Evidence, found: _Findings) -> None:
    """Extensions that misbehave once two live interpreters use them, as a pool does."""
    for t in ev.result.trials:
        if t.kind == "pair" and t.status not in ("ok", "missing") and not t.lost_to_budget:
            found.add(_pair_culprit(t, ev.tree))
            found.worse(INCOMPATIBLE, f"{t.candidate} {_msg(t.error)}")


def _failed_alone(ev: _Evidence, found: _Findings) -> None:
    """Extensions of the tree that failed when loaded on their own, named once the target
    is already worse than degraded."""
    for name, t in ev.exts.items():
        if (
            t.status == "failed"
            and name not in found.degraded
            and name not in found.judged
            and found.worst not in (COMPATIBLE, DEGRADED)
        ):
            found.add(ev.culprit(name, t.file, t.error, INCOMPATIBLE, t.shared_gil))


_PASSES = (
    _crashes_and_hangs,
    _job_failure,
    _deferred_imports,
    _swallowed_failures,
    _never_tried_accelerators,
    _missing_names,
    _pair_failures,
    _failed_alone,
)


def _conclude(result: ProbeResult, found: _Findings) -> tuple[str, str]:
    """(verdict, reason): errors beat everything short of a sub-interpreter culprit; an
    unfinished probe that found nothing is a timeout, not a pass."""
    worst, reason = found.worst, found.reason
    if found.errors and worst not in (CRASH, TIMEOUT, INCOMPATIBLE):
        return ERROR, "; ".join(dict.fromkeys(found.errors))
    if found.unfinished and worst in (COMPATIBLE, DEGRADED):
        return TIMEOUT, found.unfinished[0]
    if found.unfinished and worst == TIMEOUT:  # both figures: what hung, and what could not tell
        reason = f"{reason}; {found.unfinished[0]}"
    if worst == COMPATIBLE:
        reason = "imports in a fresh isolated sub-interpreter"
        if any(t.kind == "lazy" and t.status == "ok" for t in result.trials):
            reason += " (deferred imports included)"
    return worst, reason


def _never_tried(name: str, result: ProbeResult, alone: Trial | None) -> Culprit:
    """An accelerator a main interpreter loads and the package never tried in the
    sub-interpreter; loaded on its own (``alone``), it says whether it could have."""
    tree = result.tree
    info = _lookup(tree, name, None)
    file = info.file if info else None
    toolchain = toolchain_of(file)
    why = "never tried in the sub-interpreter, though the same import loads it in a main interpreter"
    kind: str | None = "never-tried"
    if alone is not None and alone.status == "failed":
        because, kind = explain(alone.error, alone.shared_gil, toolchain)
        why += f"; it would not load there anyway: {because}"
    elif alone is not None and alone.status == "ok":
        why += "; on its own it loads in an isolated sub-interpreter: only the package keeps it out"
    edge = _first_party_edge(tree, name)
    return Culprit(
        module=name,
        file=file,
        distribution=info.distribution if info else None,
        version=info.version if info else None,
        reason=SKIPPED + why,
        status=DEGRADED,
        kind=kind or "never-tried",  # explain() has no kind for some failures
        toolchain=toolchain,
        chain=tuple(tree.chain(name)) if info else (),
        import_file=edge.file if edge else None,
        import_line=edge.line if edge else None,
    )


def _pair_culprit(t: Trial, tree: ModuleTree) -> Culprit:
    """An extension that loads in one fresh interpreter and not safely in two at once."""
    info = _lookup(tree, t.candidate, t.file)
    edge = _first_party_edge(tree, t.candidate)
    shared = t.error is not None and t.error.type == "shared"
    return Culprit(
        module=t.candidate,
        file=t.file or (info.file if info else None),
        distribution=info.distribution if info else None,
        version=info.version if info else None,
        reason=_msg(t.error),
        status=INCOMPATIBLE,
        kind="shared-state" if shared else "two-interpreters",
        toolchain=toolchain_of(t.file or (info.file if info else None)),
        chain=tuple(tree.chain(t.candidate)) if info else (),
        import_file=edge.file if edge else None,
        import_line=edge.line if edge else None,
    )


def _name_culprit(
    t: Trial, result: ProbeResult, degraded: dict[str, Culprit], exts: dict[str, Trial]
) -> Culprit:
    """A C-only name (``yaml.CSafeLoader``): where first-party code uses it, and the
    accelerator of the same package that a sub-interpreter skipped, if one is known."""
    owner_name = t.candidate.rpartition(".")[0]
    owner = _lookup(result.tree, owner_name, None)
    accelerator = _accelerator(owner_name, result, degraded, exts)
    use = (
        f"from {owner_name} import {t.candidate.rpartition('.')[2]}"
        if t.edge and t.edge.how == "from"
        else t.candidate
    )
    error = t.error.type if t.error else "AttributeError"
    fails = f"`{use}` raises {error} there (it works in a main interpreter)"
    if accelerator is None:
        reason = f"missing in a sub-interpreter, present in a main interpreter: {fails}"
    else:
        why = "it does not load there"
        if accelerator in degraded:
            why = degraded[accelerator].reason.removeprefix(SKIPPED)
        reason = (
            f"C-only name: defined only when the accelerator {accelerator} loads, "
            f"and a sub-interpreter skips it ({why}); {fails}"
        )
    return Culprit(
        module=t.candidate,
        file=owner.file if owner else None,
        distribution=owner.distribution if owner else None,
        version=owner.version if owner else None,
        reason=reason,
        status=INCOMPATIBLE,
        kind="c-only-name",
        chain=tuple(result.tree.chain(owner_name)) if owner else (),
        import_file=t.edge.file if t.edge else None,
        import_line=t.edge.line if t.edge else None,
        accelerator=accelerator,
    )


def _accelerator(
    module: str, result: ProbeResult, degraded: dict[str, Culprit], exts: dict[str, Trial]
) -> str | None:
    """An extension of ``module``'s top-level package that a sub-interpreter skipped or
    failed to load: the reason its C-only names are missing there."""
    top = module.partition(".")[0]

    def ours(name: str) -> bool:
        return name == top or name.startswith(top + ".")

    failed = [f.name for t in result.trials for f in t.failures]
    failed += [name for name, t in exts.items() if t.status != "ok"]
    return next((n for n in [*sorted(degraded), *failed] if ours(n)), None)


def _fails_alone(t: Trial | None) -> bool:
    return t is not None and t.status == "failed"


def _output_tail(text: str) -> str:
    """The job's last lines before the interpreter's own fatal-error dump, on one line."""
    cut = text.find("Fatal Python error:")  # the first: a process may dump more than once
    fatal = text[cut:].partition("\n")[0] if cut >= 0 else ""
    lines = [line.strip() for line in (text[:cut] if cut >= 0 else text).splitlines() if line.strip()]
    shown = " | ".join([*lines[-3:], *([fatal] if fatal else [])])
    return shown[-400:]


def _everywhere(t: Trial, name: str) -> str:
    """The reason for a crash or hang that a main interpreter shares."""
    what = "hangs" if t.status == TIMEOUT else "crashes"
    return (
        f"{what} in a main interpreter too, while loading {name} ({_msg(t.error)}): "
        "a bug in the module, not a sub-interpreter problem"
    )


def _limit_reason(error: TrialError | None, result: ProbeResult) -> str | None:
    """A MemoryError under the probe's address-space limit names the limit."""
    if not is_memory_error(error):
        return None
    limit = result.limits.get("memory_mb")
    where = (error.where if error else None) or "the import"
    if limit:
        return f"exceeds the memory limit ({limit:g} MiB, --memory) at {where}"
    return f"MemoryError at {where}"


def _first(trials: tuple[Trial, ...], kind: str) -> Trial | None:
    return next((t for t in trials if t.kind == kind), None)


class _TreeIndex:
    """A tree's first module of each name and of each file, and its first-party names:
    ``decide`` looks up every culprit (~55 per module of pandas, 800 modules a tree)."""

    def __init__(self, tree: ModuleTree) -> None:
        self.tree = tree  # held: the index is found by the tree's id, which must not be reused
        self.by_name: dict[str, tuple[int, ModuleInfo]] = {}
        self.by_file: dict[str, tuple[int, ModuleInfo]] = {}
        for i, m in enumerate(tree.modules):
            self.by_name.setdefault(m.name, (i, m))
            if m.file:
                self.by_file.setdefault(m.file, (i, m))
        self.first_party = {m.name for m in tree.first_party} | {tree.root}


_TREE_INDEXES: dict[int, _TreeIndex] = {}


def _index(tree: ModuleTree) -> _TreeIndex:
    index = _TREE_INDEXES.get(id(tree))
    if index is None or index.tree is not tree:
        if len(_TREE_INDEXES) >= 64:
            _TREE_INDEXES.clear()
        index = _TREE_INDEXES[id(tree)] = _TreeIndex(tree)
    return index


def _lookup(tree: ModuleTree, name: str, file: str | None) -> ModuleInfo | None:
    """The first module of the tree with this name or this file."""
    index = _index(tree)
    by_name = index.by_name.get(name)
    by_file = index.by_file.get(file) if file else None
    if by_name is None or by_file is None:
        found = by_name or by_file
        return found[1] if found else None
    return min(by_name, by_file, key=lambda hit: hit[0])[1]


def _first_party_edge(tree: ModuleTree, name: str) -> Edge | None:
    """The import statement in the user's own code that leads to ``name``."""
    first_party = _index(tree).first_party
    for mod in reversed(tree.chain(name)):
        edge = tree.edges.get(mod)
        if edge and edge.importer in first_party:
            return edge
    return tree.edges.get(name)


def short_name(message: str) -> str | None:
    """The module CPython names in its sub-interpreter ImportError, if any."""
    m = _SHORT_NAME.search(message)
    return m.group("name") if m else None


def _map_short_name(tree: ModuleTree, error: TrialError | None) -> str | None:
    """CPython names a module by its short name; find the dotted extension it means."""
    links = (error.chain or (error,)) if error else ()
    for link in links:
        m = _SHORT_NAME.search(link.msg)
        if not m:
            continue
        short = m.group("name")
        for info in tree.extensions:
            if info.name == short or info.name.endswith("." + short):
                return info.name
        return short
    return None


def _loads_in_main(result: ProbeResult, name: str) -> bool:
    return any(m.name == name for m in result.tree.modules if m.extension) and any(
        t.kind == "main" and t.status == "ok" for t in result.trials
    )


def _msg(error: TrialError | None) -> str:
    return error.msg if error else ""


def _short_error(error: TrialError | None) -> str:
    if not error:
        return "failed"
    return error.short


def _dependency_files(tree: ModuleTree) -> tuple[str, ...]:
    return tuple(
        sorted({m.file for m in tree.modules if m.file and (m.origin == "first_party" or m.extension)})
    )


def _extension_verdicts(
    result: ProbeResult,
    exts: dict[str, Trial],
    culprits: dict[str, Culprit],
    degraded: dict[str, Culprit],
) -> tuple[ExtensionVerdict, ...]:
    out: dict[str, ExtensionVerdict] = {}
    passed = {t.candidate for t in result.trials if t.kind == "pair" and t.status == "ok"}
    for info in result.tree.extensions:
        if not info.file:
            continue
        c = culprits.get(info.name) or degraded.get(info.name)
        if c is not None and info.name in result.skipped and not _fails_alone(exts.get(info.name)):
            continue  # the package's choice, not the file's: nothing to cache about it
        if c is not None:
            status = c.status if c.status != DEGRADED else INCOMPATIBLE
            ext = exts.get(info.name)
            out[info.name] = ExtensionVerdict(
                info.name,
                info.file,
                status,
                info.distribution,
                info.version,
                c.reason,
                c.kind,
                ext.shared_gil if ext else None,
                _msg(ext.error if ext else None) or c.reason,
            )
        elif info.name in passed:  # loads alone, and in two live interpreters at once
            out[info.name] = ExtensionVerdict(
                info.name,
                info.file,
                COMPATIBLE,
                info.distribution,
                info.version,
                "loads in an isolated sub-interpreter"
                + (" (CPython's own)" if info.origin == "stdlib" else ", and in two live ones at once"),
            )
    return tuple(out[k] for k in sorted(out))


__all__ = [
    "Culprit",
    "ExtensionVerdict",
    "Verdict",
    "decide",
    "explain",
    "toolchain_of",
]
