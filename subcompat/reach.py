"""Stage 1, static half (parent side): which deferred imports a target can reach, and
what guards each one.

The child's scan (``discover.scan_source``) says *that* first-party code defers an
import; this module says whether the target's own code can get there and whether the
code already copes when it fails. One parse per first-party file gives, for every
import site: the unit it sits in (a top-level function, or a class with all its
methods), the ``try`` blocks around it and what their handlers catch, and whether an
``if`` on the platform or the Python version gates it; and for every unit, the names
it refers to.

What it resolves: names bound in the module (``def``, ``class``), ``import a.b`` and
``from x import y`` of first-party modules (re-exports followed), attribute chains read
from those (``mod.func``, ``pkg.sub.Class``), imports inside function bodies, a PEP 562
``__getattr__`` reached through a name its module does not bind, and the module-level
code of every module an import runs. A reached class reaches all its methods
(``self.x()`` is dynamic dispatch inside the class). What it cannot see: calls through
objects whose type comes from elsewhere (``obj.method()``, a registry, a callback handed
in by a caller), ``getattr`` with a computed string, ``eval``. There it errs towards
*not reached*: such an import is still reported, as a note that names where it is,
never silently dropped. Stdlib only, no typing at run time (as ``discover``).
"""

from __future__ import annotations

import ast
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from subcompat.discover import import_module_name, resolve_relative

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Facts", "Guard", "ImportSite", "Reach", "catches"]

#: a handler that catches every exception a failing import raises
_EVERYTHING = frozenset({"*", "BaseException"})
_IMPORT_ERRORS = frozenset({"ImportError", "ModuleNotFoundError"})
_NOT_EXCEPTION = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit"})

#: words that name a platform, in identifiers (``WINDOWS``, ``IS_WIN32``, ``_win32_console``)
_PLATFORM_WORDS = frozenset(
    {
        "win", "win32", "win64", "windows", "nt", "msvc", "mswindows", "cygwin", "msys",
        "darwin", "macos", "osx", "mac", "ios", "android", "wasi", "emscripten", "wasm",
        "linux", "posix", "aix", "solaris", "sunos", "freebsd", "openbsd", "netbsd", "java", "jython",
    }
)  # fmt: skip
_PLATFORM_ATTRS = frozenset({"platform", "system", "getwindowsversion", "win32_ver", "mac_ver"})
_VERSION_ATTRS = frozenset({"version_info", "hexversion", "PY2", "PY3", "PY310", "PY311", "PY312"})
_WORD = re.compile(r"[A-Z]?[a-z]+\d*|[A-Z]+\d*(?![a-z])|\d+")


def _here_words() -> frozenset[str]:
    """This platform's own words: a module for *this* platform that is missing is missing."""
    words = {sys.platform, os.name}
    if sys.platform.startswith("linux"):
        words |= {"linux", "posix"}
    elif sys.platform == "darwin":
        words |= {"darwin", "mac", "macos", "osx", "posix"}
    elif sys.platform in ("win32", "cygwin"):
        words |= {"win", "win32", "win64", "windows", "nt", "mswindows"}
    return frozenset(words)


def _words(name: str) -> set[str]:
    return {w.lower() for part in re.split(r"[._]", name) for w in _WORD.findall(part)} | {
        p.lower() for p in re.split(r"[._]", name) if p
    }


def other_platform(names: Iterable[str]) -> bool:
    """Any of ``names`` (identifiers, dotted module names) names a platform but this one."""
    here = _here_words()
    return any((_words(n) & _PLATFORM_WORDS) - here for n in names)


@dataclass(frozen=True)
class Guard:
    """A ``try`` (or ``contextlib.suppress``) around an import: where, and what it catches
    (``*`` for a bare ``except``)."""

    line: int
    catches: tuple[str, ...]


def catches(guards: Iterable[Guard], error_type: str) -> Guard | None:
    """The innermost guard whose handlers catch ``error_type`` (ModuleNotFoundError
    catches only itself; ImportError catches both; Exception all but the exits)."""
    for g in guards:
        names = set(g.catches)
        if names & _EVERYTHING or error_type in names:
            return g
        if "Exception" in names and error_type not in _NOT_EXCEPTION:
            return g
        if "ImportError" in names and error_type in _IMPORT_ERRORS:
            return g
    return None


