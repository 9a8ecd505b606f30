"""admin_svc's pure rules: TOTP steps and what the audit log keeps of a request."""

from __future__ import annotations

import json

import pyotp
import pytest
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.mesh.v1 import access_pb2

from admin_svc.domain import audited_request, new_totp_secret, totp_step, totp_uri

NOW = 1_800_000_000.0


def test_a_code_of_now_or_one_step_either_side_names_its_step_and_no_other_does() -> None:
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    step = int(NOW) // 30

    found = {offset: totp_step(secret, totp.at(NOW + 30 * offset), NOW) for offset in (-2, -1, 0, 1, 2)}

    assert found[-1] == step - 1 and found[0] == step and found[1] == step + 1
    assert found[-2] != step - 2 and found[2] != step + 2


@pytest.mark.parametrize("typed", ["", "12345", "1234567", "12345a", "١٢٣٤٥٦"])
def test_anything_but_six_ascii_digits_is_no_code(typed: str) -> None:
    assert totp_step(new_totp_secret(), typed, NOW) is None


def test_secrets_are_long_and_the_uri_is_what_authenticator_apps_read() -> None:
    secret = new_totp_secret()
    uri = totp_uri(secret, "op@example.com")

    assert len(secret) == 32 and len({new_totp_secret() for _ in range(50)}) == 50
    assert pyotp.parse_uri(uri).secret == secret and "issuer=invitemesh" in uri


def test_the_audit_log_keeps_a_request_without_its_secrets() -> None:
    kept = json.loads(
        audited_request(
            pb.CreateAdminRequest(email="op@example.com", password="hunter2hunter2", role=access_pb2.ADMIN_ROLE_OWNER)
        )
    )
    mfa = json.loads(audited_request(pb.VerifySessionMfaRequest(mfa_token="a:b:c:d", totp_code="123456")))

    assert kept == {"email": "op@example.com", "role": "ADMIN_ROLE_OWNER"}
    assert mfa == {}


def test_the_audit_log_keeps_nested_requests_whole() -> None:
    request = pb.CreateCampaignRequest(campaign=invite_pb.Campaign(display_name="launch", invite_quota=3))

    assert json.loads(audited_request(request)) == {"campaign": {"displayName": "launch", "inviteQuota": 3}}
