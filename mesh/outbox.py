"""The transactional outbox: work for other services (an email to send, a hold to confirm),
written in the same transaction as the change it follows from, and a relay that delivers it.

The change and the promise to tell others commit or vanish together. The relay, in any number of
replicas at once:
- leases a batch with `FOR UPDATE SKIP LOCKED`, taking only the oldest pending message of each
  aggregate, so one aggregate's messages arrive in the order they were written;
- delivers each outside any transaction, messages of a kind that has a batch receiver together
  in one call (a relay woken by a commit first lingers a moment, so that messages committed close
  together leave together). Receivers are idempotent by the message id, so a relay
  that dies between delivering and marking only repeats a delivery, and a lease that runs out
  (`lease` seconds) hands the message to another replica;
- marks delivered messages and drops their payload; a failed delivery waits an exponential
  backoff with full jitter; one the receiver refuses for good (`Undeliverable`) is set aside
  and no longer holds back its aggregate.

Payloads are sealed (AES-GCM, bound to the message id): they can carry a verification code.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    Interval,
    LargeBinary,
    MetaData,
    Table,
    Text,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mesh.db import DriverPool, DriverStatement
from mesh.metrics import Metrics
from mesh.retries import full_jitter
from mesh.sealing import Sealer
from mesh.settings import Settings

log = structlog.get_logger("mesh.outbox")
_PENDING = "deliver_time IS NULL AND give_up_time IS NULL"


def outbox_table(metadata: MetaData) -> Table:
    """The `outbox` table of a service's schema (its migration creates the same)."""
    return Table(
        "outbox",
        metadata,
        Column("id", UUID(as_uuid=True), primary_key=True),
        Column("seq", BigInteger, Identity(), nullable=False, unique=True),
        Column("aggregate", Text, nullable=False),
        Column("kind", Text, nullable=False),
        Column("payload", LargeBinary),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("lease_until", DateTime(timezone=True)),
        Column("last_error", Text),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("deliver_time", DateTime(timezone=True)),
        Column("give_up_time", DateTime(timezone=True)),
        Index("outbox_pending", "aggregate", "seq", postgresql_where=text(_PENDING)),
        Index("outbox_delivered", "deliver_time", postgresql_where=text("deliver_time IS NOT NULL")),
    )


@dataclass(frozen=True)
class Message:
    id: uuid.UUID
    aggregate: str
    kind: str
    payload: dict[str, Any]
    attempts: int


class Undeliverable(Exception):
    """The receiver refused the message for good (bad input, unknown subject): trying again
    would meet the same answer."""


Deliver = Callable[[Message], Awaitable[None]]
DeliverTogether = Callable[[Sequence[Message]], Awaitable[None]]
"""Delivers several messages of one kind in one call, all or none; `Undeliverable` when the
receiver refuses the batch for good (the relay then delivers them one by one, so only a bad one
is set aside)."""


@dataclass(frozen=True)
class RelayTimings:
    interval: float = 1.0
    """Seconds between looks at the table while nothing wakes the relay."""
    lease: float = 30.0
    backoff_base: float = 1.0
    backoff_cap: float = 300.0
    batch: int = 100
    linger: float = 0.0
    """Seconds a relay woken by a commit waits before leasing, for more messages to join the batch."""

    @classmethod
    def of(cls, settings: Settings) -> RelayTimings:
        """The timings `MESH_OUTBOX_*` give."""
        return cls(
            interval=settings.outbox_interval,
            lease=settings.outbox_lease,
            backoff_base=settings.outbox_backoff_base,
            backoff_cap=settings.outbox_backoff_cap,
            linger=settings.outbox_linger,
        )


