"""Slow reliability tests (real server processes, kill -9, SIGTERM) run only when asked.

``make test`` stays quick; ``make reliability`` (and CI) set ``CDS_SLOW_TESTS=1``.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CDS_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set CDS_SLOW_TESTS=1 (make reliability)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
