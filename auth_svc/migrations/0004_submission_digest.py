"""a pending registration's submission, keyed, so the same submission sent again finds it

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
    op.execute("ALTER TABLE auth.users ADD COLUMN submission_digest BYTEA")


def downgrade() -> None:
    op.execute("ALTER TABLE auth.users DROP COLUMN submission_digest")
