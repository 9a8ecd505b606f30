"""Bearer access tokens: ES256 JWTs verified against the issuer's JSON Web Key Set.

User tokens come from auth_svc (its public GetJwks), admin tokens from admin_svc (GetAdminJwks),
each kept in a cache that is fetched again when a token names a key id it does not hold, at most
once per `refresh_interval`, so forged key ids cannot make a service hammer the issuer. A token
names its subject (a UUID) and its session (`sid`); a session its issuer revoked is refused at
once (mesh.revocations).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from invitemesh.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

from mesh.access import AdminRole, Principal
from mesh.channels import Peers
from mesh.errors import Unauthenticated
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe
from mesh.revocations import RevokedSessions
from mesh.services import ADMIN, AUTH

log = structlog.get_logger("mesh.tokens")

LEEWAY = 5.0
"""Seconds of clock skew a token's times are given."""
USER_ISSUER = "invitemesh-auth"
ADMIN_ISSUER = "invitemesh-admin"
AUDIENCE = "invitemesh"
ALGORITHM = "ES256"
FetchKeys = Callable[[], Awaitable[Sequence[Message]]]
_ROLES = {"viewer": AdminRole.VIEWER, "operator": AdminRole.OPERATOR, "owner": AdminRole.OWNER}


class KeySetCache:
    def __init__(self, fetch: FetchKeys, refresh_interval: float = 10.0) -> None:
        self._fetch = fetch
        self._refresh_interval = refresh_interval
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK | None:
        if kid not in self._keys:
            async with self._lock:
                if kid not in self._keys and time.monotonic() - self._fetched_at >= self._refresh_interval:
                    await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            published = await self._fetch()
        except Exception as error:  # an unreachable issuer leaves the cached keys in force
            log.warning("key set fetch failed", error=type(error).__name__)
            return
        keys = {}
        for message in published:
            jwk = MessageToDict(message, preserving_proto_field_name=True)
            keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=ALGORITHM)
        self._keys = keys


@dataclass(frozen=True)
class Issuer:
    """Who issues one kind of token: its name (`iss`), its key set, and where it keeps the
    sessions it revoked."""

    name: str
    keys: KeySetCache
    revoked: RevokedSessions


class JwtVerifier:
    """The `TokenVerifier` of a service."""

    def __init__(self, users: Issuer, admins: Issuer, leeway: float = LEEWAY) -> None:
        self._users = users
        self._admins = admins
        self._leeway = leeway

    async def verify_user_token(self, token: str) -> Principal:
        claims = await self._claims(token, self._users)
        return Principal("user", str(claims["sub"]))

    async def verify_admin_token(self, token: str) -> Principal:
        claims = await self._claims(token, self._admins)
        role = _ROLES.get(str(claims.get("role")))
        if role is None:
            raise Unauthenticated("ACCESS_TOKEN_INVALID", "admin token without a known role")
        return Principal("admin", str(claims["sub"]), role)

    async def _claims(self, token: str, issuer: Issuer) -> dict[str, Any]:
        claims = await self._verified(token, issuer.keys, issuer.name)
        if not _is_uuid(claims["sub"]) or not _is_uuid(claims["sid"]):
            raise _invalid()
        if await issuer.revoked.revoked(str(claims["sid"])):
            raise Unauthenticated("ACCESS_TOKEN_REVOKED", "this session has ended; sign in again")
        return claims

    async def _verified(self, token: str, keys: KeySetCache, issuer: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise _invalid() from None
        # Only ES256: no `none`, and no HS256 keyed with a public key.
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise _invalid()
        key = await keys.key(header["kid"])
        if key is None:
            raise _invalid()
        try:
            return dict(
                jwt.decode(
                    token,
                    key.key,
                    algorithms=[ALGORITHM],
                    audience=AUDIENCE,
                    issuer=issuer,
                    leeway=self._leeway,
                    options={"require": ["exp", "iat", "sub", "sid", "iss", "aud"]},
                )
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("ACCESS_TOKEN_EXPIRED", "the access token has expired") from None
        except jwt.InvalidTokenError:
            raise _invalid() from None


def verifier_for(
    peers: Peers,
    pipe: RedisPipe,
    refresh_interval: float = 10.0,
    own_user_keys: Callable[[], FetchKeys | None] = lambda: None,
) -> JwtVerifier:
    """Verifies user tokens with auth_svc's key set and admin tokens with admin_svc's, each
    against the sessions its issuer revoked; auth_svc itself reads its key set in process
    (`own_user_keys`)."""

    async def user_keys() -> Sequence[Message]:
        own = own_user_keys()
        if own is not None:
            return await own()
        stub = auth_service_pb2_grpc.AuthServiceStub(peers.channel(AUTH.name))
        async with peers.breaker(AUTH.name).guard():
            return list((await stub.GetJwks(auth_service_pb2.GetJwksRequest(), timeout=3)).keys)

    async def admin_keys() -> Sequence[Message]:
        stub = admin_service_pb2_grpc.AdminServiceStub(peers.channel(ADMIN.name))
        async with peers.breaker(ADMIN.name).guard():
            return list((await stub.GetAdminJwks(admin_service_pb2.GetAdminJwksRequest(), timeout=3)).keys)

    return JwtVerifier(
        Issuer(
            USER_ISSUER, KeySetCache(user_keys, refresh_interval), RevokedSessions(pipe, KeySpace(AUTH.redis_prefix))
        ),
        Issuer(
            ADMIN_ISSUER, KeySetCache(admin_keys, refresh_interval), RevokedSessions(pipe, KeySpace(ADMIN.redis_prefix))
        ),
    )


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _invalid() -> Unauthenticated:
    return Unauthenticated("ACCESS_TOKEN_INVALID", "the access token does not verify")
