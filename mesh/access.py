"""Who may call what: the `invitemesh.mesh.v1.access` method option, read from the descriptors
and enforced by a server interceptor before any handler runs.

Credentials are checked through two seams: a `CallVerifier` for signed service-to-service
calls (mesh.signing) and a `TokenVerifier` for Bearer access tokens (mesh.tokens).
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

import grpc
import structlog
from google.protobuf.message import DecodeError
from invitemesh.mesh.v1 import access_pb2

from mesh.clients import current_client
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name, method_descriptor
from mesh.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from mesh.handlers import with_behavior

if TYPE_CHECKING:
    from mesh.handlers import Behavior, Context, Continuation, Handler

SIGNATURE_HEADERS = ("x-mesh-caller", "x-mesh-ts", "x-mesh-nonce", "x-mesh-signature")
ACTOR = "x-mesh-actor"
"""Optional beside the signature headers, and covered by the signature when present."""
# Infrastructure every server exposes to anyone who can reach it; they carry no invitemesh data.
_OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)
# Served to the edge alone (mesh.clients says how it is told apart): Envoy cannot sign its calls,
# and anyone else asking its rate limit service could spend another client's budget.
_EDGE_SERVICES = frozenset({"envoy.service.ratelimit.v3.RateLimitService"})


class Audience(IntEnum):
    UNSPECIFIED = access_pb2.Access.AUDIENCE_UNSPECIFIED
    PUBLIC = access_pb2.Access.AUDIENCE_PUBLIC
    USER = access_pb2.Access.AUDIENCE_USER
    ADMIN = access_pb2.Access.AUDIENCE_ADMIN
    INTERNAL = access_pb2.Access.AUDIENCE_INTERNAL


class AdminRole(IntEnum):
    UNSPECIFIED = access_pb2.ADMIN_ROLE_UNSPECIFIED
    VIEWER = access_pb2.ADMIN_ROLE_VIEWER
    OPERATOR = access_pb2.ADMIN_ROLE_OPERATOR
    OWNER = access_pb2.ADMIN_ROLE_OWNER

    @property
    def claim(self) -> str:
        """The role as an admin token's `role` claim and meshctl's `--role` spell it."""
        return self.name.lower()


ADMIN_ROLES = {role.claim: role for role in AdminRole if role is not AdminRole.UNSPECIFIED}
"""Every role an admin can hold, by its claim."""


@dataclass(frozen=True)
class AccessRule:
    audience: Audience
    callers: frozenset[str] = frozenset()
    min_admin_role: AdminRole = AdminRole.UNSPECIFIED


@functools.lru_cache(maxsize=1024)
def access_rule(full_method: str) -> AccessRule | None:
    """The declared rule of an invitemesh method; None for a method the contracts do not know."""
    method = method_descriptor(full_method)
    if method is None:
        return None
    options = method.GetOptions()
    if not options.HasExtension(access_pb2.access):
        return AccessRule(Audience.UNSPECIFIED)
    declared = options.Extensions[access_pb2.access]
    return AccessRule(
        audience=Audience(declared.audience),
        callers=frozenset(declared.callers),
        min_admin_role=AdminRole(declared.min_admin_role),
    )


@functools.cache
def edge_methods() -> tuple[str, ...]:
    """Every method callable from outside the mesh (the ones the edge routes), in contract order."""
    return tuple(
        path
        for service in SERVICE_DESCRIPTORS
        for path in map(full_method_name, service.methods)
        if (rule := access_rule(path)) is not None and rule.audience not in (Audience.INTERNAL, Audience.UNSPECIFIED)
    )


@dataclass(frozen=True)
class Principal:
    """Who a call was verified to come from."""

    kind: str
    """`anonymous`, `user`, `admin` or `service`."""
    id: str = ""
    admin_role: AdminRole = AdminRole.UNSPECIFIED
    session_id: str = ""
    """For a user or an admin: the session their token belongs to (`sid`)."""
    acting_for: str = ""
    """For a service: whom it called on behalf of (`admin:<id>`), when it said so in its signed call."""


ANONYMOUS = Principal("anonymous")
current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("current_principal", default=ANONYMOUS)


class CallVerifier(Protocol):
    async def verify_call(self, method: str, metadata: Mapping[str, str], body: bytes) -> str:
        """Checks the signed metadata of an internal call; answers the caller's service name
        or raises `Unauthenticated`."""
        ...


class TokenVerifier(Protocol):
    async def verify_user_token(self, token: str) -> Principal: ...

    async def verify_admin_token(self, token: str) -> Principal: ...


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, calls: CallVerifier, tokens: TokenVerifier) -> None:
        self._calls = calls
        self._tokens = tokens

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        service = method.lstrip("/").partition("/")[0]
        if handler is None or service in _OPEN_SERVICES:
            return handler
        if service in _EDGE_SERVICES:
            return _edge_only(handler)
        if handler.unary_unary is None:
            # Every invitemesh method is unary; a streaming one was never declared.
            return _closed_method()
        return self._guarded(handler, access_rule(method) or AccessRule(Audience.UNSPECIFIED), method)

    def _guarded(self, handler: Handler, rule: AccessRule, method: str) -> Handler:
        deserialize = handler.request_deserializer or (lambda raw: raw)
        behavior: Behavior = handler.unary_unary  # type: ignore[assignment]

        # The raw bytes reach the check because a signature covers them, and nothing parses a
        # request before its caller is admitted.
        async def guarded(body: bytes, context: Context) -> Any:
            principal = await self._admit(rule, method, _metadata(context), body)
            try:
                request = deserialize(body)
            except DecodeError:
                raise InvalidArgument(
                    [FieldViolation("*", "the request is not a valid protobuf message")], reason="MALFORMED_REQUEST"
                ) from None
            token = current_principal.set(principal)
            if principal.acting_for:
                # Left bound: the call's own task ends with it, and its `rpc` log line, written
                # after this returns, is the one that should name who asked.
                structlog.contextvars.bind_contextvars(acting_for=principal.acting_for)
            try:
                return await behavior(request, context)
            finally:
                current_principal.reset(token)

        return with_behavior(handler, guarded, request_deserializer=lambda raw: raw)

    async def _admit(self, rule: AccessRule, method: str, metadata: Mapping[str, str], body: bytes) -> Principal:
        if rule.audience is Audience.PUBLIC:
            return ANONYMOUS
        if rule.audience is Audience.INTERNAL or (
            rule.audience is Audience.ADMIN and rule.callers and any(map(metadata.get, SIGNATURE_HEADERS))
        ):
            if any(not metadata.get(header) for header in SIGNATURE_HEADERS):
                raise Unauthenticated("CALL_SIGNATURE_MISSING", "internal method: signed call metadata required")
            caller = await self._calls.verify_call(method, metadata, body)
            if caller not in rule.callers:
                raise PermissionDenied("CALLER_NOT_ALLOWED", f"{caller} may not call this method")
            # Covered by the signature just checked, so whom the caller acts for is as sure as the caller.
            return Principal("service", caller, acting_for=metadata.get(ACTOR, ""))
        if rule.audience in (Audience.USER, Audience.ADMIN):
            token = _bearer_token(metadata)
            if rule.audience is Audience.USER:
                return await self._tokens.verify_user_token(token)
            admin = await self._tokens.verify_admin_token(token)
            if admin.admin_role < rule.min_admin_role:
                raise PermissionDenied("ADMIN_ROLE_TOO_LOW", f"requires the {rule.min_admin_role.name.lower()} role")
            return admin
        raise _undeclared()


def _undeclared() -> PermissionDenied:
    return PermissionDenied("METHOD_ACCESS_UNDECLARED", "this method declares no access and is closed")


def _bearer_token(metadata: Mapping[str, str]) -> str:
    scheme, _, token = metadata.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("ACCESS_TOKEN_MISSING", "an Authorization: Bearer access token is required")
    return token.strip()


def _metadata(context: Context) -> dict[str, str]:
    pairs = [(key, value) for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)]
    metadata = dict(pairs)
    # Twice the same signature header is ambiguous: which one was checked is not which one was meant.
    signed = (*SIGNATURE_HEADERS, ACTOR)
    if sum(key in signed for key, _ in pairs) > sum(key in signed for key in metadata):
        raise Unauthenticated("CALL_SIGNATURE_INVALID", "signature headers must appear once each")
    return metadata


def _edge_only(handler: Handler) -> Handler:
    behavior: Behavior = handler.unary_unary  # type: ignore[assignment]

    async def from_the_edge(request: Any, context: Context) -> Any:
        if not current_client.get().via_edge:
            raise PermissionDenied("CALLER_NOT_EDGE", "only the edge may call this method")
        return await behavior(request, context)

    return with_behavior(handler, from_the_edge)


def _closed_method() -> Handler:
    async def refuse(request: Any, context: Context) -> Any:
        raise _undeclared()

    return grpc.unary_unary_rpc_method_handler(refuse)
