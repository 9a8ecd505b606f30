"""The whole stack through `meshctl`, as a developer runs it: up, status, the edge over REST
and gRPC, the SMTP sink, logs, down."""

from __future__ import annotations

import http.client
import json
import os
import smtplib
import stat
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from invitemesh.mail.v1 import mail_service_pb2, mail_service_pb2_grpc

from mail_svc.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from mesh import invite_codes
from mesh.channels import open_channel
from mesh.services import MAIL, OPERATOR, SERVICES
from mesh.settings import Settings
from mesh.signing import signer_for
from meshctl.stack import SMTP_PORT_OFFSET, process_alive
from tests.conftest import eventually
from tests.e2e.conftest import Mesh, loopback_client, running_mesh

pytestmark = pytest.mark.e2e


WEBHOOK_SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_MAIL_WEBHOOK_SECRET=WEBHOOK_SECRET) as mesh:
        yield mesh


def test_every_part_reports_serving(mesh: Mesh) -> None:
    status = json.loads(mesh.ctl("status", "--json").stdout)

    names = {part["name"] for part in status["parts"]}
    assert {"postgres", "redis", "smtp", "envoy", *(spec.name for spec in SERVICES)} <= names
    assert [part for part in status["parts"] if not part["healthy"]] == []
    external = {part["name"] for part in status["parts"] if not part["embedded"]}
    assert ("postgres" in external) == bool(os.environ.get("MESH_DATABASE_URL"))
    assert ("redis" in external) == bool(os.environ.get("MESH_REDIS_URL"))


def _post(mesh: Mesh, path: str, body: dict[str, str], source: str | None = None) -> tuple[int, dict[str, str], bytes]:
    """POSTs JSON to the edge from `source`, else from a client address of its own: the edge
    counts requests per address, and a Redis given by MESH_REDIS_URL keeps counting across runs."""
    host, port = mesh.edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(
        host, int(port), timeout=30, source_address=(source or loopback_client(), 0)
    )
    try:
        connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def test_rate_limit_rules_are_set_listed_over_the_defaults_and_reset(mesh: Mesh) -> None:
    route = "/invitemesh.chain.v1.ChainService/GetMyWallet"
    set_ = mesh.ctl("ratelimits", "set", route, "7", "--per", "hour", "--fail-closed")
    refused = mesh.ctl("ratelimits", "set", "not a route", "7", check=False)
    rules = {rule["route"]: rule for rule in json.loads(mesh.ctl("ratelimits", "list", "--json").stdout)}
    # A database given by MESH_DATABASE_URL outlives the stack: the route gets its default back.
    reset = mesh.ctl("ratelimits", "reset", route)
    after = {rule["route"] for rule in json.loads(mesh.ctl("ratelimits", "list", "--json").stdout)}

    assert rules[route] == {
        "route": route, "requestsPerUnit": 7, "unit": "TIME_UNIT_HOUR", "failClosed": True, "default": False
    }  # fmt: skip
    assert set_.stdout.split()[:4] == [route, "7", "per", "hour"]
    assert rules["*"]["failClosed"] is False and rules["*"]["default"] is True
    assert rules["/invitemesh.invite.v1.InviteService/CheckCode"]["failClosed"] is True
    assert refused.returncode == 2
    assert "rule.route" in refused.stderr
    assert reset.stdout.split()[0] == route and reset.stdout.rstrip().endswith("default")
    assert route not in after


def _resend_from(mesh: Mesh, source: str) -> tuple[int, dict[str, str], bytes]:
    return _post(mesh, "/v1/registrations:resend", {"email": "nobody@example.com"}, source)


def test_over_its_limit_a_client_gets_a_json_429_with_rate_limit_headers_and_others_do_not(mesh: Mesh) -> None:
    mesh.ctl("ratelimits", "set", "/invitemesh.auth.v1.AuthService/ResendVerification", "2", "--per", "minute")
    deadline = time.monotonic() + 30
    # ratelimit_svc reads the edited rule within MESH_RATELIMIT_RULES_CACHE seconds.
    client = loopback_client()
    while (answer := _resend_from(mesh, client))[0] != 429:
        assert answer[0] == 200, answer
        assert time.monotonic() < deadline, "the edited rule never applied"
        time.sleep(0.5)
    _, headers, body = answer

    assert headers["content-type"] == "application/json"
    assert headers["x-ratelimit-limit"].startswith("2")
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) <= 60
    refusal = json.loads(body)
    assert (refusal["code"], refusal["details"][0]["reason"]) == (8, "RATE_LIMITED")
    assert refusal["details"][1] == {
        "@type": "type.googleapis.com/google.rpc.RetryInfo",
        "retryDelay": f"{headers['x-ratelimit-reset']}s",
    }
    assert _resend_from(mesh, loopback_client())[0] == 200


