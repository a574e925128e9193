"""Alembic environment: always runs on the connection ``Database.upgrade`` hands it.

The caller has already begun the transaction and taken the migration lock, so every revision
runs inside it (both SQLite and PostgreSQL have transactional DDL): a failed upgrade leaves the
schema as it was. SQLite cannot ALTER most things in place, so revisions use Alembic's batch mode
there (copy-and-move), which is a no-op wrapper on PostgreSQL.
"""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - offline/CLI use is not supported
    raise RuntimeError("run migrations with `hypermobility-cds db upgrade`")

context.configure(
    connection=connection,
    target_metadata=None,
    version_table=context.config.attributes.get("version_table", "alembic_version"),
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
