"""Every storage test runs on SQLite and on PostgreSQL.

PostgreSQL tests need ``CDS_TEST_POSTGRES_URL`` (``.ci/run`` starts a throw-away server and sets
it); without it they are skipped, with that reason (or fail, when ``CDS_REQUIRE_POSTGRES=1``
says a server must be there, as in CI). Each test gets its own PostgreSQL schema (via
the connection's ``search_path``), dropped afterwards, so tests never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

POSTGRES_URL = os.environ.get("CDS_TEST_POSTGRES_URL")
NO_POSTGRES = "no PostgreSQL server: set CDS_TEST_POSTGRES_URL (.ci/run starts one)"


def _admin_url() -> str:
    return make_url(POSTGRES_URL).set(drivername="postgresql+psycopg").render_as_string(
        hide_password=False
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose default schema is fresh and empty."""
    if not POSTGRES_URL:
        if os.environ.get("CDS_REQUIRE_POSTGRES") == "1":  # CI: a skip here would hide a gap
            pytest.fail("CDS_REQUIRE_POSTGRES=1 but CDS_TEST_POSTGRES_URL is not set")
        pytest.skip(NO_POSTGRES)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """The URL of an empty database, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'cds.sqlite3'}"
    return request.getfixturevalue("postgres_url")
