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
    "Edge",
    "LazyImport",
    "ModuleInfo",
    "ModuleTree",
    "scan_lazy_imports",
    "Locator",
]


@dataclass(frozen=True)
class Edge:
    """Who imported a module, and where: the link a report shows in an import chain."""

    importer: str
    file: str | None = None
    line: int | None = None
    how: str = "import"  # import | function | import_module | __getattr__

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


def _resolve(module: str | None, level: int, package: str) -> str | None:
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level - 1 > len(parts) or not parts:
        return None
    base = parts[: len(parts) - (level - 1)]
    return ".".join(base + ([module] if module else []))


class _Scanner:
    """Collects deferred imports from one module's AST (``ast`` is imported only when a
    file is scanned: the CLI's warm path never needs it)."""

    def __init__(self, module: str, package: str, file: str, all_imports: bool) -> None:
        import ast

        self._ast = ast
        self.module = module
        self.package = package
        self.file = file
        self.all_imports = all_imports
        self.found: list[LazyImport] = []
        self._func: list[str] = []

    def visit(self, node: ast.AST) -> None:
        getattr(self, "visit_" + type(node).__name__, self.generic_visit)(node)

    def generic_visit(self, node: ast.AST) -> None:
        for child in self._ast.iter_child_nodes(node):
            self.visit(child)

    def _add(self, name: str | None, fromlist: Iterable[str], node: ast.AST, how: str) -> None:
        if name:
            edge = Edge(self.module, self.file, getattr(node, "lineno", None), how)
            self.found.append(LazyImport(name, tuple(fromlist), edge))

    def _how(self) -> str:
        if self._func and self._func[0] == "__getattr__":
            return "__getattr__"
        return "function" if self._func else "import"

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, self._ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":  # never runs
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def _visit_func(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> None:
        self._func.append(getattr(node, "name", "<lambda>"))
        self.generic_visit(node)
        self._func.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_func

    def visit_Import(self, node: ast.Import) -> None:
        if self._func or self.all_imports:
            for alias in node.names:
                self._add(alias.name, (), node, self._how())

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if self._func or self.all_imports:
            name = _resolve(node.module, node.level, self.package)
            names = tuple(a.name for a in node.names if a.name != "*")
            self._add(name, names, node, self._how())

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        fname = func.id if isinstance(func, self._ast.Name) else getattr(func, "attr", None)
        if fname in _IMPORT_FUNCS and node.args:
            arg = node.args[0]
            if isinstance(arg, self._ast.Constant) and isinstance(arg.value, str):
                name = arg.value
                level = len(name) - len(name.lstrip("."))
                if level:
                    package = self.package
                    for kw in node.keywords:
                        if kw.arg == "package" and isinstance(kw.value, self._ast.Constant):
                            package = str(kw.value.value)
                    name = _resolve(name[level:] or None, level, package) or ""
                self._add(name, (), node, "import_module")
        self.generic_visit(node)


def scan_lazy_imports(
    module: str, file: str, *, is_package: bool, all_imports: bool = False
) -> list[LazyImport]:
    """Deferred imports in one first-party source file.

    ``all_imports`` also returns module-level imports: used for modules that the
    dynamic pass never imported (reached only through a deferred import).
    """
    try:
        import ast

        with open(file, "rb") as fh:
            tree = ast.parse(fh.read(), filename=file)
    except (OSError, SyntaxError, ValueError):
        return []
    package = module if is_package else module.rpartition(".")[0]
    scanner = _Scanner(module, package, file, all_imports)
    scanner.visit(tree)
    return scanner.found
