"""a person may hold several codes (one per pending registration) and use one

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "holds_one_use_per_email",
        "holds",
        ["canonical_email"],
        unique=True,
        schema="invite",
        postgresql_where=sa.text("state = 2"),
    )
    op.create_index(
        "holds_one_live_per_email_and_code",
        "holds",
        ["canonical_email", "code_id"],
        unique=True,
        schema="invite",
        postgresql_where=sa.text("state = 1"),
    )
    op.drop_index("holds_one_live_per_email", table_name="holds", schema="invite")


def downgrade() -> None:
    # Back to one live hold or use per person: a person's other live holds are released (the newest
    # stays, unless the person has used a code) and their uses go back to their counters.
    op.execute(
        """
        WITH kept AS (
            SELECT DISTINCT ON (canonical_email) id FROM invite.holds h
            WHERE state = 1 AND NOT EXISTS (
                SELECT 1 FROM invite.holds u WHERE u.canonical_email = h.canonical_email AND u.state = 2)
            ORDER BY canonical_email, create_time DESC),
        released AS (
            UPDATE invite.holds SET state = 3, finish_time = now()
            WHERE state = 1 AND id NOT IN (SELECT id FROM kept)
            RETURNING code_id, code_slot, campaign_id, campaign_slot),
        uses AS (
            UPDATE invite.code_slots s SET taken = s.taken - r.n
            FROM (SELECT code_id, code_slot, count(*) AS n FROM released
                  WHERE code_slot IS NOT NULL GROUP BY code_id, code_slot) r
            WHERE s.code_id = r.code_id AND s.slot = r.code_slot)
        UPDATE invite.campaign_slots s SET taken = s.taken - r.n
        FROM (SELECT campaign_id, campaign_slot, count(*) AS n FROM released
              WHERE campaign_slot IS NOT NULL GROUP BY campaign_id, campaign_slot) r
        WHERE s.campaign_id = r.campaign_id AND s.slot = r.campaign_slot
        """
    )
    op.create_index(
        "holds_one_live_per_email",
        "holds",
        ["canonical_email"],
        unique=True,
        schema="invite",
        postgresql_where=sa.text("state IN (1, 2)"),
    )
    op.drop_index("holds_one_live_per_email_and_code", table_name="holds", schema="invite")
    op.drop_index("holds_one_use_per_email", table_name="holds", schema="invite")
