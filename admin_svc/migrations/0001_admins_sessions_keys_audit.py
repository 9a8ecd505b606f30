"""admins, their sessions, the access-token key ring, the audit log

Revision ID: 0001
Revises:
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The tables as they first were, written out: later revisions alter them, and models.py says how
# they are now.
_CREATE = (
    """
    CREATE TABLE admin.admins (
        id UUID NOT NULL,
        email TEXT NOT NULL,
        canonical_email TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role SMALLINT NOT NULL,
        state SMALLINT NOT NULL,
        sealed_totp_secret BYTEA NOT NULL,
        totp_last_step BIGINT DEFAULT '0' NOT NULL,
        create_request TEXT,
        create_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        last_sign_in_time TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id),
        UNIQUE (canonical_email),
        UNIQUE (create_request)
    )
    """,
    """
    CREATE TABLE admin.sessions (
        id UUID NOT NULL,
        admin_id UUID NOT NULL REFERENCES admin.admins (id),
        create_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        expire_time TIMESTAMP WITH TIME ZONE NOT NULL,
        revoke_time TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id)
    )
    """,
    "CREATE INDEX sessions_live ON admin.sessions (admin_id) WHERE revoke_time IS NULL",
    "CREATE INDEX sessions_revoked ON admin.sessions (revoke_time) WHERE revoke_time IS NOT NULL",
    """
    CREATE TABLE admin.signing_keys (
        kid TEXT NOT NULL,
        sealed_private_key TEXT NOT NULL,
        create_time TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        retire_time TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (kid)
    )
    """,
    "CREATE UNIQUE INDEX signing_keys_one_active ON admin.signing_keys ((retire_time IS NULL)) "
    "WHERE retire_time IS NULL",
    """
    CREATE TABLE admin.audit_log (
        sequence BIGINT NOT NULL,
        id UUID NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        request_json TEXT NOT NULL,
        request_id TEXT NOT NULL,
        create_time TIMESTAMP WITH TIME ZONE NOT NULL,
        previous_digest BYTEA NOT NULL,
        digest BYTEA NOT NULL,
        key_id TEXT NOT NULL,
        signature BYTEA NOT NULL,
        outcome SMALLINT NOT NULL,
        outcome_reason TEXT DEFAULT '' NOT NULL,
        outcome_time TIMESTAMP WITH TIME ZONE,
        outcome_key_id TEXT DEFAULT '' NOT NULL,
        outcome_signature BYTEA DEFAULT ''::bytea NOT NULL,
        PRIMARY KEY (sequence),
        UNIQUE (id)
    )
    """,
    "CREATE INDEX audit_log_pending ON admin.audit_log (create_time) WHERE outcome = 1",
)
_TABLES = ("audit_log", "signing_keys", "sessions", "admins")


def upgrade() -> None:
    for statement in _CREATE:
        op.execute(statement)


def downgrade() -> None:
    for name in _TABLES:
        op.execute(f"DROP TABLE admin.{name}")
