"""an index the admins' listing of every code pages through

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX codes_listed ON invite.codes (create_time, id)")


def downgrade() -> None:
    op.execute("DROP INDEX invite.codes_listed")
