"""rate-limit rules

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rules",
        sa.Column("route", sa.Text, primary_key=True),
        sa.Column("requests_per_unit", sa.Integer, nullable=False),
        sa.Column("unit", sa.SmallInteger, nullable=False),
        sa.Column("fail_closed", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")),
        sa.CheckConstraint("requests_per_unit >= 0", name="rules_requests_not_negative"),
        schema="ratelimit",
    )


def downgrade() -> None:
    op.drop_table("rules", schema="ratelimit")
