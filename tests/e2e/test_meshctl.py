"""The whole stack through `meshctl`, as a developer runs it: up, status, the edge over REST
and gRPC, the SMTP sink, logs, down."""

from __future__ import annotations

import json
import os
import random
import smtplib
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import grpc
import pytest
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.errors import error_info
from mesh.services import SERVICES
from mesh.stack import METRICS_PORT_OFFSET, SMTP_PORT_OFFSET, process_alive

pytestmark = pytest.mark.e2e


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_base() -> int:
    offsets = [0, *range(1, METRICS_PORT_OFFSET + len(SERVICES) + 1), 100, 101]
    for _ in range(50):
        base = random.randrange(20000, 30000, 200)
        if all(_free(base + offset) for offset in offsets):
            return base
    raise RuntimeError("no free port range")


class Mesh:
    def __init__(self, state_dir: Path, port_base: int) -> None:
        self.state_dir = state_dir
        self.edge = f"127.0.0.1:{port_base + 100}"
        self.env = {
            **os.environ,
            "MESH_STATE_DIR": str(state_dir),
            "MESH_PORT_BASE": str(port_base),
            "MESH_EDGE_PORT": str(port_base + 100),
            "MESH_EDGE_ADMIN_PORT": str(port_base + 101),
        }

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=check,
        )

    def stack(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "stack.json").read_text()))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("mesh") / "state", _free_port_base())
    up = mesh.ctl("up", "--detach", check=False)
    assert up.returncode == 0, up.stderr + up.stdout
    yield mesh
    mesh.ctl("down", check=False)


def test_every_part_reports_serving(mesh: Mesh) -> None:
    status = json.loads(mesh.ctl("status", "--json").stdout)

    names = {part["name"] for part in status["parts"]}
    assert {"postgres", "redis", "smtp", "envoy", *(spec.name for spec in SERVICES)} <= names
    assert [part for part in status["parts"] if not part["healthy"]] == []
    external = {part["name"] for part in status["parts"] if not part["embedded"]}
    assert ("postgres" in external) == bool(os.environ.get("MESH_DATABASE_URL"))
    assert ("redis" in external) == bool(os.environ.get("MESH_REDIS_URL"))


def test_rest_through_envoy_answers_a_json_status(mesh: Mesh) -> None:
    request = urllib.request.Request(
        f"http://{mesh.edge}/v1/invites:check",
        data=json.dumps({"code": "ABCD-EFGH-J"}).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310

    assert raised.value.code == 501
    assert raised.value.headers["content-type"] == "application/json"
    body = json.loads(raised.value.read())
    assert body["code"] == grpc.StatusCode.UNIMPLEMENTED.value[0]
    assert body["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert body["details"][0]["reason"] == "METHOD_NOT_IMPLEMENTED"


def test_user_method_through_envoy_without_a_token_is_401(mesh: Mesh) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"http://{mesh.edge}/v1/users/me", timeout=10)

    assert raised.value.code == 401
    assert json.loads(raised.value.read())["details"][0]["reason"] == "ACCESS_TOKEN_MISSING"


async def test_grpc_through_envoy_reaches_public_methods_only(mesh: Mesh) -> None:
    async with grpc.aio.insecure_channel(mesh.edge) as channel:
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as public:
            await stub.CheckCode(invite_service_pb2.CheckCodeRequest(code="X"), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as internal:
            await stub.HoldCode(invite_service_pb2.HoldCodeRequest(code="X"), timeout=10)

    assert public.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(public.value).reason == "METHOD_NOT_IMPLEMENTED"  # type: ignore[union-attr]
    # No route: the edge answers by itself, the service never sees the call.
    assert internal.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(internal.value) is None


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


def test_logs_show_a_service_serving(mesh: Mesh) -> None:
    logs = mesh.ctl("logs", "invite_svc").stdout

    assert any(json.loads(line).get("event") == "serving" for line in logs.splitlines() if line.startswith("{"))


def test_down_leaves_no_process_behind(mesh: Mesh) -> None:
    stack = mesh.stack()
    pids = [stack["supervisor_pid"], *(part["pid"] for part in stack["parts"] if part["pid"])]

    mesh.ctl("down")

    assert [pid for pid in pids if process_alive(pid)] == []
    assert not (mesh.state_dir / "stack.json").exists()
    leftovers = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert str(mesh.state_dir) not in leftovers
    assert json.loads(mesh.ctl("status", "--json", check=False).stdout) == {"running": False}
