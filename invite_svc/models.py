"""Tables of the `invite` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
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
from sqlalchemy.dialects.postgresql import ARRAY, UUID

from mesh.outbox import outbox_table

metadata = MetaData(schema="invite")

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("display_name", Text, nullable=False, unique=True),
    Column("capacity", BigInteger),
    Column("allowed_email_domains", ARRAY(Text), nullable=False, server_default="{}"),
    Column("invite_quota", Integer, nullable=False, server_default="0"),
    Column("start_time", DateTime(timezone=True)),
    Column("end_time", DateTime(timezone=True)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("request_id", Text, unique=True),
    Column("waitlist_top_up", Integer, nullable=False, server_default="0"),
    CheckConstraint("waitlist_top_up >= 0", name="campaigns_waitlist_top_up_not_negative"),
)

codes = Table(
    "codes",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("lookup", LargeBinary, nullable=False, unique=True),
    Column("sealed", LargeBinary, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("max_uses", BigInteger),
    Column("owner_user_id", UUID(as_uuid=True), index=True),
    Column("owner_admin_id", UUID(as_uuid=True)),
    Column("campaign_id", UUID(as_uuid=True), ForeignKey("invite.campaigns.id"), index=True),
    Column("start_time", DateTime(timezone=True)),
    Column("expire_time", DateTime(timezone=True)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("mint_request_id", Text, index=True),
    Index("codes_due_to_expire", "expire_time", postgresql_where=text("state = 1")),
    # The admins' listing pages through every code in this order: a page is an index range.
    Index("codes_listed", "create_time", "id"),
)


def _slots(name: str, owner: str, owner_table: str) -> Table:
    # A use counter split into slots: holds on one hot code spread over rows, not queue on one.
    return Table(
        name,
        metadata,
        Column(owner, UUID(as_uuid=True), ForeignKey(f"invite.{owner_table}.id"), primary_key=True),
        Column("slot", SmallInteger, primary_key=True),
        Column("capacity", BigInteger, nullable=False),
        Column("taken", BigInteger, nullable=False, server_default="0"),
        CheckConstraint("taken >= 0 AND taken <= capacity", name=f"{name}_taken_within_capacity"),
    )


code_slots = _slots("code_slots", "code_id", "codes")
campaign_slots = _slots("campaign_slots", "campaign_id", "campaigns")

holds = Table(
    "holds",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("code_id", UUID(as_uuid=True), ForeignKey("invite.codes.id"), nullable=False, index=True),
    Column("code_slot", SmallInteger),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("campaign_slot", SmallInteger),
    Column("canonical_email", Text, nullable=False),
    Column("state", SmallInteger, nullable=False),
    Column("request_id", Text, nullable=False, unique=True),
    Column("user_id", UUID(as_uuid=True)),
    Column("expire_time", DateTime(timezone=True), nullable=False),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("finish_time", DateTime(timezone=True)),
    # One confirmed use per person, enforced here rather than by read-then-write. A person may hold
    # several codes at once (each pending registration its own), but a code only once: a second
    # registration with the same code shares the live hold.
    Index("holds_one_use_per_email", "canonical_email", unique=True, postgresql_where=text("state = 2")),
    Index(
        "holds_one_live_per_email_and_code",
        "canonical_email",
        "code_id",
        unique=True,
        postgresql_where=text("state = 1"),
    ),
    Index("holds_due_to_expire", "expire_time", postgresql_where=text("state = 1")),
)

# One row per email on the waitlist. A place is the order of (rank_key, seq) among the entries
# waiting: seq is the join order, rank_key starts at twice seq and drops as referrals count or an
# admin moves the entry (invite_svc.store.waitlist tells how places are counted at scale).
waitlist = Table(
    "waitlist",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("seq", BigInteger, Identity(), nullable=False, unique=True),
    Column("email", Text, nullable=False),
    Column("canonical_email", Text, nullable=False, unique=True),
    Column("state", SmallInteger, nullable=False),
    Column("rank_key", BigInteger, nullable=False),
    Column("referral_code", Text, nullable=False, unique=True),
    Column("referrer_id", UUID(as_uuid=True), ForeignKey("invite.waitlist.id")),
    Column("referral_counted", Boolean, nullable=False, server_default="false"),
    Column("referrals", Integer, nullable=False, server_default="0"),
    Column("moved_places", Integer, nullable=False, server_default="0"),
    Column("client", LargeBinary),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("confirm_time", DateTime(timezone=True)),
    Column("invite_time", DateTime(timezone=True)),
    Column("remove_time", DateTime(timezone=True)),
    Column("release_id", UUID(as_uuid=True)),
    Column("code_id", UUID(as_uuid=True)),
    # When the entry's place last changed (it was confirmed, moved, or stopped waiting): what the
    # places index catches up on. A join leaves it empty: an unconfirmed entry has no place.
    Column("rank_time", DateTime(timezone=True)),
    Index("waitlist_places", "rank_key", "seq", postgresql_where=text("state = 2")),
    Index("waitlist_rank_changes", "rank_time", "seq", postgresql_where=text("rank_time IS NOT NULL")),
    Index("waitlist_joined", "create_time"),
    Index("waitlist_counted_referrals", "referrer_id", "confirm_time", postgresql_where=text("referral_counted")),
    Index("waitlist_top_referrers", "referrals", "seq", postgresql_where=text("referrals > 0")),
    # Who a release invited: what a release asked again answers, and a campaign's invitations out.
    Index("waitlist_invited", "release_id", postgresql_where=text("state = 3")),
)

waitlist_releases = Table(
    "waitlist_releases",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("request_id", Text, nullable=False, unique=True),
    Column("count", Integer, nullable=False),
    Column("campaign_id", UUID(as_uuid=True)),
    Column("admin_id", UUID(as_uuid=True)),
    Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("waitlist_releases_campaign", "campaign_id"),
)

outbox = outbox_table(metadata)
