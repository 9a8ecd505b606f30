"""each pending registration of an email is a row of its own, named by a flow token

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE auth.users ADD COLUMN registration_digest BYTEA")
    op.execute("ALTER TABLE auth.users ADD CONSTRAINT users_registration_digest_key UNIQUE (registration_digest)")
    op.execute("CREATE UNIQUE INDEX users_one_account_per_email ON auth.users (canonical_email) WHERE state <> 1")
    op.execute("CREATE INDEX users_pending_by_email ON auth.users (canonical_email, create_time) WHERE state = 1")
    op.execute("ALTER TABLE auth.users DROP CONSTRAINT users_canonical_email_key")


def downgrade() -> None:
    # One row per person again: of an email's pending registrations, only the newest stays (or
    # none, where the email has an account); the holds of the others lapse at invite_svc.
    op.execute(
        """
        DELETE FROM auth.users u WHERE state = 1 AND (
            EXISTS (SELECT 1 FROM auth.users a WHERE a.canonical_email = u.canonical_email AND a.state <> 1)
            OR EXISTS (
                SELECT 1 FROM auth.users n WHERE n.canonical_email = u.canonical_email AND n.state = 1
                AND (n.create_time, n.id) > (u.create_time, u.id)))
        """
    )
    op.execute("ALTER TABLE auth.users ADD CONSTRAINT users_canonical_email_key UNIQUE (canonical_email)")
    op.execute("DROP INDEX auth.users_pending_by_email")
    op.execute("DROP INDEX auth.users_one_account_per_email")
    op.execute("ALTER TABLE auth.users DROP COLUMN registration_digest")
