"""admins' passkeys (WebAuthn credentials)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE admin.passkeys (
            id UUID NOT NULL,
            admin_id UUID NOT NULL REFERENCES admin.admins (id) ON DELETE CASCADE,
            credential_id BYTEA NOT NULL,
            public_key BYTEA NOT NULL,
            sign_count BIGINT NOT NULL,
            display_name TEXT NOT NULL,
            create_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
            last_use_time TIMESTAMP WITH TIME ZONE,
            PRIMARY KEY (id),
            UNIQUE (credential_id)
        )
        """
    )
    op.execute("CREATE INDEX ix_admin_passkeys_admin_id ON admin.passkeys (admin_id)")


def downgrade() -> None:
    op.execute("DROP TABLE admin.passkeys")