@dataclass(frozen=True)
class Facts:
    """What an ``if`` on the version or the platform reads, for the target interpreter
    (it runs on this machine: the platform is this one's)."""

    version: tuple[int, int, int]
    platform: str = sys.platform
    os_name: str = os.name

    @classmethod
    def here(cls) -> Facts:
        return cls((sys.version_info[0], sys.version_info[1], sys.version_info[2]))

    @classmethod
    def of(cls, python: str) -> Facts:
        """From ``Interpreter.python`` ("3.14.10"); this interpreter's when unreadable."""
        parts = python.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            return cls((int(parts[0]), int(parts[1]), int(parts[2])))
        return cls.here()


_UNKNOWN = object()
_NOT_A_FLAG = ast.Name(id="")  # a name bound more than once, or conditionally: never a fact
_SYSTEMS = {
    "linux": "Linux",
    "darwin": "Darwin",
    "win32": "Windows",
    "cygwin": "CYGWIN",
    "emscripten": "Emscripten",
}
_COMPARE: dict[type[ast.cmpop], Any] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def _static(
    node: ast.expr,
    facts: Facts,
    flags: Mapping[str, ast.expr],
    bindings: Mapping[str, Binding],
    depth: int = 0,
) -> object:
    """The value of a test built from ``sys.version_info``, ``sys.platform``, ``os.name``,
    ``platform.system()``, literals and module-level flags of those, on the target; or
    ``_UNKNOWN`` for anything else (then the import counts as reachable)."""
    if depth > 8:
        return _UNKNOWN

    def value(sub: ast.expr) -> object:
        return _static(sub, facts, flags, bindings, depth + 1)

    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        items = [value(e) for e in node.elts]
        return _UNKNOWN if any(i is _UNKNOWN for i in items) else tuple(items)
    if isinstance(node, ast.Name):
        binding = bindings.get(node.id)
        if binding is not None and binding[0] == "from" and binding[1] in ("sys", "os"):
            return _fact((binding[1], binding[2]), facts)
        return value(flags[node.id]) if node.id in flags and binding is None else _UNKNOWN
    if isinstance(node, ast.Attribute):
        chain = _chain(node)
        return _fact(chain, facts) if chain else _UNKNOWN
    if isinstance(node, ast.Subscript):
        base, part = value(node.value), node.slice
        if not isinstance(base, tuple):
            return _UNKNOWN
        if isinstance(part, ast.Slice):
            lower, upper = (value(p) if p is not None else None for p in (part.lower, part.upper))
            ok = part.step is None and all(b is None or isinstance(b, int) for b in (lower, upper))
            return base[lower:upper] if ok else _UNKNOWN  # type: ignore[index]
        index = value(part)
        return base[index] if isinstance(index, int) and -len(base) <= index < len(base) else _UNKNOWN
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = value(node.operand)
        return _UNKNOWN if inner is _UNKNOWN else not inner
    if isinstance(node, ast.BoolOp):
        results = [value(v) for v in node.values]
        known = [bool(r) for r in results if r is not _UNKNOWN]
        if isinstance(node.op, ast.And):
            return False if not all(known) else (True if len(known) == len(results) else _UNKNOWN)
        return True if any(known) else (False if len(known) == len(results) else _UNKNOWN)
    if isinstance(node, ast.Compare):
        left = value(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = value(right_node)
            compare = _COMPARE.get(type(op))
            if left is _UNKNOWN or right is _UNKNOWN or compare is None:
                return _UNKNOWN
            try:
                if not compare(left, right):
                    return False
            except TypeError:
                return _UNKNOWN
            left = right
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.keywords:
        chain = _chain(node.func)
        if chain == ("platform", "system") and not node.args:
            return _SYSTEMS.get(facts.platform, _UNKNOWN)
        if node.func.attr in ("startswith", "endswith") and len(node.args) == 1:
            text, arg = value(node.func.value), value(node.args[0])
            if isinstance(text, str) and (
                isinstance(arg, str) or (isinstance(arg, tuple) and all(isinstance(a, str) for a in arg))
            ):
                return getattr(text, node.func.attr)(arg)
    return _UNKNOWN


def _fact(chain: tuple[str, ...], facts: Facts) -> object:
    version = (*facts.version, "final", 0)
    known: dict[tuple[str, ...], object] = {
        ("sys", "version_info"): version,
        ("sys", "version_info", "major"): facts.version[0],
        ("sys", "version_info", "minor"): facts.version[1],
        ("sys", "version_info", "micro"): facts.version[2],
        ("sys", "platform"): facts.platform,
        ("os", "name"): facts.os_name,
    }
    return known.get(chain, _UNKNOWN)


@dataclass(frozen=True)
class ImportSite:
    """One import statement (or literal ``import_module``/``__import__``) of first-party
    source, with its unit (``""``: module level, runs at import), its guards (innermost
    first) and the gate of an ``if`` on the platform or the version around it."""

    module: str
    fromlist: tuple[str, ...]
    importer: str
    file: str
    line: int
    unit: str = ""
    guards: tuple[Guard, ...] = ()
    gate: str | None = None  # platform | version
    tested: tuple[str, ...] = ()  # names the enclosing tests mention
    never: str | None = None  # an enclosing ``if`` that is false on the target ("sys.version_info < (3, 0)")

    @property
    def where(self) -> str:
        return f"{_short(self.file)}:{self.line}"


def _short(file: str) -> str:
    parts = file.split(os.sep)
    return os.sep.join(parts[-2:]) if len(parts) > 1 else file


Binding = tuple[str, ...]  # ("unit", name) | ("module", mod) | ("from", mod, attr)


@dataclass
class _Defs:
    """What one parse of a module yields."""

    name: str
    file: str
    units: dict[str, tuple[int, int]] = field(default_factory=dict)  # unit: (first, last line)
    refs: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)  # unit ("" too): chains
    local: dict[str, dict[str, Binding]] = field(default_factory=dict)  # unit: imports in its body
    bindings: dict[str, Binding] = field(default_factory=dict)  # module level
    sites: list[ImportSite] = field(default_factory=list)
    flags: dict[str, frozenset[str]] = field(default_factory=dict)  # NAME = <test>: names it mentions

    def unit_at(self, line: int | None) -> str:
        if line is None:
            return ""
        for unit, (first, last) in self.units.items():
            if first <= line <= last:
                return unit
        return ""


