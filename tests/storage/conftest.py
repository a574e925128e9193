"""Every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests need ``CDS_TEST_POSTGRES_URL`` (``.ci/run`` starts a throw-away server and sets
it); without it they are skipped, with that reason (or fail, when ``CDS_REQUIRE_POSTGRES=1``
says a server must be there, as in CI). Each test gets its own PostgreSQL schema (via
the connection's ``search_path``), dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import fresh_schema_url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose default schema is fresh and empty."""
    yield from fresh_schema_url("t")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    return request.getfixturevalue("postgres_url")
