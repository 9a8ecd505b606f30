"""users, verification codes, refresh tokens, password resets, signing keys, outbox

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from auth_svc import models

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The first revision creates the tables as models.py first declared them; a change to a table
# afterwards is a new revision that alters it.
_TABLES = ("users", "verification_codes", "refresh_tokens", "password_resets", "signing_keys", "outbox")


def upgrade() -> None:
    bind = op.get_bind()
    for name in _TABLES:
        models.metadata.tables[f"auth.{name}"].create(bind)


def downgrade() -> None:
    bind = op.get_bind()
    for name in reversed(_TABLES):
        models.metadata.tables[f"auth.{name}"].drop(bind)
