"""`meshctl up` keeps what it started running: a part that exits is started again after a
backoff, and one that keeps exiting is reported down and left so."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from mesh import invite_codes
from tests.e2e.conftest import Mesh, running_mesh, until
from tests.e2e.test_meshctl import _post

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(
        tmp_path_factory, MESH_RESTART_BACKOFF="0.2", MESH_RESTART_LIMIT="2", MESH_RESTART_WINDOW="600"
    ) as mesh:
        yield mesh


def status_of(mesh: Mesh, name: str) -> dict[str, Any]:
    parts = json.loads(mesh.ctl("status", "--json", check=False).stdout)["parts"]
    return next(part for part in parts if part["name"] == name)


def kill(mesh: Mesh, name: str) -> int:
    pid = status_of(mesh, name)["pid"]
    os.kill(pid, signal.SIGKILL)
    return int(pid)


def checked(mesh: Mesh) -> tuple[int, dict[str, Any]]:
    status, _, body = _post(mesh, "/v1/invites:check", {"code": invite_codes.display(invite_codes.generate())})
    return status, json.loads(body)


def test_a_killed_service_is_started_again_and_serves_through_the_edge(mesh: Mesh) -> None:
    killed = kill(mesh, "invite_svc")

    serving = until(
        lambda: (part := status_of(mesh, "invite_svc"))["healthy"] and part["pid"] != killed and part,
        "invite_svc serving again",
    )

    assert (serving["restarts"], serving["last_exit"], serving["given_up"]) == (1, "killed by SIGKILL", False)
    assert until(lambda: checked(mesh)[0] == 200 and checked(mesh), "a code check through the edge") == (
        200,
        {"valid": False, "reason": "INVITE_CODE_NOT_FOUND"},
    )
    listed = mesh.ctl("status").stdout
    assert "started again 1x, last exit: killed by SIGKILL" in listed


def test_a_service_that_keeps_exiting_is_reported_down_and_not_started_again(mesh: Mesh) -> None:
    """Without the key-encryption key, invite_svc exits at every start (the others read it once)."""
    kek = mesh.state_dir / "kek"
    kek.rename(kek.with_name("kek.away"))
    try:
        kill(mesh, "invite_svc")
        given_up = until(lambda: (part := status_of(mesh, "invite_svc"))["given_up"] and part, "invite_svc given up")
    finally:
        kek.with_name("kek.away").rename(kek)

    listed = mesh.ctl("status", check=False)
    assert given_up["last_exit"] == "exit code 1"
    assert given_up["problem"] == f"exited {given_up['restarts'] + 1} times (exit code 1 last); not started again"
    assert listed.returncode == 1
    assert "not started again" in listed.stdout
