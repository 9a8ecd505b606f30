"""SQL of the `chain` schema: linked wallets and their latest snapshots.

One wallet per user is the primary key and one user per address a unique index: a link is one
upsert on the user, and an address held by someone else breaks the index, not a read beforehand.
A snapshot is written only for the same address and only by the newest holder of the wallet's
shard (its fence, from mesh.leases), so a replica that lost its shard while reading cannot write
over the one that took it, and a relinked wallet never shows the old address's data. One holder
polls a shard's rounds one after another, so its snapshots follow the chain; block numbers are
not compared, since a development chain that starts afresh counts from zero again.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import case, delete, func, null, select
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from chain_svc import domain
from chain_svc.models import wallets
from mesh.db import DriverPool


@dataclass(frozen=True)
class Snapshot:
    block_number: int
    block_hash: str
    balance_wei: int
    nonce: int
    token_balances: dict[str, int]
    """contract address → balance in its smallest unit"""
    read_time: datetime.datetime


@dataclass(frozen=True)
class Wallet:
    user_id: uuid.UUID
    address: str
    chain_id: int
    link_time: datetime.datetime
    snapshot: Snapshot | None
    poll_count: int = 0
    polled_by: str | None = None


@dataclass(frozen=True)
class Polled:
    """One wallet's snapshot as a poller read it."""

    user_id: uuid.UUID
    address: str
    fence: int
    """The fence of the shard's lease it was read under."""
    snapshot: Snapshot


_SNAPSHOT_COLUMNS = ("block_number", "block_hash", "balance_wei", "nonce", "token_balances", "read_time")


_KEEP = """
UPDATE chain.wallets AS w SET
    block_number = p.block_number, block_hash = p.block_hash, balance_wei = p.balance_wei, nonce = p.nonce,
    token_balances = p.token_balances::jsonb, read_time = p.read_time, polled_by = $10,
    poll_count = w.poll_count + 1, fence = p.fence
FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::numeric[], $7::bigint[],
            $8::text[], $9::timestamptz[])
    AS p(user_id, address, fence, block_number, block_hash, balance_wei, nonce, token_balances, read_time)
WHERE w.user_id = p.user_id AND w.address = p.address AND w.fence <= p.fence
RETURNING w.user_id
"""


class WalletStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool) -> None:
        self._engine = engine
        self._driver = driver

    async def link(self, user_id: uuid.UUID, address: str, chain_id: int) -> Wallet:
        """Links `address` to the user, replacing the user's wallet (and dropping its snapshot
        when the address changes)."""
        inserted = upsert(wallets).values(
            user_id=user_id, address=address, chain_id=chain_id, shard=domain.shard_of(user_id)
        )
        relinked = wallets.c.address != inserted.excluded.address
        statement = inserted.on_conflict_do_update(
            index_elements=[wallets.c.user_id],
            set_={
                "address": inserted.excluded.address,
                "chain_id": inserted.excluded.chain_id,
                "link_time": func.now(),
                **{column: case((relinked, null()), else_=wallets.c[column]) for column in _SNAPSHOT_COLUMNS},
            },
        ).returning(*wallets.c)
        try:
            async with self._engine.begin() as connection:
                row = (await connection.execute(statement)).one()
        except IntegrityError as error:
            raise domain.Refusal(domain.ADDRESS_TAKEN, "this address is linked to another account") from error
        return _wallet(row._mapping)

    async def unlink(self, user_id: uuid.UUID) -> None:
        async with self._engine.begin() as connection:
            gone = await connection.execute(delete(wallets).where(wallets.c.user_id == user_id))
        if gone.rowcount == 0:
            raise domain.Refusal(domain.NOT_FOUND, "no wallet is linked")

    async def wallet_of(self, user_id: uuid.UUID) -> Wallet:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(wallets).where(wallets.c.user_id == user_id))).first()
        if row is None:
            raise domain.Refusal(domain.NOT_FOUND, "no wallet is linked")
        return _wallet(row._mapping)

    async def in_shards(self, shards: Sequence[int]) -> list[tuple[uuid.UUID, str, int]]:
        """(user id, address, shard) of every wallet in `shards`."""
        query = select(wallets.c.user_id, wallets.c.address, wallets.c.shard).where(wallets.c.shard.in_(shards))
        async with self._engine.connect() as connection:
            return [(row.user_id, row.address, row.shard) for row in await connection.execute(query)]

    async def keep(self, polled: Sequence[Polled], poller: str) -> int:
        """Writes each snapshot unless a newer one, another address or a newer fence holds the
        row; answers how many were written. One statement for the whole round."""
        if not polled:
            return 0
        columns = (
            [each.user_id for each in polled],
            [each.address for each in polled],
            [each.fence for each in polled],
            [each.snapshot.block_number for each in polled],
            [each.snapshot.block_hash for each in polled],
            [Decimal(each.snapshot.balance_wei) for each in polled],
            [each.snapshot.nonce for each in polled],
            [
                json.dumps({token: str(balance) for token, balance in each.snapshot.token_balances.items()})
                for each in polled
            ],
            [each.snapshot.read_time for each in polled],
        )
        async with self._driver.connection() as connection:
            written = await connection.fetch(_KEEP, *columns, poller)
        return len(written)


def _wallet(row: object) -> Wallet:
    mapping = dict(row)  # type: ignore[call-overload]
    snapshot = None
    if mapping["block_number"] is not None:
        tokens = mapping["token_balances"] or {}
        if isinstance(tokens, str):
            tokens = json.loads(tokens)
        snapshot = Snapshot(
            block_number=mapping["block_number"],
            block_hash=mapping["block_hash"],
            balance_wei=int(mapping["balance_wei"]),
            nonce=mapping["nonce"],
            token_balances={token: int(balance) for token, balance in tokens.items()},
            read_time=mapping["read_time"],
        )
    return Wallet(
        user_id=mapping["user_id"],
        address=mapping["address"],
        chain_id=mapping["chain_id"],
        link_time=mapping["link_time"],
        snapshot=snapshot,
        poll_count=mapping["poll_count"],
        polled_by=mapping["polled_by"],
    )
