"""Stage 3, verdict: turn what the probe saw into one answer per target, with culprits.

The bar: a target is ``compatible`` only if its job module and every deferred import
its source makes loaded in fresh isolated sub-interpreters with no extension failing on
the way. Everything else names why.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import struct
from dataclasses import dataclass

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

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any, BinaryIO

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

_SHORT_NAME = re.compile(r"module (?P<name>[\w.]+) does not support loading in subinterpreters")
# Markers compiled into extension binaries by the usual toolchains.
_TOOLCHAINS = (
    (b"pyo3", "PyO3"),
    (b"__pyx_", "Cython"),
    (b"CPyStatics", "mypyc"),
    (b"pybind11", "pybind11"),
    (b"nanobind", "nanobind"),
)


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
    transient: str = ""  # why this verdict is not a fact about the module (never cached)

    @property
    def ok(self) -> bool:
        return self.verdict == COMPATIBLE

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
    def from_json(cls, data: dict[str, Any]) -> Verdict:
        return cls(
            target=data["target"],
            verdict=data["verdict"],
            python=data.get("python", ""),
            reason=data.get("reason", ""),
            culprits=tuple(Culprit.from_json(c) for c in data.get("culprits", ())),
            degraded=tuple(Culprit.from_json(c) for c in data.get("degraded", ())),
            notes=tuple(data.get("notes", ())),
            warnings=tuple(data.get("warnings", ())),
            files=tuple(data.get("files", ())),
            dist_stamps=tuple(data.get("dist_stamps", ())),
            extensions=tuple(ExtensionVerdict.from_json(e) for e in data.get("extensions", ())),
            elapsed_s=float(data.get("elapsed_s", 0.0)),
            cached=bool(data.get("cached", False)),
            transient=str(data.get("transient") or ""),
        )


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


def toolchain_of(file: str | None, limit: int = 64 << 20) -> str | None:
    """Which toolchain built an extension binary, from the markers it leaves."""
    if not file:
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    return _toolchain_of(file, st.st_size, st.st_mtime_ns, limit)


@functools.lru_cache(maxsize=256)
def _toolchain_of(file: str, size: int, mtime_ns: int, limit: int) -> str | None:
    """Once per file version and run. In an ELF binary only the sections that hold strings
    and symbol names are read (a tenth of the bytes; same answer on the 514 extension
    binaries of this machine); anything else is read whole, up to ``limit``."""
    found: set[bytes] = set()
    try:
        with open(file, "rb") as fh:
            spans = _elf_string_sections(fh)
            if spans is None:
                fh.seek(0)
                spans = [(0, min(size, limit))]
            for offset, length in spans:
                fh.seek(offset)
                data = fh.read(min(length, limit))
                found.update(marker for marker, _ in _TOOLCHAINS if marker in data)
    except (OSError, ValueError, struct.error):
        return None
    # priority order: PyO3 binaries may contain "pybind11" strings, not vice versa
    return next((name for marker, name in _TOOLCHAINS if marker in found), None)


_STRING_SECTIONS = (".rodata", ".dynstr", ".strtab", ".comment", ".data")  # .data.rel.ro too


def _elf_string_sections(fh: BinaryIO) -> list[tuple[int, int]] | None:
    """(offset, size) of the sections where toolchain names end up, or None if not ELF."""
    head = fh.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
        return None
    end = "<" if head[5] == 1 else ">"
    if head[4] == 2:
        (shoff,) = struct.unpack_from(end + "Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x3A)
        fmt = end + "IIQQQQ"
    else:
        (shoff,) = struct.unpack_from(end + "I", head, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x2E)
        fmt = end + "IIIIII"
    if not shnum or shstrndx >= shnum:
        return None
    fh.seek(shoff)
    table = fh.read(shentsize * shnum)
    # name offset, type, flags, address, file offset, size
    headers = [struct.unpack_from(fmt, table, i * shentsize) for i in range(shnum)]
    fh.seek(headers[shstrndx][4])
    names = fh.read(headers[shstrndx][5])
    spans = []
    for name_at, kind, _, _, offset, length in headers:
        name = names[name_at : names.find(b"\0", name_at)].decode("ascii", "replace")
        if kind != 8 and name.startswith(_STRING_SECTIONS):  # 8: SHT_NOBITS (.bss), nothing on disk
            spans.append((offset, length))
    return spans or None


def explain(
    error: dict[str, Any] | None, shared_gil: bool | None, toolchain: str | None
) -> tuple[str, str | None]:
    """(reason, kind) for an extension that failed to load in a sub-interpreter."""
    msg = (error or {}).get("msg", "")
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
    return (f"{error.get('type', 'Error')}: {msg}" if error else "failed to load"), None


def decide(result: ProbeResult) -> Verdict:
    interp = result.interpreter
    tree = result.tree
    files = _dependency_files(tree)
    stamps = tuple(sorted({m.dist_stamp for m in tree.modules if m.dist_stamp}))
    base = dict(
        target=result.target,
        python=interp.python,
        files=files,
        dist_stamps=stamps,
        elapsed_s=result.elapsed_s,
    )
    if interp.unsupported:
        return Verdict(verdict=UNSUPPORTED, reason=interp.unsupported, **base)

    module, function = split_target(result.target)
    job = _first(result.trials, "job")
    main = next((t for t in result.trials if t.kind == "main" and t.candidate == module), None)
    exts = {t.candidate: t for t in result.trials if t.kind == "extension"}
    notes: list[str] = []
    warnings: list[str] = []
    errors: list[str] = []  # broken in any interpreter, or the probe could not finish
    unfinished: list[str] = []  # the budget ran out first
    culprits: dict[str, Culprit] = {}
    degraded: dict[str, Culprit] = {}
    worst = COMPATIBLE
    reason = ""

    def worse(v: str, why: str) -> None:
        nonlocal worst, reason
        if SEVERITY[v] > SEVERITY[worst]:
            worst, reason = v, why

    def culprit_from(
        name: str, file: str | None, error: dict[str, Any] | None, status: str, shared_gil: bool | None = None
    ) -> Culprit:
        ext = exts.get(name)
        if shared_gil is None and ext is not None:
            shared_gil = ext.shared_gil
        info = _lookup(tree, name, file)
        tc = toolchain_of(file or (info.file if info else None))
        if status == CRASH:
            why, kind = (
                f"crashed the interpreter while loading in a sub-interpreter ({_msg(error)})",
                None,
            )
        elif status == TIMEOUT:
            why, kind = f"did not finish loading in a sub-interpreter ({_msg(error)})", None
        else:
            why, kind = explain(error, shared_gil, tc)
        chain = tuple(tree.chain(name)) if info else ()
        edge = _first_party_edge(tree, name)
        return Culprit(
            module=name,
            file=file or (info.file if info else None),
            distribution=info.distribution if info else None,
            version=info.version if info else None,
            reason=why,
            status=status,
            kind=kind,
            toolchain=tc,
            chain=chain,
            import_file=edge.file if edge else None,
            import_line=edge.line if edge else None,
        )

    def add(c: Culprit) -> None:
        prev = culprits.get(c.module)
        if prev is None or SEVERITY[c.status] > SEVERITY[prev.status]:
            culprits[c.module] = c

    # crashes and hangs, wherever they happened; blamed on sub-interpreters only when a
    # main interpreter got through the same import
    main_lost = {
        t.candidate: t
        for t in result.trials
        if t.kind == "main" and t.status in (CRASH, TIMEOUT) and (t.error or {}).get("type") != "budget"
    }
    for t in result.trials:
        if t.status not in (CRASH, TIMEOUT):
            continue
        kind = (t.error or {}).get("type")
        if kind == "budget":
            unfinished.append(f"{_msg(t.error)} before {t.candidate} was checked")
            continue
        if kind == PROBE_FAILURE:
            errors.append(_msg(t.error))
            continue
        if t.kind == "pair":  # one interpreter got through: below
            continue
        crumb = t.culprit or {}
        name = crumb.get("name") or crumb.get("candidate") or t.candidate
        file = crumb.get("file") or t.file
        same = main_lost.get(blame_key(t, module))
        if t.kind == "main" or same is not None:
            errors.append(_everywhere(same or t, name))
            continue
        add(culprit_from(name, file, t.error, t.status))
        worse(t.status, f"{name}: {t.error.get('msg') if t.error else t.status}")

    # a job whose import stopped on a C-only name: the name is the culprit, the
    # extensions its package skipped on the way are degraded (below)
    on_a_name = any(
        t.kind == "name" and t.status == "failed" and (t.error or {}).get("at_import") for t in result.trials
    )

    # the job module itself
    if job is not None and job.status == "failed":
        if main is not None and main.status == "failed":
            msg = _limit_reason(main.error, result) or _short_error(main.error)
            worse(ERROR, f"fails in the main interpreter too, so this is a bug in the module: {msg}")
        elif main is not None and main.status in (CRASH, TIMEOUT):
            pass  # counted above
        else:
            for f in () if on_a_name else job.failures:
                add(culprit_from(f["name"], f.get("file"), f, INCOMPATIBLE))
            why = _short_error(job.error)
            if not job.failures and not on_a_name:  # failed without an extension failing: use the message
                name = _map_short_name(tree, job.error)
                if name:
                    add(culprit_from(name, None, job.error, INCOMPATIBLE))
            worse(INCOMPATIBLE, why)

    # deferred imports
    for t in result.trials:
        if t.kind != "lazy" or t.status in ("ok",):
            continue
        if t.status == "missing" and t.edge is not None and t.edge.optional:
            notes.append(f"optional deferred import {t.candidate} is not installed ({_short_error(t.error)})")
            continue
        if t.status == "missing":
            warnings.append(
                f"missing dependency: deferred import {t.candidate} is not installed in this environment "
                f"({_short_error(t.error)}): the job fails when it reaches it"
            )
            continue
        if t.status != "failed":
            continue
        if t.failures:
            for f in t.failures:
                add(
                    dataclasses.replace(
                        culprit_from(f["name"], f.get("file"), f, INCOMPATIBLE),
                        import_file=t.edge.file if t.edge else None,
                        import_line=t.edge.line if t.edge else None,
                    )
                )
            worse(INCOMPATIBLE, f"deferred import {t.candidate}: {_short_error(t.error)}")
            continue
        everywhere = next((m for m in result.trials if m.kind == "main" and m.candidate == t.candidate), None)
        if everywhere is not None and everywhere.status == "failed":
            why = _limit_reason(everywhere.error, result) or _short_error(everywhere.error)
            errors.append(f"deferred import {t.candidate} fails in a main interpreter too: {why}")
            continue
        add(
            Culprit(
                t.candidate,
                None,
                None,
                None,
                _short_error(t.error),
                INCOMPATIBLE,
                import_file=t.edge.file if t.edge else None,
                import_line=t.edge.line if t.edge else None,
            )
        )
        worse(INCOMPATIBLE, f"deferred import {t.candidate}: {_short_error(t.error)}")

    # extensions the hook saw fail while the import still succeeded
    for t in result.trials:
        if t.kind not in ("job", "lazy") or (t.status != "ok" and not (t.kind == "job" and on_a_name)):
            continue
        for f in t.failures:
            name = f["name"]
            if name in culprits:
                continue
            if name in result.loaded:
                c = culprit_from(name, f.get("file"), f, INCOMPATIBLE)
                add(
                    dataclasses.replace(
                        c,
                        reason=(
                            "failed, then loaded on a retry in the same interpreter (CPython gh-104621); "
                            "not safe: " + c.reason
                        ),
                    )
                )
                worse(INCOMPATIBLE, f"{name} loaded only on retry after failing")
            elif SUBINTERP_MESSAGE in f["msg"] or _loads_in_main(result, name):
                c = culprit_from(name, f.get("file"), f, DEGRADED)
                if t.edge is not None:  # reached through a deferred import: point at it
                    c = dataclasses.replace(c, import_file=t.edge.file, import_line=t.edge.line)
                degraded[name] = dataclasses.replace(c, reason=SKIPPED + c.reason)
                worse(DEGRADED, f"{name} skipped in the sub-interpreter; slower pure-Python fallback")

    # accelerators the same import loads in a main interpreter and the sub-interpreter
    # never tried (the package checked for one first, or fell back wholesale)
    for name in sorted(result.skipped - culprits.keys() - degraded.keys()):
        degraded[name] = _never_tried(name, result, exts.get(name))
        worse(DEGRADED, f"{name} skipped in the sub-interpreter; slower pure-Python fallback")

    # names first-party code takes from a module, there in a main interpreter only
    for t in result.trials:
        if t.kind == "name" and t.status == "failed":
            add(_name_culprit(t, result, degraded, exts))
            where = f"{os.path.basename(t.edge.file or '?')}:{t.edge.line}" if t.edge else "?"
            worse(INCOMPATIBLE, f"{t.candidate} does not exist in a sub-interpreter (used at {where})")

    # extensions that misbehave once two live interpreters use them, as a pool does
    for t in result.trials:
        if t.kind == "pair" and t.status not in ("ok", "missing") and (t.error or {}).get("type") != "budget":
            add(_pair_culprit(t, tree))
            worse(INCOMPATIBLE, f"{t.candidate} {_msg(t.error)}")

    # extensions of the tree loaded on their own
    for name, t in exts.items():
        if t.status == "failed" and name not in degraded and worst not in (COMPATIBLE, DEGRADED):
            add(culprit_from(name, t.file, t.error, INCOMPATIBLE, t.shared_gil))

    ext_verdicts = _extension_verdicts(result, exts, culprits, degraded)
    if errors and worst not in (CRASH, TIMEOUT, INCOMPATIBLE):
        worst, reason = ERROR, "; ".join(dict.fromkeys(errors))
    elif unfinished and worst in (COMPATIBLE, DEGRADED):  # nothing found, but not all was seen
        worst, reason = TIMEOUT, unfinished[0]
    if worst == COMPATIBLE:
        reason = "imports in a fresh isolated sub-interpreter"
        if any(t.kind == "lazy" and t.status == "ok" for t in result.trials):
            reason += " (deferred imports included)"
    return Verdict(
        verdict=worst,
        reason=reason,
        culprits=tuple(sorted(culprits.values(), key=lambda c: c.module)),
        degraded=tuple(sorted(degraded.values(), key=lambda c: c.module)),
        notes=tuple(notes),
        warnings=tuple(warnings),
        extensions=ext_verdicts,
        transient=result.transient or "",
        **base,
    )


def _never_tried(name: str, result: ProbeResult, alone: Trial | None) -> Culprit:
    """An accelerator a main interpreter loads and the package never tried in the
    sub-interpreter; loaded on its own (``alone``), it says whether it could have."""
    tree = result.tree
    info = _lookup(tree, name, None)
    file = info.file if info else None
    toolchain = toolchain_of(file)
    why = "never tried in the sub-interpreter, though the same import loads it in a main interpreter"
    kind = "never-tried"
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
    shared = (t.error or {}).get("type") == "shared"
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
    error = (t.error or {}).get("type", "AttributeError")
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

    failed = [f["name"] for t in result.trials for f in t.failures]
    failed += [name for name, t in exts.items() if t.status != "ok"]
    return next((n for n in [*sorted(degraded), *failed] if ours(n)), None)


def _failed_alone(t: Trial | None) -> bool:
    return t is not None and t.status == "failed"


def _everywhere(t: Trial, name: str) -> str:
    """The reason for a crash or hang that a main interpreter shares."""
    what = "hangs" if t.status == TIMEOUT else "crashes"
    return (
        f"{what} in a main interpreter too, while loading {name} ({_msg(t.error)}): "
        "a bug in the module, not a sub-interpreter problem"
    )


def _limit_reason(error: dict[str, Any] | None, result: ProbeResult) -> str | None:
    """A MemoryError under the probe's address-space limit names the limit."""
    if not is_memory_error(error):
        return None
    limit = result.limits.get("memory_mb")
    where = (error or {}).get("where") or "the import"
    if limit:
        return f"exceeds the memory limit ({limit:g} MiB, --memory) at {where}"
    return f"MemoryError at {where}"


