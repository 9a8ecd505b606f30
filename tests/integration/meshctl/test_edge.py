"""The edge's rendered configuration in a real Envoy, on its own: its services are not running
(nothing listens on their ports) and neither is ratelimit_svc. What Envoy answers by itself is
tested here; tests/e2e has the same edge in front of the whole stack."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.rpc import error_details_pb2, status_pb2
from invitemesh.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from pydantic import SecretStr

from mesh.calls import CallInterceptor
from mesh.clients import EdgeRecognition
from mesh.errors import OVERLOADED_HEADER, Overloaded
from mesh.metrics import Metrics
from mesh.services import SERVICES, WEB
from meshctl.edge import (
    HEALTH_PATH,
    OPENAPI_DOCUMENT,
    WEB_CLUSTER,
    EdgeLimits,
    Endpoints,
    RunningEdge,
    deployed_edge_config,
    envoy_binary,
    render_envoy_config,
    running_edge,
)
from meshctl.embedded import free_port
from meshctl.settings import StackSettings

CHECK_CODE = "/v1/invites:check"


@pytest.fixture(scope="module")
def nowhere() -> dict[str, Endpoints]:
    """Every service at a port nothing listens on."""
    return {spec.name: [("127.0.0.1", free_port())] for spec in SERVICES}


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, nowhere: dict[str, Endpoints]) -> Iterator[RunningEdge]:
    with running_edge(tmp_path_factory.mktemp("edge"), nowhere) as envoy:
        yield envoy


def request(
    envoy: RunningEdge, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    host, port = envoy.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, body, {"content-type": "application/json", **(headers or {})})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def refusal(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, int, str]:
    """HTTP status, google.rpc.Status code and ErrorInfo reason of a JSON refusal."""
    status, headers, body = answer
    assert headers["content-type"] == "application/json", body
    parsed: dict[str, Any] = json.loads(body)
    info = next(d for d in parsed["details"] if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
    return status, parsed["code"], info["reason"]


def access_log_line(edge: RunningEdge, request_id: str, within: float = 15.0) -> dict[str, Any]:
    """The access log's line for a request; Envoy writes it after the answer, buffered."""
    deadline = time.monotonic() + within
    while True:
        lines = [json.loads(line) for line in edge.stdout.read_text().splitlines() if line.startswith("{")]
        if found := [line for line in lines if line["request_id"] == request_id]:
            return dict(found[0])
        assert time.monotonic() < deadline, f"no access log line for {request_id}"
        time.sleep(0.1)


def test_the_rendered_configuration_passes_envoys_own_validation(tmp_path: Path) -> None:
    upstreams = {spec.name: [("127.0.0.1", 1)] for spec in SERVICES}
    config = tmp_path / "envoy.yaml"
    limits = EdgeLimits(cors_origins=("https://app.example.com",))
    host = "0.0.0.0"
    config.write_text(render_envoy_config(host=host, port=8080, admin_port=9901, upstreams=upstreams, limits=limits))

    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60
    )

    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout + checked.stderr


def test_a_deployments_edge_reaches_every_replica_by_name_and_passes_envoys_validation(tmp_path: Path) -> None:
    """As compose and Kubernetes name the parts: by DNS names, each standing for its replicas."""
    named = {spec.name: f"{spec.name.replace('_', '-')}:5005{spec.port_offset}" for spec in SERVICES}
    settings = StackSettings(
        state_dir=tmp_path,
        host="0.0.0.0",
        kek=SecretStr(base64.urlsafe_b64encode(bytes(32)).decode()),
        service_addresses={**named, WEB.name: "web-svc:8000", "invite_svc": "10.0.0.7:50052,10.0.0.8:50052"},
    )
    rendered = deployed_edge_config(settings)
    config = tmp_path / "envoy.yaml"
    config.write_text(rendered)

    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True, text=True, timeout=60
    )

    assert checked.returncode == 0, checked.stderr
    clusters = {cluster["name"]: cluster for cluster in yaml.safe_load(rendered)["static_resources"]["clusters"]}
    addresses = {
        name: [
            (found["endpoint"]["address"]["socket_address"]["address"], cluster["type"])
            for found in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        ]
        for name, cluster in clusters.items()
    }
    assert addresses["auth_svc"] == [("auth-svc", "STRICT_DNS")]
    assert addresses["invite_svc"] == [("10.0.0.7", "STATIC"), ("10.0.0.8", "STATIC")]
    assert [host for host, _ in addresses[WEB_CLUSTER]] == ["web-svc"]
    listeners = {listener["name"]: listener for listener in yaml.safe_load(rendered)["static_resources"]["listeners"]}
    # web_svc reaches the listener for its calls from another host; its token still guards it.
    assert listeners["pages"]["address"]["socket_address"]["address"] == "0.0.0.0"


