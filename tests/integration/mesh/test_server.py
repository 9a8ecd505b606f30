"""`serve()`'s server over real sockets with a real PostgreSQL and Redis: access from the
contracts, errors as google.rpc.Status, reflection, health, metrics and tracing."""

from __future__ import annotations

import asyncio
import tempfile
import urllib.request
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from invitemesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from invite_svc.server import add_servicers as add_invite_servicers
from mesh.access import AdminRole, Principal, current_principal
from mesh.channels import open_channel
from mesh.errors import Unauthenticated, error_info
from mesh.keys import load_kek
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import ADMIN, INVITE
from mesh.settings import Settings
from mesh.telemetry import configure_tracing
from meshctl.embedded import EmbeddedRedis
from meshctl.probes import probe_grpc_health
from tests.conftest import eventually

SIGNED = (("x-mesh-caller", "auth_svc"), ("x-mesh-ts", "1"), ("x-mesh-nonce", "n"), ("x-mesh-signature", "s"))


@dataclass
class RecordingVerifier:
    """Stands in for the trust of the next issue: vouches as told and records what it saw."""

    caller: str | None = None
    admin_role: AdminRole | None = None
    seen: list[tuple[str, Mapping[str, str], bytes]] = field(default_factory=list)

    async def verify_call(self, method: str, metadata: Mapping[str, str], body: bytes) -> str:
        self.seen.append((method, metadata, body))
        if self.caller is None:
            raise Unauthenticated("CALL_SIGNATURE_INVALID", "refused")
        return self.caller

    async def verify_user_token(self, token: str) -> Principal:
        raise Unauthenticated("ACCESS_TOKEN_INVALID", "refused")

    async def verify_admin_token(self, token: str) -> Principal:
        if self.admin_role is None:
            raise Unauthenticated("ACCESS_TOKEN_INVALID", "refused")
        return Principal("admin", "admin-1", self.admin_role)


class WhoAmI(invite_service_pb2_grpc.InviteServiceServicer):
    """Answers HoldCode with the verified caller, to show what handlers see."""

    async def HoldCode(self, request: Any, context: Any) -> invite_service_pb2.HoldCodeResponse:
        return invite_service_pb2.HoldCodeResponse(hold=invite_service_pb2.Hold(id=current_principal.get().id))


def settings_for(database_url: str, redis_url: str, **more: Any) -> Settings:
    # A state dir of its own: no KEK, no keys, so no caller is trusted unless a test makes keys.
    more.setdefault("state_dir", Path(tempfile.mkdtemp()))
    settings = Settings(database_url=database_url, redis_url=redis_url, health_interval=0.1, grace_period=1, **more)
    load_kek(settings, create=True)  # invite_svc seals codes with a key derived from it
    return settings


@asynccontextmanager
async def serving(server: MeshServer) -> AsyncIterator[grpc.aio.Channel]:
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        await server.stop(0)


@pytest.fixture
async def invite(migrated_database_url: str, redis_url: str) -> AsyncIterator[grpc.aio.Channel]:
    server = MeshServer(INVITE, add_invite_servicers, settings_for(migrated_database_url, redis_url))
    async with serving(server) as channel:
        yield channel


async def _code_and_reason(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


async def test_public_method_reaches_its_handler(invite: grpc.aio.Channel) -> None:
    stub = invite_service_pb2_grpc.InviteServiceStub(invite)

    assert await _code_and_reason(stub.CheckCode(invite_service_pb2.CheckCodeRequest(code="X"))) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVITE_CODE_MALFORMED",
    )


async def test_internal_method_refuses_unsigned_and_unknown_callers(invite: grpc.aio.Channel) -> None:
    stub = invite_service_pb2_grpc.InviteServiceStub(invite)
    request = invite_service_pb2.HoldCodeRequest(code="X", email="a@example.com", request_id="r")

    assert await _code_and_reason(stub.HoldCode(request)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALL_SIGNATURE_MISSING",
    )
    assert await _code_and_reason(stub.HoldCode(request, metadata=SIGNED[:3])) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALL_SIGNATURE_MISSING",
    )
    assert await _code_and_reason(stub.HoldCode(request, metadata=SIGNED)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALLER_UNKNOWN",
    )


async def test_user_method_needs_a_bearer_token(invite: grpc.aio.Channel) -> None:
    stub = invite_service_pb2_grpc.InviteServiceStub(invite)
    request = invite_service_pb2.ListMyCodesRequest()

    assert await _code_and_reason(stub.ListMyCodes(request)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_MISSING",
    )
    assert await _code_and_reason(stub.ListMyCodes(request, metadata=(("authorization", "Basic abc"),))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_MISSING",
    )
    assert await _code_and_reason(stub.ListMyCodes(request, metadata=(("authorization", "Bearer abc"),))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "ACCESS_TOKEN_INVALID",
    )