class _Walker:
    """One walk of a module's AST into ``_Defs``."""

    def __init__(self, defs: _Defs, package: str, facts: Facts) -> None:
        self.d = defs
        self.package = package
        self.facts = facts
        self.conds: list[tuple[ast.expr, bool]] = []  # enclosing if tests, and which branch
        self.flag_exprs: dict[str, ast.expr] = {}  # NAME = <test> at module level
        self.unit = ""  # the unit whose refs are collected
        self.in_func = 0  # inside a function body: imports are deferred
        self.guards: list[Guard] = []
        self.tests: list[frozenset[str]] = []

    # -- structure ----------------------------------------------------------
    def walk_body(self, body: Iterable[ast.stmt]) -> None:
        for stmt in body:
            self.stmt(stmt)

    def stmt(self, node: ast.stmt) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            self.function(node)
        elif isinstance(node, ast.ClassDef):
            self.klass(node)
        elif isinstance(node, ast.If):
            if _is_type_checking(node.test):
                self.walk_body(node.orelse)
                return
            self.expr(node.test)
            self.tests.append(self._names(node.test))
            try:
                for branch, body in ((True, node.body), (False, node.orelse)):
                    self.conds.append((node.test, branch))
                    try:
                        self.walk_body(body)
                    finally:
                        self.conds.pop()
            finally:
                self.tests.pop()
        elif isinstance(node, ast.Try | getattr(ast, "TryStar", ast.Try)):
            names = tuple(n for h in node.handlers for n in _handler_names(h.type))
            self.guards.append(Guard(node.lineno, names))
            try:
                self.walk_body(node.body)
            finally:
                self.guards.pop()
            for h in node.handlers:
                self.walk_body(h.body)
            self.walk_body(node.orelse)
            self.walk_body(node.finalbody)
        elif isinstance(node, ast.With | ast.AsyncWith):
            suppressed = tuple(n for item in node.items for n in _suppressed(item.context_expr))
            for item in node.items:
                self.expr(item.context_expr)
            if suppressed:
                self.guards.append(Guard(node.lineno, suppressed))
            try:
                self.walk_body(node.body)
            finally:
                if suppressed:
                    self.guards.pop()
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    self.bind(alias.asname, ("module", alias.name))
                else:
                    top = alias.name.partition(".")[0]
                    self.bind(top, ("module", top))
                self.site(alias.name, (), node)
        elif isinstance(node, ast.ImportFrom):
            name = resolve_relative(node.module, node.level, self.package)
            if name:
                names = tuple(a.name for a in node.names if a.name != "*")
                for alias in node.names:
                    if alias.name != "*":
                        self.bind(alias.asname or alias.name, ("from", name, alias.name))
                self.site(name, names, node)
        else:
            if isinstance(node, ast.Assign) and not self.in_func:
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.d.flags[target.id] = self._names(node.value)
                        self._flag(target.id, node.value)
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    self.stmt(child)
                elif isinstance(child, ast.expr):
                    self.expr(child)
                else:
                    for sub in ast.iter_child_nodes(child):  # handlers, match cases
                        if isinstance(sub, ast.stmt):
                            self.stmt(sub)
                        elif isinstance(sub, ast.expr):
                            self.expr(sub)

    def function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        """Decorators and defaults run where the ``def`` is; the body runs when called."""
        for dec in node.decorator_list:
            self.expr(dec)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.expr(default)
        outer = self.unit
        if not self.unit and not self.in_func:  # a top-level def: a unit of its own
            self.bind(node.name, ("unit", node.name))
            self.d.units[node.name] = (node.lineno, node.end_lineno or node.lineno)
            self.d.refs.setdefault(node.name, set())
            self.unit = node.name
        self.in_func += 1
        saved_guards, saved_tests = self.guards, self.tests
        self.guards, self.tests = [], list(self.tests)  # a try outside the def guards no call
        try:
            self.walk_body(node.body)
        finally:
            self.in_func -= 1
            self.guards, self.tests = saved_guards, saved_tests
            self.unit = outer

    def klass(self, node: ast.ClassDef) -> None:
        """Bases, keywords, decorators and the class body run at definition time (module
        level); the methods join the class's unit."""
        for expr in [*node.decorator_list, *node.bases, *(k.value for k in node.keywords)]:
            self.expr(expr)
        outer = self.unit
        top = not self.unit and not self.in_func
        if top:
            self.bind(node.name, ("unit", node.name))
            self.d.units[node.name] = (node.lineno, node.end_lineno or node.lineno)
            self.d.refs.setdefault(node.name, set())
        for stmt in node.body:
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                for dec in stmt.decorator_list:
                    self.expr(dec)
                if top:
                    self.unit = node.name
                self.in_func += 1
                saved_guards = self.guards
                self.guards = []
                try:
                    self.walk_body(stmt.body)
                finally:
                    self.in_func -= 1
                    self.guards = saved_guards
                    self.unit = outer
            else:
                self.stmt(stmt)  # class body: runs with the module

    # -- leaves -------------------------------------------------------------
    def bind(self, name: str, binding: Binding) -> None:
        if self.in_func and self.unit:
            self.d.local.setdefault(self.unit, {})[name] = binding
        elif not self.in_func:
            self.d.bindings.setdefault(name, binding)

    def site(self, module: str, fromlist: tuple[str, ...], node: ast.AST) -> None:
        tested = frozenset().union(*self.tests) if self.tests else frozenset()
        expanded = set(tested)
        for name in tested:
            expanded |= self.d.flags.get(name, frozenset())
        gate = None
        if expanded & _PLATFORM_ATTRS or other_platform(expanded) or _tests_os_name(expanded):
            gate = "platform"
        elif expanded & _VERSION_ATTRS:
            gate = "version"
        self.d.sites.append(
            ImportSite(
                module,
                fromlist,
                self.d.name,
                self.d.file,
                getattr(node, "lineno", 0),
                self.unit if self.in_func else "",
                tuple(reversed(self.guards)),
                gate,
                tuple(sorted(tested)),
                self._never() if gate else None,
            )
        )

    def _flag(self, name: str, value: ast.expr) -> None:
        """A module-level ``NAME = <test on the version or platform>``, bound once in
        straight-line code: ``if NAME:`` is that test. Any other binding (a second one, one
        in a ``try`` or an ``if``) makes the name unknown."""
        once = name not in self.flag_exprs and not (self.unit or self.guards or self.conds)
        facts = {"sys.version_info", "sys.platform", "os.name", "version_info", "platform"}
        self.flag_exprs[name] = value if once and facts & self._names(value) else _NOT_A_FLAG

    def _never(self) -> str | None:
        """The enclosing test that is false on the target, so this import never runs there."""
        for test, branch in self.conds:
            value = _static(test, self.facts, self.flag_exprs, self.d.bindings)
            if isinstance(value, bool) and value != branch:
                text = ast.unparse(test)
                text = text if len(text) <= 80 else text[:77] + "..."
                return f"`if {text}` ({'false' if branch else 'true'} here, line {test.lineno})"
        return None

    def expr(self, node: ast.expr) -> None:
        unit = self.unit if self.in_func else ""
        refs = self.d.refs.setdefault(unit, set())
        for sub in ast.walk(node):
            if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
                chain = _chain(sub)
                if chain:
                    refs.add(chain)
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                refs.add((sub.id,))
            elif isinstance(sub, ast.Call):
                self._call(sub)

    def _call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if fname in ("import_module", "__import__") and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                name = import_module_name(arg.value, node.keywords, self.package)
                if name:
                    self.site(name, (), node)
        elif fname == "getattr" and len(node.args) >= 2:  # getattr(mod, "name"): a literal chain
            obj, attr = node.args[0], node.args[1]
            chain = (
                _chain(obj)
                if isinstance(obj, ast.Attribute)
                else (obj.id,)
                if isinstance(obj, ast.Name)
                else None
            )
            if chain and isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                unit = self.unit if self.in_func else ""
                self.d.refs.setdefault(unit, set()).add((*chain, attr.value))

    @staticmethod
    def _names(node: ast.AST) -> frozenset[str]:
        out = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                out.add(sub.id)
            elif isinstance(sub, ast.Attribute):
                out.add(sub.attr)
                if isinstance(sub.value, ast.Name):
                    out.add(f"{sub.value.id}.{sub.attr}")
            elif isinstance(sub, ast.Constant) and isinstance(sub.value, str) and len(sub.value) < 16:
                out.add(sub.value)
        return frozenset(out)