def test_a_deployments_edge_names_the_addresses_it_misses(tmp_path: Path) -> None:
    settings = StackSettings(state_dir=tmp_path, service_addresses={"auth_svc": "auth-svc:50051"})
    with pytest.raises(
        ValueError, match="no address for invite_svc, mail_svc, admin_svc, chain_svc, ratelimit_svc, web_svc"
    ):
        deployed_edge_config(settings)


def test_an_unknown_route_is_a_json_404(edge: RunningEdge) -> None:
    assert refusal(request(edge, "GET", "/v1/nothing-here")) == (404, 5, "ROUTE_NOT_FOUND")
    assert refusal(request(edge, "DELETE", CHECK_CODE)) == (404, 5, "ROUTE_NOT_FOUND")


def test_a_body_that_is_not_json_for_the_method_is_a_json_400(edge: RunningEdge) -> None:
    assert refusal(request(edge, "POST", CHECK_CODE, b'{"code": "ABCD')) == (400, 3, "MALFORMED_REQUEST")
    assert refusal(request(edge, "POST", CHECK_CODE, b'{"code": 5}')) == (400, 3, "MALFORMED_REQUEST")


def test_an_unknown_query_parameter_is_a_json_400(edge: RunningEdge) -> None:
    assert refusal(request(edge, "GET", "/v1/users/me?pageSiz=10")) == (400, 3, "MALFORMED_REQUEST")


def test_a_body_over_the_limit_is_a_json_413(edge: RunningEdge) -> None:
    body = json.dumps({"code": "A" * (EdgeLimits().max_request_bytes + 1)}).encode()

    assert refusal(request(edge, "POST", CHECK_CODE, body)) == (413, 3, "REQUEST_TOO_LARGE")


def test_headers_over_the_limit_are_a_json_431(edge: RunningEdge) -> None:
    headers = {f"x-filler-{n}": "f" * 1000 for n in range(EdgeLimits().max_request_headers_kb + 1)}

    assert refusal(request(edge, "POST", CHECK_CODE, b"{}", headers)) == (431, 3, "REQUEST_HEADERS_TOO_LARGE")


def test_a_service_that_is_down_is_a_json_503_and_an_unreachable_rate_limiter_lets_the_call_through(
    edge: RunningEdge,
) -> None:
    # A refusal by the rate limiter would be a 429 (or a 500 had it failed closed): the call
    # went on to invite_svc, which is not there.
    assert refusal(request(edge, "POST", CHECK_CODE, b'{"code": "ABCD-EFGH-JKLM"}')) == (503, 14, "SERVICE_UNAVAILABLE")


def test_the_health_route_fails_while_the_services_are_down(edge: RunningEdge) -> None:
    status, _, _ = request(edge, "GET", HEALTH_PATH)

    assert status == 503


def test_every_answer_carries_a_request_id_of_the_edges_own(edge: RunningEdge) -> None:
    _, first, _ = request(edge, "GET", "/v1/nothing-here", headers={"x-request-id": "chosen-by-the-client"})
    _, second, _ = request(edge, "GET", "/v1/nothing-here")

    assert first["x-request-id"] != "chosen-by-the-client"
    assert len({first["x-request-id"], second["x-request-id"]}) == 2


def test_the_access_log_is_json_without_query_strings_or_credentials(edge: RunningEdge) -> None:
    _, headers, _ = request(
        edge, "GET", "/v1/users/me?token=s3cret-in-query", headers={"authorization": "Bearer s3cret-token"}
    )
    request_id = headers["x-request-id"]

    line = access_log_line(edge, request_id)
    assert (line["method"], line["path"], line["status"]) == ("GET", "/v1/users/me", 400)
    assert "s3cret" not in edge.stdout.read_text()