def test_checking_an_unknown_code_through_envoy_says_not_valid(mesh: Mesh) -> None:
    code = invite_codes.display(invite_codes.generate())

    status, _, body = _post(mesh, "/v1/invites:check", {"code": code})

    assert (status, json.loads(body)) == (200, {"valid": False, "reason": "INVITE_CODE_NOT_FOUND"})


def test_minted_codes_check_valid_through_envoy(mesh: Mesh) -> None:
    minted = json.loads(mesh.ctl("invites", "mint", "--count", "3", "--max-uses", "2", "--expires-in", "7d",
                                 "--campaign", "beta", "--json").stdout)  # fmt: skip
    again = json.loads(mesh.ctl("invites", "mint", "--campaign", "beta", "--json").stdout)
    refused = mesh.ctl("invites", "mint", "--count", "0", check=False)

    assert (refused.returncode, refused.stderr.strip()) == (2, "meshctl: INVALID_ARGUMENT: count: between 1 and 10000")
    assert len(minted) == 3
    assert {code["campaignId"] for code in [*minted, *again]} == {minted[0]["campaignId"]}
    assert all(code["maxUses"] == "2" and "expireTime" in code for code in minted)
    for code in minted:
        status, _, body = _post(mesh, "/v1/invites:check", {"code": code["code"]})
        assert (status, json.loads(body)) == (200, {"valid": True, "reason": ""})


def test_a_typo_through_envoy_is_a_400_with_a_field_violation(mesh: Mesh) -> None:
    code = invite_codes.generate()
    typo = code[:-1] + ("2" if code[-1] != "2" else "3")
    status, _, body = _post(mesh, "/v1/invites:check", {"code": typo})

    assert status == 400
    details = json.loads(body)["details"]
    assert details[0]["reason"] == "INVITE_CODE_TYPO"
    assert details[1]["fieldViolations"][0]["field"] == "code"


def test_every_service_and_the_operator_have_a_signing_key(mesh: Mesh) -> None:
    listed = mesh.ctl("keys", "list").stdout

    signing = {line.split()[0] for line in listed.splitlines() if line.endswith("(signing)")}
    assert signing == {*(spec.name for spec in SERVICES), OPERATOR}


def test_user_method_through_envoy_without_a_token_is_401(mesh: Mesh) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{mesh.edge}/v1/users/me", timeout=10)

    assert raised.value.code == 401
    assert json.loads(raised.value.read())["details"][0]["reason"] == "ACCESS_TOKEN_MISSING"


def test_smtp_sink_keeps_what_it_receives(mesh: Mesh) -> None:
    message = EmailMessage()
    message["From"] = "noreply@invitemesh.test"
    message["To"] = "ada@example.com"
    message["Subject"] = "Your verification code"
    message.set_content("123456")
    smtp_port = int(mesh.env["MESH_PORT_BASE"]) + SMTP_PORT_OFFSET
    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.send_message(message)

    listed = json.loads(mesh.ctl("mail", "list", "--to", "ada@example.com", "--json").stdout)
    others = json.loads(mesh.ctl("mail", "list", "--to", "bob@example.com", "--json").stdout)

    assert [(m["subject"], m["rcpt_tos"], m["text"].strip()) for m in listed] == [
        ("Your verification code", ["ada@example.com"], "123456")
    ]
    assert others == []


