"""AutoPoolExecutor on the example app: each call goes where its function can run.

    cd examples && python futures_demo.py      # Python >= 3.13 (3.13: pip install 'subcompat[futures]')

reports.daily_report is compatible (a sub-interpreter), serialize.pack is degraded and
pricing.quote imports ujson in its body (both on the process fallback), and the function
defined here, in __main__, cannot be sent to a sub-interpreter at all (also the fallback).
The first run probes each function once (cached for the next run).
"""

import logging
import os

from shop.jobs import pricing, reports, serialize

from subcompat.futures import AutoPoolExecutor


def total(values):
    return sum(values), os.getpid()


def main():
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    rows = [{"sku": "a", "qty": 2}, {"sku": "b", "qty": 1}, {"sku": "a", "qty": 3}]
    with AutoPoolExecutor(max_workers=2, fallback="process") as pool:
        calls = {
            "reports.daily_report": pool.submit(reports.daily_report, rows),
            "serialize.pack": pool.submit(serialize.pack, {"a": 1}),
            "pricing.quote": pool.submit(pricing.quote, "a", 3),
            "__main__.total": pool.submit(total, [1, 2, 3]),
        }
        quotes = list(pool.map(pricing.quote, ["a", "b", "c"], [1, 2, 3], chunksize=2))
        for name, future in calls.items():
            print(f"{name:22} {future.result(timeout=120)!r}")
        print(f"{'map(pricing.quote)':22} {quotes}")
        for fn in (reports.daily_report, serialize.pack, pricing.quote, total):
            route = pool.route_of(fn)
            name = f"{fn.__module__}.{fn.__name__}"
            print(f"  {name:32} -> {route.executor:14} ({route.why})")
        print("stats:", pool.stats())


if __name__ == "__main__":
    main()