def test_over_the_backstop_envoy_refuses_by_itself_with_a_retry_delay(
    tmp_path: Path, nowhere: dict[str, Endpoints]
) -> None:
    with running_edge(tmp_path, nowhere, EdgeLimits(backstop_per_second=2)) as envoy:
        answers = [request(envoy, "GET", "/v1/nothing-here") for _ in range(10)]

    # Two tokens for the whole edge, two more each second: ten quick requests cannot all pass.
    refused = [answer for answer in answers if answer[0] == 429]
    assert refused, [status for status, _, _ in answers]
    assert {status for status, _, _ in answers} == {404, 429}
    assert refusal(refused[0]) == (429, 8, "RATE_LIMITED")
    details = json.loads(refused[0][2])["details"]
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"} in details


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_rest_method_takes_only_json(edge: RunningEdge, content_type: str | None) -> None:
    """Anything else a page elsewhere could post without a CORS preflight."""
    host, port = edge.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = {"content-type": content_type} if content_type else {}
    try:
        connection.request("POST", CHECK_CODE, b'{"code": "ABCD-EFGH-J"}', headers)
        answer = connection.getresponse()
        refused = answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()

    assert refusal(refused) == (415, 3, "UNSUPPORTED_MEDIA_TYPE")


def _grpc_web(edge: RunningEdge, body: bytes, path: str = "/invitemesh.invite.v1.InviteService/CheckCode") -> Any:
    return request(edge, "POST", path, body, {"content-type": "application/grpc-web+proto"})


def _grpc_status(answer: tuple[int, dict[str, str], bytes]) -> tuple[int, str, str]:
    """grpc-status, the ErrorInfo reason in grpc-status-details-bin, and grpc-message."""
    _, headers, _ = answer
    details = headers["grpc-status-details-bin"]  # gRPC libraries leave out the padding
    status = status_pb2.Status.FromString(base64.b64decode(details + "=" * (-len(details) % 4)))
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert status.code == int(headers["grpc-status"])
    return int(headers["grpc-status"]), info.reason, urllib.parse.unquote(headers["grpc-message"])


@pytest.mark.parametrize(
    "frame",
    [
        b"\0" + struct.pack(">I", 0xFFFFFFF0) + b"\x0a\x01A",  # claims 4 GiB
        b"\0" + struct.pack(">I", 100) + b"\x0a\x01A",  # claims more than it holds
        b"\0\0\0",  # not even a prefix
        b"\x07" + struct.pack(">I", 3) + b"\x0a\x01A",  # a flag gRPC does not have
        b"",
    ],
    ids=["huge", "short", "cut", "flag", "empty"],
)
def test_a_malformed_grpc_web_message_is_refused_at_once_in_the_edges_own_words(
    edge: RunningEdge, frame: bytes
) -> None:
    started = time.monotonic()
    answer = _grpc_web(edge, frame)

    assert time.monotonic() - started < 2, "answered at once, not at the route's timeout"
    code, reason, message = _grpc_status(answer)
    assert (code, reason) == (3, "MALFORMED_REQUEST")
    assert "SERVER" not in message and "{" not in message


def test_the_edges_own_refusals_to_grpc_clients_carry_the_same_reason_without_json(edge: RunningEdge) -> None:
    whole = b"\0" + struct.pack(">I", 3) + b"\x0a\x01A"

    down = _grpc_status(_grpc_web(edge, whole))
    unknown = _grpc_status(_grpc_web(edge, whole, "/invitemesh.invite.v1.InviteService/NoSuchMethod"))

    assert down == (14, "SERVICE_UNAVAILABLE", "the service is unavailable; try again later")
    assert unknown == (12, "ROUTE_NOT_FOUND", "no such route")


def test_answers_carry_no_envoy_timing_headers(edge: RunningEdge) -> None:
    _, headers, _ = request(edge, "POST", CHECK_CODE, b'{"code": "ABCD-EFGH-J"}')

    assert not [name for name in headers if name.startswith("x-envoy")], headers


