"""Bearer access tokens: ES256 JWTs verified against the issuer's JSON Web Key Set.

The contracts say who issues each kind: the method marked `(invitemesh.mesh.v1.key_set)` with
an audience publishes the keys of that audience's tokens, and the service serving it is their
issuer (`invitemesh-<schema>`). Each key set is kept in a cache that is fetched again when a
token names a key id it does not hold, at most once per `refresh_interval`, so forged key ids
cannot make a service hammer the issuer. A token names its subject (a UUID) and its session
(`sid`); a session its issuer revoked is refused at once (mesh.revocations).
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
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from invitemesh.mesh.v1 import access_pb2

from mesh.access import ADMIN_ROLES, Audience, Principal
from mesh.channels import Peers
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.errors import Unauthenticated
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe
from mesh.revocations import RevokedSessions
from mesh.services import ServiceSpec, serving

log = structlog.get_logger("mesh.tokens")

LEEWAY = 5.0
"""Seconds of clock skew a token's times are given."""
AUDIENCE = "invitemesh"
ALGORITHM = "ES256"
FetchKeys = Callable[[], Awaitable[Sequence[Message]]]


@dataclass(frozen=True)
class KeySet:
    """The method publishing the keys of one audience's tokens, and the service serving it."""

    method: MethodDescriptor
    publisher: ServiceSpec

    @property
    def issuer(self) -> str:
        """The tokens' `iss`."""
        return f"invitemesh-{self.publisher.schema}"

    async def fetch(self, peers: Peers) -> Sequence[Message]:
        """The keys, asked of the publisher over the process's signed channel to it."""
        call = peers.channel(self.publisher.name).unary_unary(
            full_method_name(self.method),
            request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=message_factory.GetMessageClass(self.method.output_type).FromString,
        )
        request = message_factory.GetMessageClass(self.method.input_type)()
        async with peers.breaker(self.publisher.name).guard():
            return list((await call(request, timeout=3)).keys)


def key_set(audience: Audience) -> KeySet:
    """The key set of `audience` (USER or ADMIN), as the contracts declare it."""
    (method,) = [
        method
        for service in SERVICE_DESCRIPTORS
        for method in service.methods
        if Audience(method.GetOptions().Extensions[access_pb2.key_set]) is audience
    ]
    return KeySet(method, serving(method.containing_service.full_name))


USER_ISSUER = key_set(Audience.USER).issuer
ADMIN_ISSUER = key_set(Audience.ADMIN).issuer


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
        return Principal("user", str(claims["sub"]), session_id=str(claims["sid"]))

    async def verify_admin_token(self, token: str) -> Principal:
        claims = await self._claims(token, self._admins)
        role = ADMIN_ROLES.get(str(claims.get("role")))
        if role is None:
            raise Unauthenticated("ACCESS_TOKEN_INVALID", "admin token without a known role")
        return Principal("admin", str(claims["sub"]), role, session_id=str(claims["sid"]))

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
    published_keys: Callable[[], FetchKeys | None] = lambda: None,
) -> JwtVerifier:
    """Verifies each audience's tokens with its key set, against the sessions its issuer revoked;
    the issuer itself reads its own key set in process (`published_keys`)."""

    def issuer(audience: Audience) -> Issuer:
        keys = key_set(audience)

        async def fetch() -> Sequence[Message]:
            own = published_keys() if keys.publisher.name == peers.identity else None
            return await own() if own is not None else await keys.fetch(peers)

        revoked = RevokedSessions(pipe, KeySpace(keys.publisher.redis_prefix))
        return Issuer(keys.issuer, KeySetCache(fetch, refresh_interval), revoked)

    return JwtVerifier(issuer(Audience.USER), issuer(Audience.ADMIN))


def _is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def _invalid() -> Unauthenticated:
    return Unauthenticated("ACCESS_TOKEN_INVALID", "the access token does not verify")
