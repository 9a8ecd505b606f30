"""The black-box probe of security issue 14, through Envoy only, on a stack `meshctl` runs: each
finding as the probe reproduced it from the outside, and what a client sees now."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import Answer, call, fresh_email, ok

pytestmark = pytest.mark.e2e

VICTIMS_PASSWORD = "the victim's own passphrase"
ATTACKERS_PASSWORD = "the attacker's own passphrase"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory) as mesh:
        yield mesh


def _codes(mesh: Mesh, count: int = 1) -> list[str]:
    minted = json.loads(mesh.ctl("invites", "mint", "--count", str(count), "--json").stdout)
    return [code["code"] for code in minted]


def _verification_codes(mesh: Mesh, email: str, count: int) -> list[str]:
    """The six-digit codes of the first `count` verification mails to `email`, in the order sent."""
    deadline = time.monotonic() + 60
    while True:
        mails = json.loads(mesh.ctl("mail", "list", "--to", email, "--json").stdout)
        codes = [found.group(1) for mail in mails if (found := re.search(r"\b(\d{6})\b", mail["text"]))]
        if len(codes) >= count:
            return codes[:count]
        assert time.monotonic() < deadline, f"{len(codes)} of {count} verification mails to {email}"
        time.sleep(0.5)


def _register(mesh: Mesh, email: str, code: str, password: str, headers: dict[str, str] | None = None) -> Answer:
    body = {"email": email, "password": password, "inviteCode": code}
    return call(mesh.edge, "POST", "/v1/registrations", body, headers=headers)


def _verify(mesh: Mesh, email: str, code: str, **proof: str) -> Answer:
    return call(mesh.edge, "POST", "/v1/registrations:verify", {"email": email, "code": code, **proof})


def _sign_in(mesh: Mesh, email: str, password: str) -> Answer:
    return call(mesh.edge, "POST", "/v1/sessions", {"email": email, "password": password})


def test_the_attackers_later_registration_does_not_take_the_victims_account(mesh: Mesh) -> None:
    victims_code, attackers_code = _codes(mesh, 2)
    email = fresh_email()
    victim = ok(_register(mesh, email, victims_code, VICTIMS_PASSWORD))
    ok(_register(mesh, email, attackers_code, ATTACKERS_PASSWORD))
    first, newest = _verification_codes(mesh, email, 2)

    typed_the_newest = _verify(mesh, email, newest, registration=victim["registration"])
    verified = ok(_verify(mesh, email, first, registration=victim["registration"]))

    assert (typed_the_newest.status, typed_the_newest.reason()) == (401, "VERIFICATION_CODE_INVALID")
    assert verified["user"]["state"] == "USER_STATE_ACTIVE"
    assert _sign_in(mesh, email, VICTIMS_PASSWORD).status == 200
    refused = _sign_in(mesh, email, ATTACKERS_PASSWORD)
    assert (refused.status, refused.reason()) == (401, "INVALID_CREDENTIALS")


def test_a_bad_code_answers_alike_for_a_new_and_an_active_email(mesh: Mesh) -> None:
    (code,) = _codes(mesh)
    active = fresh_email()
    registered = ok(_register(mesh, active, code, VICTIMS_PASSWORD))
    (mailed,) = _verification_codes(mesh, active, 1)
    ok(_verify(mesh, active, mailed, registration=registered["registration"]))
    unknown = "ABCD-EFGH-J"

    answers = [_register(mesh, email, unknown, ATTACKERS_PASSWORD) for email in (fresh_email(), active)]

    assert answers[0].status == answers[1].status != 200
    assert answers[0].body == answers[1].body


def test_a_clients_tiny_deadline_does_not_cut_a_registration_short(mesh: Mesh) -> None:
    (code,) = _codes(mesh)
    email = fresh_email()

    answered = _register(mesh, email, code, VICTIMS_PASSWORD, headers={"grpc-timeout": "25m"})

    registration = ok(answered)["registration"]
    (mailed,) = _verification_codes(mesh, email, 1)
    assert ok(_verify(mesh, email, mailed, registration=registration))["user"]["email"] == email


def test_answers_carry_no_envoy_timing(mesh: Mesh) -> None:
    answered = call(mesh.edge, "POST", "/v1/registrations:resend", {"email": fresh_email()})

    assert answered.status == 200
    assert [name for name in answered.headers if name.startswith("x-envoy")] == []


def test_a_clients_trace_context_is_not_continued(mesh: Mesh) -> None:
    trace_id = uuid.uuid4().hex
    traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"

    answered = call(
        mesh.edge, "POST", "/v1/registrations:resend", {"email": fresh_email()}, headers={"traceparent": traceparent}
    )

    assert answered.status == 200
    request_id = answered.headers["x-request-id"]
    lines = _logged(mesh, "auth_svc", request_id)
    assert lines and all(line["trace_id"] != trace_id for line in lines)


def _logged(mesh: Mesh, part: str, request_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of `part` about a request, once it has written them."""
    deadline = time.monotonic() + 30
    while True:
        lines = [json.loads(line) for line in mesh.ctl("logs", part).stdout.splitlines() if line.startswith("{")]
        if found := [line for line in lines if line.get("request_id") == request_id]:
            return found
        assert time.monotonic() < deadline, f"no log line of {part} for {request_id}"
        time.sleep(0.5)