def _first(trials: tuple[Trial, ...], kind: str) -> Trial | None:
    return next((t for t in trials if t.kind == kind), None)


def _lookup(tree: ModuleTree, name: str, file: str | None) -> ModuleInfo | None:
    for m in tree.modules:
        if m.name == name or (file and m.file == file):
            return m
    return None


def _first_party_edge(tree: ModuleTree, name: str) -> Edge | None:
    """The import statement in the user's own code that leads to ``name``."""
    chain = tree.chain(name)
    first_party = {m.name for m in tree.first_party}
    for mod in reversed(chain):
        edge = tree.edges.get(mod)
        if edge and edge.importer in first_party | {tree.root}:
            return edge
    return tree.edges.get(name)


def short_name(message: str) -> str | None:
    """The module CPython names in its sub-interpreter ImportError, if any."""
    m = _SHORT_NAME.search(message)
    return m.group("name") if m else None


def _map_short_name(tree: ModuleTree, error: dict[str, Any] | None) -> str | None:
    """CPython names a module by its short name; find the dotted extension it means."""
    for link in (error or {}).get("chain", []) or [error or {}]:
        m = _SHORT_NAME.search(link.get("msg", ""))
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


def _msg(error: dict[str, Any] | None) -> str:
    return (error or {}).get("msg", "")


def _short_error(error: dict[str, Any] | None) -> str:
    if not error:
        return "failed"
    return f"{error.get('type', 'Error')}: {error.get('msg', '')}"


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
        if c is not None and info.name in result.skipped and not _failed_alone(exts.get(info.name)):
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
                ((ext.error or {}).get("msg", "") if ext else "") or c.reason,
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
