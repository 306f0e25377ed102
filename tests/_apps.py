"""Write small first-party job apps into a temp dir, for the probe to check."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_app(root: Path, files: dict[str, str]) -> Path:
    """``files`` maps a dotted module name (``pkg.mod``; ``pkg`` for a package's
    ``__init__``) to its source. Package ``__init__`` files are created as needed."""
    for name, source in files.items():
        parts = name.split(".")
        for i in range(1, len(parts)):
            init = root.joinpath(*parts[:i], "__init__.py")
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch(exist_ok=True)
        is_pkg = any(other.startswith(name + ".") for other in files)
        path = (
            root.joinpath(*parts, "__init__.py") if is_pkg else root.joinpath(*parts[:-1], parts[-1] + ".py")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
    return root
