"""docker-compose.yml run without a Docker engine: every service built from the project's image
runs its `command` with its `environment` as local processes, one per replica, in the order
`depends_on` gives (one-shots to completion, the others until their `healthcheck` passes).

What a container would have differently is mapped, and nothing else is touched:
- each replica gets loopback ports of its own for the ports its environment names (`*_PORT`),
  and `name:port` of a service anywhere in an environment becomes its replicas' local addresses
  (several, comma-separated, as a DNS name standing for every replica);
- a URL whose host is a service of another image (PostgreSQL, Redis, the mail catcher) becomes
  the real endpoint the test gives for it;
- named volumes and secrets become a directory and a file of the run's own;
- `meshctl` and `python` are this interpreter, and the image's `MESH_HOST` is loopback."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from meshctl.embedded import free_port
from meshctl.stack import stop_process

_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<how>:[-?])(?P<word>[^}]*))?\}")


def interpolated(text: str, variables: Mapping[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def value(match: re.Match[str]) -> str:
        name, how, word = match.group("name", "how", "word")
        if variables.get(name):
            return variables[name]
        if how == ":?":
            raise ValueError(f"{name}: {word}")
        return word if how == ":-" else ""

    return _VARIABLE.sub(value, text)


@dataclass
class Replica:
    service: str
    index: int
    ports: dict[str, int]
    """Container port → its local port."""
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)


class LocalCompose:
    def __init__(
        self,
        file: Path,
        variables: Mapping[str, str],
        infrastructure: Mapping[str, str],
        secrets: Mapping[str, str],
        directory: Path,
    ) -> None:
        self.spec: dict[str, Any] = yaml.safe_load(interpolated(file.read_text(), variables))
        self._infrastructure = infrastructure
        self._directory = directory
        self._volumes = {name: directory / "volumes" / name for name in self.spec.get("volumes", {})}
        self._secrets = {}
        for name, content in secrets.items():
            path = directory / "secrets" / name
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(content)
            self._secrets[f"/run/secrets/{name}"] = path
        for volume in self._volumes.values():
            volume.mkdir(parents=True, mode=0o700)
        self._paths = self._mounted()
        self.replicas: dict[str, list[Replica]] = {name: self._replicas(name) for name in self.ours}

    @property
    def ours(self) -> list[str]:
        """The services the project's image runs (the others are infrastructure)."""
        return [name for name, service in self.spec["services"].items() if "build" in service]

    def address(self, service: str, port: int) -> str:
        return ",".join(f"127.0.0.1:{replica.ports[str(port)]}" for replica in self.replicas[service])

    def _replicas(self, name: str) -> list[Replica]:
        service = self.spec["services"][name]
        count = int(service.get("deploy", {}).get("replicas", 1))
        ports = sorted({str(value) for key, value in service["environment"].items() if key.endswith("_PORT")})
        return [
            Replica(name, index, {port: free_port() for port in ports}, self._directory / f"{name}.{index}")
            for index in range(count)
        ]

    def environment(self, replica: Replica) -> dict[str, str]:
        """What the replica's container would see, mapped onto this machine."""
        env = {key: value for key, value in os.environ.items() if not key.startswith("MESH_")}
        env.update(MESH_HOST="127.0.0.1", MESH_STATE_DIR=str(replica.directory))
        for key, value in self.spec["services"][replica.service]["environment"].items():
            env[key] = self._mapped(str(value), replica if key.endswith("_PORT") else None)
        return env

    def _mapped(self, value: str, own: Replica | None) -> str:
        if own is not None and value in own.ports:
            return str(own.ports[value])
        host = urlsplit(value).hostname
        if host is not None and host in self._infrastructure:
            return self._infrastructure[host]
        for name in self.ours:
            for port in self.replicas[name][0].ports:
                value = value.replace(f"{name}:{port}", self.address(name, int(port)))
        for inside, outside in self._paths.items():
            value = value.replace(inside, str(outside))
        return value

    def _mounted(self) -> dict[str, Path]:
        """Each volume's and secret's path in a container, and the local path it stands for."""
        mounts = {}
        for service in self.spec["services"].values():
            for mount in service.get("volumes", []):
                volume, _, inside = mount.partition(":")
                if volume in self._volumes:
                    mounts[inside] = self._volumes[volume]
        return {**mounts, **self._secrets}

    def up(self, within: float = 120.0) -> None:
        order = TopologicalSorter(
            {name: set(service.get("depends_on", {})) for name, service in self.spec["services"].items()}
        )
        for name in order.static_order():
            if name not in self.replicas:
                continue  # infrastructure: the test started it
            for replica in self.replicas[name]:
                self._start(replica)
            if self.spec["services"][name].get("restart") == "no":
                for replica in self.replicas[name]:
                    assert replica.process is not None
                    assert replica.process.wait(within) == 0, f"{name} failed: {self.log(replica)}"
            else:
                for replica in self.replicas[name]:
                    self._wait_until_healthy(replica, within)

    def _start(self, replica: Replica) -> None:
        replica.directory.mkdir(parents=True, mode=0o700)
        replica.env = self.environment(replica)
        with open(replica.directory.with_suffix(".log"), "ab") as log:
            replica.process = subprocess.Popen(
                self._command(self.spec["services"][replica.service]["command"]),
                env=replica.env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @staticmethod
    def _command(command: list[str]) -> list[str]:
        programs = {"meshctl": [sys.executable, "-m", "meshctl.cli"], "python": [sys.executable]}
        return [*programs[command[0]], *command[1:]]

    def _wait_until_healthy(self, replica: Replica, within: float) -> None:
        check = self.spec["services"][replica.service]["healthcheck"]["test"]
        assert check[0] == "CMD", check

        def local(arg: str) -> str:
            return re.sub(r"127\.0\.0\.1:(\d+)", lambda port: f"127.0.0.1:{replica.ports[port.group(1)]}", arg)

        command = self._command([local(arg) for arg in check[1:]])
        deadline = time.monotonic() + within
        while subprocess.run(command, env=replica.env, capture_output=True, timeout=30).returncode != 0:
            assert replica.process is not None and replica.process.poll() is None, self.log(replica)
            assert time.monotonic() < deadline, f"{replica.service} not healthy: {self.log(replica)}"
            time.sleep(0.5)

    def log(self, replica: Replica) -> str:
        return replica.directory.with_suffix(".log").read_text()[-3000:]

    def down(self) -> None:
        for replicas in reversed(list(self.replicas.values())):
            for replica in replicas:
                if replica.process is not None:
                    stop_process(replica.process, timeout=20)
