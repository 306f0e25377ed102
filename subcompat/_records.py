"""Typed records for what crosses the probe → verdict boundary, and the one place the
child's raw JSON becomes them.

The child (``_child.py``/``_trial.py``) is stdlib-only and may run on an interpreter this
package is not installed in, so it speaks plain JSON; the ``Raw*`` TypedDicts describe
that wire shape, and the ``parse_*`` functions here validate it into frozen records as it
enters the parent. Job code controls some of the text (exception messages), never the
shape: anything off-shape becomes an empty or default field, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Literal, TypedDict

    #: What one trial tried: the job module, a deferred import, an extension on its own
    #: (``classify``: again with a shared GIL), a fresh process's main interpreter, a name
    #: first-party code takes from a module, an extension in two live interpreters.
    TrialKind = Literal["job", "lazy", "extension", "classify", "main", "name", "pair"]
    TrialStatus = Literal["ok", "failed", "crash", "timeout", "missing"]

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


__all__ = [
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
