"""Bearer access tokens on user and admin methods, verified against key sets fetched over gRPC
from issuers that are real servers (stand-ins for auth_svc and admin_svc until they exist)."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from invitemesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from invitemesh.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from jwt.algorithms import ECAlgorithm

from mesh.channels import open_channel
from mesh.errors import error_info
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe
from mesh.revocations import RevokedSessions
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import ADMIN, AUTH
from mesh.tokens import ADMIN_ISSUER, AUDIENCE, USER_ISSUER
from meshctl.embedded import free_port
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import Trust, make_trust, who_am_i_server

USER_1, USER_7, USER_42 = (str(uuid.UUID(int=n)) for n in (1, 7, 42))


@dataclass
class Issuer:
    """Holds signing keys and publishes their public halves as a JWKS."""

    keys: dict[str, ec.EllipticCurvePrivateKey] = field(default_factory=dict)
    fetches: int = 0

    def new_key(self) -> str:
        kid = secrets.token_hex(8)
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())
        return kid

    def jwks(self) -> list[auth_service_pb2.JsonWebKey]:
        self.fetches += 1
        published = []
        for kid, key in self.keys.items():
            jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
            published.append(
                auth_service_pb2.JsonWebKey(
                    kty=jwk["kty"], crv=jwk["crv"], x=jwk["x"], y=jwk["y"], kid=kid, alg="ES256", use="sig"
                )
            )
        return published

    def token(self, kid: str, issuer: str, expires_in: float = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": USER_1,
            "sid": str(uuid.uuid4()),
            "iss": issuer,
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + expires_in,
            **claims,
        }
        return jwt.encode(payload, self.keys[kid], algorithm="ES256", headers={"kid": kid})


class AuthKeys(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def GetJwks(self, request: Any, context: Any) -> auth_service_pb2.GetJwksResponse:
        return auth_service_pb2.GetJwksResponse(keys=self.issuer.jwks())


class AdminKeys(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(self, issuer: Issuer) -> None:
        self.issuer = issuer

    async def GetAdminJwks(self, request: Any, context: Any) -> admin_service_pb2.GetAdminJwksResponse:
        return admin_service_pb2.GetAdminJwksResponse(keys=self.issuer.jwks())

    async def ListInvites(self, request: Any, context: Any) -> admin_service_pb2.ListInvitesResponse:
        return admin_service_pb2.ListInvitesResponse(next_page_token="admitted")


@dataclass
class Mesh:
    users: Issuer
    admins: Issuer
    invite: invite_service_pb2_grpc.InviteServiceAsyncStub
    admin: admin_service_pb2_grpc.AdminServiceAsyncStub


@pytest.fixture
async def mesh(tmp_path: Path, migrated_database_url: str, redis_url: str) -> AsyncIterator[Mesh]:
    trust: Trust = make_trust(tmp_path, migrated_database_url, redis_url, jwks_refresh_interval=0.2)
    users, admins = Issuer(), Issuer()

    def add_auth(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthKeys(users), server)  # type: ignore[abstract]

    def add_admin(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminKeys(admins), server)  # type: ignore[abstract]

    auth_server = MeshServer(AUTH, add_auth, trust.settings)
    await auth_server.start()
    # The admin issuer verifies admin tokens too, so it must know its own address.
    admin_port = free_port()
    addresses = {"auth_svc": f"127.0.0.1:{auth_server.port}", "admin_svc": f"127.0.0.1:{admin_port}"}
    settings = trust.settings.model_copy(update={"service_addresses": addresses})
    admin_server = MeshServer(ADMIN, add_admin, settings.model_copy(update={"grpc_port": admin_port}))
    await admin_server.start()
    try:
        async with (
            who_am_i_server(settings) as (invite_server, _),
            open_channel(f"127.0.0.1:{invite_server.port}", settings) as invite_channel,
            open_channel(addresses["admin_svc"], settings) as admin_channel,
        ):
            yield Mesh(
                users,
                admins,
                invite_service_pb2_grpc.InviteServiceStub(invite_channel),
                admin_service_pb2_grpc.AdminServiceStub(admin_channel),
            )
    finally:
        await admin_server.stop(0)
        await auth_server.stop(0)


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _my_codes(mesh: Mesh, token: str | None) -> str:
    metadata = _bearer(token) if token is not None else ()
    answer = await mesh.invite.ListMyCodes(invite_service_pb2.ListMyCodesRequest(), metadata=metadata)
    return str(answer.codes[0].owner.user_id)


async def _refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


async def test_valid_user_token_reaches_the_handler_with_the_user_id(mesh: Mesh) -> None:
    kid = mesh.users.new_key()

    assert await _my_codes(mesh, mesh.users.token(kid, USER_ISSUER, sub=USER_42)) == USER_42


async def test_user_method_refuses_missing_expired_unknown_key_and_alg_none(mesh: Mesh) -> None:
    kid = mesh.users.new_key()
    stranger = Issuer()
    stranger_kid = stranger.new_key()
    unsigned = jwt.encode(
        {"sub": USER_1, "iss": USER_ISSUER, "aud": AUDIENCE, "iat": int(time.time()), "exp": int(time.time()) + 300},
        key=None,  # type: ignore[arg-type]
        algorithm="none",
        headers={"kid": kid},
    )

    assert await _refusal(_my_codes(mesh, None)) == (UNAUTHENTICATED, "ACCESS_TOKEN_MISSING")
    expired = mesh.users.token(kid, USER_ISSUER, expires_in=-60)
    assert await _refusal(_my_codes(mesh, expired)) == (UNAUTHENTICATED, "ACCESS_TOKEN_EXPIRED")
    foreign = stranger.token(stranger_kid, USER_ISSUER)
    assert await _refusal(_my_codes(mesh, foreign)) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
    assert await _refusal(_my_codes(mesh, unsigned)) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
    tampered = mesh.users.token(kid, USER_ISSUER, sub=USER_1)
    header, _, signature = tampered.split(".")
    forged_payload = jwt.utils.base64url_encode(b'{"sub":"admin","iss":"invitemesh-auth","aud":"invitemesh"}').decode()
    assert await _refusal(_my_codes(mesh, f"{header}.{forged_payload}.{signature}")) == (
        UNAUTHENTICATED,
        "ACCESS_TOKEN_INVALID",
    )


async def test_an_admin_token_is_not_a_user_token(mesh: Mesh) -> None:
    admin_kid = mesh.admins.new_key()
    mesh.users.new_key()

    token = mesh.admins.token(admin_kid, ADMIN_ISSUER, role="owner")

    assert await _refusal(_my_codes(mesh, token)) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")


async def test_key_set_is_cached_and_refetched_for_an_unknown_key_id(mesh: Mesh) -> None:
    first = mesh.users.new_key()
    for _ in range(5):
        assert await _my_codes(mesh, mesh.users.token(first, USER_ISSUER)) == USER_1
    assert mesh.users.fetches == 1

    rotated = mesh.users.new_key()
    token = mesh.users.token(rotated, USER_ISSUER, sub=USER_7)

    async def accepted() -> bool:
        try:
            return await _my_codes(mesh, token) == USER_7
        except grpc.aio.AioRpcError:
            return False

    await eventually(accepted, what="a token with a newly published key id to verify")
    assert mesh.users.fetches >= 2


async def test_admin_methods_check_the_role_claim(mesh: Mesh) -> None:
    kid = mesh.admins.new_key()
    viewer = _bearer(mesh.admins.token(kid, ADMIN_ISSUER, sub=USER_42, role="viewer"))
    user_kid = mesh.users.new_key()

    listed = await mesh.admin.ListInvites(admin_service_pb2.ListInvitesRequest(), metadata=viewer)
    batch = mesh.admin.CreateInviteBatch(admin_service_pb2.CreateInviteBatchRequest(count=1), metadata=viewer)
    as_user = mesh.admin.ListInvites(
        admin_service_pb2.ListInvitesRequest(), metadata=_bearer(mesh.users.token(user_kid, USER_ISSUER))
    )
    roleless = mesh.admin.ListInvites(
        admin_service_pb2.ListInvitesRequest(), metadata=_bearer(mesh.admins.token(kid, ADMIN_ISSUER))
    )

    assert listed.next_page_token == "admitted"
    assert await _refusal(batch) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_ROLE_TOO_LOW")
    assert await _refusal(as_user) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
    assert await _refusal(roleless) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")


async def test_a_token_whose_subject_or_session_is_not_a_uuid_is_invalid_not_an_error(mesh: Mesh) -> None:
    kid = mesh.users.new_key()

    for claims in ({"sub": "user-1"}, {"sid": "session-1"}, {"sid": None}):
        token = mesh.users.token(kid, USER_ISSUER, **claims)
        assert await _refusal(_my_codes(mesh, token)) == (UNAUTHENTICATED, "ACCESS_TOKEN_INVALID"), claims


async def test_a_revoked_session_is_refused_at_once_everywhere(mesh: Mesh, redis_url: str, pipe: RedisPipe) -> None:
    kid = mesh.users.new_key()
    session = str(uuid.uuid4())
    token = mesh.users.token(kid, USER_ISSUER, sid=session)
    other = mesh.users.token(kid, USER_ISSUER)
    assert await _my_codes(mesh, token) == USER_1

    await RevokedSessions(pipe, KeySpace(AUTH.redis_prefix)).revoke([session], 60)

    assert await _refusal(_my_codes(mesh, token)) == (UNAUTHENTICATED, "ACCESS_TOKEN_REVOKED")
    assert await _my_codes(mesh, other) == USER_1


async def test_without_redis_no_session_can_be_checked_and_user_calls_fail_closed(
    tmp_path: Path, migrated_database_url: str
) -> None:
    trust = make_trust(tmp_path, migrated_database_url, f"redis://127.0.0.1:{free_port()}/0", redis_cluster=False)
    users = Issuer()
    kid = users.new_key()

    def add_auth(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthKeys(users), server)  # type: ignore[abstract]

    auth_server = MeshServer(AUTH, add_auth, trust.settings)
    await auth_server.start()
    settings = trust.settings.model_copy(update={"service_addresses": {"auth_svc": f"127.0.0.1:{auth_server.port}"}})
    try:
        async with (
            who_am_i_server(settings) as (invite_server, _),
            open_channel(f"127.0.0.1:{invite_server.port}", settings) as channel,
        ):
            call = invite_service_pb2_grpc.InviteServiceStub(channel).ListMyCodes(
                invite_service_pb2.ListMyCodesRequest(), metadata=_bearer(users.token(kid, USER_ISSUER))
            )
            assert await _refusal(call) == (grpc.StatusCode.UNAVAILABLE, "SESSION_CHECK_UNAVAILABLE")
    finally:
        await auth_server.stop(0)


async def test_key_set_fetches_go_through_the_issuers_breaker(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> None:
    """With the issuer gone, a verifier stops calling it after a few failures (issue 15.4)."""
    trust = make_trust(tmp_path, migrated_database_url, redis_url, jwks_refresh_interval=0.05)
    users = Issuer()
    settings = trust.settings.model_copy(update={"service_addresses": {"auth_svc": f"127.0.0.1:{free_port()}"}})
    async with (
        who_am_i_server(settings) as (invite_server, _),
        open_channel(f"127.0.0.1:{invite_server.port}", settings) as channel,
    ):
        request = invite_service_pb2.ListMyCodesRequest()
        invites = invite_service_pb2_grpc.InviteServiceStub(channel)
        registry = invite_server.metrics.registry

        async def opened() -> bool:
            token = users.token(users.new_key(), USER_ISSUER)  # a key id it never saw: it fetches
            with pytest.raises(grpc.aio.AioRpcError):
                await invites.ListMyCodes(request, metadata=_bearer(token))
            return registry.get_sample_value("mesh_breaker_state", {"breaker": "auth_svc"}) == 2

        await eventually(opened, what="the verifier's breaker for auth_svc to open")
