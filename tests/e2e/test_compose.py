"""docker-compose.yml, run: its commands and environment as local processes (tests/e2e/compose.py),
two replicas of every stateless service, and the end-to-end flow through its edge."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from meshctl.embedded import free_port, wait_for_port
from meshctl.stack import stop_process
from scripts.settings_table import TABLES
from tests.e2e import test_edge
from tests.e2e.compose import LocalCompose
from tests.e2e.conftest import Mesh

pytestmark = pytest.mark.e2e

COMPOSE_FILE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def mail_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The dev SMTP sink in the mail catcher's place: its URL, and the state dir it writes into."""
    state = tmp_path_factory.mktemp("operator")
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-m", "meshctl.smtp_sink", "--dir", str(state / "mail"), "--port", str(port)],
        stdin=subprocess.DEVNULL,
    )
    wait_for_port("127.0.0.1", port, timeout=20)
    yield f"smtp://127.0.0.1:{port}", state
    stop_process(sink, timeout=10)


@pytest.fixture(scope="module")
def compose(
    tmp_path_factory: pytest.TempPathFactory,
    database_url: str,
    redis_url: str,
    chain_rpc_url: str,
    mail_dir: tuple[str, Path],
) -> Iterator[LocalCompose]:
    smtp_url, _ = mail_dir
    running = LocalCompose(
        COMPOSE_FILE,
        variables={"POSTGRES_PASSWORD": secrets.token_urlsafe(16), "MESH_CHAIN_RPC_URL": chain_rpc_url},
        infrastructure={"postgres": database_url, "redis": redis_url, "mailpit": smtp_url},
        secrets={"mesh_kek": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=") + "\n"},
        directory=tmp_path_factory.mktemp("compose"),
    )
    try:
        running.up()
        yield running
    finally:
        running.down()


def test_the_end_to_end_flow_passes_through_the_compose_files_edge(
    compose: LocalCompose, mail_dir: tuple[str, Path]
) -> None:
    """meshctl as an operator beside the deployment: the services' addresses, keys and KEK."""
    _, state = mail_dir
    (migrate,) = compose.replicas["migrate"]
    operator = Mesh(state, 0)
    operator.edge = compose.address("edge", 8080)
    operator.env = {
        **{key: value for key, value in os.environ.items() if not key.startswith("MESH_")},
        **{key: value for key, value in migrate.env.items() if key in ("MESH_KEYS_DIR", "MESH_KEK_FILE")},
        "MESH_STATE_DIR": str(state),
        "MESH_SERVICE_ADDRESSES": migrate.env["MESH_SERVICE_ADDRESSES"],
    }

    test_edge.test_a_person_goes_through_every_public_route_over_rest(operator)


def test_every_stateless_service_runs_twice_and_each_replica_serves(compose: LocalCompose) -> None:
    services = [name for name in compose.ours if compose.spec["services"][name].get("restart") != "no"]
    assert {name: len(compose.replicas[name]) for name in services} == {
        **{name: 2 for name in services},
        "edge": 1,
    }
    replicas = [replica for name in services for replica in compose.replicas[name]]
    assert all(replica.process and replica.process.poll() is None for replica in replicas)


def test_every_mesh_variable_of_the_file_is_one_a_part_reads() -> None:
    read = {settings.variable(name) for _, settings in TABLES for name in settings.model_fields}
    spec = yaml.safe_load(COMPOSE_FILE.read_text())
    named = {
        key
        for service in spec["services"].values()
        for key in service.get("environment", {})
        if key.startswith("MESH_")
    }
    assert named - read == set()
