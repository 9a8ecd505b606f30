"""A mesh's worth of keys in a temporary state dir, and a server that answers with who called
(and notes the trace each call ran in)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from opentelemetry import trace

from admin_svc.settings import AdminSettings
from auth_svc.settings import AuthSettings
from chain_svc.settings import ChainSettings
from invite_svc.settings import InviteSettings
from mail_svc.settings import MailSettings
from mesh.access import Principal, current_principal
from mesh.errors import Unauthenticated
from mesh.keys import Keystore, TrustStore, load_kek
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import ADMIN, AUTH, CHAIN, IDENTITIES, INVITE, MAIL, RATELIMIT, ServiceSpec
from mesh.settings import MeshSettings, Settings
from mesh.signing import CallSigner, Clock
from ratelimit_svc.settings import RateLimitSettings

Own = TypeVar("Own", bound=MeshSettings)


class WhoAmI(invite_service_pb2_grpc.InviteServiceServicer):
    """HoldCode and ListMyCodes answer with the verified principal's id; counts handled calls."""

    def __init__(self) -> None:
        self.handled = 0
        self.traces: list[int] = []

    async def HoldCode(self, request: Any, context: Any) -> invite_service_pb2.HoldCodeResponse:
        self.handled += 1
        self.traces.append(trace.get_current_span().get_span_context().trace_id)
        return invite_service_pb2.HoldCodeResponse(hold=invite_service_pb2.Hold(id=current_principal.get().id))

    async def ListMyCodes(self, request: Any, context: Any) -> invite_service_pb2.ListMyCodesResponse:
        self.handled += 1
        owner = invite_service_pb2.Owner(user_id=current_principal.get().id)
        return invite_service_pb2.ListMyCodesResponse(codes=[invite_service_pb2.InviteCode(owner=owner)])


class BearerIsUserId:
    """Token verification belongs to tests/integration/mesh/test_tokens.py; here a token is a user id."""

    async def verify_user_token(self, token: str) -> Principal:
        return Principal("user", token)

    async def verify_admin_token(self, token: str) -> Principal:
        raise Unauthenticated("ACCESS_TOKEN_INVALID", "no admins here")


def as_user(user_id: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call by `user_id`, to a server that takes tokens by BearerIsUserId."""
    return (("authorization", f"Bearer {user_id}"),)


OWN_SETTINGS: dict[str, type[MeshSettings]] = {
    AUTH.name: AuthSettings,
    INVITE.name: InviteSettings,
    MAIL.name: MailSettings,
    RATELIMIT.name: RateLimitSettings,
    ADMIN.name: AdminSettings,
    CHAIN.name: ChainSettings,
}


def _prefix(kind: type[MeshSettings]) -> str:
    """`auth_` for `MESH_AUTH_*`: how tests name a service's setting beside the shared ones."""
    return str(kind.model_config.get("env_prefix", "")).lower().removeprefix("mesh_")


@dataclass
class Trust:
    settings: Settings
    keystore: Keystore
    own_settings: dict[str, Any] = field(default_factory=dict)
    """Services' settings by their environment names less `MESH_`, such as `auth_access_ttl`."""

    def own(self, kind: type[Own]) -> Own:
        """The settings of the service `kind` belongs to, as given here."""
        prefix = _prefix(kind)
        return kind(
            **{name.removeprefix(prefix): value for name, value in self.own_settings.items() if name.startswith(prefix)}
        )

    def environment(self) -> dict[str, str]:
        """What makes a service process read the settings given here, its own included."""
        return {
            **self.settings.environment(),
            **{k: v for kind in OWN_SETTINGS.values() for k, v in self.own(kind).environment().items()},
        }

    def with_settings(self, **different: Any) -> Trust:
        shared, own = _split(different)
        return Trust(self.settings.model_copy(update=shared), self.keystore, {**self.own_settings, **own})

    def server(self, spec: ServiceSpec, add_servicers: Callable[..., None], **verifiers: Any) -> MeshServer:
        """`spec`'s server with the settings given here, its own included."""
        kind = OWN_SETTINGS.get(spec.name)
        wiring = functools.partial(add_servicers, own=self.own(kind)) if kind else add_servicers
        return MeshServer(spec, wiring, self.settings, **verifiers)

    def trust_store(self) -> TrustStore:
        return TrustStore(self.keystore.trust_path, self.settings.trust_reload_interval)

    def signer(self, service: str, clock: Clock | None = None) -> CallSigner:
        if clock is None:
            return CallSigner(service, self.keystore, self.trust_store())
        return CallSigner(service, self.keystore, self.trust_store(), clock)


def _split(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Shared settings apart from services' own; a name neither knows is a mistake in a test."""
    shared = {name: value for name, value in settings.items() if name in Settings.model_fields}
    own = {name: value for name, value in settings.items() if name not in shared}
    known = {_prefix(kind) + field_name for kind in OWN_SETTINGS.values() for field_name in kind.model_fields}
    if unknown := own.keys() - known:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}")
    return shared, own


def make_trust(state_dir: Path, database_url: str, redis_url: str, **more: Any) -> Trust:
    shared, own = _split(more)
    settings = Settings(
        state_dir=state_dir,
        database_url=database_url,
        redis_url=redis_url,
        health_interval=0.1,
        grace_period=1,
        trust_reload_interval=0.05,
        **shared,
    )
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings, create=True))
    keystore.ensure(IDENTITIES)
    return Trust(settings, keystore, own)


@asynccontextmanager
async def who_am_i_server(settings: Settings, **verifiers: Any) -> AsyncIterator[tuple[MeshServer, WhoAmI]]:
    servicer = WhoAmI()  # type: ignore[abstract]

    def add(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(servicer, server)

    server = MeshServer(INVITE, add, settings, **verifiers)
    await server.start()
    try:
        yield server, servicer
    finally:
        await server.stop(0)
