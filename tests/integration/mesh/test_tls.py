"""With MESH_TLS=1 a service speaks only mutual TLS: a client without a certificate is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from invite_svc.server import add_servicers
from mesh.channels import open_channel
from mesh.keys import load_kek
from mesh.server import MeshServer
from mesh.services import INVITE
from mesh.settings import Settings
from mesh.tls import channel_credentials
from meshctl.certs import make_dev_certs

CHECK = health_pb2.HealthCheckRequest(service="")


@pytest.fixture
async def tls_server(tmp_path: Path, migrated_database_url: str, redis_url: str) -> AsyncIterator[tuple[str, Settings]]:
    settings = Settings(
        state_dir=tmp_path, database_url=migrated_database_url, redis_url=redis_url, tls=True, grace_period=1
    )
    make_dev_certs(settings.resolved_certs_dir, ["invite_svc", "auth_svc"])
    load_kek(settings, create=True)
    server = MeshServer(INVITE, add_servicers, settings)
    await server.start()
    yield f"127.0.0.1:{server.port}", settings
    await server.stop(0)


async def test_client_with_a_certificate_from_the_ca_is_served(tls_server: tuple[str, Settings]) -> None:
    address, settings = tls_server
    async with open_channel(address, settings, identity="auth_svc") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=10)

    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_client_without_a_certificate_is_refused(tls_server: tuple[str, Settings]) -> None:
    address, settings = tls_server
    credentials = channel_credentials(settings.resolved_certs_dir, None)
    async with grpc.aio.secure_channel(address, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_plaintext_client_is_refused(tls_server: tuple[str, Settings]) -> None:
    address, _ = tls_server
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_certificate_from_another_ca_is_refused(tls_server: tuple[str, Settings], tmp_path: Path) -> None:
    address, settings = tls_server
    other = tmp_path / "other-ca"
    make_dev_certs(other, ["auth_svc"])
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(settings.resolved_certs_dir / "ca.pem").read_bytes(),
        private_key=(other / "auth_svc-key.pem").read_bytes(),
        certificate_chain=(other / "auth_svc.pem").read_bytes(),
    )
    async with grpc.aio.secure_channel(address, credentials) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
