"""Typed records for what crosses the probe → verdict boundary, and the one place the
child's raw JSON becomes them.

The child (``_child.py``/``_trial.py``) is stdlib-only and may run on an interpreter this
package is not installed in, so it speaks plain JSON; the ``Raw*`` TypedDicts describe
that wire shape, and the ``parse_*`` functions here validate it into frozen records as it
enters the parent. Job code controls some of the text (exception messages), never the
shape: anything off-shape becomes an empty or default field, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from subcompat._interpreter import Interpreter
from subcompat.discover import Edge, ModuleTree

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, Literal, TypedDict

    #: What one trial tried: the job module, a deferred import, an extension on its own
    #: (``classify``: again with a shared GIL), a fresh process's main interpreter, a name
    #: first-party code takes from a module, an extension in two live interpreters.
    TrialKind = Literal["job", "lazy", "extension", "classify", "main", "name", "pair"]
    TrialStatus = Literal["ok", "failed", "crash", "timeout", "missing"]
    #: why a result says more about this run than about the code (``ProbeResult.transient``)
    TransientCause = Literal[
        "a time limit",
        "the trial cap",
        "the memory limit",
        "an external kill",
        "a probe failure",
        "a file changed during the check",
    ]

    class RawLink(TypedDict, total=False):
        type: str
        msg: str

    class RawError(TypedDict, total=False):
        """``_trial.describe`` (plus what the parent adds for a lost worker)."""

        type: str
        msg: str
        chain: list[RawLink]
        where: str | None
        attr: list[str | None]  # [module, name, module file]
        stderr: str
        external: bool
        memory_limit: bool
        at_import: bool

    class RawFailure(TypedDict):
        """``_trial.record_failure``: one extension load that raised."""

        name: str
        file: str | None
        phase: str
        type: str
        msg: str

    class RawCrumb(TypedDict):
        """``_transport.Worker.breadcrumb``."""

        name: str | None
        file: str | None
        candidate: str | None

    #: Who made an import, as ``discover.Edge`` travels: [importer, file, line, how].
    RawEdge = list[Any]
    #: A deferred import still to try, the layout ``_child``, ``_trial`` and the parent
    #: share: [module, fromlist, importer, file, line, how] (an edge after the target).
    RawPending = list[Any]
    #: A first-party module for the child to scan: [name, file, is_package, all_imports].
    RawSource = list[Any]

    class RawLazy(TypedDict, total=False):
        """``_trial._lazy_step``: one deferred import and what it did."""

        module: str
        fromlist: list[str]
        edge: RawEdge
        error: RawError
        failures: list[RawFailure]
        missing: bool  # ModuleNotFoundError for the target itself: not installed

    class RawRef(TypedDict, total=False):
        """``_child._ref``: a name first-party code takes from another module."""

        module: str
        attr: str
        state: str  # present | missing | unloaded | the error a lookup raised
        file: str | None
        edge: RawEdge

    class RawTrial(TypedDict, total=False):
        """``_child`` ``trial`` and ``main`` replies (``_trial._finish``, described)."""

        error: RawError | None
        modules: list[dict[str, Any]]  # ModuleInfo.to_json
        edges: dict[str, RawEdge]
        failures: list[RawFailure]
        lazy: list[RawLazy]
        pending: list[RawPending]
        refs: list[RawRef]
        unloaded: list[str]  # files of modules found and not loaded (``_trial._unloaded``)
        looked_in: list[str]  # where a module a ModuleNotFoundError named was looked for


@dataclass(frozen=True)
class ErrorLink:
    """One exception of a ``__cause__``/``__context__`` chain."""

    type: str
    msg: str


@dataclass(frozen=True)
class MissingName:
    """``module`` lacks ``name`` (the AttributeError of ``mod.Name``, the ImportError of
    ``from mod import Name``)."""

    module: str
    name: str
    file: str | None = None


@dataclass(frozen=True)
class TrialError:
    """Why a trial did not end ``ok``: the candidate's exception, or what the probe saw of
    a worker it lost (``type`` is then the status, ``budget`` or ``probe``)."""

    type: str
    msg: str = ""
    chain: tuple[ErrorLink, ...] = ()
    where: str | None = None  # file:line of the innermost frame
    attr: MissingName | None = None
    stderr: str = ""  # the worker's last output, for a lost worker
    external: bool = False  # killed by someone else (the OOM killer, a kill -9)
    memory_limit: bool = False  # the worker's peak RSS was at the limit
    at_import: bool = False  # a C-only name the job's own import stopped on

    @property
    def short(self) -> str:
        return f"{self.type}: {self.msg}"

    @property
    def is_memory_error(self) -> bool:
        return self.type == "MemoryError" or any(link.type == "MemoryError" for link in self.chain)

    def __getitem__(self, key: str) -> object:
        """Reads like the raw dict it was parsed from (``error["msg"]``)."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


