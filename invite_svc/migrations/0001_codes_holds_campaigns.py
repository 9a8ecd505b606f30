"""codes, use slots, holds and campaigns

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

UUID = postgresql.UUID(as_uuid=True)
NOW = sa.text("now()")


def _slots(name: str, owner: str, owner_table: str) -> None:
    op.create_table(
        name,
        sa.Column(owner, UUID, sa.ForeignKey(f"invite.{owner_table}.id"), primary_key=True),
        sa.Column("slot", sa.SmallInteger, primary_key=True),
        sa.Column("capacity", sa.BigInteger, nullable=False),
        sa.Column("taken", sa.BigInteger, nullable=False, server_default="0"),
        sa.CheckConstraint("taken >= 0 AND taken <= capacity", name=f"{name}_taken_within_capacity"),
        schema="invite",
    )


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("display_name", sa.Text, nullable=False, unique=True),
        sa.Column("capacity", sa.BigInteger),
        sa.Column("allowed_email_domains", postgresql.ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("invite_quota", sa.Integer, nullable=False, server_default="0"),
        sa.Column("start_time", sa.DateTime(timezone=True)),
        sa.Column("end_time", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("request_id", sa.Text, unique=True),
        schema="invite",
    )
    op.create_table(
        "codes",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("lookup", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("sealed", sa.LargeBinary, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("max_uses", sa.BigInteger),
        sa.Column("owner_user_id", UUID, index=True),
        sa.Column("owner_admin_id", UUID),
        sa.Column("campaign_id", UUID, sa.ForeignKey("invite.campaigns.id"), index=True),
        sa.Column("start_time", sa.DateTime(timezone=True)),
        sa.Column("expire_time", sa.DateTime(timezone=True)),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("mint_request_id", sa.Text, index=True),
        schema="invite",
    )
    _slots("code_slots", "code_id", "codes")
    _slots("campaign_slots", "campaign_id", "campaigns")
    op.create_table(
        "holds",
        sa.Column("id", UUID, primary_key=True),
        sa.Column("code_id", UUID, sa.ForeignKey("invite.codes.id"), nullable=False, index=True),
        sa.Column("code_slot", sa.SmallInteger),
        sa.Column("campaign_id", UUID),
        sa.Column("campaign_slot", sa.SmallInteger),
        sa.Column("canonical_email", sa.Text, nullable=False),
        sa.Column("state", sa.SmallInteger, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False, unique=True),
        sa.Column("user_id", UUID),
        sa.Column("expire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("finish_time", sa.DateTime(timezone=True)),
        schema="invite",
    )
    op.create_index(
        "holds_one_live_per_email", "holds", ["canonical_email"], unique=True, schema="invite",
        postgresql_where=sa.text("state IN (1, 2)"),
    )  # fmt: skip
    op.create_index(
        "holds_due_to_expire", "holds", ["expire_time"], schema="invite", postgresql_where=sa.text("state = 1")
    )


def downgrade() -> None:
    for table in ("holds", "campaign_slots", "code_slots", "codes", "campaigns"):
        op.drop_table(table, schema="invite")
