"""auth_svc for real, with the services it works with: invite_svc and mail_svc run as real gRPC
servers on their own ports, mail goes to a real SMTP relay, over a real PostgreSQL and Redis.
Any of the three can be stopped and started again on the same port."""

from __future__ import annotations

import asyncio
import base64
import random
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from invitemesh.admin.v1 import admin_service_pb2_grpc
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from admin_svc.server import add_servicers as add_admin
from auth_svc.server import add_servicers as add_auth
from invite_svc.server import add_servicers as add_invite
from mail_svc.server import add_servicers as add_mail
from mesh.channels import open_channel
from mesh.errors import error_info, retry_info
from mesh.server import AddServicers, MeshServer
from mesh.services import ADMIN, AUTH, INVITE, MAIL, RATELIMIT, ServiceSpec
from mesh.settings import Settings
from meshctl.embedded import free_port
from ratelimit_svc.server import add_servicers as add_ratelimit
from tests.conftest import eventually
from tests.integration.conftest import from_the_edge
from tests.integration.mail_svc.relay import Received, ScriptedRelay
from tests.integration.mesh.trust_fixtures import Trust, make_trust

PASSWORD = "a long passphrase of my own"
# One KEK for every stack of the session, as one deployment has: the stacks share a database,
# and what one sealed (the access-token key, outbox messages) another must open.
KEK = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
_PARTS: dict[str, tuple[ServiceSpec, AddServicers]] = {
    "auth_svc": (AUTH, add_auth),
    "invite_svc": (INVITE, add_invite),
    "mail_svc": (MAIL, add_mail),
    "ratelimit_svc": (RATELIMIT, add_ratelimit),
    "admin_svc": (ADMIN, add_admin),
}
CORE = ("invite_svc", "mail_svc", "auth_svc")
"""What a registration needs; admin tests add ratelimit_svc and admin_svc."""
FAST = {
    "outbox_interval": 0.2,
    "outbox_backoff_base": 0.1,
    "outbox_backoff_cap": 0.5,
    "mail_backoff_base": 0.05,
    "mail_backoff_cap": 0.2,
    "mail_smtp_timeout": 2.0,
    "mail_sweep_interval": 0.5,
    "jwks_refresh_interval": 0.1,
    "auth_registrations_per_hour": 10_000,
    "auth_emails_per_hour": 10_000,
    "invite_checks_per_minute": 10_000,
    "invite_waitlist_top_up_interval": 0.3,
    # Tests here send dozens of registrations at once for what they race on, not to be refused
    # for load: admission has tests of its own (tests/integration/mesh/test_admission.py).
    "hash_wait_target": 10.0,
}


