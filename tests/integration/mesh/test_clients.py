"""Who a call's client is (security issue 14.4): the address the edge names in
`x-envoy-external-address` is believed from the edge alone (its token in plaintext, its
certificate under mutual TLS); from anyone else the client is the peer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from mesh.channels import open_channel
from mesh.clients import EDGE_NAME, EDGE_TOKEN_HEADER, EXTERNAL_ADDRESS, client_address, current_client, edge_token
from mesh.keys import load_kek
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import INVITE
from mesh.settings import Settings
from meshctl.certs import make_dev_certs

VICTIM = "203.0.113.7"


class ClientEcho(invite_service_pb2_grpc.InviteServiceServicer):
    """CheckCode (public) answers whom the call was taken to come from."""

    async def CheckCode(self, request: Any, context: Any) -> pb.CheckCodeResponse:
        return pb.CheckCodeResponse(valid=current_client.get().via_edge, reason=client_address())


def _add(server: Any, runtime: ServiceRuntime) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(ClientEcho(), server)  # type: ignore[abstract]


@asynccontextmanager
async def _echo(settings: Settings) -> AsyncIterator[str]:
    server = MeshServer(INVITE, _add, settings)
    await server.start()
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


async def _seen(address: str, settings: Settings, identity: str, *metadata: tuple[str, str]) -> tuple[bool, str]:
    async with open_channel(address, settings, identity=identity) as channel:
        answer = await invite_service_pb2_grpc.InviteServiceStub(channel).CheckCode(
            pb.CheckCodeRequest(code="x"), metadata=((EXTERNAL_ADDRESS, VICTIM), *metadata), timeout=10
        )
    return answer.valid, answer.reason


@pytest.fixture
def settings(tmp_path: Path, migrated_database_url: str, redis_url: str) -> Settings:
    settings = Settings(state_dir=tmp_path, database_url=migrated_database_url, redis_url=redis_url, grace_period=1)
    load_kek(settings, create=True)
    return settings


async def test_in_plaintext_the_external_address_is_believed_with_the_edge_token_only(settings: Settings) -> None:
    token = edge_token(load_kek(settings))
    async with _echo(settings) as address:
        claimed = await _seen(address, settings, "meshctl")
        # One character off (a token ends in "A" one time in sixteen).
        guessed = await _seen(address, settings, "meshctl", (EDGE_TOKEN_HEADER, token[:-1] + "AE"[token[-1] == "A"]))
        from_the_edge = await _seen(address, settings, "meshctl", (EDGE_TOKEN_HEADER, token))

    assert claimed == guessed == (False, "127.0.0.1")
    assert from_the_edge == (True, VICTIM)


async def test_under_mutual_tls_the_external_address_is_believed_from_the_edges_certificate_only(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"tls": True})
    make_dev_certs(settings.resolved_certs_dir, ["invite_svc", EDGE_NAME, "meshctl"])
    token = edge_token(load_kek(settings))
    async with _echo(settings) as address:
        another_party = await _seen(address, settings, "meshctl", (EDGE_TOKEN_HEADER, token))
        the_edge = await _seen(address, settings, EDGE_NAME)

    assert another_party == (False, "127.0.0.1")
    assert the_edge == (True, VICTIM)
