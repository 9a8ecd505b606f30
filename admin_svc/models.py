"""Tables of the `admin` schema: admin accounts, their sessions, the access-token key ring and the
audit log, and admins' passkeys."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from mesh.token_keys import signing_keys_table

metadata = MetaData(schema="admin")

admins = Table(
    "admins",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", Text, nullable=False),
    Column("canonical_email", Text, nullable=False, unique=True),
    Column("password_hash", Text, nullable=False),
    Column("role", SmallInteger, nullable=False),
    Column("state", SmallInteger, nullable=False),
    # The TOTP secret, sealed with AES-256-GCM under a key derived from the KEK (mesh.sealing).
    Column("sealed_totp_secret", LargeBinary, nullable=False),
    # The last TOTP time step a sign-in used: a code is good once, and never one older.
    Column("totp_last_step", BigInteger, nullable=False, server_default="0"),
    # The CreateAdmin request that made it: the same request again answers the same admin.
    Column("create_request", Text, unique=True),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_sign_in_time", DateTime(timezone=True)),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("admin_id", UUID(as_uuid=True), ForeignKey("admins.id"), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("revoke_time", DateTime(timezone=True)),
    Index("sessions_live", "admin_id", postgresql_where=text("revoke_time IS NULL")),
    Index("sessions_revoked", "revoke_time", postgresql_where=text("revoke_time IS NOT NULL")),
)

signing_keys = signing_keys_table(metadata)

audit_log = Table(
    "audit_log",
    metadata,
    Column("sequence", BigInteger, primary_key=True),
    Column("id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("request_json", Text, nullable=False),
    Column("request_id", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False),
    Column("previous_digest", LargeBinary, nullable=False),
    Column("digest", LargeBinary, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("outcome", SmallInteger, nullable=False),
    Column("outcome_reason", Text, nullable=False, server_default=""),
    Column("outcome_time", DateTime(timezone=True)),
    Column("outcome_key_id", Text, nullable=False, server_default=""),
    Column("outcome_signature", LargeBinary, nullable=False, server_default=text("''::bytea")),
    Index("audit_log_pending", "create_time", postgresql_where=text("outcome = 1")),
)

passkeys = Table(
    "passkeys",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column(
        "admin_id", UUID(as_uuid=True), ForeignKey("admin.admins.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("credential_id", LargeBinary, nullable=False, unique=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("sign_count", BigInteger, nullable=False),
    Column("display_name", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_use_time", DateTime(timezone=True)),
)
