"""mail_svc for real: the service over gRPC with its senders, a steerable SMTP relay, PostgreSQL
and Redis; each test gets a stream of its own, and fast timings."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from invitemesh.mail.v1 import mail_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2_grpc

from mail_svc.domain import EmailStatus
from mail_svc.server import add_servicers
from mail_svc.settings import MailSettings
from mesh.channels import open_channel
from mesh.server import MeshServer
from mesh.services import MAIL
from tests.integration.mail_svc.relay import ScriptedRelay
from tests.integration.mesh.trust_fixtures import Trust, make_trust

WEBHOOK_SECRET = "webhook-secret-for-tests"
FAST = {
    "mail_backoff_base": 0.05,
    "mail_backoff_cap": 0.2,
    "mail_smtp_timeout": 1.0,
    "mail_reclaim_idle": 1.0,
    "mail_sweep_interval": 0.2,
    "mail_sweep_after": 1.0,
    "mail_breaker_failures": 3,
    "mail_breaker_reset": 0.5,
    "mail_sender": "invitemesh tests <no-reply@tests.invitemesh>",
}


def mail_trust(state_dir: Path, database_url: str, redis_url: str, smtp_url: str, **more: Any) -> Trust:
    settings: dict[str, Any] = {
        **FAST,
        "smtp_url": smtp_url,
        "mail_stream": f"mail-test-{secrets.token_hex(4)}",
        "mail_webhook_secret": WEBHOOK_SECRET,
        **more,
    }
    return make_trust(state_dir, database_url, redis_url, **settings)


@dataclass
class Mail:
    server: MeshServer
    own: MailSettings
    database_url: str
    auth: mail_service_pb2_grpc.MailServiceAsyncStub
    admin: mail_service_pb2_grpc.MailServiceAsyncStub
    anyone: mail_service_pb2_grpc.MailServiceAsyncStub

    async def send(
        self, to: str | None = None, code: str = "123456", key: str | None = None, **fields: Any
    ) -> pb.Email:
        request = pb.SendEmailRequest(
            template=fields.pop("template", pb.EMAIL_TEMPLATE_VERIFICATION),
            to=to or someone(),
            variables=fields.pop("variables", {"code": code}),
            idempotency_key=key or uuid.uuid4().hex,
            **fields,
        )
        return (await self.auth.SendEmail(request)).email

    async def row(self, email_id: str) -> asyncpg.Record:
        connection = await asyncpg.connect(self.database_url)
        try:
            row = await connection.fetchrow("SELECT * FROM mail.emails WHERE id = $1", uuid.UUID(email_id))
        finally:
            await connection.close()
        assert row is not None
        return row

    async def status(self, email_id: str) -> EmailStatus:
        return EmailStatus((await self.row(email_id))["status"])


def someone() -> str:
    return f"ada.{uuid.uuid4().hex[:10]}@example.com"


@asynccontextmanager
async def mail_service(trust: Trust, database_url: str) -> AsyncIterator[Mail]:
    server = trust.server(MAIL, add_servicers)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    try:
        async with (
            open_channel(target, trust.settings, "auth_svc", trust.signer("auth_svc")) as auth,
            open_channel(target, trust.settings, "admin_svc", trust.signer("admin_svc")) as admin,
            open_channel(target, trust.settings) as anyone,
        ):
            stubs = [mail_service_pb2_grpc.MailServiceStub(channel) for channel in (auth, admin, anyone)]
            yield Mail(server, trust.own(MailSettings), database_url, *stubs)
    finally:
        await server.stop(0)


@pytest.fixture
async def mail(tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay) -> AsyncIterator[Mail]:
    trust = mail_trust(tmp_path, migrated_database_url, redis_url, relay.url)
    async with mail_service(trust, migrated_database_url) as mail:
        yield mail