def _tests_os_name(names: set[str]) -> bool:
    return "os.name" in names


def _chain(node: ast.Attribute) -> tuple[str, ...] | None:
    parts = [node.attr]
    value = node.value
    while isinstance(value, ast.Attribute):
        parts.append(value.attr)
        value = value.value
    if not isinstance(value, ast.Name):
        return None
    parts.append(value.id)
    return tuple(reversed(parts))


def _is_type_checking(test: ast.expr) -> bool:
    name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
    return name == "TYPE_CHECKING"


def _handler_names(kind: ast.expr | None) -> list[str]:
    if kind is None:
        return ["*"]
    if isinstance(kind, ast.Tuple):
        return [n for k in kind.elts for n in _handler_names(k)]
    name = kind.id if isinstance(kind, ast.Name) else getattr(kind, "attr", None)
    return [name] if name else []


def _suppressed(expr: ast.expr) -> list[str]:
    """``contextlib.suppress(ImportError)``: a ``with`` that is a ``try``."""
    if not isinstance(expr, ast.Call):
        return []
    func = expr.func
    fname = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    if fname != "suppress":
        return []
    return [n for arg in expr.args for n in _handler_names(arg)]


_MEMO: dict[tuple[str, str, bool, int, int, Facts], _Defs | None] = {}
_MEMO_MAX = 4096  # files: one run checks the modules of a package, each target reads the same files


