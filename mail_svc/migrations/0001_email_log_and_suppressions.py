"""email log and suppression list

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")
NEWEST = [sa.text("create_time DESC"), sa.text("id DESC")]


def upgrade() -> None:
    op.create_table(
        "emails",
        sa.Column("id", postgresql.UUID(as_uuid=True), primary_key=True),
        sa.Column("idempotency_key", sa.Text, nullable=False, unique=True),
        sa.Column("template", sa.SmallInteger, nullable=False),
        sa.Column("recipient", sa.Text, nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("sealed_message", sa.LargeBinary),
        sa.Column("masked_text", sa.Text, nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("enqueue_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("handed_over", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("send_time", sa.DateTime(timezone=True)),
        sa.Column("fail_time", sa.DateTime(timezone=True)),
        sa.Column("bounce_time", sa.DateTime(timezone=True)),
        schema="mail",
    )
    # Listing: newest first, keyset on (create_time, id), optionally by status or recipient.
    op.create_index("emails_newest", "emails", NEWEST, schema="mail")
    op.create_index("emails_by_status", "emails", [sa.text("status"), *NEWEST], schema="mail")
    op.create_index("emails_by_recipient", "emails", [sa.text("lower(recipient)"), *NEWEST], schema="mail")
    # A day's stats count index ranges, whatever the table's size.
    for name, column in (("sent_at", "send_time"), ("failed_at", "fail_time"), ("bounced_at", "bounce_time")):
        op.create_index(
            f"emails_{name}", "emails", [column], schema="mail", postgresql_where=sa.text(f"{column} IS NOT NULL")
        )
    op.create_index(
        "emails_suppressed_at", "emails", ["create_time"], schema="mail", postgresql_where=sa.text("status = 6")
    )
    # What the sweeper looks for: pending emails that are due, sending ones whose lease ran out.
    op.create_index(
        "emails_due", "emails", ["next_attempt_time"], schema="mail", postgresql_where=sa.text("status = 1")
    )
    op.create_index("emails_leased", "emails", ["lease_until"], schema="mail", postgresql_where=sa.text("status = 2"))
    op.create_table(
        "suppressions",
        sa.Column("address", sa.Text, primary_key=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        schema="mail",
    )


def downgrade() -> None:
    op.drop_table("suppressions", schema="mail")
    op.drop_table("emails", schema="mail")
