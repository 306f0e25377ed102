"""Skip locally, fail in CI: a test that needs something absent is required there."""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_or_skip(condition: object, reason: str) -> None:
    if condition:
        return
    if in_ci():
        pytest.fail(f"required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(reason)
