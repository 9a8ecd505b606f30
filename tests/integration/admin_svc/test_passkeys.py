"""Passkeys as the second sign-in step, what a browser cannot be trusted with: options that name
the relying party and work once, and every answer that is not a passkey of this admin signing
this sign-in's challenge refused, the MFA token used up, nothing signed in. (A real passkey
signing in is tested in Chromium: tests/e2e/test_console_passkeys.py.)"""

from __future__ import annotations

import json

import grpc
from invitemesh.admin.v1 import admin_service_pb2 as pb

from tests.integration.admin_svc.conftest import new_admin, signed_in
from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal

ASSERTION = json.dumps(
    {
        "id": "AAAA",
        "rawId": "AAAA",
        "type": "public-key",
        "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA", "signature": "AAAA"},
    }
)


async def test_registration_options_name_the_console_and_work_once(stack: Stack) -> None:
    admin = await new_admin(stack, "viewer")
    console = stack.admin(await signed_in(stack, admin))

    options = json.loads((await console.StartPasskeyRegistration(pb.StartPasskeyRegistrationRequest())).options_json)
    made_up = pb.CreatePasskeyRequest(credential_json=ASSERTION, display_name="laptop")
    forged = await refusal(console.CreatePasskey(made_up))
    # The forged answer used the options up.
    again = await refusal(console.CreatePasskey(made_up))
    unnamed = await refusal(console.CreatePasskey(pb.CreatePasskeyRequest(credential_json=ASSERTION)))
    listed = await console.ListPasskeys(pb.ListPasskeysRequest())

    assert options["rp"]["id"] == "localhost" and options["user"]["name"] == admin.email
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert forged == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert again == (grpc.StatusCode.FAILED_PRECONDITION, "PASSKEY_CHALLENGE_EXPIRED")
    assert unnamed == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert list(listed.passkeys) == []


async def test_without_a_passkey_the_second_step_is_the_totp_code(stack: Stack) -> None:
    admin = await new_admin(stack, "operator")
    first = await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))

    none = await refusal(stack.admin().StartPasskeySignIn(pb.StartPasskeySignInRequest(mfa_token=first.mfa_token)))
    unknown = await refusal(stack.admin().StartPasskeySignIn(pb.StartPasskeySignInRequest(mfa_token="a:b:c:d")))
    # Asking for passkey options did not use the token up.
    second = await stack.admin().VerifySessionMfa(
        pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, totp_code=admin.code())
    )

    assert none == (grpc.StatusCode.FAILED_PRECONDITION, "PASSKEY_NONE")
    assert unknown == (grpc.StatusCode.UNAUTHENTICATED, "MFA_TOKEN_INVALID")
    assert second.access_token


async def test_an_answer_that_is_no_passkey_of_the_admin_is_refused_and_uses_the_token_up(stack: Stack) -> None:
    admin = await new_admin(stack, "operator")
    first = await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))
    with_passkey = pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, passkey_credential_json=ASSERTION)

    forged = await refusal(stack.admin().VerifySessionMfa(with_passkey))
    then_totp = await refusal(
        stack.admin().VerifySessionMfa(pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, totp_code=admin.code()))
    )
    entries = (await stack.admin_as("meshctl").ListAuditLogEntries(pb.ListAuditLogEntriesRequest())).entries
    refused = next(e for e in entries if e.action == "VerifySessionMfa" and e.actor == f"admin:{admin.admin.id}")

    assert forged == (grpc.StatusCode.UNAUTHENTICATED, "PASSKEY_INVALID")
    assert then_totp == (grpc.StatusCode.UNAUTHENTICATED, "MFA_TOKEN_INVALID")
    assert (refused.outcome, refused.outcome_reason) == (pb.AUDIT_OUTCOME_FAILED, "PASSKEY_INVALID")
    assert "passkeyCredentialJson" not in json.loads(refused.request_json)
