"""index the codes the expiry job looks for

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
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
    op.create_index(
        "codes_due_to_expire", "codes", ["expire_time"], schema="invite", postgresql_where=sa.text("state = 1")
    )


def downgrade() -> None:
    op.drop_index("codes_due_to_expire", table_name="codes", schema="invite")
