"""The stack as `meshctl` runs it, on free ports and in a temporary state dir."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mesh.services import SERVICES
from meshctl.stack import METRICS_PORT_OFFSET


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_base() -> int:
    offsets = [0, *range(1, METRICS_PORT_OFFSET + len(SERVICES) + 1), 100, 101, 102]
    for _ in range(50):
        base = random.randrange(20000, 30000, 200)
        if all(_free(base + offset) for offset in offsets):
            return base
    raise RuntimeError("no free port range")


def loopback_client() -> str:
    """A client address of its own: the edge counts requests per address, and a Redis given by
    MESH_REDIS_URL keeps those counts from one test run to the next."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


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
            "MESH_EDGE_PAGES_PORT": str(port_base + 102),
            # Every call here comes from one client address, and a Redis given by MESH_REDIS_URL
            # keeps its budgets from run to run; the budgets are tested where they are built.
            "MESH_AUTH_REGISTRATIONS_PER_HOUR": "1000000",
        }

    def ctl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "meshctl.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
            check=check,
            input=input,
        )

    def stack(self) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / "stack.json").read_text()))


@contextmanager
def running_mesh(tmp_path_factory: pytest.TempPathFactory, **env: str) -> Iterator[Mesh]:
    mesh = Mesh(tmp_path_factory.mktemp("mesh") / "state", _free_port_base())
    mesh.env.update(env)
    up = mesh.ctl("up", "--detach", check=False)
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield mesh
    finally:
        mesh.ctl("down", check=False)
