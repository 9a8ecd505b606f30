"""Tables of the `auth` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from mesh.outbox import outbox_table
from mesh.token_keys import signing_keys_table

metadata = MetaData(schema="auth")

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("email", Text, nullable=False),
    # The canonical email (mesh.emails) is the identity: one account per person, while each
    # pending registration of it is a row of its own (state 1) until one is verified.
    Column("canonical_email", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    # A pending registration's flow token, as a digest: only the client that registered holds it.
    Column("registration_digest", LargeBinary, unique=True),
    # What was submitted (keyed: auth_svc.registration), so the same submission sent again, by a
    # client whose answer was lost, finds this registration instead of making another.
    Column("submission_digest", LargeBinary),
    Column("referrer_user_id", UUID(as_uuid=True), index=True),
    Column("referrer_admin_id", UUID(as_uuid=True)),
    Column("hold_id", UUID(as_uuid=True)),
    Column("hold_expire_time", DateTime(timezone=True)),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("invite_quota", Integer, nullable=False, server_default="0"),
    Column("invite_uses", BigInteger, nullable=False, server_default="1"),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("verify_time", DateTime(timezone=True)),
    Index("users_one_account_per_email", "canonical_email", unique=True, postgresql_where=text("state <> 1")),
    Index("users_pending_by_email", "canonical_email", "create_time", postgresql_where=text("state = 1")),
    Index("users_pending_until", "hold_expire_time", postgresql_where=text("state = 1")),
    Index("users_newest", text("create_time DESC"), text("id DESC")),
)

verification_codes = Table(
    "verification_codes",
    metadata,
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), primary_key=True),
    Column("code_digest", LargeBinary, nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("attempts_left", SmallInteger, nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("digest", LargeBinary, nullable=False, unique=True),
    Column("family_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("state", SmallInteger, nullable=False),
    Column("expire_time", DateTime(timezone=True), nullable=False, index=True),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

password_resets = Table(
    "password_resets",
    metadata,
    Column("digest", LargeBinary, primary_key=True),
    Column("user_id", UUID(as_uuid=True), ForeignKey("auth.users.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("expire_time", DateTime(timezone=True), nullable=False, index=True),
    Column("use_time", DateTime(timezone=True)),
)

signing_keys = signing_keys_table(metadata)

outbox = outbox_table(metadata)
