"""Polling linked wallets against a real node: what a transfer does to a snapshot and when, and
the work shared by three chain_svc processes, one of which is killed."""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import ParamSpec, TypeVar

import asyncpg
import pytest
from eth_account import Account
from invitemesh.chain.v1 import chain_service_pb2 as pb
from invitemesh.chain.v1 import chain_service_pb2_grpc

from chain_svc.domain import SHARDS
from chain_svc.server import add_servicers
from chain_svc.store import WalletStore
from mesh.channels import open_channel
from mesh.db import DriverPool, create_engine
from mesh.redis import create_redis
from mesh.services import CHAIN
from mesh.settings import Settings
from meshctl import chain_tools
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import BearerIsUserId, Trust, as_user, make_trust

CONFIRMATIONS = 2
P = ParamSpec("P")
R = TypeVar("R")


@pytest.fixture
async def store(migrated_database_url: str, tmp_path: Path, redis_url: str) -> AsyncIterator[WalletStore]:
    """chain_svc's store, for linking wallets without the signing (tests/integration/chain_svc/test_linking.py)."""
    trust = make_trust(tmp_path, migrated_database_url, redis_url)
    engine = create_engine(trust.settings, CHAIN.schema, "chain tests")
    driver = DriverPool(trust.settings, CHAIN.schema, "chain tests")
    yield WalletStore(engine, driver)
    await driver.close()
    await engine.dispose()


@pytest.fixture
async def my_wallet(
    tmp_path: Path, migrated_database_url: str, redis_url: str, chain_rpc_url: str, dev_token: str, store: WalletStore
) -> AsyncIterator[tuple[chain_service_pb2_grpc.ChainServiceAsyncStub, str, str]]:
    """A polling chain_svc, and a freshly linked wallet: (stub, user id, address)."""
    trust = make_trust(
        tmp_path, migrated_database_url, redis_url, chain_rpc_url=chain_rpc_url, chain_poll_interval=0.2,
        chain_lease_ttl=1.0, chain_confirmations=CONFIRMATIONS, chain_tokens=[dev_token],
    )  # fmt: skip
    user_id, address = uuid.uuid4(), Account.create().address
    await store.link(user_id, address, 1)
    server = trust.server(CHAIN, add_servicers, tokens=BearerIsUserId())
    await server.start()
    async with open_channel(f"127.0.0.1:{server.port}", trust.settings) as channel:
        yield chain_service_pb2_grpc.ChainServiceStub(channel), str(user_id), address
    await server.stop(0)


async def _snapshot(stub: chain_service_pb2_grpc.ChainServiceAsyncStub, user_id: str) -> pb.WalletSnapshot:
    answer = await stub.GetMyWallet(pb.GetMyWalletRequest(), metadata=as_user(user_id))
    return answer.wallet.latest_snapshot


async def _polled_after(
    stub: chain_service_pb2_grpc.ChainServiceAsyncStub, user_id: str, block: int
) -> pb.WalletSnapshot:
    """The first snapshot read once the head had passed `block`."""
    found: list[pb.WalletSnapshot] = []

    async def read() -> bool:
        answer = await stub.GetMyWallet(pb.GetMyWalletRequest(), metadata=as_user(user_id))
        found[:] = [answer.wallet.latest_snapshot]
        return answer.wallet.HasField("latest_snapshot") and found[0].block_number + CONFIRMATIONS >= block

    await eventually(read, what=f"a snapshot read with the head past block {block}")
    return found[0]


async def test_a_transfer_shows_in_the_snapshot_only_after_its_confirmations(
    my_wallet: tuple[chain_service_pb2_grpc.ChainServiceAsyncStub, str, str], chain_rpc_url: str
) -> None:
    stub, user_id, address = my_wallet
    await _aside(chain_tools.fund, chain_rpc_url, address, Decimal("1.25"))
    funded_at = await _aside(chain_tools.mine, chain_rpc_url, 0)

    unconfirmed = await _polled_after(stub, user_id, funded_at)
    assert unconfirmed.block_number < funded_at
    assert unconfirmed.balance_wei == "0"

    await _aside(chain_tools.mine, chain_rpc_url, CONFIRMATIONS)

    async def confirmed() -> bool:
        return (await _snapshot(stub, user_id)).balance_wei == str(125 * 10**16)

    await eventually(confirmed, what="the transfer in the snapshot")
    snapshot = await _snapshot(stub, user_id)
    assert snapshot.block_number >= funded_at
    assert snapshot.block_hash.startswith("0x") and len(snapshot.block_hash) == 66


async def test_a_token_transfer_shows_in_the_snapshot(
    my_wallet: tuple[chain_service_pb2_grpc.ChainServiceAsyncStub, str, str], chain_rpc_url: str, dev_token: str
) -> None:
    stub, user_id, address = my_wallet
    await _aside(chain_tools.send_tokens, chain_rpc_url, dev_token, address, 777)
    await _aside(chain_tools.mine, chain_rpc_url, CONFIRMATIONS)

    async def arrived() -> bool:
        balances = {each.contract_address: each.balance for each in (await _snapshot(stub, user_id)).token_balances}
        return balances.get(dev_token) == "777"

    await eventually(arrived, what="the token transfer in the snapshot")


