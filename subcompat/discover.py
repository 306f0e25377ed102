"""Stage 1, discover: the import tree of a job module and the imports it defers.

The dynamic half (which modules an import pulls in, and who imported each one) is
recorded inside the probe's sub-interpreter by ``_trial.py``. This module holds the
data type for that tree and the static half: a scan of first-party source for imports
that only run later (in a function body, through ``importlib.import_module("...")``
or ``__import__("...")`` with a literal name, or in a PEP 562 ``__getattr__``).

It runs inside the *target* interpreter, loaded by file path, so it uses the stdlib only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    import ast
    from typing import Any

__all__ = [
    "AttrRef",
    "Edge",
    "LazyImport",
    "ModuleInfo",
    "ModuleTree",
    "scan_lazy_imports",
    "scan_source",
    "SourceScan",
    "Locator",
]


#: suffix of ``Edge.how`` (it travels as that one string through the probe's processes)
OPTIONAL = " (optional)"


@dataclass(frozen=True)
class Edge:
    """Who imported a module, and where: the link a report shows in an import chain."""

    importer: str
    file: str | None = None
    line: int | None = None
    how: str = "import"  # import | function | import_module | __getattr__, maybe + OPTIONAL

    @property
    def optional(self) -> bool:
        """The import sits in a ``try`` that catches its absence: the code copes without it."""
        return self.how.endswith(OPTIONAL)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Edge:
        return cls(**data)


@dataclass(frozen=True)
class LazyImport:
    """An import that the job's own source makes later than module import time."""

    module: str
    fromlist: tuple[str, ...]
    edge: Edge

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "fromlist": list(self.fromlist), "edge": self.edge.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LazyImport:
        return cls(data["module"], tuple(data["fromlist"]), Edge.from_json(data["edge"]))


@dataclass(frozen=True)
class AttrRef:
    """A name first-party code takes from another module (``mod.Name``, ``from mod import
    Name``): packages that skip their accelerator in a sub-interpreter often lack the
    C-only names (``yaml.CSafeLoader``), and the job fails only when it reaches the line."""

    module: str
    attr: str
    edge: Edge


@dataclass(frozen=True)
class SourceScan:
    """What one parse of a first-party file yields."""

    lazy: tuple[LazyImport, ...] = ()
    refs: tuple[AttrRef, ...] = ()


@dataclass(frozen=True)
class ModuleInfo:
    """One module of a tree. ``origin`` is first_party | third_party | stdlib | builtin."""

    name: str
    file: str | None
    origin: str
    extension: bool = False
    distribution: str | None = None
    version: str | None = None
    dist_stamp: str | None = None  # the dist-info file whose change means reinstall

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleInfo:
        return cls(**data)