def _slow_client(edge: RunningEdge, sent: bytes) -> tuple[bytes, float]:
    """Sends `sent` and nothing more; answers what came back before Envoy closed, and when."""
    host, port = edge.address.rsplit(":", 1)
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as raw:
        raw.sendall(sent)
        received = b""
        while chunk := raw.recv(65536):
            received += chunk
    return received, time.monotonic() - started


@pytest.mark.parametrize(
    "sent",
    [
        b"POST /v1/invites:check HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        b"POST /v1/invites:check HTTP/1.1\r\nHost: edge\r\nX-Slow: ",
    ],
    ids=["body", "headers"],
)
def test_a_client_that_stops_half_way_is_let_go_at_the_edges_timeout(
    tmp_path: Path, nowhere: dict[str, Endpoints], sent: bytes
) -> None:
    limits = EdgeLimits(headers_timeout=1.0, request_timeout=1.0)
    with running_edge(tmp_path, nowhere, limits) as envoy:
        received, took = _slow_client(envoy, sent)

    assert took < 1.0 + 3.0, f"held for {took:.1f}s"
    if b"Content-Length: 100" in sent:
        assert received.startswith(b"HTTP/1.1 408"), received
        assert b"REQUEST_TIMEOUT" in received


def test_past_its_connection_limit_the_edge_closes_new_connections(
    tmp_path: Path, nowhere: dict[str, Endpoints]
) -> None:
    with running_edge(tmp_path, nowhere, EdgeLimits(max_connections=5)) as envoy:
        host, port = envoy.address.rsplit(":", 1)
        held = [http.client.HTTPConnection(host, int(port), timeout=10) for _ in range(5)]
        for connection in held:  # each open and counted: it got an answer and stays alive
            connection.request("GET", "/v1/nothing-here")
            connection.getresponse().read()

        extra = http.client.HTTPConnection(host, int(port), timeout=10)
        with pytest.raises((ConnectionError, http.client.RemoteDisconnected, OSError)):
            extra.request("GET", "/v1/nothing-here")
            extra.getresponse().read()
        extra.close()
        held.pop().close()

        def admitted() -> bool:
            try:
                return request(envoy, "GET", "/v1/nothing-here")[0] == 404
            except (ConnectionError, http.client.RemoteDisconnected, OSError):
                return False

        deadline = time.monotonic() + 10
        while not admitted():
            assert time.monotonic() < deadline, "a connection closed, yet no new one is admitted"
            time.sleep(0.05)
        for connection in held:
            connection.close()


def test_the_openapi_document_is_served_as_made(edge: RunningEdge) -> None:
    status, headers, body = request(edge, "GET", "/openapi.json")

    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == json.loads(OPENAPI_DOCUMENT.read_text())
    assert request(edge, "POST", "/openapi.json", b"{}")[0] == 404


