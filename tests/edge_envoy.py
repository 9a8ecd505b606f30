"""A real Envoy with the edge's rendered configuration, for tests that need the edge alone."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.edge import DEFAULT_LIMITS, EdgeLimits, envoy_binary, render_envoy_config

READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class RunningEnvoy:
    url: str
    admin: str
    access_log: Path

    def access_log_line(self, request_id: str, within: float = 15.0) -> dict[str, Any]:
        """The access log's line for a request; Envoy writes it after the answer, buffered."""
        deadline = time.monotonic() + within
        while True:
            lines = [json.loads(line) for line in self.access_log.read_text().splitlines() if line.startswith("{")]
            found = [line for line in lines if line["request_id"] == request_id]
            if found:
                return dict(found[0])
            assert time.monotonic() < deadline, f"no access log line for {request_id}"
            time.sleep(0.1)


@contextmanager
def running_envoy(
    directory: Path, upstreams: Mapping[str, tuple[str, int]], limits: EdgeLimits = DEFAULT_LIMITS
) -> Iterator[RunningEnvoy]:
    port, admin_port = free_port(), free_port()
    config = directory / "envoy.yaml"
    config.write_text(
        render_envoy_config(host="127.0.0.1", port=port, admin_port=admin_port, upstreams=upstreams, limits=limits)
    )
    access_log = directory / "envoy.out"
    with open(access_log, "wb") as out, open(directory / "envoy.err", "wb") as err:
        process = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    envoy = RunningEnvoy(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin_port}", access_log)
    try:
        _wait_until_ready(envoy, process)
        yield envoy
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_ready(envoy: RunningEnvoy, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        assert process.poll() is None, "envoy exited"
        try:
            with urllib.request.urlopen(f"{envoy.admin}/ready", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "envoy never became ready"
        time.sleep(0.1)
