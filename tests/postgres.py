"""A throw-away PostgreSQL schema per test (or module), for tests that need the real server.

Needs ``CDS_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it). Without it the caller
is skipped, or fails when ``CDS_REQUIRE_POSTGRES=1`` says a server must be there (CI): a skip
there would hide a gap. The schema is selected through the connection's ``search_path`` and
dropped afterwards, so tests never see each other's rows.
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


def fresh_schema_url(prefix: str = "t") -> Iterator[str]:
    """Yield a PostgreSQL URL whose default schema is new and empty; drop it afterwards."""
    if not POSTGRES_URL:
        if os.environ.get("CDS_REQUIRE_POSTGRES") == "1":
            pytest.fail("CDS_REQUIRE_POSTGRES=1 but CDS_TEST_POSTGRES_URL is not set")
        pytest.skip(NO_POSTGRES)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_url = make_url(POSTGRES_URL).set(drivername="postgresql+psycopg")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
