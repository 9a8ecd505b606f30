"""a campaign's waitlist top-up (how many of its waitlist invitations it keeps out), and the
indexes its invitations out are counted by

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "ALTER TABLE invite.campaigns ADD COLUMN waitlist_top_up INTEGER DEFAULT 0 NOT NULL"
        " CONSTRAINT campaigns_waitlist_top_up_not_negative CHECK (waitlist_top_up >= 0)"
    )
    op.execute("CREATE INDEX waitlist_invited ON invite.waitlist (release_id) WHERE state = 3")
    op.execute("CREATE INDEX waitlist_releases_campaign ON invite.waitlist_releases (campaign_id)")


def downgrade() -> None:
    op.execute("DROP INDEX invite.waitlist_releases_campaign")
    op.execute("DROP INDEX invite.waitlist_invited")
    op.execute("ALTER TABLE invite.campaigns DROP COLUMN waitlist_top_up")