class Outbox:
    """The outbox of one service: `add` inside the service's own transactions, `run` relays."""

    def __init__(
        self,
        engine: AsyncEngine,
        driver: DriverPool,
        table: Table,
        sealer: Sealer,
        receivers: Mapping[str, Deliver],
        metrics: Metrics,
        timings: RelayTimings | None = None,
        together: Mapping[str, DeliverTogether] | None = None,
    ) -> None:
        self._engine = engine
        self._driver = driver
        self._table = table
        self._sealer = sealer
        self._receivers = dict(receivers)
        self._together = dict(together or {})
        self._timings = timings or RelayTimings()
        self._outcomes = Counter(
            "mesh_outbox_deliveries",
            "Outbox deliveries by kind and outcome.",
            ["kind", "outcome"],
            registry=metrics.registry,
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        # The relay's two statements of every batch run straight on the driver (mesh.db).
        self._lease = DriverStatement(_lease_statement(table))
        self._retry = (
            update(table)
            .where(table.c.id == bindparam("message_id"))
            .values(
                lease_until=None,
                next_attempt_time=func.now() + bindparam("delay", type_=Interval()),
                last_error=bindparam("error"),
            )
        )
        self._mark_delivered = DriverStatement(
            update(table)
            .where(table.c.id == func.any(bindparam("ids", type_=ARRAY(UUID(as_uuid=True)))))
            .values(deliver_time=func.now(), payload=None, lease_until=None, last_error=None)
        )

    async def add(
        self, connection: AsyncConnection, aggregate: str, kind: str, payload: Mapping[str, Any]
    ) -> uuid.UUID:
        """Writes a message in the caller's transaction; `notify()` once it has committed."""
        message_id, sealed = self.sealed(kind, payload)
        await connection.execute(
            insert(self._table).values(id=message_id, aggregate=aggregate, kind=kind, payload=sealed)
        )
        return message_id

    def sealed(self, kind: str, payload: Mapping[str, Any]) -> tuple[uuid.UUID, bytes]:
        """A new message's id and sealed payload, for a caller that writes the row in a statement
        of its own (`add` does it for the others)."""
        if kind not in self._receivers:
            raise ValueError(f"no receiver for outbox messages of kind {kind!r}")
        message_id = uuid.uuid4()
        return message_id, self._sealer.seal(message_id.bytes, json.dumps(dict(payload)).encode())

    def notify(self) -> None:
        """Wakes this process's relay: a message committed and is due now."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            # Cleared before the look, so a commit during it wakes the next one.
            self._wake.clear()
            try:
                delivered = await self.relay_once()
            except Exception:  # the database is away: look again later
                log.exception("outbox relay failed")
                delivered = 0
            if delivered >= self._timings.batch:
                continue  # more are waiting
            if await self._wait(self._timings.interval, until_woken=True) and self._timings.linger:
                await self._wait(self._timings.linger, until_woken=False)

    async def _wait(self, seconds: float, *, until_woken: bool) -> bool:
        """Waits `seconds`, cut short by the stop and, if `until_woken`, by a commit's wake-up;
        answers whether a commit woke the relay."""
        events = (self._stopping, self._wake) if until_woken else (self._stopping,)
        waiters = {asyncio.ensure_future(event.wait()) for event in events}
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        return self._wake.is_set() and not self._stopping.is_set()

    async def stop(self) -> None:
        self._stopping.set()

    async def relay_once(self) -> int:
        """Leases one batch and delivers it; answers how many messages it leased."""
        async with self._driver.connection() as connection:
            rows = await self._lease.fetch(
                connection, batch=self._timings.batch, lease=datetime.timedelta(seconds=self._timings.lease)
            )
        if not rows:
            return 0
        messages = []
        for row in rows:
            try:
                payload = json.loads(self._sealer.unseal(row["id"].bytes, row["payload"]))
            except Exception:  # sealed under another key, or tampered with: nobody can deliver it
                log.error("outbox message does not open; set aside", message_id=str(row["id"]), kind=row["kind"])
                await self._give_up(row["id"], row["kind"], "payload does not open")
                continue
            messages.append(Message(row["id"], row["aggregate"], row["kind"], payload, row["attempts"]))
        alone, together = _grouped(messages, self._together)
        outcomes = await asyncio.gather(
            *(self._deliver(message) for message in alone),
            *(self._deliver_together(kind, group) for kind, group in together.items()),
        )
        delivered = [message_id for outcome in outcomes for message_id, done in outcome if done]
        if delivered:
            async with self._driver.connection() as connection:
                await self._mark_delivered.execute(connection, ids=delivered)
        return len(rows)

    async def purge_delivered(self, older_than: datetime.timedelta) -> int:
        async with self._engine.begin() as connection:
            result = await connection.execute(
                delete(self._table).where(self._table.c.deliver_time < func.now() - older_than)
            )
        return int(result.rowcount)

    async def _deliver(self, message: Message) -> list[tuple[uuid.UUID, bool]]:
        try:
            await self._receivers[message.kind](message)
        except Undeliverable as refusal:
            log.error("outbox message refused", message_id=str(message.id), kind=message.kind, why=str(refusal))
            await self._give_up(message.id, message.kind, str(refusal))
            return [(message.id, False)]
        except Exception as error:
            return await self._retry_later([message], error)
        self._outcomes.labels(message.kind, "delivered").inc()
        return [(message.id, True)]

    async def _deliver_together(self, kind: str, messages: Sequence[Message]) -> list[tuple[uuid.UUID, bool]]:
        try:
            await self._together[kind](messages)
        except Undeliverable:
            # Refused as a batch: one by one, only the message at fault is set aside.
            alone = await asyncio.gather(*(self._deliver(message) for message in messages))
            return [outcome for outcomes in alone for outcome in outcomes]
        except Exception as error:
            return await self._retry_later(messages, error)
        self._outcomes.labels(kind, "delivered").inc(len(messages))
        return [(message.id, True) for message in messages]

    async def _retry_later(self, messages: Sequence[Message], error: Exception) -> list[tuple[uuid.UUID, bool]]:
        """Each message waits a backoff of its own (one statement for a whole failed batch)."""
        retries, why = [], type(error).__name__
        for message in messages:
            delay = full_jitter(message.attempts, self._timings.backoff_base, self._timings.backoff_cap)
            log.warning(
                "outbox delivery failed; will retry",
                message_id=str(message.id),
                kind=message.kind,
                attempts=message.attempts,
                error=why,
            )
            self._outcomes.labels(message.kind, "retry").inc()
            retries.append({"message_id": message.id, "delay": datetime.timedelta(seconds=delay), "error": why})
        async with self._engine.begin() as connection:
            await connection.execute(self._retry, retries)
        return [(message.id, False) for message in messages]

    async def _give_up(self, message_id: uuid.UUID, kind: str, why: str) -> None:
        self._outcomes.labels(kind, "given_up").inc()
        async with self._engine.begin() as connection:
            await connection.execute(
                update(self._table)
                .where(self._table.c.id == message_id)
                .values(give_up_time=func.now(), lease_until=None, payload=None, last_error=why[:500])
            )


def _grouped(
    messages: Sequence[Message], together: Mapping[str, DeliverTogether]
) -> tuple[list[Message], dict[str, list[Message]]]:
    """The messages to deliver alone, and per kind those to deliver together (two or more of a
    kind that has a batch receiver)."""
    by_kind: dict[str, list[Message]] = {}
    for message in messages:
        by_kind.setdefault(message.kind, []).append(message)
    alone = [message for kind, group in by_kind.items() if kind not in together or len(group) == 1 for message in group]
    return alone, {kind: group for kind, group in by_kind.items() if kind in together and len(group) > 1}


def _lease_statement(table: Table) -> Any:
    oldest, earlier = table.alias("o"), table.alias("e")
    # The oldest pending message of each aggregate only: a later one waits until the earlier is
    # delivered or set aside, whichever replica holds it.
    due = (
        select(oldest.c.id)
        .where(
            *_pending_in(oldest),
            oldest.c.next_attempt_time <= func.now(),
            or_(oldest.c.lease_until.is_(None), oldest.c.lease_until < func.now()),
            ~exists().where(
                earlier.c.aggregate == oldest.c.aggregate, earlier.c.seq < oldest.c.seq, *_pending_in(earlier)
            ),
        )
        .order_by(oldest.c.seq)
        .limit(bindparam("batch"))
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    return (
        update(table)
        .where(table.c.id == due.c.id)
        .values(lease_until=func.now() + bindparam("lease", type_=Interval()), attempts=table.c.attempts + 1)
        .returning(table.c.id, table.c.aggregate, table.c.kind, table.c.payload, table.c.attempts)
    )


def _pending_in(table: Any) -> tuple[Any, Any]:
    return table.c.deliver_time.is_(None), table.c.give_up_time.is_(None)
