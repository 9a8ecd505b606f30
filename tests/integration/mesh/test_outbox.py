"""The outbox relay against a real PostgreSQL: several relays at once deliver every message, in
order per aggregate; failures wait and retry; a refusal for good is set aside without holding
back the aggregate; a relay that vanished mid-delivery is replaced once its lease runs out."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import secrets
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from sqlalchemy import MetaData, Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.db import DriverPool, create_engine
from mesh.metrics import Metrics
from mesh.outbox import DeliverTogether, Message, Outbox, RelayTimings, Undeliverable, outbox_table
from mesh.sealing import Sealer
from mesh.settings import Settings
from tests.conftest import eventually

FAST = RelayTimings(interval=0.05, lease=1.0, backoff_base=0.05, backoff_cap=0.2, batch=20)


@dataclass
class Receiver:
    """Records what arrives; `refuse` decides per message whether this delivery fails."""

    seen: list[Message] = field(default_factory=list)
    refuse: Callable[[Message], Exception | None] = lambda message: None

    async def __call__(self, message: Message) -> None:
        await asyncio.sleep(random.uniform(0, 0.005))  # let deliveries interleave
        if (error := self.refuse(message)) is not None:
            raise error
        self.seen.append(message)

    def per_aggregate(self) -> dict[str, list[int]]:
        order: dict[str, list[int]] = defaultdict(list)
        for message in self.seen:
            order[message.aggregate].append(message.payload["n"])
        return dict(order)


@dataclass
class Schema:
    engine: AsyncEngine
    driver: DriverPool
    table: Table
    sealer: Sealer

    def outbox(
        self,
        receivers: Mapping[str, Callable[[Message], Awaitable[None]]],
        together: Mapping[str, DeliverTogether] | None = None,
        timings: RelayTimings = FAST,
    ) -> Outbox:
        return Outbox(self.engine, self.driver, self.table, self.sealer, receivers, Metrics(), timings, together)

    async def write(self, outbox: Outbox, rows: list[tuple[str, int]], kind: str = "note") -> None:
        async with self.engine.begin() as connection:
            for aggregate, n in rows:
                await outbox.add(connection, aggregate, kind, {"n": n})
        outbox.notify()

    async def pending(self) -> int:
        async with self.engine.connect() as connection:
            query = select(func.count()).where(self.table.c.deliver_time.is_(None), self.table.c.give_up_time.is_(None))
            return int(await connection.scalar(query) or 0)


@pytest.fixture
async def schema(migrated_database_url: str) -> AsyncIterator[Schema]:
    name = f"outbox_test_{secrets.token_hex(4)}"
    settings = Settings(database_url=migrated_database_url)
    engine = create_engine(settings, name, "outbox-tests")
    driver = DriverPool(settings, name, "outbox-tests")
    table = outbox_table(MetaData(schema=name))
    async with engine.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{name}"'))
        await connection.run_sync(table.metadata.create_all)
    try:
        yield Schema(engine, driver, table, Sealer(secrets.token_bytes(32)))
    finally:
        await driver.close()
        async with engine.begin() as connection:
            await connection.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        await engine.dispose()


@asynccontextmanager
async def relaying(*outboxes: Outbox) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(outbox.run()) for outbox in outboxes]
    try:
        yield
    finally:
        for outbox in outboxes:
            await outbox.stop()
        await asyncio.gather(*tasks)


async def test_three_relays_deliver_every_message_once_in_order_per_aggregate(schema: Schema) -> None:
    receiver = Receiver()
    outboxes = [schema.outbox({"note": receiver}) for _ in range(3)]
    rows = [(f"user-{n % 15}", n) for n in range(300)]

    async with relaying(*outboxes):
        await schema.write(outboxes[0], rows)

        async def all_delivered() -> bool:
            return len(receiver.seen) >= len(rows) and await schema.pending() == 0

        await eventually(all_delivered, what="every message delivered")

    assert sorted(message.payload["n"] for message in receiver.seen) == list(range(300))
    assert all(order == sorted(order) for order in receiver.per_aggregate().values())


async def test_a_failing_delivery_is_retried_and_holds_back_its_aggregate_meanwhile(schema: Schema) -> None:
    failures = {"first": 3}

    def refuse(message: Message) -> Exception | None:
        if message.payload["n"] == 0 and failures["first"] > 0:
            failures["first"] -= 1
            return ConnectionError("peer away")
        return None

    receiver = Receiver(refuse=refuse)
    outbox = schema.outbox({"note": receiver})

    async with relaying(outbox):
        await schema.write(outbox, [("only", 0), ("only", 1), ("only", 2)])

        async def delivered() -> bool:
            return len(receiver.seen) == 3

        await eventually(delivered, what="delivery after the retries")

    assert receiver.per_aggregate() == {"only": [0, 1, 2]}
    async with schema.engine.connect() as connection:
        attempts = await connection.scalar(select(func.max(schema.table.c.attempts)))
    assert attempts == 4


async def test_a_refusal_for_good_is_set_aside_and_the_aggregate_goes_on(schema: Schema) -> None:
    receiver = Receiver(refuse=lambda message: Undeliverable("no such hold") if message.payload["n"] == 0 else None)
    outbox = schema.outbox({"note": receiver})

    async with relaying(outbox):
        await schema.write(outbox, [("a", 0), ("a", 1)])

        async def next_delivered() -> bool:
            return receiver.per_aggregate() == {"a": [1]}

        await eventually(next_delivered, what="the next message of the aggregate")

    async with schema.engine.connect() as connection:
        set_aside = (
            await connection.execute(
                select(schema.table.c.payload, schema.table.c.last_error).where(
                    schema.table.c.give_up_time.is_not(None)
                )
            )
        ).all()
    assert [(row.payload, row.last_error) for row in set_aside] == [(None, "no such hold")]


@dataclass
class BatchReceiver:
    """Records the batches that arrive; `refuse` decides per call whether this one fails."""

    batches: list[list[int]] = field(default_factory=list)
    refuse: Callable[[], Exception | None] = lambda: None

    async def __call__(self, messages: Sequence[Message]) -> None:
        if (error := self.refuse()) is not None:
            raise error
        self.batches.append([message.payload["n"] for message in messages])


async def test_messages_committed_within_the_linger_reach_the_batch_receiver_in_one_call(schema: Schema) -> None:
    alone, together = Receiver(), BatchReceiver()
    outbox = schema.outbox({"note": alone}, {"note": together}, dataclasses.replace(FAST, interval=5.0, linger=1.0))

    async with relaying(outbox):
        await schema.write(outbox, [("user-0", 0)])

        async def settled() -> bool:
            return await schema.pending() == 0

        await eventually(settled, what="the first message delivered")
        for n in range(1, 5):  # four commits, each waking the relay
            await schema.write(outbox, [(f"user-{n}", n)])

        await eventually(settled, what="the four messages delivered")

    assert together.batches == [[1, 2, 3, 4]]
    assert [message.payload["n"] for message in alone.seen] == [0]


async def test_a_batch_refused_for_good_goes_one_by_one_and_only_the_bad_message_is_set_aside(
    schema: Schema,
) -> None:
    alone = Receiver(refuse=lambda message: Undeliverable("bad address") if message.payload["n"] == 1 else None)
    together = BatchReceiver(refuse=lambda: Undeliverable("one of them is bad"))
    outbox = schema.outbox({"note": alone}, {"note": together})

    async with relaying(outbox):
        await schema.write(outbox, [("a", 0), ("b", 1), ("c", 2)])

        async def settled() -> bool:
            return await schema.pending() == 0

        await eventually(settled, what="every message delivered or set aside")

    assert sorted(message.payload["n"] for message in alone.seen) == [0, 2]
    async with schema.engine.connect() as connection:
        set_aside = await connection.scalar(
            select(func.count()).where(schema.table.c.give_up_time.is_not(None), schema.table.c.aggregate == "b")
        )
    assert set_aside == 1


async def test_the_messages_of_a_batch_that_fails_on_the_way_are_each_tried_again(schema: Schema) -> None:
    failures = iter([ConnectionError("peer away")])
    alone, together = Receiver(), BatchReceiver(refuse=lambda: next(failures, None))
    outbox = schema.outbox({"note": alone}, {"note": together})

    async with relaying(outbox):
        await schema.write(outbox, [("a", 0), ("b", 1)])

        async def delivered() -> bool:
            return await schema.pending() == 0

        await eventually(delivered, what="both messages delivered after their retry")

    assert next(failures, None) is None  # the batch was tried, and failed
    # Each retry waits its own jittered backoff, so they may come back together or alone.
    arrived = [n for batch in together.batches for n in batch] + [m.payload["n"] for m in alone.seen]
    assert sorted(arrived) == [0, 1]
    async with schema.engine.connect() as connection:
        attempts = (await connection.execute(select(schema.table.c.attempts))).scalars().all()
    assert attempts == [2, 2]


async def test_a_message_leased_by_a_relay_that_vanished_is_delivered_after_its_lease(schema: Schema) -> None:
    receiver = Receiver()
    vanished = schema.outbox({"note": receiver})
    await schema.write(vanished, [("a", 0)])
    async with schema.engine.begin() as connection:
        # What a relay killed mid-delivery leaves: the message leased, never marked.
        await connection.execute(
            schema.table.update().values(lease_until=func.now() + text("interval '1 second'"), attempts=1)
        )
    survivor = schema.outbox({"note": receiver})

    async with relaying(survivor):

        async def delivered() -> bool:
            return len(receiver.seen) == 1

        await eventually(delivered, what="delivery once the lease ran out")

    assert receiver.seen[0].attempts == 2


async def test_payloads_are_sealed_at_rest_and_dropped_once_delivered(schema: Schema) -> None:
    receiver = Receiver()
    outbox = schema.outbox({"note": receiver})
    marker = uuid.uuid4().hex
    async with schema.engine.begin() as connection:
        await outbox.add(connection, "a", "note", {"n": 0, "secret": marker})
        stored = await connection.scalar(select(schema.table.c.payload))
    assert stored is not None and marker.encode() not in stored

    async with relaying(outbox):
        outbox.notify()

        async def emptied() -> bool:
            async with schema.engine.connect() as connection:
                return await connection.scalar(select(schema.table.c.payload)) is None

        await eventually(emptied, what="the delivered payload dropped")
    assert receiver.seen[0].payload == {"n": 0, "secret": marker}
