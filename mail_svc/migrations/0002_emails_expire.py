"""an email may carry an expiry past which it is never sent

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("emails", sa.Column("expire_time", sa.DateTime(timezone=True)), schema="mail")
    op.create_index(
        "emails_expired_at", "emails", ["expire_time"], schema="mail", postgresql_where=sa.text("status = 7")
    )
    op.create_index(
        "emails_due_to_expire", "emails", ["expire_time"], schema="mail", postgresql_where=sa.text("status = 1")
    )


def downgrade() -> None:
    # Expired emails become failed ones, the nearest status the earlier schema has.
    op.execute("UPDATE mail.emails SET status = 4, fail_time = expire_time WHERE status = 7")
    op.drop_index("emails_due_to_expire", table_name="emails", schema="mail")
    op.drop_index("emails_expired_at", table_name="emails", schema="mail")
    op.drop_column("emails", "expire_time", schema="mail")