def parse(module: str, file: str, is_package: bool, facts: Facts | None = None) -> _Defs | None:
    """The units, names and import sites of one first-party file (None: unreadable);
    one parse per file content (stat) for the process, whatever number of targets ask."""
    facts = facts or Facts.here()
    try:
        st = os.stat(file)
    except OSError:
        return None
    key = (module, file, is_package, st.st_mtime_ns, st.st_size, facts)
    if key in _MEMO:
        return _MEMO[key]
    try:
        with open(file, "rb") as fh:
            tree = ast.parse(fh.read(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return None
    defs: _Defs | None = _Defs(module, file)
    assert defs is not None
    walker = _Walker(defs, module if is_package else module.rpartition(".")[0], facts)
    try:
        walker.walk_body(tree.body)
    except RecursionError:
        defs = None
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[key] = defs
    return defs


class Reach:
    """What a target reaches in the first-party modules ``known`` (name: file).

    ``function`` None: every unit of ``module`` (a module target); else that function
    (or ``Class.method``: the class). ``imported``: the modules the job's import ran
    (their module-level code is reached)."""

    MAX_DEPTH = 8  # re-export chains followed

    def __init__(
        self,
        module: str,
        function: str | None,
        known: Mapping[str, str],
        imported: Iterable[str] = (),
        facts: Facts | None = None,
    ) -> None:
        self.facts = facts or Facts.here()
        self.known = dict(known)
        self._dirs: dict[str, list[str]] | None = None  # package -> its directories (PEP 420)
        self._defs: dict[str, _Defs | None] = {}
        self.units: set[tuple[str, str]] = set()
        self.modules: set[str] = set()
        self._todo: list[tuple[str, str]] = []
        self.complete = True  # False: the target's own source could not be read
        for name in [module, *imported]:
            self._import(name)
        defs = self.defs(module)
        if defs is None:
            self.complete = False
        elif function:
            unit = function.partition(".")[0]
            if unit in defs.units:
                self._reach(module, unit)
            else:  # bound elsewhere (a re-export): resolve the name
                self._chain(module, (unit,), {})
                if not self.units:  # not found statically: as a module target
                    self.complete = False
                    for own in defs.units:
                        self._reach(module, own)
        else:
            for unit in defs.units:
                self._reach(module, unit)
        self._run()

    # -- the module graph -----------------------------------------------------
    def file_of(self, module: str) -> str | None:
        if module in self.known:
            return self.known[module]
        parent, _, last = module.rpartition(".")
        if not parent:
            return None
        for base in self._package_dirs(parent):
            for cand in (os.path.join(base, last + ".py"), os.path.join(base, last, "__init__.py")):
                if os.path.isfile(cand):
                    self.known[module] = cand
                    self._index(module, cand)
                    return cand
        return None

    def _namespace_child(self, package: str, attr: str) -> bool:
        """``package`` has no file of its own (PEP 420) and ``attr`` is a module in it."""
        return self.file_of(package) is None and self.file_of(f"{package}.{attr}") is not None

    def _package_dirs(self, package: str) -> list[str]:
        """Where ``package``'s modules are: its ``__init__.py``'s directory or, for a PEP 420
        namespace package (no file of its own), the directories of its known modules."""
        pfile = self.file_of(package)
        if pfile:
            return [os.path.dirname(pfile)] if os.path.basename(pfile) == "__init__.py" else []
        if self._dirs is None:
            self._dirs = {}
            for name, file in self.known.items():
                self._index(name, file)
        return self._dirs.get(package, [])

    def _index(self, module: str, file: str) -> None:
        """Each package above ``module``: the directory that holds it, from ``file``."""
        if self._dirs is None or not file:
            return
        base = os.path.dirname(file)
        if os.path.basename(file) == "__init__.py":
            base = os.path.dirname(base)
        parts = module.split(".")
        for i in range(len(parts) - 1, 0, -1):
            dirs = self._dirs.setdefault(".".join(parts[:i]), [])
            if base not in dirs:
                dirs.append(base)
            base = os.path.dirname(base)

    def defs(self, module: str) -> _Defs | None:
        if module not in self._defs:
            file = self.file_of(module)
            self._defs[module] = (
                parse(module, file, os.path.basename(file) == "__init__.py", self.facts)
                if file and file.endswith(".py")
                else None
            )
        return self._defs[module]

    def _import(self, module: str) -> None:
        """``module`` is imported: its packages' and its own module-level code runs."""
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name in self.modules:
                continue
            if self.defs(name) is None:
                continue
            self.modules.add(name)
            self._todo.append((name, ""))

    def _reach(self, module: str, unit: str) -> None:
        if (module, unit) not in self.units:
            self.units.add((module, unit))
            self._todo.append((module, unit))

    def _run(self) -> None:
        while self._todo:
            module, unit = self._todo.pop()
            defs = self.defs(module)
            if defs is None:
                continue
            local = defs.local.get(unit, {}) if unit else {}
            for chain in defs.refs.get(unit, ()):
                self._chain(module, chain, local)
            for site in defs.sites:
                if site.unit == unit:
                    self._import(site.module)
                    for attr in site.fromlist:
                        self._from_import(site.module, attr)

    def _from_import(self, module: str, attr: str) -> None:
        """``from module import attr`` runs a submodule, or a PEP 562 ``__getattr__``; a
        name it binds is reached only where code uses it."""
        defs = self.defs(module)
        if defs is None:
            if self._namespace_child(module, attr):
                self._import(f"{module}.{attr}")
            return
        if attr in defs.bindings:
            return
        if self.file_of(f"{module}.{attr}"):
            self._import(f"{module}.{attr}")
        elif "__getattr__" in defs.units:
            self._reach(module, "__getattr__")

    def _chain(self, module: str, chain: tuple[str, ...], local: Mapping[str, Binding]) -> None:
        defs = self.defs(module)
        if defs is None:
            return
        binding = local.get(chain[0]) or defs.bindings.get(chain[0])
        if binding is not None:
            self._follow(module, binding, chain[1:], 0)

    def _follow(self, module: str, b: Binding, rest: tuple[str, ...], depth: int) -> None:
        if depth > self.MAX_DEPTH:
            return
        if b[0] == "unit":
            self._reach(module, b[1])
        elif b[0] == "module":
            self._attr(b[1], rest, depth)
        elif b[0] == "from":
            self._name(b[1], b[2], rest, depth)

    def _attr(self, module: str, rest: tuple[str, ...], depth: int) -> None:
        """``module.rest...`` read: the module is imported, the name resolved in it."""
        if self.defs(module) is None:
            return
        self._import(module)
        if rest:
            self._name(module, rest[0], rest[1:], depth + 1)

    def _name(self, module: str, attr: str, rest: tuple[str, ...], depth: int) -> None:
        """``from module import attr`` (then ``.rest``)."""
        defs = self.defs(module)
        if defs is None:
            if self._namespace_child(module, attr):
                self._attr(f"{module}.{attr}", rest, depth + 1)
            return
        self._import(module)
        binding = defs.bindings.get(attr)
        if binding is not None:
            self._follow(module, binding, rest, depth + 1)
        elif self.file_of(f"{module}.{attr}"):
            self._attr(f"{module}.{attr}", rest, depth + 1)
        elif "__getattr__" in defs.units:  # PEP 562: a name the module makes on demand
            self._reach(module, "__getattr__")

    # -- questions -------------------------------------------------------------
    def sites(self) -> list[ImportSite]:
        """Every import site of the modules parsed so far."""
        return [s for d in self._defs.values() if d is not None for s in d.sites]

    def reached(self, importer: str, file: str | None, line: int | None) -> bool | None:
        """Whether the code at ``file:line`` of ``importer`` is reached (None: unknown)."""
        defs = self.defs(importer)
        if defs is None or (file and os.path.realpath(file) != os.path.realpath(defs.file)):
            return None
        unit = defs.unit_at(line)
        if not unit:
            return importer in self.modules
        return (importer, unit) in self.units

    def site_reached(self, site: ImportSite) -> bool:
        return not site.never and self.code_reached(site)

    def code_reached(self, site: ImportSite) -> bool:
        """The code around the site is reached (whether its ``if`` lets it run or not)."""
        if not site.unit:
            return site.importer in self.modules
        return (site.importer, site.unit) in self.units

    def where(self, site: ImportSite) -> str:
        """``module.unit`` for a note (``flask.cli.shell_command``)."""
        return f"{site.importer}.{site.unit}" if site.unit else site.importer
