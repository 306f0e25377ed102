"""One fleet member, as a process of its own (its local cache: $SUBCOMPAT_CACHE_DIR).

python _fleet_proc.py check STORE_URL TARGET...
    opens the store, prints "ready", waits for a line on stdin, runs ``check`` once and
    prints {"verdicts": {target: [verdict, cached]}, "probed": n}
python _fleet_proc.py worker CHANCY_DSN QUEUE [HEARTBEAT_TIMEOUT]
    a chancy Worker serving QUEUE; with HEARTBEAT_TIMEOUT (seconds), fast heartbeats and
    recovery, so that the jobs of a killed worker come back (too short a timeout under
    load re-runs jobs of live workers: chancy runs jobs at least once); prints "ready",
    stops at the end of stdin
"""

from __future__ import annotations

import asyncio
import json
import sys


def check_once(url: str, targets: list[str]) -> int:
    from subcompat.cache import Cache
    from subcompat.cache_pg import FleetCache
    from subcompat.check import check

    store = FleetCache(url, Cache(), wait=300)  # a loaded machine must not end a wait early
    store.open()
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        report = check(targets, cache=store, jobs=2, timeout=30)
    finally:
        store.close()
    verdicts = {v.target: [v.verdict, v.cached] for v in report.verdicts}
    print(json.dumps({"verdicts": verdicts, "probed": report.probed}), flush=True)
    return 0


async def serve(dsn: str, queue: str, heartbeat_timeout: int | None) -> None:
    from chancy import Chancy, Worker
    from chancy.plugins.leadership import Leadership
    from chancy.plugins.recovery import Recovery

    fast: dict = {}
    plugins = None
    if heartbeat_timeout:
        plugins = [Leadership(poll_interval=1, timeout=4), Recovery(poll_interval=1)]
        fast = {"heartbeat_poll_interval": 1, "heartbeat_timeout": heartbeat_timeout}
    async with Chancy(dsn, plugins=plugins, no_default_plugins=bool(plugins)) as app:
        async with Worker(
            app, register_signal_handlers=False, shutdown_timeout=60, tags={f"run={queue}"}, **fast
        ):
            print("ready", flush=True)
            await asyncio.to_thread(sys.stdin.read)


def main(argv: list[str]) -> int:
    if argv[0] == "check":
        return check_once(argv[1], argv[2:])
    asyncio.run(serve(argv[1], argv[2], int(argv[3]) if len(argv) > 3 else None))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
