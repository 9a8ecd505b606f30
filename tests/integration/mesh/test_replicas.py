"""A service's callers with several replicas of it (mesh.channels): calls spread round robin,
a draining replica gets none, and an idempotent method's call that fails UNAVAILABLE is signed
anew and sent again, while other methods' calls are not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.channels import Peers
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import INVITE
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import Trust, make_trust


class Replica(invite_service_pb2_grpc.InviteServiceServicer):
    """HoldCode (idempotent) and ConfirmHold (not): each answers UNAVAILABLE while `failing` lasts."""

    def __init__(self, failing: int = 0) -> None:
        self.handled = 0
        self.failing = failing

    async def _answer(self, context: Any) -> None:
        self.handled += 1
        if self.failing:
            self.failing -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")

    async def HoldCode(self, request: Any, context: Any) -> invite_service_pb2.HoldCodeResponse:
        await self._answer(context)
        return invite_service_pb2.HoldCodeResponse()

    async def ConfirmHold(self, request: Any, context: Any) -> invite_service_pb2.ConfirmHoldResponse:
        await self._answer(context)
        return invite_service_pb2.ConfirmHoldResponse()


@asynccontextmanager
async def replicas(trust: Trust, *servicers: Replica) -> AsyncIterator[tuple[list[MeshServer], Peers]]:
    async with AsyncExitStack() as stack:
        servers = []
        for servicer in servicers:

            def add(server: grpc.aio.Server, runtime: ServiceRuntime, servicer: Replica = servicer) -> None:
                invite_service_pb2_grpc.add_InviteServiceServicer_to_server(servicer, server)

            server = MeshServer(INVITE, add, trust.settings)
            await server.start()
            stack.push_async_callback(server.stop, 0)
            servers.append(server)
        addresses = ",".join(f"127.0.0.1:{server.port}" for server in servers)
        settings = trust.settings.model_copy(update={"service_addresses": {INVITE.name: addresses}})
        peers = Peers(settings, "auth_svc", trust.signer("auth_svc"))
        stack.push_async_callback(peers.close)
        yield servers, peers


def stub(peers: Peers) -> invite_service_pb2_grpc.InviteServiceAsyncStub:
    return invite_service_pb2_grpc.InviteServiceStub(peers.channel(INVITE.name))


@pytest.fixture
def trust(tmp_path: Path, migrated_database_url: str, redis_url: str) -> Trust:
    return make_trust(tmp_path, migrated_database_url, redis_url)


async def test_calls_spread_over_the_replicas_and_none_goes_to_one_that_drains(trust: Trust) -> None:
    first, second = Replica(), Replica()  # type: ignore[abstract]
    async with replicas(trust, first, second) as (servers, peers):
        for _ in range(20):
            await stub(peers).HoldCode(invite_service_pb2.HoldCodeRequest(), timeout=10)
        assert first.handled >= 5 and second.handled >= 5

        # What a replica does first when told to stop: its health says it takes no more calls.
        await servers[0].health.servicer.enter_graceful_shutdown()

        async def only_the_other_answers() -> bool:
            before = first.handled
            for _ in range(10):
                await stub(peers).HoldCode(invite_service_pb2.HoldCodeRequest(), timeout=10)
            return first.handled == before

        await eventually(only_the_other_answers, what="no call to the draining replica")


async def test_an_idempotent_call_that_fails_unavailable_is_signed_anew_and_sent_again(trust: Trust) -> None:
    # One replica: the second attempt reaches the callee that saw the first, whose nonce it keeps.
    flaky = Replica(failing=2)  # type: ignore[abstract]
    async with replicas(trust, flaky) as (_, peers):
        await stub(peers).HoldCode(invite_service_pb2.HoldCodeRequest(), timeout=10)

    assert flaky.handled == 3


async def test_a_call_of_a_method_that_is_not_idempotent_is_not_sent_again(trust: Trust) -> None:
    flaky = Replica(failing=1)  # type: ignore[abstract]
    async with replicas(trust, flaky) as (_, peers):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(peers).ConfirmHold(invite_service_pb2.ConfirmHoldRequest(), timeout=10)

    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert flaky.handled == 1