def test_the_state_dir_and_all_in_it_are_the_users_alone(mesh: Mesh) -> None:
    """Caught mails hold codes and reset links, logs and keys more (security issue 14.5)."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "noreply@invitemesh.test", "bob@example.com", "a code"
    message.set_content("654321")
    with smtplib.SMTP("127.0.0.1", int(mesh.env["MESH_PORT_BASE"]) + SMTP_PORT_OFFSET, timeout=10) as client:
        client.send_message(message)

    shared = {
        str(path.relative_to(mesh.state_dir)): oct(stat.S_IMODE(path.stat().st_mode))
        for path in [mesh.state_dir, *mesh.state_dir.rglob("*")]
        if not path.is_symlink() and path.exists() and path.stat().st_mode & 0o077
    }

    assert shared == {}
    for part in ("mail", "logs", "keys"):
        assert stat.S_IMODE((mesh.state_dir / part).stat().st_mode) == 0o700, part
    assert list((mesh.state_dir / "mail").iterdir()), "the mail was caught"


async def test_an_email_sent_through_mail_svc_reaches_the_sink(mesh: Mesh) -> None:
    settings = Settings(state_dir=mesh.state_dir)
    to = f"grace.{uuid.uuid4().hex[:8]}@example.com"
    target = f"127.0.0.1:{int(mesh.env['MESH_PORT_BASE']) + MAIL.port_offset}"
    async with open_channel(target, settings, "auth_svc", signer_for("auth_svc", settings)) as channel:
        await mail_service_pb2_grpc.MailServiceStub(channel).SendEmail(
            mail_service_pb2.SendEmailRequest(
                template=mail_service_pb2.EMAIL_TEMPLATE_VERIFICATION,
                to=to,
                variables={"code": "731904"},
                idempotency_key=uuid.uuid4().hex,
            ),
            timeout=10,
        )

    async def arrived() -> bool:
        return bool(json.loads(mesh.ctl("mail", "list", "--to", to, "--json").stdout))

    await eventually(arrived, what="the email in the sink")
    (mail,) = json.loads(mesh.ctl("mail", "list", "--to", to, "--json").stdout)
    assert "731904" in mail["text"] and mail["subject"] == "Your invitemesh verification code"


def test_a_signed_delivery_event_posted_to_the_edge_is_accepted(mesh: Mesh) -> None:
    body = json.dumps({"event": "complained", "message_id": "<x@y>", "recipient": "angry@example.com"}).encode()
    timestamp = str(int(time.time()))
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: signature(WEBHOOK_SECRET.encode(), timestamp, body)}

    def post(signed: dict[str, str]) -> urllib.request.Request:
        return urllib.request.Request(
            f"http://{mesh.edge}/v1/mail/events",
            data=body,
            headers={"Content-Type": "application/json", **signed},
            method="POST",
        )

    with urllib.request.urlopen(post(headers), timeout=10) as answer:  # noqa: S310
        assert (answer.status, json.loads(answer.read())) == (200, {})
    with pytest.raises(urllib.error.HTTPError) as forged:
        urllib.request.urlopen(post({**headers, SIGNATURE_HEADER: "v1=00"}), timeout=10)  # noqa: S310
    assert forged.value.code == 401
    assert json.loads(forged.value.read())["details"][0]["reason"] == "MAIL_EVENT_SIGNATURE_INVALID"


def test_logs_show_a_service_serving(mesh: Mesh) -> None:
    logs = mesh.ctl("logs", "invite_svc").stdout

    assert any(json.loads(line).get("event") == "serving" for line in logs.splitlines() if line.startswith("{"))


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (however they were started)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended while we looked
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, waiting = set(), [pid]
    while waiting:
        for child in children.get(waiting.pop(), []):
            found.add(child)
            waiting.append(child)
    return found


def test_down_leaves_no_process_behind(tmp_path_factory: pytest.TempPathFactory) -> None:
    """On a stack of its own, so that no other test depends on whether it ran first or last."""
    with running_mesh(tmp_path_factory) as mesh:
        supervisor = mesh.stack()["supervisor_pid"]
        # What `down` must end: every process the supervisor started, and the parts the stack
        # names (the embedded PostgreSQL and Redis leave the supervisor's tree as they daemonize).
        parts = {part["pid"] for part in mesh.stack()["parts"] if part["pid"]}
        running = {supervisor, *_descendants(supervisor), *parts}

        mesh.ctl("down")

        assert [pid for pid in running if process_alive(pid)] == []
        assert not (mesh.state_dir / "stack.json").exists()
        assert json.loads(mesh.ctl("status", "--json", check=False).stdout) == {"running": False}