async def _aside(tool: Callable[P, R], *arguments: P.args, **named: P.kwargs) -> R:
    """meshctl's chain tools are synchronous (web3's HTTP client); a test runs them aside."""
    return await asyncio.to_thread(tool, *arguments, **named)


# -- three pollers -------------------------------------------------------------------------------

INTERVAL = 2.0
WALLETS = 40


@pytest.fixture
def pollers(
    tmp_path: Path, migrated_database_url: str, redis_url: str, chain_rpc_url: str
) -> Iterator[list[subprocess.Popen[bytes]]]:
    trust = make_trust(
        tmp_path, migrated_database_url, redis_url, chain_rpc_url=chain_rpc_url, chain_poll_interval=INTERVAL,
        chain_lease_ttl=INTERVAL, chain_confirmations=0,
    )  # fmt: skip
    started = [_chain_process(trust, tmp_path / f"poller{n}.log") for n in range(3)]
    yield started
    for process in started:
        if process.poll() is None:
            process.terminate()
    for process in started:
        process.wait(15)


def _chain_process(trust: Trust, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **trust.environment(), "MESH_GRPC_PORT": "0", "MESH_METRICS_PORT": "0"}
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", CHAIN.name], env=env, stdout=out, stderr=subprocess.STDOUT)


async def _states(database_url: str, users: list[uuid.UUID]) -> dict[uuid.UUID, asyncpg.Record]:
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT user_id, poll_count, polled_by, read_time FROM chain.wallets WHERE user_id = ANY($1)", users
        )
    finally:
        await connection.close()
    return {row["user_id"]: row for row in rows}


async def _holders(redis_url: str) -> dict[int, str]:
    client = create_redis(Settings(redis_url=redis_url))
    try:
        keys = [f"chain:{{poll}}:shard:{shard}" for shard in range(SHARDS)]
        held = await client.mget(keys)
    finally:
        await client.aclose()
    return {shard: _text(holder) for shard, holder in enumerate(held) if holder is not None}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def test_three_pollers_share_the_wallets_and_survive_the_kill_of_one(
    pollers: list[subprocess.Popen[bytes]], store: WalletStore, migrated_database_url: str, redis_url: str
) -> None:
    users = [uuid.uuid4() for _ in range(WALLETS)]
    for user in users:
        await store.link(user, Account.create().address, 1)

    async def shared_by_three() -> bool:
        holders = await _holders(redis_url)
        per_replica = {name: list(holders.values()).count(name) for name in set(holders.values())}
        return len(holders) == SHARDS and len(per_replica) == 3 and max(per_replica.values()) <= -(-SHARDS // 3)

    async def all_polled() -> bool:
        states = await _states(migrated_database_url, users)
        return all(states[user]["poll_count"] > 0 for user in users)

    await eventually(shared_by_three, within=60, what="every shard held, a fair share by each of three pollers")
    await eventually(all_polled, within=30, what="every wallet polled")

    # Steady state: each wallet is polled once per interval, by one poller.
    before = await _states(migrated_database_url, users)
    window_start = time.monotonic()
    polled_by: dict[uuid.UUID, set[str]] = {user: set() for user in users}
    while time.monotonic() - window_start < 4 * INTERVAL:
        for user, row in (await _states(migrated_database_url, users)).items():
            if row["poll_count"] > before[user]["poll_count"]:
                polled_by[user].add(row["polled_by"])
        await asyncio.sleep(INTERVAL / 8)
    after = await _states(migrated_database_url, users)
    window = time.monotonic() - window_start
    for user in users:
        polls = after[user]["poll_count"] - before[user]["poll_count"]
        assert window / INTERVAL - 1.5 <= polls <= window / INTERVAL + 1, (user, polls, window)
        assert len(polled_by[user]) == 1, polled_by[user]

    # One poller is killed; its wallets are polled by the others within two intervals.
    victim_name = after[users[0]]["polled_by"]
    victim = next(p for p in pollers if victim_name.split("-")[-2] == str(p.pid))
    killed_at = datetime.datetime.now(datetime.UTC)
    victim.send_signal(signal.SIGKILL)
    first_after_kill: dict[uuid.UUID, datetime.datetime] = {}

    async def all_polled_again() -> bool:
        for user, row in (await _states(migrated_database_url, users)).items():
            if user not in first_after_kill and row["read_time"] > killed_at:
                first_after_kill[user] = row["read_time"]
        return len(first_after_kill) == len(users)

    await eventually(all_polled_again, within=10 * INTERVAL, what="every wallet polled after the kill")
    slowest = max(first_after_kill.values()) - killed_at
    assert slowest <= datetime.timedelta(seconds=2 * INTERVAL), slowest
    survivors = set((await _holders(redis_url)).values())
    assert victim_name not in survivors
