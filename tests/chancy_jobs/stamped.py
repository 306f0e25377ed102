"""Sub-interpreter safe (stdlib only); notes when it started and ended, for assertions
about order and overlap. ``hold`` is work: seconds the job takes."""

import time


def job(log: str, tag: str = "", hold: float = 0.0):
    with open(log, "a") as fh:
        fh.write(f"{tag} start {time.time()}\n")
    time.sleep(hold)
    with open(log, "a") as fh:
        fh.write(f"{tag} end {time.time()}\n")
    return tag
