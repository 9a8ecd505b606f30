"""No admin password, TOTP secret or code, MFA token, access token or minted invite code reaches a
process log, through sign-ins that fail and succeed and the changes an admin makes."""

from __future__ import annotations

import grpc
import pytest
from invitemesh.admin.v1 import admin_service_pb2 as pb

from tests.integration.admin_svc.conftest import new_admin
from tests.integration.auth_svc.conftest import PASSWORD, Stack


async def test_sign_ins_and_changes_log_no_secret(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    admin = await new_admin(stack)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD + "!"))
    first = await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))
    wrong = f"{(int(admin.code()) + 1) % 10**6:06d}"
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.admin().VerifySessionMfa(pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, totp_code=wrong))
    again = await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))
    code = admin.code()
    session = await stack.admin().VerifySessionMfa(
        pb.VerifySessionMfaRequest(mfa_token=again.mfa_token, totp_code=code)
    )
    owner = stack.admin(session.access_token)
    batch = await owner.CreateInviteBatch(pb.CreateInviteBatchRequest(count=2, max_uses=1))
    await owner.ListAuditLogEntries(pb.ListAuditLogEntriesRequest())

    logged = capfd.readouterr()
    output = logged.out + logged.err
    assert "rpc" in output, "the services' logs were not captured"
    secrets = {
        "password": PASSWORD,
        "TOTP secret": admin.totp.secret,
        "TOTP code": code,
        "MFA token": first.mfa_token,
        "MFA token's secret": first.mfa_token.split(":")[2],
        "access token": session.access_token,
        **{f"minted code {n}": minted.code for n, minted in enumerate(batch.codes)},
    }
    assert [name for name, secret in secrets.items() if secret in output] == []
