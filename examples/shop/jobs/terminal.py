"""Incompatible: readline is a single-phase extension (stdlib)."""

import readline  # noqa: F401


def history_size() -> int:
    return readline.get_current_history_length()
