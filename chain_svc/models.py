"""Tables of the `chain` schema: one row per linked wallet, with its latest snapshot."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, MetaData, Numeric, SmallInteger, Table, Text, func
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData(schema="chain")

wallets = Table(
    "wallets",
    metadata,
    Column("user_id", UUID(as_uuid=True), primary_key=True),
    Column("address", Text, nullable=False, unique=True),
    Column("chain_id", BigInteger, nullable=False),
    Column("shard", SmallInteger, nullable=False),
    Column("link_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # The latest snapshot: null until the first poll.
    Column("block_number", BigInteger),
    Column("block_hash", Text),
    Column("balance_wei", Numeric(78, 0)),
    Column("nonce", BigInteger),
    Column("token_balances", JSONB),
    Column("read_time", DateTime(timezone=True)),
    Column("polled_by", Text),
    Column("poll_count", BigInteger, nullable=False, server_default="0"),
    Column("fence", BigInteger, nullable=False, server_default="0"),
    Index("wallets_by_shard", "shard", "user_id"),
)
