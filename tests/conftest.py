from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # the tests' helper modules

from _cbuild import build_fixture_site, has_compiler  # noqa: E402
from _probe_fixtures import make_probe_app, register, skip_without_subinterpreters  # noqa: E402
from _req import require_or_skip  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    register(config)
    # SIGTERM (a CI timeout, tox stopping) unwinds like ^C: session fixtures such as the
    # PostgreSQL cluster are torn down instead of left running
    signal.signal(signal.SIGTERM, _interrupt)
    if not os.environ.get("SUBCOMPAT_CACHE_DIR"):
        # the default cache of every CLI run the tests start: never the user's own (an
        # older schema there is moved aside with a warning a one-line-error test would see)
        os.environ["SUBCOMPAT_CACHE_DIR"] = _SESSION_CACHE = tempfile.mkdtemp(prefix="subcompat-tests-")
        config.add_cleanup(lambda: shutil.rmtree(_SESSION_CACHE, ignore_errors=True))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def pytest_runtest_setup(item: pytest.Item) -> None:
    skip_without_subinterpreters(item)


@pytest.fixture(scope="session")
def fixture_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Compiled C-extension fixtures (see tests/_cbuild.py) for this interpreter."""
    require_or_skip(has_compiler(), "no C compiler (gcc) to build the extension fixtures")
    return build_fixture_site(tmp_path_factory.mktemp("site"))


@pytest.fixture
def probe_app(tmp_path, monkeypatch, fixture_site):
    return make_probe_app(tmp_path, monkeypatch, fixture_site)


@pytest.fixture
def rebuild_fixture_site(probe_app, tmp_path):
    """Give this test a private fixture site it may 'upgrade' by rebuilding."""
    site = build_fixture_site(tmp_path / "private-site")
    probe_app.use_site(site)
    return lambda versions: build_fixture_site(site, versions=versions)


@pytest.fixture(scope="session")
def pg_dsn():
    from _pg import find_bindir, throwaway_cluster

    require_or_skip(find_bindir() is not None, "PostgreSQL server binaries (initdb, pg_ctl) not found")
    with throwaway_cluster() as dsn:
        yield dsn
