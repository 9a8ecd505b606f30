"""The Ethereum node goes away under a polling chain_svc: the breaker opens, health says why while
the service keeps serving links, and polling resumes by itself once a node answers again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from eth_account import Account
from grpc_health.v1 import health_pb2, health_pb2_grpc
from invitemesh.chain.v1 import chain_service_pb2 as pb
from invitemesh.chain.v1 import chain_service_pb2_grpc

from chain_svc.server import add_servicers
from chain_svc.store import WalletStore
from mesh.channels import open_channel
from mesh.errors import error_info
from mesh.server import MeshServer
from mesh.services import CHAIN
from meshctl.embedded import EmbeddedChain, free_port
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import BearerIsUserId, as_user, make_trust


@pytest.fixture
def node(tmp_path: Path) -> Iterator[EmbeddedChain]:
    """A development chain of this test's own, which it stops hard and starts again."""
    node = EmbeddedChain(free_port())
    node.start(tmp_path / "node.log")
    yield node
    node.stop()


@pytest.fixture
async def server(
    tmp_path: Path, migrated_database_url: str, redis_url: str, node: EmbeddedChain
) -> AsyncIterator[MeshServer]:
    trust = make_trust(
        tmp_path, migrated_database_url, redis_url, chain_rpc_url=node.url, chain_poll_interval=0.2,
        chain_lease_ttl=1.0, chain_confirmations=0,
    )  # fmt: skip
    server = trust.server(CHAIN, add_servicers, tokens=BearerIsUserId())
    await server.start()
    yield server
    await server.stop(0)


async def _poll_count(database_url: str, user_id: uuid.UUID) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT poll_count FROM chain.wallets WHERE user_id = $1", user_id))
    finally:
        await connection.close()


async def test_a_node_down_opens_the_breaker_keeps_links_working_and_polling_resumes(
    server: MeshServer, node: EmbeddedChain, migrated_database_url: str, tmp_path: Path
) -> None:
    user_id = uuid.uuid4()
    await WalletStore(server.runtime.engine, server.runtime.driver).link(user_id, Account.create().address, 1)

    async def polled() -> bool:
        return await _poll_count(migrated_database_url, user_id) > 0

    await eventually(polled, what="a first snapshot")
    registry = server.metrics.registry
    async with open_channel(f"127.0.0.1:{server.port}", server.settings) as channel:
        stub = chain_service_pb2_grpc.ChainServiceStub(channel)
        await _challenge(stub)  # the service learns the chain id

    node.kill()

    async def breaker_open_and_said() -> bool:
        breaker = registry.get_sample_value("mesh_breaker_state", {"breaker": "chain_rpc"})
        return breaker == 2 and "chain_rpc" in server.health.degraded

    await eventually(breaker_open_and_said, what="the node's breaker open and health saying why")
    assert registry.get_sample_value("mesh_dependency_up", {"dependency": "chain_rpc"}) == 0
    assert (registry.get_sample_value("mesh_chain_poll_rounds_failed_total") or 0) > 0
    async with open_channel(f"127.0.0.1:{server.port}", server.settings) as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=CHAIN.grpc_service)
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        # The chain id was read before the node went; a challenge needs nothing more of it.
        assert (await _challenge(chain_service_pb2_grpc.ChainServiceStub(channel))).message
    stalled_at = await _poll_count(migrated_database_url, user_id)

    node.start(tmp_path / "node.log")

    async def resumed() -> bool:
        return await _poll_count(migrated_database_url, user_id) > stalled_at and not server.health.degraded

    await eventually(resumed, within=60, what="polling resumed and health clear once the node is back")
    assert registry.get_sample_value("mesh_breaker_state", {"breaker": "chain_rpc"}) == 0


async def test_with_the_chain_id_unknown_and_the_node_down_a_challenge_is_unavailable(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    trust = make_trust(tmp_path, migrated_database_url, redis_url, chain_rpc_url=nowhere, chain_pollers=False)
    server = trust.server(CHAIN, add_servicers, tokens=BearerIsUserId())
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{server.port}", server.settings) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _challenge(chain_service_pb2_grpc.ChainServiceStub(channel))
    finally:
        await server.stop(0)
    info = error_info(refused.value)
    assert (refused.value.code(), info and info.reason) == (grpc.StatusCode.UNAVAILABLE, "CHAIN_UNAVAILABLE")


async def _challenge(stub: chain_service_pb2_grpc.ChainServiceAsyncStub) -> pb.CreateWalletChallengeResponse:
    return await stub.CreateWalletChallenge(
        pb.CreateWalletChallengeRequest(address=Account.create().address),
        metadata=as_user(str(uuid.uuid4())),
    )
