"""Slow to import while a test holds it: waits for the file named by SUBCOMPAT_TEST_GATE
(at most 120 s), after noting the time in ``<gate>.started``. A probe of this module stays
open until the test creates the gate file."""

import os
import time

_gate = os.environ.get("SUBCOMPAT_TEST_GATE")
if _gate:
    with open(_gate + ".started", "a") as fh:
        fh.write(f"{time.time()}\n")
    _deadline = time.monotonic() + 120
    while not os.path.exists(_gate) and time.monotonic() < _deadline:
        time.sleep(0.02)


def job(log: str = "", hold: float = 0.0):
    if log:  # the same record as chancy_jobs.stamped
        from chancy_jobs import stamped

        return stamped.job(log, "gated", hold)
    return "gated"
