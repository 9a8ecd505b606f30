"""admin_svc for real, with every service it acts through (auth_svc, invite_svc, mail_svc,
ratelimit_svc) as real gRPC servers over a real PostgreSQL, Redis and SMTP relay; and admins made
the way an operator makes the first one (a signed call as meshctl), signed in with a TOTP code
computed here."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.admin.v1 import admin_service_pb2_grpc

from mesh.access import ADMIN_ROLES
from tests.integration.auth_svc.conftest import CORE, PASSWORD, Stack, StackFactory, stack_factory
from tests.integration.mail_svc.relay import ScriptedRelay

EVERY_SERVICE = (*CORE, "ratelimit_svc", "admin_svc")
FAST_ADMIN = {"admin_jobs_interval": 0.2, "admin_settle_after": 0.3}


@dataclass(frozen=True)
class Admin:
    admin: pb.Admin
    email: str
    totp: pyotp.TOTP

    def code(self, steps_ahead: int = 0) -> str:
        """The TOTP code of now, or of a later step (each step's code signs in once)."""
        return self.totp.at(time.time() + 30 * steps_ahead)


@pytest.fixture
def admin_stack_with(tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay) -> StackFactory:
    return stack_factory(tmp_path, migrated_database_url, redis_url, relay, EVERY_SERVICE, **FAST_ADMIN)


@pytest.fixture
async def stack(admin_stack_with: StackFactory) -> AsyncIterator[Stack]:
    async with admin_stack_with() as running:
        yield running


async def new_admin(stack: Stack, role: str = "owner", by: str | None = None) -> Admin:
    """A fresh admin of `role`, made by the owner whose token is `by`, else by meshctl."""
    email = f"op.{uuid.uuid4().hex[:10]}@example.com"
    request = pb.CreateAdminRequest(
        email=email,
        password=PASSWORD,
        role=ADMIN_ROLES[role],  # type: ignore[arg-type]
        request_id=uuid.uuid4().hex,
    )
    stub: admin_service_pb2_grpc.AdminServiceAsyncStub = stack.admin(by) if by else stack.admin_as("meshctl")
    created = await stub.CreateAdmin(request)
    totp = pyotp.parse_uri(created.totp_uri)
    assert isinstance(totp, pyotp.TOTP)
    return Admin(created.admin, email, totp)


async def signed_in(stack: Stack, admin: Admin, steps_ahead: int = 0) -> str:
    """An access token of `admin`, after both steps."""
    first = await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))
    second = await stack.admin().VerifySessionMfa(
        pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, totp_code=admin.code(steps_ahead))
    )
    return second.access_token
