"""The stack as `meshctl` runs it, on free ports and in a temporary state dir."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from meshctl.stack import free_port_base, port_settings


def loopback_client() -> str:
    """A client address of its own: the edge counts requests per address, and a Redis given by
    MESH_REDIS_URL keeps those counts from one test run to the next."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def until(found: Callable[[], Any], what: str, within: float = 60) -> Any:
    """`found()` once it is truthy, polled, or the test fails at the deadline."""
    deadline = time.monotonic() + within
    while not (value := found()):
        assert time.monotonic() < deadline, f"{what} not within {within}s"
        time.sleep(0.3)
    return value


class Mesh:
    def __init__(self, state_dir: Path, port_base: int) -> None:
        self.state_dir = state_dir
        ports = port_settings(port_base)
        self.edge = f"127.0.0.1:{ports['MESH_EDGE_PORT']}"
        self.env = {
            **os.environ,
            "MESH_STATE_DIR": str(state_dir),
            **ports,
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
    mesh = Mesh(tmp_path_factory.mktemp("mesh") / "state", free_port_base())
    mesh.env.update(env)
    up = mesh.ctl("up", "--detach", check=False)
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield mesh
    finally:
        mesh.ctl("down", check=False)
