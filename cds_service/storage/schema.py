"""The tables, as SQLAlchemy Core objects the queries are written against.

This is the *current* shape of the schema for the code; the migrations under ``migrations/``
create it and must be kept in step (``tests/storage`` compares the two on both backends).
Timestamps are ISO-8601 UTC text, as the service has always stored them, so the rows read the
same on SQLite and PostgreSQL and sort correctly as text.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# Integer on SQLite makes ``id`` the rowid (insertion order); BIGSERIAL on PostgreSQL.
_ID = BigInteger().with_variant(Integer(), "sqlite")

feedback = Table(
    "feedback",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    # sha256 of (service id, entry): what makes a resent feedback entry count once.
    Column("entry_hash", String(64), nullable=False),
    Column("service_id", Text, nullable=False),
    Column("card_uuid", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("outcome_timestamp", Text, nullable=False),
    Column("accepted_suggestions", Text),
    Column("override_system", Text),
    Column("override_code", Text),
    Column("override_display", Text),
    Column("user_comment", Text),
    Column("received_at", Text, nullable=False),
    UniqueConstraint("entry_hash", name="feedback_entry_hash_key"),
)
Index("feedback_card", feedback.c.card_uuid)

served_cards = Table(
    "served_cards",
    metadata,
    Column("card_uuid", Text, primary_key=True),
    Column("service_id", Text, nullable=False),
    Column("rule_id", Text, nullable=False),
    Column("hook", Text, nullable=False),
    Column("served_at", Text, nullable=False),
)

jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("iss", Text, nullable=False),
    Column("jti", Text, nullable=False),
    # Unix time after which the token could no longer pass the exp check (exp + leeway).
    Column("expires_at", Float, nullable=False),
    PrimaryKeyConstraint("iss", "jti", name="jwt_replay_pkey"),
)
Index("jwt_replay_expires_at", jwt_replay.c.expires_at)

FEEDBACK_COLUMNS = tuple(c.name for c in feedback.columns if c.name != "id")