@dataclass
class Stack:
    trust: Trust
    relay: ScriptedRelay
    database_url: str
    servers: dict[str, MeshServer] = field(default_factory=dict)
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.trust.settings

    def address(self, service: str) -> str:
        return self.settings.service_addresses[service]

    async def start(self, service: str, **different: Any) -> None:
        """Starts `service` on its port, with settings `different` from the stack's if given."""
        spec, add = _PARTS[service]
        port = int(self.address(service).rpartition(":")[2])
        server = self.trust.with_settings(**different, grpc_port=port).server(spec, add)
        await server.start()
        self.servers[service] = server

    async def stop(self, service: str) -> None:
        await self.servers.pop(service).stop(0)

    def _channel(self, service: str, caller: str | None = None) -> grpc.aio.Channel:
        signer = self.trust.signer(caller) if caller else None
        channel = open_channel(self.address(service), self.settings, caller or "meshctl", signer)
        self._channels.append(channel)
        return channel

    @property
    def auth(self) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        return auth_service_pb2_grpc.AuthServiceStub(self._channel("auth_svc"))

    def admin(self, token: str | None = None) -> admin_service_pb2_grpc.AdminServiceAsyncStub:
        """admin_svc as the edge passes calls on, with an admin's (or anyone's) Bearer `token`."""
        if token is None:
            return admin_service_pb2_grpc.AdminServiceStub(self._channel("admin_svc"))
        channel = grpc.aio.insecure_channel(self.address("admin_svc"), interceptors=[_Bearer(token)])  # type: ignore[list-item]
        self._channels.append(channel)
        return admin_service_pb2_grpc.AdminServiceStub(channel)

    def admin_as(self, caller: str) -> admin_service_pb2_grpc.AdminServiceAsyncStub:
        """admin_svc as `caller` (meshctl) calls it, signed."""
        return admin_service_pb2_grpc.AdminServiceStub(self._channel("admin_svc", caller))

    def auth_as(self, caller: str) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        """auth_svc as another service calls it, signed."""
        return auth_service_pb2_grpc.AuthServiceStub(self._channel("auth_svc", caller))

    @property
    def invites(self) -> invite_service_pb2_grpc.InviteServiceAsyncStub:
        """invite_svc as admin_svc calls it."""
        return invite_service_pb2_grpc.InviteServiceStub(self._channel("invite_svc", "admin_svc"))

    @property
    def invites_in_public(self) -> invite_service_pb2_grpc.InviteServiceAsyncStub:
        """invite_svc as the edge passes a public call on (with `from_the_edge` metadata)."""
        return invite_service_pb2_grpc.InviteServiceStub(self._channel("invite_svc"))

    async def mint(self, max_uses: int = 1, count: int = 1, campaign_id: str = "") -> list[str]:
        request = invite_pb.MintCodesRequest(
            count=count,
            max_uses=max_uses,
            owner=invite_pb.Owner(admin_id=str(uuid.uuid4())),
            campaign_id=campaign_id,
            request_id=uuid.uuid4().hex,
        )
        return [code.code for code in (await self.invites.MintCodes(request)).codes]

    async def campaign(self, invite_quota: int, capacity: int = 0) -> str:
        wanted = invite_pb.Campaign(
            display_name=f"launch {uuid.uuid4().hex[:8]}", invite_quota=invite_quota, capacity=capacity
        )
        request = invite_pb.CreateCampaignRequest(campaign=wanted, request_id=uuid.uuid4().hex)
        return (await self.invites.CreateCampaign(request)).campaign.id

    async def mail_to(self, address: str, count: int = 1) -> list[Received]:
        async def arrived() -> bool:
            return len(self.received_by(address)) >= count

        await eventually(arrived, within=20, what=f"{count} mail(s) to {address}")
        return self.received_by(address)

    def received_by(self, address: str) -> list[Received]:
        return [mail for mail in self.relay.received if mail.recipient == address]

    async def verification_code(self, address: str, nth: int = 1) -> str:
        """The code of the `nth` verification mail to `address`."""
        return (await self._found_in_mails(address, r"\b(\d{6})\b", nth))[nth - 1]

    async def link_token(self, address: str) -> str:
        """The token of the newest link mailed to `address` (a password reset's, a waitlist place's)."""
        return (await self._found_in_mails(address, r"#token=([A-Za-z0-9_-]+)"))[-1]

    async def _found_in_mails(self, address: str, pattern: str, count: int = 1) -> list[str]:
        def found() -> list[str]:
            return [match.group(1) for mail in self.received_by(address) if (match := re.search(pattern, mail.text))]

        async def arrived() -> bool:
            return len(found()) >= count

        await eventually(arrived, within=20, what=f"{count} mail(s) to {address} matching {pattern}")
        return found()

    async def register(
        self, email: str, code: str, password: str = PASSWORD, client: str | None = None
    ) -> pb.RegisterResponse:
        """Registers, through the edge from the client address `client` when given (with the
        headers Envoy adds), else straight from this process. A refusal for load is sent again
        after its RetryInfo (with jitter), as clients are told to: it comes before any work, and
        tests here race registrations for what they test, not for admission, which a loaded
        machine's slow hashes can still reach."""
        metadata = from_the_edge(self.settings, client) if client else None
        request = pb.RegisterRequest(email=email, password=password, invite_code=code)
        give_up = time.monotonic() + 60
        while True:
            try:
                return await self.auth.Register(request, metadata=metadata)
            except grpc.aio.AioRpcError as error:
                if (info := error_info(error)) is None or info.reason != "OVERLOADED" or time.monotonic() > give_up:
                    raise
                told = retry_info(error)
                wait = told.retry_delay.ToTimedelta().total_seconds() if told else 1.0
                await asyncio.sleep(wait * (1 + random.random()))

    async def verify(self, email: str, registered: pb.RegisterResponse, nth: int = 1) -> pb.VerifyEmailResponse:
        """Verifies a registration, as the client that made it, with the `nth` mail's code."""
        code = await self.verification_code(email, nth)
        return await self.auth.VerifyEmail(
            pb.VerifyEmailRequest(email=email, code=code, registration=registered.registration)
        )

    async def signed_up(self, email: str | None = None) -> tuple[str, pb.VerifyEmailResponse]:
        """A new active account (registered with a fresh code, verified): its email and session."""
        email = email or someone()
        (code,) = await self.mint()
        return email, await self.verify(email, await self.register(email, code))

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        for service in list(self.servers):
            await self.stop(service)


class _Bearer(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(details._replace(metadata=(*(details.metadata or ()), self._header)), request)


async def refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    """The code and `ErrorInfo.reason` a call is refused with (the test fails if it is answered)."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


def someone() -> str:
    return f"ada.{uuid.uuid4().hex[:10]}@example.com"


def stack_trust(tmp_path: Path, database_url: str, redis_url: str, smtp_url: str, **more: Any) -> Trust:
    addresses = {name: f"127.0.0.1:{free_port()}" for name in _PARTS}
    return make_trust(
        tmp_path,
        database_url,
        redis_url,
        smtp_url=smtp_url,
        service_addresses=addresses,
        mail_stream=f"mail-test-{secrets.token_hex(4)}",
        kek=KEK,
        **{**FAST, **more},
    )


StackFactory = Callable[..., AbstractAsyncContextManager[Stack]]


def stack_factory(
    tmp_path: Path, database_url: str, redis_url: str, relay: ScriptedRelay, services: tuple[str, ...], **defaults: Any
) -> StackFactory:
    """Starts `services`, with settings that differ from the default by `defaults` and then by
    the keywords given."""

    @asynccontextmanager
    async def started(**more: Any) -> AsyncIterator[Stack]:
        trust = stack_trust(tmp_path, database_url, redis_url, relay.url, **{**defaults, **more})
        running = Stack(trust, relay, database_url)
        try:
            for service in services:
                await running.start(service)
            yield running
        finally:
            await running.close()

    return started


@pytest.fixture
def stack_with(tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay) -> StackFactory:
    """Starts a stack whose settings differ from the default by the keywords given."""
    return stack_factory(tmp_path, migrated_database_url, redis_url, relay, CORE)


@pytest.fixture
async def stack(stack_with: StackFactory) -> AsyncIterator[Stack]:
    async with stack_with() as running:
        yield running