@dataclass(frozen=True)
class ExtensionFailure:
    """An extension load that raised, recorded by the loader hook even when the package
    caught it (a degraded accelerator) or re-raised its own message."""

    name: str
    file: str | None
    type: str
    msg: str
    phase: str = ""  # create | exec

    @property
    def error(self) -> TrialError:
        return TrialError(self.type, self.msg)


@dataclass(frozen=True)
class Breadcrumb:
    """What a worker had under way when it died or hung: the extension being loaded
    (``name``, ``file``) and the deferred import that asked for it (``candidate``)."""

    name: str | None = None
    file: str | None = None
    candidate: str | None = None


def _str(value: object, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_error(raw: object) -> TrialError | None:
    """A ``RawError`` (or a record already) as a ``TrialError``; None for no error."""
    if raw is None or isinstance(raw, TrialError):
        return raw
    if not isinstance(raw, dict):
        return TrialError("Error", _str(raw, repr(raw)))
    chain = raw.get("chain")
    return TrialError(
        type=_str(raw.get("type"), "Error"),
        msg=_str(raw.get("msg")),
        chain=tuple(
            ErrorLink(_str(c.get("type"), "Error"), _str(c.get("msg")))
            for c in (chain if isinstance(chain, list | tuple) else ())
            if isinstance(c, dict)
        ),
        where=_opt_str(raw.get("where")),
        attr=_parse_missing(raw.get("attr")),
        stderr=_str(raw.get("stderr")),
        external=raw.get("external") is True,
        memory_limit=raw.get("memory_limit") is True,
        at_import=raw.get("at_import") is True,
    )


def _parse_missing(attr: object) -> MissingName | None:
    if not isinstance(attr, list | tuple) or len(attr) < 2:
        return None
    module, name = attr[0], attr[1]
    if not isinstance(module, str) or not isinstance(name, str):
        return None
    return MissingName(module, name, _opt_str(attr[2]) if len(attr) > 2 else None)


def parse_failure(raw: object) -> ExtensionFailure:
    if isinstance(raw, ExtensionFailure):
        return raw
    data = raw if isinstance(raw, dict) else {}
    return ExtensionFailure(
        name=_str(data.get("name")),
        file=_opt_str(data.get("file")),
        type=_str(data.get("type"), "Error"),
        msg=_str(data.get("msg")),
        phase=_str(data.get("phase")),
    )


def parse_failures(raw: Iterable[object] | None) -> tuple[ExtensionFailure, ...]:
    return tuple(parse_failure(f) for f in raw or ())


def parse_breadcrumb(raw: object) -> Breadcrumb | None:
    if raw is None or isinstance(raw, Breadcrumb):
        return raw
    data = raw if isinstance(raw, dict) else {}
    return Breadcrumb(_opt_str(data.get("name")), _opt_str(data.get("file")), _opt_str(data.get("candidate")))


PROBE_FAILURE = "probe"  # error type of a trial the probe itself could not finish
#: ``TransientCause``'s values: a verdict carrying one is never cached
FILE_CHANGED = "a file changed during the check"  # check.py: the verdict's note says which
TRANSIENT_CAUSES = frozenset(
    {"a time limit", "the trial cap", "the memory limit", "an external kill", "a probe failure", FILE_CHANGED}
)
TRIAL_CAP = "trial cap"  # opens the message of a trial not run because the target's cap was reached


@dataclass(frozen=True)
class Trial:
    """One candidate in one fresh interpreter (or, for kind ``main``, a fresh process)."""

    kind: TrialKind
    candidate: str
    status: TrialStatus
    error: TrialError | None = None
    failures: tuple[ExtensionFailure, ...] = ()  # extension loads that raised, from the hook
    culprit: Breadcrumb | None = None  # for crash/timeout: what the worker had under way
    signal: int | None = None
    edge: Edge | None = None
    file: str | None = None
    cached: bool = False
    shared_gil: bool | None = None  # extension loads with a shared GIL (multi-phase, no slot)
    elapsed_s: float = 0.0
    fromlist: tuple[str, ...] = ()  # a deferred ``from candidate import ...``: what it asked for

    def __post_init__(self) -> None:
        """Raw JSON (from the child, the cache, a hand-built test) is parsed here, once."""
        if self.error is not None and not isinstance(self.error, TrialError):
            object.__setattr__(self, "error", parse_error(self.error))
        if not all(isinstance(f, ExtensionFailure) for f in self.failures):
            object.__setattr__(self, "failures", parse_failures(self.failures))
        if self.culprit is not None and not isinstance(self.culprit, Breadcrumb):
            object.__setattr__(self, "culprit", parse_breadcrumb(self.culprit))

    @property
    def lost_to_budget(self) -> bool:
        """Not run, or cut off, because the target's budget ran out."""
        return self.error is not None and self.error.type == "budget"


@dataclass(frozen=True)
class ProbeResult:
    """Everything the probe saw for one target; the verdict stage reads only this."""

    target: str
    interpreter: Interpreter
    tree: ModuleTree
    trials: tuple[Trial, ...] = ()
    elapsed_s: float = 0.0
    loaded: frozenset[str] = field(default_factory=frozenset)  # extensions loaded in a sub
    limits: dict[str, float] = field(default_factory=dict)  # timeout_s, memory_mb it ran under
    skipped: frozenset[str] = field(default_factory=frozenset)  # accelerators only a main interpreter loaded
    # beyond the tree, what the result rests on: the files of modules whose import failed,
    # and the directories where a module found missing was looked for
    depends_on: frozenset[str] = field(default_factory=frozenset)

    @property
    def transient(self) -> TransientCause | None:
        """Why this result says more about this run than about the module (a limit was
        hit, someone killed the probe, the probe broke), or None: not a fact to cache."""
        for t in self.trials:
            if t.status == "timeout":  # a limit names itself: the clock, or the trial cap
                cap = t.lost_to_budget and t.error is not None and t.error.msg.startswith(TRIAL_CAP)
                return "the trial cap" if cap else "a time limit"
            error = t.error
            if error is None:
                continue
            if error.external:
                return "an external kill"
            if error.memory_limit:
                return "the memory limit"
            if error.type == PROBE_FAILURE:
                return "a probe failure"
            if error.is_memory_error:
                return "the memory limit"
        return None


def blame_key(t: Trial, module: str) -> str:
    """The import to retry in a main interpreter for a crash or hang: the deferred
    import under way when it happened, else the trial's own candidate."""
    crumb = t.culprit.candidate if t.culprit else None
    if crumb:
        return crumb
    return module if t.kind == "job" else t.candidate


def is_memory_error(error: TrialError | None) -> bool:
    return error is not None and error.is_memory_error


def split_target(target: str) -> tuple[str, str | None]:
    module, _, function = target.partition(":")
    return module, (function or None)


__all__ = [
    "PROBE_FAILURE",
    "ProbeResult",
    "Trial",
    "blame_key",
    "is_memory_error",
    "split_target",
    "Breadcrumb",
    "ErrorLink",
    "ExtensionFailure",
    "MissingName",
    "TrialError",
    "parse_breadcrumb",
    "parse_error",
    "parse_failure",
    "parse_failures",
]
