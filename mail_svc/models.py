"""Tables of the `mail` schema: the email log (the source of truth for every message) and the
suppression list."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
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

metadata = MetaData(schema="mail")

emails = Table(
    "emails",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("template", SmallInteger, nullable=False),
    Column("recipient", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("message_id", Text, nullable=False),
    # The MIME message, sealed (mesh.sealing); dropped once the email is finished with.
    Column("sealed_message", LargeBinary),
    Column("masked_text", Text, nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_attempt_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("enqueue_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("lease_until", DateTime(timezone=True)),
    # Set once the message's final dot was written to the relay: from then on it may have been accepted.
    Column("handed_over", Boolean, nullable=False, server_default="false"),
    Column("send_time", DateTime(timezone=True)),
    Column("fail_time", DateTime(timezone=True)),
    Column("bounce_time", DateTime(timezone=True)),
    # Never sent after this: what it carries (a code, a link) is dead by then.
    Column("expire_time", DateTime(timezone=True)),
    # Who asked for it beyond the calling service (an admin's free-form email): `admin:<id>`.
    Column("requested_by", Text, nullable=False, server_default=""),
)
Index("emails_newest", emails.c.create_time.desc(), emails.c.id.desc())
Index("emails_by_status", emails.c.status, emails.c.create_time.desc(), emails.c.id.desc())
Index("emails_by_recipient", func.lower(emails.c.recipient), emails.c.create_time.desc(), emails.c.id.desc())
Index("emails_sent_at", emails.c.send_time, postgresql_where=text("send_time IS NOT NULL"))
Index("emails_failed_at", emails.c.fail_time, postgresql_where=text("fail_time IS NOT NULL"))
Index("emails_bounced_at", emails.c.bounce_time, postgresql_where=text("bounce_time IS NOT NULL"))
Index("emails_suppressed_at", emails.c.create_time, postgresql_where=text("status = 6"))
Index("emails_due", emails.c.next_attempt_time, postgresql_where=text("status = 1"))
Index("emails_leased", emails.c.lease_until, postgresql_where=text("status = 2"))
Index("emails_expired_at", emails.c.expire_time, postgresql_where=text("status = 7"))
Index("emails_due_to_expire", emails.c.expire_time, postgresql_where=text("status = 1"))

suppressions = Table(
    "suppressions",
    metadata,
    Column("address", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