class _Echo(invite_service_pb2_grpc.InviteServiceServicer):
    """CheckCode notes the metadata it was called with."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        self.seen.append({key: value for key, value in context.invocation_metadata() if isinstance(value, str)})
        return invite_service_pb2.CheckCodeResponse(valid=True)


async def test_a_header_grpc_cannot_carry_is_dropped_not_passed_on(
    tmp_path: Path, nowhere: dict[str, Endpoints]
) -> None:
    """Found by the fuzzer: `RI~b: 7` reached a service, whose gRPC library failed the call (500)."""
    echo = _Echo()  # type: ignore[abstract]
    server = grpc.aio.server()
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(echo, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        with running_edge(tmp_path, {**nowhere, "invite_svc": [("127.0.0.1", port)]}) as envoy:
            headers = {"RI~b": "7", "x-fine": "1"}
            status, _, _ = await asyncio.to_thread(
                request, envoy, "POST", CHECK_CODE, b'{"code": "ABCD-EFGH-J"}', headers
            )
    finally:
        await server.stop(0)

    assert status == 200
    assert "x-fine" in echo.seen[0] and not [name for name in echo.seen[0] if "~" in name]


class _OverloadedInvites(invite_service_pb2_grpc.InviteServiceServicer):
    def __init__(self, calls: Counter[str]) -> None:
        self._calls = calls

    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        self._calls["CheckCode"] += 1
        raise Overloaded("the service is at capacity; try again shortly", 2)


class _OverloadedAuth(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(self, calls: Counter[str]) -> None:
        self._calls = calls

    async def Login(self, request: Any, context: Any) -> auth_service_pb2.LoginResponse:
        self._calls["Login"] += 1
        raise Overloaded("the service is at capacity; try again shortly", 2)


@dataclass
class OverloadedServer:
    upstreams: dict[str, Endpoints]
    calls: Counter[str]
    """Calls that reached the service, by method."""


@pytest.fixture
def overloaded(nowhere: dict[str, Endpoints]) -> Iterator[OverloadedServer]:
    """invite_svc's and auth_svc's places taken by a server that refuses CheckCode and Login for
    load, through the interceptor every service answers its refusals with."""
    port = free_port()
    ready = threading.Event()
    stopping: list[asyncio.Event] = []
    calls: Counter[str] = Counter()

    async def serve() -> None:
        interceptor = CallInterceptor(Metrics(), EdgeRecognition(tls=False, token=None))
        server = grpc.aio.server(interceptors=[interceptor])
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(_OverloadedInvites(calls), server)  # type: ignore[abstract]
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(_OverloadedAuth(calls), server)  # type: ignore[abstract]
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stopping.append(asyncio.Event())
        ready.set()
        await stopping[0].wait()
        await server.stop(0)

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    here = [("127.0.0.1", port)]
    yield OverloadedServer({**nowhere, "invite_svc": here, "auth_svc": here}, calls)
    loop.call_soon_threadsafe(stopping[0].set)
    thread.join(10)


def test_a_service_refusing_for_load_is_a_503_with_retry_after_to_rest_and_resource_exhausted_to_grpc(
    tmp_path: Path, overloaded: OverloadedServer
) -> None:
    with running_edge(tmp_path, overloaded.upstreams) as envoy:
        rest = request(envoy, "POST", CHECK_CODE, b'{"code": "ABCD-EFGH-J"}')
        grpc_web = _grpc_web(envoy, b"\0" + struct.pack(">I", 3) + b"\x0a\x01A")

    _, headers, body = rest
    assert refusal(rest) == (503, 8, "OVERLOADED")
    assert headers["retry-after"] == "2"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"} in json.loads(body)["details"]
    assert OVERLOADED_HEADER not in headers
    # gRPC clients keep the service's own status, without the mark.
    assert _grpc_status(grpc_web)[:2] == (8, "OVERLOADED")
    assert grpc_web[0] == 200 and grpc_web[1]["retry-after"] == "2" and OVERLOADED_HEADER not in grpc_web[1]


def test_near_its_heap_limit_the_edge_refuses_requests_at_once_as_overloaded(
    tmp_path: Path, nowhere: dict[str, Endpoints]
) -> None:
    # Envoy's heap is well past a megabyte from its start: the overload manager refuses at once.
    with running_edge(tmp_path, nowhere, EdgeLimits(max_heap_bytes=1024 * 1024)) as envoy:
        deadline = time.monotonic() + 10
        # Not a route to a service: nothing else here could answer 503.
        while (answer := request(envoy, "GET", "/v1/nothing-here"))[0] != 503:
            assert time.monotonic() < deadline, answer
            time.sleep(0.1)

    _, headers, body = answer
    assert refusal(answer) == (503, 8, "OVERLOADED")
    assert headers["retry-after"] == "1"
    assert {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"} in json.loads(body)["details"]


def test_once_a_service_refuses_most_calls_that_hash_the_edge_refuses_them_too_and_never_code_checks(
    tmp_path: Path, overloaded: OverloadedServer
) -> None:
    sign_in = b'{"email": "ada@example.com", "password": "a long passphrase here"}'
    with running_edge(tmp_path, overloaded.upstreams) as envoy:
        signing_in = [request(envoy, "POST", "/v1/sessions", sign_in) for _ in range(200)]
        checking = [request(envoy, "POST", CHECK_CODE, b'{"code": "ABCD-EFGH-J"}') for _ in range(50)]

    for answer in signing_in:
        assert refusal(answer) == (503, 8, "OVERLOADED")
        assert int(answer[1]["retry-after"]) >= 1
    # Most never reached the service, and no code check was refused by the edge itself.
    assert overloaded.calls["Login"] < len(signing_in) / 2
    assert overloaded.calls["CheckCode"] == len(checking)
