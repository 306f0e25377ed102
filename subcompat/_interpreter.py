"""Interpreter identity: the target interpreter as its own child describes it, and the
key that tells one build (and one set of probe rules) from another in the cache."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from hashlib import sha256
    from typing import Any
else:
    try:  # builtin; ``hashlib`` would initialise OpenSSL first (~2 ms of every start-up)
        from _sha2 import sha256
    except ImportError:  # pragma: no cover - a build without it
        from hashlib import sha256

# what the probe checks; part of every cache key: bump it when that grows
RULES = "names+pairs+never-tried+dep-warnings+static-gates+failing-untried-are-culprits"


@dataclass(frozen=True)
class Interpreter:
    """The target interpreter, as its own child reports it."""

    python: str
    implementation: str
    cache_tag: str | None
    abiflags: str
    build: str
    executable: str
    backend: str | None
    unsupported: str | None
    can_classify: bool
    sys_path: tuple[str, ...] = ()
    can_fork: bool = False  # main-interpreter imports fork from a pristine child
    ext_suffixes: tuple[str, ...] = ()  # importlib.machinery.EXTENSION_SUFFIXES there
    extra_finders: tuple[str, ...] = ()  # import hooks beyond the standard ones (editable installs)
    builtin_modules: tuple[str, ...] = ()  # sys.builtin_module_names there

    @property
    def key(self) -> str:
        """Identity for cache keys: a rebuilt or upgraded interpreter is another key, and so
        is a probe that checks more (verdicts found by fewer checks are not reused)."""
        fields = [self.implementation, self.python, str(self.cache_tag), self.abiflags, self.build]
        raw = "|".join([*fields, RULES])
        return sha256(raw.encode()).hexdigest()[:24]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sys_path"] = list(self.sys_path)
        data["ext_suffixes"] = list(self.ext_suffixes)
        data["extra_finders"] = list(self.extra_finders)
        data["builtin_modules"] = list(self.builtin_modules)
        return data

    @classmethod
    def current(cls) -> Interpreter:
        """This process's interpreter, described exactly as a child would describe it."""
        from subcompat import _child

        backend = _child.Backend()  # type: ignore[no-untyped-call]  # the child is stdlib-only, untyped
        return cls.from_json(_child.describe_interpreter(backend, []))  # type: ignore[no-untyped-call]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interpreter:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        kwargs["sys_path"] = tuple(kwargs.get("sys_path") or ())
        kwargs["ext_suffixes"] = tuple(kwargs.get("ext_suffixes") or ())
        kwargs["extra_finders"] = tuple(kwargs.get("extra_finders") or ())
        kwargs["builtin_modules"] = tuple(kwargs.get("builtin_modules") or ())
        return cls(**kwargs)
