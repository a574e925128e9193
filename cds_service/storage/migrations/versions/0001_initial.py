"""Initial schema: feedback, served_cards, jwt_replay.

Also adopts a SQLite file written by the pre-Alembic service (same three tables created with
``CREATE TABLE IF NOT EXISTS``): ``served_cards`` and ``jwt_replay`` already have this shape and
are kept; ``feedback`` gains an ``id`` column (insertion order, which PostgreSQL has no rowid
for), so its rows are copied across in their original order. No acknowledged feedback is lost.

Revision ID: 0001
Revises:
Create Date: 2026-05-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_FEEDBACK_DATA = (
    "entry_hash, service_id, card_uuid, outcome, outcome_timestamp, accepted_suggestions, "
    "override_system, override_code, override_display, user_comment, received_at"
)


def _create_feedback() -> None:
    op.create_table(
        "feedback",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("entry_hash", sa.String(64), nullable=False),
        sa.Column("service_id", sa.Text, nullable=False),
        sa.Column("card_uuid", sa.Text, nullable=False),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("outcome_timestamp", sa.Text, nullable=False),
        sa.Column("accepted_suggestions", sa.Text),
        sa.Column("override_system", sa.Text),
        sa.Column("override_code", sa.Text),
        sa.Column("override_display", sa.Text),
        sa.Column("user_comment", sa.Text),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.UniqueConstraint("entry_hash", name="feedback_entry_hash_key"),
    )
    op.create_index("feedback_card", "feedback", ["card_uuid"])


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    tables = set(inspector.get_table_names())

    if "feedback" not in tables:
        _create_feedback()
    elif "id" not in {c["name"] for c in inspector.get_columns("feedback")}:
        # Pre-Alembic SQLite layout (entry_hash was the primary key): copy in rowid order.
        if "feedback_card" in {i["name"] for i in inspector.get_indexes("feedback")}:
            op.drop_index("feedback_card", table_name="feedback")
        op.rename_table("feedback", "feedback_legacy")
        _create_feedback()
        op.execute(
            f"INSERT INTO feedback ({_FEEDBACK_DATA}) "
            f"SELECT {_FEEDBACK_DATA} FROM feedback_legacy ORDER BY rowid"
        )
        op.drop_table("feedback_legacy")

    if "served_cards" not in tables:
        op.create_table(
            "served_cards",
            sa.Column("card_uuid", sa.Text, primary_key=True),
            sa.Column("service_id", sa.Text, nullable=False),
            sa.Column("rule_id", sa.Text, nullable=False),
            sa.Column("hook", sa.Text, nullable=False),
            sa.Column("served_at", sa.Text, nullable=False),
        )
    elif next(c for c in inspector.get_columns("served_cards") if c["name"] == "card_uuid")[
        "nullable"
    ]:
        # SQLite lets a TEXT PRIMARY KEY hold NULL unless told otherwise; the old code never
        # wrote one, but the column should say so (batch mode: copy-and-move on SQLite).
        with op.batch_alter_table("served_cards") as batch:
            batch.alter_column("card_uuid", existing_type=sa.Text, nullable=False)

    if "jwt_replay" not in tables:
        op.create_table(
            "jwt_replay",
            sa.Column("iss", sa.Text, nullable=False),
            sa.Column("jti", sa.Text, nullable=False),
            sa.Column("expires_at", sa.Float, nullable=False),
            sa.PrimaryKeyConstraint("iss", "jti", name="jwt_replay_pkey"),
        )
    replay_indexes = set()
    if "jwt_replay" in tables:
        replay_indexes = {i["name"] for i in inspector.get_indexes("jwt_replay")}
    if "jwt_replay_expires_at" not in replay_indexes:
        op.create_index("jwt_replay_expires_at", "jwt_replay", ["expires_at"])


def downgrade() -> None:
    op.drop_table("jwt_replay")
    op.drop_table("served_cards")
    op.drop_table("feedback")
