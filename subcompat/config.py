"""``[tool.subcompat]`` in the project's pyproject.toml.

[tool.subcompat]
jobs = ["myapp.jobs"]          # modules, or packages (= all their modules)
fallback = "process"           # or "thread"
degraded = "fallback"          # or "subinterpreter"
timeout = 30                   # seconds: the wall-clock budget of one target's whole probe
memory = 4096                  # MiB of address space per probe worker (0: no limit)
assume_incompatible = [{module = "legacy_ext", reason = "segfaults under load"}]
ignore = [{module = "psycopg_binary.pq", reason = "pure-Python psycopg is fine here"}]
cache = "postgresql://db/app"  # a verdict store shared by a fleet (the local cache stays under it)
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from subcompat.probe import DEFAULT_MEMORY_MB, memory_problem, timeout_problem
from subcompat.verdict import COMPATIBLE, DEGRADED, INCOMPATIBLE, Culprit, Verdict

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any


class ConfigError(Exception):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


@dataclass(frozen=True)
class Override:
    module: str
    reason: str

    def matches(self, module: str) -> bool:
        return module == self.module or module.startswith(self.module + ".")


@dataclass(frozen=True)
class Config:
    path: str | None = None
    jobs: tuple[str, ...] = ()
    fallback: str = "process"
    degraded: str = "fallback"
    timeout: float = 30.0
    memory: int = DEFAULT_MEMORY_MB
    assume_incompatible: tuple[Override, ...] = ()
    ignore: tuple[Override, ...] = ()
    cache: str | None = None


_KEYS = {"jobs", "fallback", "degraded", "timeout", "memory", "assume_incompatible", "ignore", "cache"}


def is_target_name(text: str) -> bool:
    """``dotted.module``, ``dotted.module:function`` or ``dotted.module:Class.method``,
    identifiers as Python defines them (``ñame`` is one); nothing else, not even a trailing
    newline."""
    if len(text) > MAX_TARGET_LEN:  # before splitting: a 100 KB name is not a module
        return False
    module, _, function = text.partition(":")
    parts = module.split(".") + (function.split(".") if ":" in text else [])
    return all(part.isidentifier() for part in parts)


MAX_CONFIG_BYTES = 16 << 20
MAX_NESTING = 64  # arrays and inline tables inside each other; tomllib recurses on each
MAX_TARGET_LEN = 1000  # characters of one target name


def nesting(text: str) -> int:
    """The deepest nesting of ``[``/``{`` outside strings and comments: bounded before the
    TOML parser sees it (it recurses once per level)."""
    import re

    bare = re.sub(r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*', "", text)
    depth = deepest = 0
    for ch in re.findall(r"[\[\]{}]", bare):
        depth = depth + 1 if ch in "[{" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def project_root(path: str | None, config: Config) -> tuple[Path, str]:
    """Where targets are imported from, and why there: ``--path``, else the directory of
    the pyproject.toml the config came from (run from a subdirectory, imports still
    resolve as from the project root), else the current directory."""
    if path is not None:
        return Path(path).resolve(), "--path"
    if config.path is not None:
        return Path(config.path).parent.resolve(), f"holds {Path(config.path).name}"
    return Path.cwd().resolve(), "the current directory"


def module_for_file(file: Path) -> tuple[str, Path]:
    """A source file as a dotted module name and the directory it is imported from: the
    parent of its outermost package (a directory with ``__init__.py``)."""
    file = file.resolve()
    parts = [file.stem] if file.name != "__init__.py" else []
    directory = file.parent
    while (directory / "__init__.py").is_file() and directory.parent != directory:
        parts.insert(0, directory.name)
        directory = directory.parent
    return ".".join(parts), directory


def where_is(top: str, root: Path, elsewhere: Sequence[Path] = ()) -> Path | None:
    """A directory (one level below ``root``, or one of ``elsewhere``) that holds the
    top-level module ``top``: where a target that failed to import actually lives."""
    candidates = [*elsewhere, *_subdirectories(root)]
    for directory in candidates:
        if (directory / top).is_dir() or (directory / f"{top}.py").is_file():
            return directory
    return None


_SUBDIRS: dict[Path, list[Path]] = {}


def _subdirectories(root: Path) -> list[Path]:
    """``root``'s first 200 visible subdirectories, listed once per process (a run with
    thousands of unimportable targets asks for each)."""
    if root not in _SUBDIRS:
        try:
            _SUBDIRS[root] = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))[
                :200
            ]
        except OSError:
            _SUBDIRS[root] = []
    return _SUBDIRS[root]


def find_pyproject(start: Path | None = None) -> Path | None:
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def may_configure(raw: bytes) -> bool:
    """False only when ``raw`` certainly holds no ``tool.subcompat`` (as a table, a dotted
    key, or a key of ``[tool]``); anything unclear is left to the TOML parser."""
    if b"subcompat" not in raw:
        return False
    table = b""
    for line in raw.splitlines():
        text = line.strip()
        if text.startswith(b"["):
            end = text.find(b"]")
            table = _bare(text[1:end] if end > 0 else text[1:]).lstrip(b"[")
            if table == b"tool.subcompat" or table.startswith(b"tool.subcompat."):
                return True
            continue
        key = _bare(text.split(b"=", 1)[0])
        full = table + b"." + key if table else key
        if full == b"tool.subcompat" or full.startswith(b"tool.subcompat."):
            return True
        if full == b"tool" and b"subcompat" in text:  # tool = { subcompat = {...} }
            return True
    return False


def _bare(key: bytes) -> bytes:
    return key.replace(b" ", b"").replace(b"\t", b"").replace(b'"', b"").replace(b"'", b"")


def load(start: Path | None = None) -> Config:
    """The nearest pyproject.toml's ``[tool.subcompat]``; defaults if there is none."""
    path = find_pyproject(start)
    if path is None:
        return Config()
    from subcompat._bounded import Refused, read_regular

    try:
        raw, _ = read_regular(str(path), MAX_CONFIG_BYTES)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read ({exc.strerror or exc})") from None
    except Refused as exc:
        raise ConfigError(str(path), f"cannot read ({exc})") from None
    if not may_configure(raw):  # skip the TOML parser (and typing): ~6 ms of every start-up
        return Config(path=str(path))
    import tomllib

    try:
        text = raw.decode("utf-8")
        depth = nesting(text)
        if depth > MAX_NESTING:
            raise ConfigError(
                str(path), f"invalid TOML (arrays or tables nested {depth} deep, more than {MAX_NESTING})"
            )
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"invalid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(str(path), "invalid TOML (nested too deeply)") from None
    table = data.get("tool", {}).get("subcompat")
    if table is None:
        return Config(path=str(path))
    return parse(table, str(path))


def parse(table: Any, path: str | None = None) -> Config:
    prefix = "tool.subcompat"
    if not isinstance(table, dict):
        raise ConfigError(prefix, "must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{prefix}.{unknown[0]}", f"unknown key (valid: {', '.join(sorted(_KEYS))})")
    jobs = table.get("jobs", [])
    if not isinstance(jobs, list) or not all(isinstance(j, str) and j for j in jobs):
        raise ConfigError(f"{prefix}.jobs", "must be a list of module or package names")
    fallback = table.get("fallback", "process")
    if fallback not in ("process", "thread"):
        raise ConfigError(f"{prefix}.fallback", f"must be 'process' or 'thread', not {fallback!r}")
    degraded = table.get("degraded", "fallback")
    if degraded not in ("fallback", "subinterpreter"):
        raise ConfigError(f"{prefix}.degraded", f"must be 'fallback' or 'subinterpreter', not {degraded!r}")
    timeout = table.get("timeout", 30.0)
    problem = timeout_problem(timeout)
    if problem:
        raise ConfigError(f"{prefix}.timeout", problem)
    memory = table.get("memory", DEFAULT_MEMORY_MB)
    problem = memory_problem(memory)
    if problem:
        raise ConfigError(f"{prefix}.memory", problem)
    cache = table.get("cache")
    if cache is not None and not (
        isinstance(cache, str) and cache.startswith(("postgresql://", "postgres://"))
    ):
        raise ConfigError(f"{prefix}.cache", f"must be a postgresql:// URL, not {cache!r:.60}")
    return Config(
        path=path,
        cache=cache,
        jobs=tuple(jobs),
        fallback=fallback,
        degraded=degraded,
        timeout=float(timeout),
        memory=memory,
        assume_incompatible=_overrides(table, "assume_incompatible"),
        ignore=_overrides(table, "ignore"),
    )


def _overrides(table: dict[str, Any], key: str) -> tuple[Override, ...]:
    entries = table.get(key, [])
    if not isinstance(entries, list):
        raise ConfigError(f"tool.subcompat.{key}", "must be a list of {module = ..., reason = ...} tables")
    out = []
    for i, entry in enumerate(entries):
        where = f"tool.subcompat.{key}[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("module"), str) or not entry["module"]:
            raise ConfigError(where, 'needs a module name: {module = "name", reason = "why"}')
        reason = entry.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(where, f"a reason is required for {entry['module']!r}")
        extra = sorted(set(entry) - {"module", "reason"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}", "unknown key (valid: module, reason)")
        out.append(Override(entry["module"], reason.strip()))
    return tuple(out)


def expand_jobs(jobs: Iterable[str], search_path: Sequence[str] | None = None) -> list[str]:
    """Packages become all their modules. Found on disk, never imported: listing jobs
    must not run the user's code in this process."""
    path = list(search_path) if search_path is not None else [os.getcwd(), *sys.path[1:]]
    out: list[str] = []
    for name in jobs:
        if ":" in name:  # module:function names one job
            out.append(name)
            continue
        spec = _find(name, path)
        if spec is None:
            out.append(name)  # the probe will report it as an error with its real message
            continue
        out.append(name)
        if spec.submodule_search_locations is not None:
            out.extend(_walk(name, list(spec.submodule_search_locations)))
    return list(dict.fromkeys(out))


def _find(name: str, path: list[str]) -> importlib.machinery.ModuleSpec | None:
    spec = None
    locations: list[str] | None = path
    parts = name.split(".")
    for i in range(len(parts)):
        if locations is None:
            return None
        name = ".".join(parts[: i + 1])
        try:
            spec = importlib.machinery.PathFinder.find_spec(name, locations)
        except KeyError:  # a namespace package inside a namespace package that is not imported
            spec = _namespace(name, locations)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations) if spec.submodule_search_locations else None
    return spec


def _namespace(name: str, locations: list[str]) -> importlib.machinery.ModuleSpec | None:
    """A PEP 420 portion found without importing its parent (as ``PathFinder`` would)."""
    last = name.rpartition(".")[2]
    portions = [os.path.join(loc, last) for loc in locations if os.path.isdir(os.path.join(loc, last))]
    if not portions:
        return None
    spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
    spec.submodule_search_locations = portions
    return spec


def _walk(package: str, locations: list[str]) -> list[str]:
    found = []
    import pkgutil  # imports typing: only when a package is expanded

    listed = {info.name: info.ispkg for info in pkgutil.iter_modules(locations)}
    if not any(os.path.exists(os.path.join(loc, "__init__.py")) for loc in locations):
        # inside a namespace package, its sub-directories are its packages; inside a regular
        # one a directory without __init__.py is data or tests by convention (numpy's
        # _core/tests): not listed, as pkgutil does not
        for sub in _namespace_portions(locations):
            listed.setdefault(sub, True)
    for sub, is_package in sorted(listed.items()):
        name = f"{package}.{sub}"
        found.append(name)
        if is_package:
            found.extend(_walk(name, [os.path.join(loc, sub) for loc in locations]))
    return found


def _namespace_portions(locations: list[str]) -> list[str]:
    """Directories without ``__init__.py`` that hold Python modules: PEP 420 packages,
    importable, which ``pkgutil`` does not list (a directory of data files is not one)."""
    out = []
    for loc in locations:
        try:
            entries = list(os.scandir(loc))
        except OSError:
            continue
        for entry in entries:
            if not entry.name.isidentifier() or not entry.is_dir(follow_symlinks=False):
                continue
            if os.path.exists(os.path.join(entry.path, "__init__.py")):
                continue  # a regular package: pkgutil lists it
            try:
                names = os.listdir(entry.path)
            except OSError:
                continue
            if any(n.endswith(".py") and n[:-3].isidentifier() for n in names):
                out.append(entry.name)
    return out


def apply_overrides(verdicts: Iterable[Verdict], config: Config) -> list[Verdict]:
    """``ignore`` accepts a known culprit; ``assume_incompatible`` forces the fallback."""
    out = []
    for v in verdicts:
        notes = list(v.notes)
        culprits = [c for c in v.culprits if not _hit(config.ignore, c.module, notes)]
        degraded = [c for c in v.degraded if not _hit(config.ignore, c.module, notes)]
        verdict = v.verdict
        if verdict == INCOMPATIBLE and not culprits and v.culprits:
            verdict = DEGRADED if degraded else COMPATIBLE
        if verdict == DEGRADED and not degraded and v.degraded:
            verdict = COMPATIBLE
        tree = _tree(v)
        for rule in config.assume_incompatible:
            hits = sorted(m for m in tree if rule.matches(m))
            if hits:
                culprits.append(
                    Culprit(hits[0], None, None, None, f"assumed incompatible by config: {rule.reason}")
                )
                if verdict in (COMPATIBLE, DEGRADED):
                    verdict = INCOMPATIBLE
        if verdict != v.verdict or notes != list(v.notes) or len(culprits) != len(v.culprits):
            reason = v.reason if verdict == v.verdict else f"{v.reason} (overridden by config)"
            v = dataclasses.replace(
                v,
                verdict=verdict,
                reason=reason,
                culprits=tuple(culprits),
                degraded=tuple(degraded),
                notes=tuple(notes),
            )
        out.append(v)
    return out


def inert_rules(verdicts: Iterable[Verdict], config: Config, search_path: Sequence[str]) -> list[str]:
    """``assume_incompatible`` rules that cannot act: they name a pure-Python module, and a
    rule only sees job modules, extensions and culprits (a run that never imports a module
    is not worth a warning; a rule that can never match is)."""
    seen = [m for v in verdicts for m in _tree(v)]
    out = []
    for rule in config.assume_incompatible:
        if any(rule.matches(m) for m in seen):
            continue
        spec = _find(rule.module, list(search_path))
        if spec is not None and (spec.origin or "").endswith(".py"):
            out.append(
                f"assume_incompatible: {rule.module!r} is pure Python, so the rule matched nothing: it "
                "applies to extension modules and job modules; name the job module that imports it instead"
            )
    return out


def _tree(v: Verdict) -> set[str]:
    named = {c.module for c in (*v.culprits, *v.degraded)}
    return {e.module for e in v.extensions} | named | {v.target.partition(":")[0]}


def _hit(rules: Sequence[Override], module: str, notes: list[str]) -> bool:
    for rule in rules:
        if rule.matches(module):
            notes.append(f"ignored culprit {module}: {rule.reason}")
            return True
    return False
