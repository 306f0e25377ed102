"""Which Pythons have isolated sub-interpreters: the one place that rule is written.

Stdlib only and import-free: the probe child loads it by file path in the *target*
interpreter (where subcompat may not be installed, and which may be older than 3.13).
"""

import sys

FIRST = (3, 13)  # isolated sub-interpreters with their own GIL (PEP 684, PEP 734's module)


def no_subinterpreters() -> "str | None":
    """Why this Python has no isolated sub-interpreters, or None."""
    if sys.version_info >= FIRST:
        return None
    return f"Python {sys.version_info[0]}.{sys.version_info[1]} has no isolated sub-interpreters"
