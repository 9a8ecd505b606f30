"""Holds against a real PostgreSQL with real concurrency: exact uses, one live hold per person and
code, one confirmed use per person, exact campaign capacity, expiry that returns each use once."""

from __future__ import annotations

import asyncio
import datetime
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from invite_svc.domain import ALREADY_REDEEMED, EXHAUSTED, HOLD_EXPIRED, CodeState, HoldState, Refusal
from invite_svc.sealing import CodeSealer
from invite_svc.store import InviteStore
from invite_svc.store.records import Owner
from mesh.db import DriverPool, create_engine
from mesh.settings import Settings
from tests.conftest import eventually

ADMIN = Owner(admin_id=uuid.uuid4())


@pytest.fixture
async def engine(migrated_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=migrated_database_url, db_pool_size=20), "invite", "tests")
    yield engine
    await engine.dispose()


@pytest.fixture
async def driver(migrated_database_url: str) -> AsyncIterator[DriverPool]:
    driver = DriverPool(Settings(database_url=migrated_database_url, db_pool_size=20), "invite", "tests")
    yield driver
    await driver.close()


@pytest.fixture
def store(engine: AsyncEngine, driver: DriverPool) -> InviteStore:
    return InviteStore.over(engine, driver, CodeSealer(secrets.token_bytes(32)))


def _email() -> str:
    return f"{secrets.token_hex(6)}@example.com"


async def _outcome(call: asyncio.Future[object] | object) -> str:
    try:
        await call  # type: ignore[misc]
    except Refusal as refusal:
        return refusal.reason
    return "HELD"


async def _taken(database_url: str, code_id: uuid.UUID) -> tuple[int, int]:
    connection = await asyncpg.connect(database_url)
    try:
        slots = await connection.fetchval("SELECT sum(taken) FROM invite.code_slots WHERE code_id = $1", code_id)
        live = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE code_id = $1 AND state IN (1, 2)", code_id
        )
    finally:
        await connection.close()
    return int(slots), int(live)


async def test_500_concurrent_holds_on_37_uses_take_exactly_37(store: InviteStore, migrated_database_url: str) -> None:
    (minted,) = await store.codes.mint(1, 37, ADMIN)

    outcomes = await asyncio.gather(
        *(_outcome(store.holds.hold(minted.code, _email(), uuid.uuid4().hex)) for _ in range(500))
    )

    assert outcomes.count("HELD") == 37
    assert set(outcomes) == {"HELD", EXHAUSTED}
    assert await _taken(migrated_database_url, minted.id) == (37, 37)


async def test_50_concurrent_holds_of_one_email_on_one_code_take_one_use_and_answer_one_hold(
    store: InviteStore, migrated_database_url: str
) -> None:
    (minted,) = await store.codes.mint(1, 5, ADMIN)
    email = _email()

    held = await asyncio.gather(*(store.holds.hold(minted.code, email, uuid.uuid4().hex) for _ in range(50)))

    assert len({hold.id for hold in held}) == 1
    assert await _taken(migrated_database_url, minted.id) == (1, 1)


async def test_one_email_holds_different_codes_side_by_side(store: InviteStore, migrated_database_url: str) -> None:
    minted = await store.codes.mint(20, 5, ADMIN)
    email = _email()

    held = await asyncio.gather(*(store.holds.hold(code.code, email, uuid.uuid4().hex) for code in minted))

    assert len({hold.id for hold in held}) == 20
    connection = await asyncpg.connect(migrated_database_url)
    taken = await connection.fetchval(
        "SELECT sum(taken) FROM invite.code_slots WHERE code_id = ANY($1::uuid[])", [code.id for code in minted]
    )
    await connection.close()
    assert taken == 20


async def test_campaign_capacity_is_exact_across_many_codes(store: InviteStore, migrated_database_url: str) -> None:
    campaign = (await store.campaigns.create_campaign(f"launch-{secrets.token_hex(4)}", capacity=23)).id
    minted = await store.codes.mint(10, 10, ADMIN, campaign_id=campaign)

    outcomes = await asyncio.gather(
        *(_outcome(store.holds.hold(minted[i % 10].code, _email(), uuid.uuid4().hex)) for i in range(100))
    )

    assert outcomes.count("HELD") == 23
    connection = await asyncpg.connect(migrated_database_url)
    live = await connection.fetchval(
        "SELECT count(*) FROM invite.holds WHERE campaign_id = $1 AND state IN (1, 2)", campaign
    )
    await connection.close()
    assert live == 23


async def test_holds_are_idempotent_by_request_id(store: InviteStore) -> None:
    (minted,) = await store.codes.mint(1, 3, ADMIN)
    request_id = uuid.uuid4().hex

    first, again = await asyncio.gather(
        store.holds.hold(minted.code, _email(), request_id), store.holds.hold(minted.code, _email(), request_id)
    )

    assert first == again


