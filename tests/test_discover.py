"""The static half of discovery: deferred imports found in first-party source."""

from __future__ import annotations

import textwrap
from pathlib import Path

from subcompat.discover import (
    Edge,
    Locator,
    ModuleInfo,
    ModuleTree,
    SourceScan,
    scan_lazy_imports,
    scan_source,
)


def scan(tmp_path: Path, source: str, module: str = "app.jobs", is_package: bool = False, **kw):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent(source))
    return [
        (lz.module, lz.fromlist, lz.edge.how, lz.edge.line)
        for lz in scan_lazy_imports(module, str(f), is_package=is_package, **kw)
    ]


def test_function_body_imports(tmp_path):
    found = scan(
        tmp_path,
        """
        import json
        def job():
            import lxml.etree
            from yaml import CSafeLoader
        async def other():
            import orjson
    """,
    )
    assert found == [
        ("lxml.etree", (), "function", 4),
        ("yaml", ("CSafeLoader",), "function", 5),
        ("orjson", (), "function", 7),
    ]


def test_module_level_imports_only_when_asked(tmp_path):
    assert scan(tmp_path, "import json\n") == []
    assert scan(tmp_path, "import json\n", all_imports=True) == [("json", (), "import", 1)]


def test_literal_import_module_and_dunder_import(tmp_path):
    found = scan(
        tmp_path,
        """
        import importlib
        from importlib import import_module
        importlib.import_module("lxml.etree")
        import_module(".helpers", package="app")
        __import__("ujson")
        name = "dynamic"
        importlib.import_module(name)  # not literal: invisible statically
    """,
    )
    assert found == [
        ("lxml.etree", (), "import_module", 4),
        ("app.helpers", (), "import_module", 5),
        ("ujson", (), "import_module", 6),
    ]


def test_pep562_getattr(tmp_path):
    found = scan(
        tmp_path,
        """
        def __getattr__(name):
            from . import heavy
            return getattr(heavy, name)
    """,
        module="app.pkg",
        is_package=True,
    )
    assert found == [("app.pkg", ("heavy",), "__getattr__", 3)]


def test_relative_imports_resolve_against_the_package(tmp_path):
    found = scan(
        tmp_path,
        """
        def job():
            from .sub import thing
            from .. import sibling
    """,
        module="app.jobs.mod",
    )
    assert found == [("app.jobs.sub", ("thing",), "function", 3), ("app", ("sibling",), "function", 4)]


def test_type_checking_block_is_skipped(tmp_path):
    found = scan(
        tmp_path,
        """
        import typing
        if typing.TYPE_CHECKING:
            def f():
                import numpy
        else:
            def g():
                import msgpack
    """,
    )
    assert found == [("msgpack", (), "function", 8)]


def test_unparseable_source_yields_nothing(tmp_path):
    assert scan(tmp_path, "def (:\n") == []


def test_tree_chain_and_first_party():
    tree = ModuleTree(
        "app.jobs",
        (
            ModuleInfo("app.jobs", "/a/jobs.py", "first_party"),
            ModuleInfo("app.helper", "/a/helper.py", "first_party"),
            ModuleInfo("lib._c", "/s/lib/_c.so", "third_party", extension=True),
        ),
        {
            "app.helper": Edge("app.jobs", "/a/jobs.py", 1),
            "lib": Edge("app.helper", "/a/helper.py", 2),
            "lib._c": Edge("lib", "/s/lib/__init__.py", 3),
        },
    )
    assert tree.chain("lib._c") == ["app.jobs", "app.helper", "lib", "lib._c"]
    assert [m.name for m in tree.first_party] == ["app.jobs", "app.helper"]
    assert [m.name for m in tree.extensions] == ["lib._c"]
    assert ModuleTree.from_json(tree.to_json()) == tree


def test_locator_sorts_origins(tmp_path):
    import json
    import sysconfig

    loc = Locator()
    assert loc.origin(json.__file__) == "stdlib"
    assert loc.origin(str(Path(sysconfig.get_paths()["purelib"]) / "x" / "y.py")) == "third_party"
    assert loc.origin(str(tmp_path / "mine.py")) == "first_party"
    assert loc.origin(None) == "builtin"


def refs(tmp_path: Path, source: str, module: str = "app.jobs", is_package: bool = False):
    f = tmp_path / "m.py"
    f.write_text(textwrap.dedent(source))
    found = scan_source(module, str(f), is_package=is_package).refs
    return [(r.module, r.attr, r.edge.how, r.edge.line) for r in found]


def test_names_taken_from_imported_modules(tmp_path):
    found = refs(
        tmp_path,
        """
        import yaml
        import os.path
        import a.b as m
        from yaml import CDumper
        from . import sibling

        def job(doc):
            from yaml import CEmitter
            yaml.load(doc, Loader=yaml.CSafeLoader)
            yaml.load(doc)
            os.path.join("x")
            return m.thing.other, os.getcwd().upper
    """,
    )
    assert found == [
        ("yaml", "CDumper", "from", 5),
        ("app", "sibling", "from", 6),
        ("yaml", "CEmitter", "from", 9),
        ("yaml", "load", "attribute", 10),
        ("yaml", "CSafeLoader", "attribute", 10),
        ("os.path", "join", "attribute", 12),
        ("a.b", "thing", "attribute", 13),
        ("os", "getcwd", "attribute", 13),
    ]


def test_feature_checked_names_are_left_out(tmp_path):
    """What a feature check, a ``try`` or a type hint guards never fails a job."""
    found = refs(
        tmp_path,
        """
        import yaml
        from typing import TYPE_CHECKING
        try:
            from yaml import CLoader
        except ImportError:
            CLoader = None
        try:
            yaml.CParser
        except (ValueError, AttributeError):
            pass
        HAS_C = hasattr(yaml, "CDumper")
        if TYPE_CHECKING:
            yaml.Hidden

        def job(doc: yaml.Hint) -> yaml.Result:
            x: yaml.Annotated = 1
            if HAS_C:
                yaml.CDumper
            if yaml.__with_libyaml__:
                yaml.CEmitter
            a = yaml.CSafeLoader if hasattr(yaml, "CSafeLoader") else None
            b = hasattr(yaml, "CBaseLoader") and yaml.CBaseLoader
            yaml.Written = 1
            return yaml.Plain
    """,
    )
    assert found == [
        ("typing", "TYPE_CHECKING", "from", 3),
        ("yaml", "__with_libyaml__", "attribute", 20),
        ("yaml", "Plain", "attribute", 25),
    ]


def test_one_scan_gives_both_halves(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import json\ndef job():\n    import yaml\n    return yaml.CLoader, json.loads\n")
    found = scan_source("app.jobs", str(f), is_package=False)
    assert [lz.module for lz in found.lazy] == ["yaml"]
    assert [(r.module, r.attr) for r in found.refs] == [("yaml", "CLoader"), ("json", "loads")]
    assert scan_source("app.jobs", str(tmp_path / "gone.py"), is_package=False) == SourceScan()
