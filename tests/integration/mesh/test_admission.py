"""Admission in `serve()`'s server, over real sockets with real concurrency: a cost class whose
limit is reached refuses the next call at once (OVERLOADED, RetryInfo, retry-after) while the
calls it admitted are still running, the other class goes on being admitted, and calls between
services are never refused. The handlers wait on a gate, so what is in flight is known, not
timed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.admission import HashingLimit
from mesh.errors import OVERLOADED_HEADER, error_info, retry_info
from mesh.passwords import HASHING, Passwords
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import INVITE
from tests.conftest import eventually
from tests.integration.mesh.test_server import RecordingVerifier, serving, settings_for

SIGNED = (("x-mesh-caller", "auth_svc"), ("x-mesh-ts", "1"), ("x-mesh-nonce", "n"), ("x-mesh-signature", "s"))
HASH_WAIT_TARGET = 0.2
CHEAP_CALLS_LIMIT = 20


@dataclass
class Gated:
    """Handlers that count who entered them, then wait for the gate; Login then hashes for real."""

    passwords: Passwords
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: Counter[str] = field(default_factory=Counter)

    async def through(self, method: str) -> None:
        self.entered[method] += 1
        await self.gate.wait()


class GatedAuth(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, gated: Gated) -> None:
        self._gated = gated

    async def Login(self, request: Any, context: Any) -> auth_service_pb2.LoginResponse:
        await self._gated.through("Login")
        await self._gated.passwords.verify(None, request.password)
        return auth_service_pb2.LoginResponse()


class GatedInvite(invite_service_pb2_grpc.InviteServiceServicer):
    def __init__(self, gated: Gated) -> None:
        self._gated = gated

    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        await self._gated.through("CheckCode")
        return invite_service_pb2.CheckCodeResponse(valid=True)

    async def HoldCode(self, request: Any, context: Any) -> invite_service_pb2.HoldCodeResponse:
        await self._gated.through("HoldCode")
        return invite_service_pb2.HoldCodeResponse()


@pytest.fixture
async def gated() -> Gated:
    return Gated(Passwords(memory_kib=8192, time_cost=1, parallelism=1))


@pytest.fixture
async def channel(gated: Gated, migrated_database_url: str, redis_url: str) -> AsyncIterator[grpc.aio.Channel]:
    def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(GatedAuth(gated), server)  # type: ignore[abstract]
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(GatedInvite(gated), server)  # type: ignore[abstract]

    settings = settings_for(
        migrated_database_url, redis_url, hash_wait_target=HASH_WAIT_TARGET, cheap_calls_limit=CHEAP_CALLS_LIMIT
    )
    server = MeshServer(INVITE, add_servicers, settings, calls=RecordingVerifier(caller="auth_svc"))
    async with serving(server) as channel:
        yield channel
    gated.gate.set()


def login(channel: grpc.aio.Channel) -> Any:
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    return stub.Login(auth_service_pb2.LoginRequest(email="ada@example.com", password="a long passphrase here"))


def check_code(channel: grpc.aio.Channel) -> Any:
    return invite_service_pb2_grpc.InviteServiceStub(channel).CheckCode(invite_service_pb2.CheckCodeRequest(code="X"))


async def fill(calls: list[Any], gated: Gated, method: str, count: int) -> None:
    """Waits until `count` calls entered `method`'s handler."""

    async def entered() -> bool:
        return gated.entered[method] == count

    await eventually(entered, what=f"{count} calls in {method}")
    assert not any(call.done() for call in calls)


async def refused_for_load(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    error = raised.value
    info, retry = error_info(error), retry_info(error)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info is not None and info.reason == "OVERLOADED"
    assert retry is not None and retry.retry_delay.seconds >= 1
    trailing: dict[str, Any] = dict(error.trailing_metadata() or ())  # type: ignore[arg-type]
    assert trailing["retry-after"] == str(retry.retry_delay.seconds) and trailing[OVERLOADED_HEADER] == "1"
    return error


async def test_calls_that_hash_past_the_pools_bound_are_refused_at_once_and_cheap_calls_still_admitted(
    channel: grpc.aio.Channel, gated: Gated
) -> None:
    bound = HashingLimit(HASHING, HASH_WAIT_TARGET).limit
    admitted = [asyncio.ensure_future(login(channel)) for _ in range(bound)]
    await fill(admitted, gated, "Login", bound)

    # The bound reached: five more are answered while the admitted ones still wait.
    await asyncio.gather(*(refused_for_load(login(channel)) for _ in range(5)))
    assert gated.entered["Login"] == bound and not any(call.done() for call in admitted)

    # Cheap calls are admitted by a limit of their own.
    cheap = [asyncio.ensure_future(check_code(channel)) for _ in range(10)]
    await fill(cheap, gated, "CheckCode", 10)

    gated.gate.set()
    await asyncio.gather(*admitted, *cheap)
    await login(channel)  # room again


async def test_cheap_calls_past_their_limit_are_refused_at_once_and_calls_that_hash_still_admitted(
    channel: grpc.aio.Channel, gated: Gated
) -> None:
    bound = CHEAP_CALLS_LIMIT  # where the adaptive limit starts; nothing has completed yet to move it
    admitted = [asyncio.ensure_future(check_code(channel)) for _ in range(bound)]
    await fill(admitted, gated, "CheckCode", bound)

    await asyncio.gather(*(refused_for_load(check_code(channel)) for _ in range(5)))
    assert gated.entered["CheckCode"] == bound

    hashing = asyncio.ensure_future(login(channel))
    await fill([hashing], gated, "Login", 1)

    gated.gate.set()
    await asyncio.gather(*admitted, hashing)


async def test_calls_between_services_are_never_refused_for_load(channel: grpc.aio.Channel, gated: Gated) -> None:
    bound = CHEAP_CALLS_LIMIT
    admitted = [asyncio.ensure_future(check_code(channel)) for _ in range(bound)]
    await fill(admitted, gated, "CheckCode", bound)
    await refused_for_load(check_code(channel))

    stub = invite_service_pb2_grpc.InviteServiceStub(channel)
    request = invite_service_pb2.HoldCodeRequest(code="X", email="a@example.com", request_id="r")
    internal = [asyncio.ensure_future(stub.HoldCode(request, metadata=SIGNED)) for _ in range(bound + 5)]
    await fill(internal, gated, "HoldCode", bound + 5)

    gated.gate.set()
    await asyncio.gather(*admitted, *internal)