async def test_holding_a_code_again_renews_the_live_hold_and_leaves_other_holds_alone(store: InviteStore) -> None:
    first_code, second_code = await store.codes.mint(2, 1, ADMIN)
    email = _email()

    first = await store.holds.hold(first_code.code, email, uuid.uuid4().hex)
    second = await store.holds.hold(second_code.code, email, uuid.uuid4().hex)
    again = await store.holds.hold(first_code.code, email, uuid.uuid4().hex)

    assert again.id == first.id and again.expire_time > first.expire_time
    assert second.id != first.id
    # Both one-use codes stay taken by this person's two holds.
    assert await _outcome(store.holds.hold(first_code.code, _email(), uuid.uuid4().hex)) == EXHAUSTED
    assert await _outcome(store.holds.hold(second_code.code, _email(), uuid.uuid4().hex)) == EXHAUSTED


async def test_a_redeemed_email_holds_like_anyone_but_cannot_use_a_second_code(store: InviteStore) -> None:
    (minted,) = await store.codes.mint(1, 3, ADMIN)
    email = _email()
    hold = await store.holds.hold(minted.code, email, uuid.uuid4().hex)

    confirmed = await store.holds.confirm(hold.id)
    second = await store.holds.hold(minted.code, email, uuid.uuid4().hex)

    assert confirmed.state is HoldState.CONFIRMED
    assert (await store.holds.confirm(hold.id)).state is HoldState.CONFIRMED
    assert (await store.holds.release(hold.id)).state is HoldState.CONFIRMED
    assert confirmed.referrer == ADMIN
    assert second.state is HoldState.HELD and second.id != hold.id
    with pytest.raises(Refusal) as refused:
        await store.holds.confirm(second.id)
    assert refused.value.reason == ALREADY_REDEEMED


async def test_release_is_idempotent_and_returns_the_use_once(store: InviteStore, migrated_database_url: str) -> None:
    (minted,) = await store.codes.mint(1, 1, ADMIN)
    hold = await store.holds.hold(minted.code, _email(), uuid.uuid4().hex)

    await asyncio.gather(*(store.holds.release(hold.id) for _ in range(5)))

    assert await _taken(migrated_database_url, minted.id) == (0, 0)


async def test_expiry_by_three_workers_returns_each_use_once(
    engine: AsyncEngine, driver: DriverPool, migrated_database_url: str
) -> None:
    sealer = CodeSealer(secrets.token_bytes(32))
    short = InviteStore.over(engine, driver, sealer, hold_ttl=datetime.timedelta(milliseconds=300))
    (minted,) = await short.codes.mint(1, 40, ADMIN)
    held = [await short.holds.hold(minted.code, _email(), uuid.uuid4().hex) for _ in range(40)]
    assert await _outcome(short.holds.hold(minted.code, _email(), uuid.uuid4().hex)) == EXHAUSTED

    async def all_expired() -> bool:
        await asyncio.gather(*(short.holds.expire_due(batch=7) for _ in range(3)))
        return await _taken(migrated_database_url, minted.id) == (0, 0)

    await eventually(all_expired, what="every hold expired")
    with pytest.raises(Refusal) as late:
        await short.holds.confirm(held[0].id)
    assert late.value.reason == HOLD_EXPIRED
    assert await _outcome(short.holds.hold(minted.code, _email(), uuid.uuid4().hex)) == "HELD"


async def test_a_database_dump_holds_no_plain_code(store: InviteStore, migrated_database_url: str) -> None:
    minted = await store.codes.mint(20, 1, ADMIN)

    connection = await asyncpg.connect(migrated_database_url)
    rows = await connection.fetch("SELECT * FROM invite.codes WHERE id = ANY($1::uuid[])", [m.id for m in minted])
    await connection.close()
    dump = repr([dict(row) for row in rows]).encode()
    for code in minted:
        assert code.code.encode() not in dump
        assert code.code.encode().hex().encode() not in dump


async def test_mint_is_idempotent_by_request_id(store: InviteStore) -> None:
    request_id = uuid.uuid4().hex

    first, again = await asyncio.gather(
        store.codes.mint(3, 2, ADMIN, request_id=request_id), store.codes.mint(3, 2, ADMIN, request_id=request_id)
    )

    assert sorted(c.code for c in first) == sorted(c.code for c in again)
    assert len({c.code for c in first}) == 3


async def test_the_expiry_sweep_marks_codes_past_their_end(store: InviteStore) -> None:
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=300)
    (minted,) = await store.codes.mint(1, 3, ADMIN, expire_time=soon)
    assert (await store.codes.code(minted.code))[0].state is CodeState.ACTIVE

    async def expired() -> bool:
        await store.holds.expire_due()
        return (await store.codes.code(minted.code))[0].state is CodeState.EXPIRED

    await eventually(expired, what="the code marked expired")
    assert await _outcome(store.holds.hold(minted.code, _email(), uuid.uuid4().hex)) == "INVITE_CODE_EXPIRED"
