"""Fixtures for probing small apps against the compiled extension fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from _apps import write_app


class ProbeApp:
    """A temp first-party app dir (the cwd) with the fixture site on PYTHONPATH."""

    def __init__(self, root: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch, site: Path):
        self.root = root
        self.cache_dir = cache_dir
        self._mp = monkeypatch
        self.use_site(site)

    def use_site(self, site: Path) -> None:
        self.site = site
        self._mp.setenv("PYTHONPATH", str(site))

    def write(self, files: dict[str, str]) -> None:
        write_app(self.root, files)

    def check(
        self, *targets: str, cache: bool = True, timeout: float = 30.0, jobs: int | None = 2, **kw: Any
    ):
        from subcompat.cache import Cache
        from subcompat.check import check

        store = Cache(self.cache_dir) if cache else None
        try:
            report = check(list(targets), cache=store, timeout=timeout, jobs=jobs, **kw)
        finally:
            if store is not None:
                store.close()
        return {v.target: v for v in report.verdicts}


def make_probe_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: Path) -> ProbeApp:
    root = tmp_path / "app"
    root.mkdir()
    monkeypatch.chdir(root)
    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("SUBCOMPAT_CACHE_DIR", str(cache_dir))
    return ProbeApp(root, cache_dir, monkeypatch, site)


def skip_without_subinterpreters(item: pytest.Item) -> None:
    """Sub-interpreter tests need 3.13+: on 3.11 the suite checks 'unsupported' only.
    This is a property of the tox env, not a missing tool, so it skips in CI too."""
    if item.get_closest_marker("needs_subinterpreters") and sys.version_info < (3, 13):
        pytest.skip(f"needs Python >= 3.13 sub-interpreters (this is {sys.version.split()[0]})")


def register(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs_subinterpreters: needs Python >= 3.13")
    os.environ.pop("SUBCOMPAT_CACHE_DIR", None)
