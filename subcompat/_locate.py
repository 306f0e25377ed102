"""Is a target's top-level module anywhere on the job's path? Answered in the parent,
from directory listings, before any process is involved: a target that cannot be found
costs a set lookup, not a worker (10,000 of them are a few listings).

Only a certain "no" is acted on. A top-level name is certainly absent when every path
entry is a directory whose listing lacks it (as a package or namespace directory, a
``.py``/``.pyc`` file or an extension file) and the interpreter has no import hook
beyond the standard ones (an editable install's finder, a zip on the path: then the
probe asks the interpreter itself). A submodule is never judged here: its package's
``__init__`` runs first, and what that does is the probe's to find out.
"""

from __future__ import annotations

import os

from subcompat._interpreter import Interpreter


class Locator:
    """Listings of the path entries, read once per probe run."""

    def __init__(self, interp: Interpreter, path: list[str]) -> None:
        self.path = [p or os.getcwd() for p in path]
        self.suffixes = (".py", ".pyc", *interp.ext_suffixes)
        self.usable = not interp.extra_finders and bool(interp.ext_suffixes)
        self.builtins = frozenset(interp.builtin_modules)
        self._names: frozenset[str] | None = None

    def _listing(self) -> frozenset[str] | None:
        """Every name a top-level module could be found by, or None if that cannot be told."""
        if self._names is None:
            names: set[str] = set()
            for entry in self.path:
                try:
                    with os.scandir(entry) as it:
                        for e in it:
                            name = e.name
                            if "." not in name:
                                names.add(name)  # a package or namespace directory (or not: fine)
                                continue
                            for suffix in self.suffixes:
                                if name.endswith(suffix):
                                    names.add(name[: -len(suffix)])
                                    break
                except NotADirectoryError:
                    self.usable = False  # a zip file on the path: its members are not listed here
                except OSError:
                    continue  # an entry that does not exist finds nothing, as in an import
            self._names = frozenset(names)
        return self._names if self.usable else None

    def certainly_missing(self, module: str) -> bool:
        top = module.partition(".")[0]
        if not self.usable or top in self.builtins:
            return False
        names = self._listing()
        return names is not None and top not in names