@dataclass(frozen=True)
class ModuleTree:
    """What importing one candidate pulled in, as seen in a sub-interpreter."""

    root: str
    modules: tuple[ModuleInfo, ...] = ()
    edges: dict[str, Edge] = field(default_factory=dict)

    @property
    def extensions(self) -> tuple[ModuleInfo, ...]:
        return tuple(m for m in self.modules if m.extension)

    @property
    def first_party(self) -> tuple[ModuleInfo, ...]:
        return tuple(m for m in self.modules if m.origin == "first_party" and m.file)

    def chain(self, module: str) -> list[str]:
        """The import chain from the root to ``module`` (root first)."""
        chain = [module]
        seen = {module}
        while chain[-1] in self.edges:
            importer = self.edges[chain[-1]].importer
            if importer in seen or not importer:
                break
            seen.add(importer)
            chain.append(importer)
            if importer == self.root:
                break
        return chain[::-1]

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "modules": [m.to_json() for m in self.modules],
            "edges": {k: v.to_json() for k, v in self.edges.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModuleTree:
        return cls(
            data["root"],
            tuple(ModuleInfo.from_json(m) for m in data["modules"]),
            {k: Edge.from_json(v) for k, v in data["edges"].items()},
        )


class Locator:
    """Sorts files into stdlib / third-party / first-party for the running interpreter."""

    def __init__(self) -> None:
        import site
        import sysconfig

        paths = sysconfig.get_paths()
        self.stdlib = tuple({os.path.realpath(paths[k]) for k in ("stdlib", "platstdlib") if k in paths})
        third = {os.path.realpath(paths[k]) for k in ("purelib", "platlib") if k in paths}
        try:
            third.update(os.path.realpath(p) for p in site.getsitepackages())
        except AttributeError:  # some virtualenv builds lack it
            pass
        user = getattr(site, "getusersitepackages", lambda: None)()
        if user:
            third.add(os.path.realpath(user))
        self.third_party = tuple(third)

    def origin(self, file: str | None) -> str:
        if not file:
            return "builtin"
        real = os.path.realpath(file)
        parts = real.split(os.sep)
        if "site-packages" in parts or "dist-packages" in parts:
            return "third_party"
        if any(_under(real, p) for p in self.third_party):
            return "third_party"
        if any(_under(real, p) for p in self.stdlib):
            return "stdlib"
        return "first_party"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


_IMPORT_FUNCS = {"import_module", "__import__"}


def resolve_relative(module: str | None, level: int, package: str) -> str | None:
    """The absolute name of ``from <level dots><module> import`` inside ``package``."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or not parts:
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def import_module_name(name: str, keywords: Iterable[Any], package: str) -> str:
    """The absolute name ``importlib.import_module(name, package=...)`` imports ("" if a
    relative name cannot be resolved); ``keywords`` are the call's ``ast.keyword`` nodes."""
    level = len(name) - len(name.lstrip("."))
    if not level:
        return name
    for kw in keywords:
        if kw.arg == "package" and type(kw.value).__name__ == "Constant":
            package = str(kw.value.value)
    return resolve_relative(name[level:] or None, level, package) or ""


#: ``except`` clauses that catch a name missing from a module (AttributeError, or the
#: ImportError of ``from mod import Name``): a reference inside such a ``try`` is guarded.
_CATCHES_MISSING = frozenset({"AttributeError", "ImportError", "Exception", "BaseException"})
#: Handlers that make an import optional: the code copes when the module is absent.
_CATCHES_IMPORT = frozenset({"ImportError", "ModuleNotFoundError", "Exception", "BaseException"})
#: Calls in a test that make the branch a feature check (``if hasattr(yaml, "CLoader")``).
_PROBES = frozenset({"hasattr", "getattr"})


class _Scanner:
    """Collects, in one walk of a module's AST, the imports it defers and the names it
    takes from other modules (``ast`` is imported only when a file is scanned: the CLI's
    warm path never needs it)."""

    def __init__(self, module: str, package: str, file: str, all_imports: bool) -> None:
        import ast

        self._ast = ast
        self.module = module
        self.package = package
        self.file = file
        self.all_imports = all_imports
        self.found: list[LazyImport] = []
        self._func: list[str] = []
        # for name references: what import statements bind, and what guards each use
        self._imports: dict[str, set[str]] = {}  # `import a.b` binds a -> {"a", "a.b"}
        self._aliases: dict[str, str] = {}  # `import a.b as m` binds m -> "a.b"
        self._derived: dict[str, frozenset[str]] = {}  # `HAS_C = hasattr(yaml, ...)`
        self._tests: list[frozenset[str]] = []  # names tested by enclosing if/while/and/or
        self._caught = 0  # inside a try whose handlers catch a missing name
        self._optional = 0  # inside a try whose handlers catch a missing module
        self._uses: list[tuple[tuple[str, ...], int, frozenset[str]]] = []  # chain, line, tested
        self._from: list[tuple[str, str, int, frozenset[str]]] = []  # from module import name

    def visit(self, node: ast.AST) -> None:
        getattr(self, "visit_" + type(node).__name__, self.generic_visit)(node)

    def generic_visit(self, node: ast.AST) -> None:
        for child in self._ast.iter_child_nodes(node):
            self.visit(child)

    def _visit_all(self, nodes: Iterable[ast.AST | None]) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node)

    def _add(self, name: str | None, fromlist: Iterable[str], node: ast.AST, how: str) -> None:
        if name:
            how += OPTIONAL if self._optional else ""
            edge = Edge(self.module, self.file, getattr(node, "lineno", None), how)
            self.found.append(LazyImport(name, tuple(fromlist), edge))

    def _how(self) -> str:
        if self._func and self._func[0] == "__getattr__":
            return "__getattr__"
        return "function" if self._func else "import"

    def _names(self, node: ast.AST) -> frozenset[str]:
        """Every name and attribute a test expression mentions."""
        ast = self._ast
        out = set()
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                out.add(sub.id)
            elif isinstance(sub, ast.Attribute):
                out.add(sub.attr)
        return frozenset(out)

    def _tested(self, node: ast.AST, children: Iterable[ast.AST]) -> None:
        """Visit ``children`` as branches of a test on ``node`` (a feature check)."""
        self._tests.append(self._names(node))
        try:
            self._visit_all(children)
        finally:
            self._tests.pop()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, self._ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":  # never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.visit(test)
        self._tested(test, [*node.body, *node.orelse])

    def visit_While(self, node: ast.While) -> None:
        self.visit(node.test)
        self._tested(node.test, [*node.body, *node.orelse])

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self.visit(node.test)
        self._tested(node.test, [node.body, node.orelse])

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        """``hasattr(m, "X") and m.X``: each operand is guarded by the ones before it."""
        self.visit(node.values[0])
        for i in range(1, len(node.values)):
            self._tested(self._ast.BoolOp(node.op, node.values[:i]), [node.values[i]])

    def visit_Try(self, node: ast.Try) -> None:
        caught = any(self._catches_missing(h.type) for h in node.handlers)
        optional = any(self._catches_missing(h.type, _CATCHES_IMPORT) for h in node.handlers)
        self._caught += caught
        self._optional += optional
        try:
            self._visit_all(node.body)
        finally:
            self._caught -= caught
            self._optional -= optional
        self._visit_all([*node.handlers, *node.orelse, *node.finalbody])

    visit_TryStar = visit_Try

    def _catches_missing(self, kind: ast.AST | None, names: frozenset[str] = _CATCHES_MISSING) -> bool:
        if kind is None:
            return True  # a bare except
        if isinstance(kind, self._ast.Tuple):
            return any(self._catches_missing(k, names) for k in kind.elts)
        name = kind.id if isinstance(kind, self._ast.Name) else getattr(kind, "attr", None)
        return name in names

    def _visit_func(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        """Decorators and defaults run at definition time; annotations are type hints."""
        self._visit_all(getattr(node, "decorator_list", ()))
        self.visit(node.args)
        self._func.append(getattr(node, "name", "<lambda>"))
        body = node.body
        self._visit_all(body if isinstance(body, list) else [body])
        self._func.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_func

    def visit_arg(self, node: ast.arg) -> None:
        pass  # only an annotation below

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._visit_all([node.target, node.value])

    def visit_Assign(self, node: ast.Assign) -> None:
        if len(node.targets) == 1 and isinstance(node.targets[0], self._ast.Name):
            self._derived[node.targets[0].id] = self._names(node.value)
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        """``a.b.c`` read from a name: resolved against the imports once the file is walked."""
        parts = [node.attr]
        value = node.value
        while isinstance(value, self._ast.Attribute):
            parts.append(value.attr)
            value = value.value
        if not isinstance(value, self._ast.Name):
            self.visit(value)
            return
        if isinstance(node.ctx, self._ast.Load):
            parts.append(value.id)
            self._uses.append((tuple(reversed(parts)), node.lineno, self._guards()))

    def _guards(self) -> frozenset[str]:
        tested = frozenset().union(*self._tests)
        return tested | _PROBES if self._caught else tested  # a try is as good as a feature check

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.asname:
                self._aliases[alias.asname] = alias.name
            else:
                top = alias.name.partition(".")[0]
                dotted = self._imports.setdefault(top, set())
                parts = alias.name.split(".")
                dotted.update(".".join(parts[: i + 1]) for i in range(len(parts)))
        if self._func or self.all_imports:
            for alias in node.names:
                self._add(alias.name, (), node, self._how())

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        name = resolve_relative(node.module, node.level, self.package)
        names = tuple(a.name for a in node.names if a.name != "*")
        if name:
            guards = self._guards()
            self._from.extend((name, attr, node.lineno, guards) for attr in names)
        if self._func or self.all_imports:
            self._add(name, names, node, self._how())

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, self._ast.Name) else getattr(func, "attr", None)
        if fname in _IMPORT_FUNCS and node.args:
            arg = node.args[0]
            if isinstance(arg, self._ast.Constant) and isinstance(arg.value, str):
                name = import_module_name(arg.value, node.keywords, self.package)
                self._add(name, (), node, "import_module")
        self.generic_visit(node)

    def refs(self) -> list[AttrRef]:
        """The names taken from imported modules, first use of each, feature checks left out."""
        out: dict[tuple[str, str], AttrRef] = {}
        for module, attr, line, tested in self._from:
            if not self._feature_checked(module.partition(".")[0], tested):
                edge = Edge(self.module, self.file, line, "from")
                out.setdefault((module, attr), AttrRef(module, attr, edge))
        for chain, line, tested in self._uses:
            found = self._owner(chain)
            if found is None or self._feature_checked(chain[0], tested):
                continue
            out.setdefault(found, AttrRef(*found, Edge(self.module, self.file, line, "attribute")))
        return list(out.values())

    def _owner(self, chain: tuple[str, ...]) -> tuple[str, str] | None:
        """(module, name) for a chain read from an imported name: ``yaml.CSafeLoader`` after
        ``import yaml``, ``a.b.X`` after ``import a.b``, ``m.X`` after ``import a.b as m``."""
        if len(chain) < 2:
            return None
        if chain[0] in self._aliases:
            return self._aliases[chain[0]], chain[1]
        known = self._imports.get(chain[0])
        if not known:
            return None
        for i in range(len(chain) - 1, 0, -1):
            prefix = ".".join(chain[:i])
            if prefix in known:
                return prefix, chain[i]
        return None

    def _feature_checked(self, base: str, tested: frozenset[str]) -> bool:
        """Used under a test that mentions the module, or a hasattr/getattr (directly or
        through a module-level flag such as ``HAS_C = hasattr(yaml, "CLoader")``)."""
        seen = set(tested)
        for name in tested:
            seen |= self._derived.get(name, frozenset())
        return base in seen or bool(seen & _PROBES)


def scan_source(module: str, file: str, *, is_package: bool, all_imports: bool = False) -> SourceScan:
    """One parse of a first-party source file: its deferred imports, and the names it
    takes from imported modules (each once, feature checks and ``try`` blocks left out).

    ``all_imports`` also returns module-level imports: used for modules that the
    dynamic pass never imported (reached only through a deferred import).
    """
    try:
        import ast

        with open(file, "rb") as fh:
            tree = ast.parse(fh.read(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return SourceScan()
    package = module if is_package else module.rpartition(".")[0]
    scanner = _Scanner(module, package, file, all_imports)
    try:
        scanner.visit(tree)
    except RecursionError:  # absurdly nested source: what was found so far
        pass
    return SourceScan(tuple(scanner.found), tuple(scanner.refs()))


def scan_lazy_imports(
    module: str, file: str, *, is_package: bool, all_imports: bool = False
) -> list[LazyImport]:
    """Deferred imports in one first-party source file (see :func:`scan_source`)."""
    return list(scan_source(module, file, is_package=is_package, all_imports=all_imports).lazy)
