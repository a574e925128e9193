"""A throw-away PostgreSQL schema per test (or module), for tests that need the real server.

Needs ``CDS_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it). Without it the caller
is skipped, or fails when ``CDS_REQUIRE_POSTGRES=1`` says a server must be there (CI): a skip
there would hide a gap. The schema itself comes from :func:`tools.postgres_schema.fresh_schema`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tools.postgres_schema import fresh_schema

POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL")
NO_POSTGRES = "no PostgreSQL server: set CDS_TEST_POSTGRES_URL (.ci/run starts one)"


def fresh_schema_url(prefix: str = "t") -> Iterator[str]:
    """Yield a PostgreSQL URL whose default schema is new and empty; drop it afterwards."""
    if not POSTGRES_URL:
        if os.environ.get("CDS_REQUIRE_POSTGRES") == "1":
            pytest.fail("CDS_REQUIRE_POSTGRES=1 but CDS_TEST_POSTGRES_URL is not set")
        pytest.skip(NO_POSTGRES)
    with fresh_schema(POSTGRES_URL, prefix) as url:
        yield url
