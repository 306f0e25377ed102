"""pytest plugin (entry point ``pytest11``): inactive unless ``--subcompat`` is given."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("subcompat")
    group.addoption(
        "--subcompat",
        action="store_true",
        default=False,
        help="add one test per configured job module: may it run in a sub-interpreter?",
    )
    parser.addini("subcompat", "enable the subcompat job checks", type="bool", default=False)
