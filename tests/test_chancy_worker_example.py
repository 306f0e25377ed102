"""examples/chancy_worker.py against a real PostgreSQL with a real chancy Worker, and the
unguarded-``__main__`` case a newcomer's own worker script runs into."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _req import require_or_skip

import subcompat

pytestmark = pytest.mark.needs_subinterpreters

REPO = Path(subcompat.__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "chancy_worker.py"


@pytest.fixture
def chancy_dsn(pg_dsn):
    try:
        from chancy.executors.sub import SubInterpreterExecutor  # noqa: F401
    except ImportError as exc:
        require_or_skip(False, f"chancy[sub] is not importable: {exc}")
    return pg_dsn


def run_script(
    script: Path, dsn: str, tmp_path: Path, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "SUBCOMPAT_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, str(script), dsn],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_example_worker_prints_each_jobs_route(chancy_dsn, tmp_path):
    proc = run_script(EXAMPLE, chancy_dsn, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert set(rows) == {"compatible", "incompatible", "degraded"}
    assert (
        "succeeded" in rows["compatible"]
        and "route=subinterpreter executor=subinterpreter" in rows["compatible"]
    )
    assert "route=fallback executor=process" in rows["incompatible"] and "readline" in rows["incompatible"]
    assert "route=fallback executor=process" in rows["degraded"]
    assert all("succeeded" in row for row in rows.values())
    assert "guard" not in proc.stderr  # the example is guarded: no warning


UNGUARDED = """
import asyncio
import sys

from chancy import Chancy, Job, Queue, Worker


async def main(dsn):
    async with Chancy(dsn) as app:
        await app.migrate()
        await app.declare(Queue("unguarded", executor="subcompat.chancy.AutoFallbackExecutor",
                                concurrency=1, polling_interval=1, tags={"^unguarded$"}), upsert=True)
        ref = await app.push(Job(func="shop.jobs.terminal.history_size", queue="unguarded", max_attempts=1))
        async with Worker(app, tags={"unguarded"}, shutdown_timeout=5):
            try:
                async with asyncio.timeout(20):
                    while (await app.get_job(ref)).state.value not in ("succeeded", "failed"):
                        await asyncio.sleep(0.5)
            except TimeoutError:
                print("timed out", flush=True)


asyncio.run(main(sys.argv[1]))
"""


def test_an_unguarded_worker_script_is_warned_and_its_copies_stopped(chancy_dsn, tmp_path):
    script = tmp_path / "myworker.py"
    script.write_text(textwrap.dedent(UNGUARDED))
    (tmp_path / "shop").symlink_to(REPO / "examples" / "shop")
    proc = run_script(script, chancy_dsn, tmp_path, timeout=180)
    assert f"subcompat: {script} starts work at import time, with no `if __name__" in proc.stderr
    # each spawned child that re-ran the script was stopped, saying why, before it started a worker
    stopped = [line for line in proc.stderr.splitlines() if "started a worker again inside a child" in line]
    assert stopped and all(line.startswith(f"subcompat: error: {script} started") for line in stopped)


def test_unguarded_main_reads_the_script_without_running_it(tmp_path, monkeypatch):
    pytest.importorskip("chancy", reason="subcompat.chancy needs chancy")
    from subcompat import chancy as auto

    cases = {
        "asyncio.run(main())\n": True,
        "main()\n": True,
        "import logging\nlog = logging.getLogger(__name__)\n": False,
        'def main():\n    pass\n\nif __name__ == "__main__":\n    main()\n': False,
        "if '__main__' == __name__:\n    asyncio.run(main())\n": False,
        "raise SystemExit('imported!')\nasyncio.run(x)\n": True,  # read, not run
    }
    for i, (source, unguarded) in enumerate(cases.items()):
        script = tmp_path / f"s{i}.py"
        script.write_text(source)
        monkeypatch.setattr(sys.modules["__main__"], "__file__", str(script), raising=False)
        assert (auto.unguarded_main() is not None) == unguarded, source
