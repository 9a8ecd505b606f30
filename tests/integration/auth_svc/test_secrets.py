"""No password, verification code, token or invite code reaches a log: the whole flow runs with
every service's output captured, then the output is searched for each secret."""

from __future__ import annotations

import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb

from tests.integration.auth_svc.conftest import PASSWORD, Stack, someone


async def test_the_flow_logs_no_secret(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    (invite_code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, invite_code)
    code = await stack.verification_code(email)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    with pytest.raises(grpc.aio.AioRpcError):  # wrong guesses first: refusals are logged too
        await stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=wrong, password=PASSWORD))
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.auth.VerifyEmail(
            pb.VerifyEmailRequest(email=email, code=wrong, registration=registered.registration)
        )
    verified = await stack.auth.VerifyEmail(
        pb.VerifyEmailRequest(email=email, code=code, registration=registered.registration)
    )
    signed_in = await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    renewed = await stack.auth.Refresh(pb.RefreshRequest(refresh_token=signed_in.session.refresh_token))
    await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    reset_token = await stack.link_token(email)
    await stack.auth.ResetPassword(pb.ResetPasswordRequest(token=reset_token, new_password="brand new passphrase"))

    logged = capfd.readouterr()
    output = logged.out + logged.err
    assert "rpc" in output, "the services' logs were not captured"
    secrets = {
        "password": PASSWORD,
        "new password": "brand new passphrase",
        "verification code": code,
        "registration token": registered.registration,
        "invite code": invite_code,
        "invite code (typed form)": invite_code.replace("-", ""),
        "access token": verified.session.access_token,
        "refresh token": signed_in.session.refresh_token,
        "renewed refresh token": renewed.session.refresh_token,
        "reset token": reset_token,
    }
    leaked = [name for name, secret in secrets.items() if secret in output]
    assert leaked == []
