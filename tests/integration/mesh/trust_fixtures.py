"""A mesh's worth of keys in a temporary state dir, and a server that answers with who called
(and notes the trace each call ran in)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from opentelemetry import trace

from mesh.access import current_principal
from mesh.keys import Keystore, TrustStore, load_kek
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import IDENTITIES, INVITE
from mesh.settings import Settings
from mesh.signing import CallSigner, Clock


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


@dataclass
class Trust:
    settings: Settings
    keystore: Keystore

    def trust_store(self) -> TrustStore:
        return TrustStore(self.keystore.trust_path, self.settings.trust_reload_interval)

    def signer(self, service: str, clock: Clock | None = None) -> CallSigner:
        if clock is None:
            return CallSigner(service, self.keystore, self.trust_store())
        return CallSigner(service, self.keystore, self.trust_store(), clock)


def make_trust(state_dir: Path, database_url: str, redis_url: str, **more: Any) -> Trust:
    settings = Settings(
        state_dir=state_dir,
        database_url=database_url,
        redis_url=redis_url,
        health_interval=0.1,
        grace_period=1,
        trust_reload_interval=0.05,
        **more,
    )
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings, create=True))
    keystore.ensure(IDENTITIES)
    return Trust(settings, keystore)


@asynccontextmanager
async def who_am_i_server(settings: Settings, **verifiers: Any) -> AsyncIterator[tuple[MeshServer, WhoAmI]]:
    servicer = WhoAmI()  # type: ignore[abstract]

    def add(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(servicer, server)

    server = MeshServer(INVITE, add, settings, **verifiers)
    await server.start()
    if server.signature_checks is not None and settings.signature_helper:
        # So that the tampering tests reach the helper's checks, not the in-process ones it
        # stands in for while it starts.
        await server.signature_checks.start()
        assert server.signature_checks.helper_pid is not None
    try:
        yield server, servicer
    finally:
        await server.stop(0)
