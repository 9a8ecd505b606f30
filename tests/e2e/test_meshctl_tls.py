"""`MESH_TLS=1`: the same stack with mutual TLS on every service listener and on Envoy's upstreams."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.conftest import Mesh, running_mesh

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_TLS="1") as mesh:
        yield mesh


def test_every_part_reports_serving_over_tls(mesh: Mesh) -> None:
    status = json.loads(mesh.ctl("status", "--json").stdout)

    assert [part["name"] for part in status["parts"] if not part["healthy"]] == []


def test_envoy_reaches_services_over_mutual_tls(mesh: Mesh) -> None:
    request = urllib.request.Request(
        f"http://{mesh.edge}/v1/invites:check",
        data=b'{"code": "ABCD-EFGH-0"}',
        headers={"content-type": "application/json"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310

    # The service's own refusal: the request crossed Envoy's mutual-TLS upstream and back.
    assert raised.value.code == 400
    assert json.loads(raised.value.read())["details"][0]["reason"] == "INVITE_CODE_AMBIGUOUS_SYMBOL"


def test_envoys_health_checks_pass_over_mutual_tls(mesh: Mesh) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{mesh.edge}/healthz", timeout=10) as answer:
                assert answer.status == 200
                return
        except urllib.error.HTTPError as unhealthy:
            assert unhealthy.code == 503 and time.monotonic() < deadline, "Envoy's gRPC health checks never passed"
        time.sleep(0.5)


async def test_a_plaintext_client_cannot_reach_a_service(mesh: Mesh) -> None:
    invite = next(part for part in mesh.stack()["parts"] if part["name"] == "invite_svc")
    async with grpc.aio.insecure_channel(invite["address"]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)

    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