async def test_verified_caller_reaches_the_handler_with_the_exact_body(
    migrated_database_url: str, redis_url: str
) -> None:
    verifier = RecordingVerifier(caller="auth_svc")

    def add(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(WhoAmI(), server)  # type: ignore[abstract]

    server = MeshServer(INVITE, add, settings_for(migrated_database_url, redis_url), calls=verifier, tokens=verifier)
    request = invite_service_pb2.HoldCodeRequest(code="ABCD", email="a@example.com", request_id="r-1")
    async with serving(server) as channel:
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)
        answer = await stub.HoldCode(request, metadata=SIGNED)
        assert answer.hold.id == "auth_svc"
        method, metadata, body = verifier.seen[-1]
        assert method == "/invitemesh.invite.v1.InviteService/HoldCode"
        assert metadata["x-mesh-signature"] == "s"
        assert body == request.SerializeToString()

        verifier.caller = "chain_svc"
        assert await _code_and_reason(stub.HoldCode(request, metadata=SIGNED)) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "CALLER_NOT_ALLOWED",
        )


async def test_admin_role_below_the_declared_minimum_is_refused(migrated_database_url: str, redis_url: str) -> None:
    from admin_svc.server import add_servicers

    verifier = RecordingVerifier(admin_role=AdminRole.VIEWER)
    server = MeshServer(ADMIN, add_servicers, settings_for(migrated_database_url, redis_url), tokens=verifier)
    bearer = (("authorization", "Bearer t"),)
    async with serving(server) as channel:
        stub = admin_service_pb2_grpc.AdminServiceStub(channel)
        batch = stub.CreateInviteBatch(admin_service_pb2.CreateInviteBatchRequest(count=1), metadata=bearer)
        assert await _code_and_reason(batch) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ROLE_TOO_LOW")
        # A viewer is let through to the handler, which has no invite_svc to ask here.
        listing = stub.ListInvites(admin_service_pb2.ListInvitesRequest(), metadata=bearer)
        assert await _code_and_reason(listing) == (grpc.StatusCode.UNAVAILABLE, "INVITE_SERVICE_UNAVAILABLE")


async def test_reflection_lists_the_service_health_and_reflection(invite: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(invite)

    async def one_request() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    answers = [answer async for answer in stub.ServerReflectionInfo(one_request())]

    names = {service.name for service in answers[0].list_services_response.service}
    assert names == {
        "invitemesh.invite.v1.InviteService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


async def test_metrics_count_rpcs_by_method_and_code(migrated_database_url: str, redis_url: str) -> None:
    server = MeshServer(INVITE, add_invite_servicers, settings_for(migrated_database_url, redis_url))
    async with serving(server) as channel:
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)
        for _ in range(3):
            await _code_and_reason(stub.CheckCode(invite_service_pb2.CheckCodeRequest(code="X")))
        exposed = await asyncio.to_thread(_scrape, server.metrics_port)

    method = "/invitemesh.invite.v1.InviteService/CheckCode"
    assert f'mesh_rpcs_total{{code="INVALID_ARGUMENT",method="{method}"}} 3.0' in exposed
    assert f'mesh_rpc_duration_seconds_count{{method="{method}"}} 3.0' in exposed
    assert 'mesh_dependency_up{dependency="redis"} 1.0' in exposed


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as answer:
        return str(answer.read().decode())


async def test_health_follows_redis_down_and_back(migrated_database_url: str, own_redis: EmbeddedRedis) -> None:
    server = MeshServer(INVITE, add_invite_servicers, settings_for(migrated_database_url, own_redis.url))
    async with serving(server) as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status_is(expected: int) -> bool:
            for service in ("", INVITE.grpc_service):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                if answer.status != expected:
                    return False
            return True

        await eventually(lambda: status_is(health_pb2.HealthCheckResponse.SERVING), what="SERVING")
        own_redis.stop()
        await eventually(lambda: status_is(health_pb2.HealthCheckResponse.NOT_SERVING), what="NOT_SERVING")
        assert "redis" in server.health.failures
        # What `meshctl status` shows: the state and the reason.
        said = await probe_grpc_health(
            f"127.0.0.1:{server.port}", INVITE.grpc_service, metrics_address=f"127.0.0.1:{server.metrics_port}"
        )
        assert said is not None and "NOT_SERVING (redis unreachable)" in said
        own_redis.start()
        await eventually(lambda: status_is(health_pb2.HealthCheckResponse.SERVING), what="SERVING again")
        assert server.health.failures == {}


async def test_trace_continues_from_client_to_server(migrated_database_url: str, redis_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = configure_tracing("tests", exporter)
    # An endpoint makes the server and the channel trace with OpenTelemetry; this process's
    # provider sends the spans to the exporter above, not there.
    settings = settings_for(migrated_database_url, redis_url, otlp_endpoint="http://127.0.0.1:4317")
    server = MeshServer(INVITE, add_invite_servicers, settings)
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{server.port}", settings) as channel:
            stub = invite_service_pb2_grpc.InviteServiceStub(channel)
            await _code_and_reason(stub.CheckCode(invite_service_pb2.CheckCodeRequest(code="X")))
    finally:
        await server.stop(0)
    provider.force_flush()

    spans = [s for s in exporter.get_finished_spans() if s.name.endswith("InviteService/CheckCode")]
    client = next(s for s in spans if s.kind is SpanKind.CLIENT)
    served = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert served.context.trace_id == client.context.trace_id
    assert served.parent is not None and served.parent.span_id == client.context.span_id
