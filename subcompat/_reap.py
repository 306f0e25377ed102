"""Kill processes (each with its process group) and reap them: one loop for the CLI's
sweep of escaped processes and the zygote's sweep of its strays.

Stdlib only: the probe child loads it by file path in the target interpreter.
"""

import os
import signal

TYPE_CHECKING = False  # nothing imported in the child beyond what it already has
if TYPE_CHECKING:
    from collections.abc import Iterable


def kill_and_reap(pids: "Iterable[int]") -> int:
    """SIGKILL each pid's group and the pid itself, then wait for each; how many were reaped."""
    pids = list(pids)
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass
    reaped = 0
    for pid in pids:
        try:
            os.waitpid(pid, 0)
            reaped += 1
        except ChildProcessError:
            pass
    return reaped
