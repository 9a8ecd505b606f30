"""The local stack behind `meshctl up`: embedded PostgreSQL, Redis, SMTP sink and development
chain (unless their `MESH_*_URL` points elsewhere), migrations, every service and Envoy at the edge.

One supervisor process owns every part. It records them in `<state dir>/stack.json`, which
`meshctl status`, `down`, `logs` and `mail` read, and stops them in reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from mesh.clients import EDGE_NAME, edge_token, web_token
from mesh.keys import Keystore, load_kek
from mesh.migrate import upgrade_all
from mesh.services import IDENTITIES, SERVICES, WEB
from mesh.settings import Settings
from mesh.tls import channel_credentials
from meshctl.certs import make_dev_certs
from meshctl.chain_tools import deploy_dev_token
from meshctl.edge import EDGE_ADMIN_HOST, Pages, edge_limits, envoy_binary, render_envoy_config, upstream_tls
from meshctl.embedded import EmbeddedPostgres, EmbeddedRedis, bindable, wait_for_port
from meshctl.probes import (
    probe_chain,
    probe_envoy,
    probe_grpc_health,
    probe_http,
    probe_postgres,
    probe_redis,
    probe_smtp,
)
from meshctl.settings import MAX_REPLICAS, StackSettings
from meshctl.supervision import RestartPolicy, exit_reason

log = structlog.get_logger("meshctl.stack")

POSTGRES_PORT_OFFSET = 10
REDIS_PORT_OFFSET = 11
SMTP_PORT_OFFSET = 12
CHAIN_PORT_OFFSET = 13
METRICS_PORT_OFFSET = 20
REPLICA_PORT_STRIDE = 30
READY_TIMEOUT = 90.0
EDGE_PORT_OFFSETS = {"MESH_EDGE_PORT": 100, "MESH_EDGE_ADMIN_PORT": 101, "MESH_EDGE_PAGES_PORT": 102}
"""Where a stack on a port base of its own puts the edge's listeners (tests, benchmarks)."""


@dataclass
class Part:
    name: str
    kind: str
    """postgres, redis, smtp, chain, service, web or edge."""
    address: str
    """A URL for postgres, redis, smtp and chain; host:port for a service and the edge."""
    embedded: bool = True
    pid: int | None = None
    log: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    """times the supervisor started it again after it exited"""
    last_exit: str | None = None
    given_up: bool = False
    """it exited more often than MESH_RESTART_LIMIT allows, and stays down"""


@dataclass
class _Child:
    """A process the supervisor started, and what it takes to start it again."""

    name: str
    command: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    policy: RestartPolicy
    after_start: Callable[[], object] | None = None
    """Blocking work once it runs again, such as deploying the dev token on a new chain."""
    due: float | None = None
    """When (monotonic) it starts again, while it waits out its backoff."""


@dataclass
class StackFile:
    path: Path
    supervisor_pid: int = 0
    status: str = "starting"
    """starting, ready, stopping, failed."""
    error: str | None = None
    parts: list[Part] = field(default_factory=list)

    @classmethod
    def read(cls, state_dir: Path) -> StackFile | None:
        path = state_dir / "stack.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(
            path=path,
            supervisor_pid=data["supervisor_pid"],
            status=data["status"],
            error=data.get("error"),
            parts=[Part(**part) for part in data["parts"]],
        )

    def write(self) -> None:
        data = {
            "supervisor_pid": self.supervisor_pid,
            "status": self.status,
            "error": self.error,
            "parts": [asdict(part) for part in self.parts],
        }
        partial = self.path.with_suffix(".tmp")
        partial.write_text(json.dumps(data, indent=2))
        partial.replace(self.path)

    def part(self, name: str) -> Part | None:
        return next((part for part in self.parts if part.name == name), None)


def process_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


async def probe(part: Part, settings: Settings) -> str | None:
    credentials = channel_credentials(settings.resolved_certs_dir, "meshctl") if settings.tls else None
    checks: dict[str, Callable[[], Awaitable[str | None]]] = {
        "postgres": lambda: probe_postgres(part.address),
        "redis": lambda: probe_redis(part.address),
        "smtp": lambda: probe_smtp(part.address),
        "chain": lambda: probe_chain(part.address),
        "service": lambda: probe_grpc_health(
            part.address, part.details.get("grpc_service", ""), credentials, part.details.get("metrics")
        ),
        "edge": lambda: probe_envoy(part.details["admin"]),
        "web": lambda: probe_http(f"http://{part.address}{WEB.health_path}"),
    }
    if part.given_up:
        return f"exited {part.restarts + 1} times ({part.last_exit} last); not started again"
    if part.pid is not None and not process_alive(part.pid):
        return f"process exited ({part.last_exit}); starting again" if part.last_exit else "process exited"
    return await checks[part.kind]()


def private_state_dir(settings: Settings) -> Path:
    """The state dir, made (or made again) the caller's alone: 0700, and nothing in it readable or
    writable by anyone else, whatever an earlier run or another umask left."""
    state_dir = settings.state_dir.absolute()
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state_dir.chmod(0o700)
    for path in state_dir.rglob("*"):
        if not path.is_symlink() and (mode := path.stat().st_mode) & 0o077:
            path.chmod(mode & 0o700)
    return state_dir


class Stack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.state_dir = settings.state_dir.absolute()
        self.logs_dir = self.state_dir / "logs"
        self.file = StackFile(self.state_dir / "stack.json", supervisor_pid=os.getpid())
        self._postgres: EmbeddedPostgres | None = None
        self._redis: EmbeddedRedis | None = None
        self._children: dict[str, _Child] = {}

    def _port(self, offset: int) -> int:
        return self.settings.port_base + offset

    async def up(self) -> None:
        """Starts every part and waits until each answers; on failure stops what it started."""
        private_state_dir(self.settings)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.file.write()
        try:
            database_url = self._start_postgres()
            redis_url = self._start_redis()
            smtp_url = self._start_smtp()
            chain = self._start_chain()
            await upgrade_all(SERVICES, database_url)
            prepare_trust(self.settings)
            self._start_services(database_url, redis_url, smtp_url, chain)
            self._start_web(redis_url)
            self._start_edge()
            await self._wait_until_ready()
        except BaseException as error:
            self.down()
            self.file.status, self.file.error, self.file.parts = "failed", f"{type(error).__name__}: {error}", []
            self.file.write()
            raise
        self.file.status = "ready"
        self.file.write()

    def _add(self, part: Part) -> Part:
        self.file.parts.append(part)
        self.file.write()
        return part

    def _start_postgres(self) -> str:
        if self.settings.database_url:
            self._add(Part("postgres", "postgres", self.settings.database_url, embedded=False))
            return self.settings.database_url
        self._postgres = EmbeddedPostgres(
            self.state_dir / "postgres", self._port(POSTGRES_PORT_OFFSET), log_file=self._log_of("postgres")
        )
        self._postgres.start()
        self._add(
            Part("postgres", "postgres", self._postgres.url, pid=self._postgres.pid(), log=str(self._postgres.log_file))
        )
        return self._postgres.url

    def _start_redis(self) -> str:
        if self.settings.redis_cluster and not self.settings.redis_url:
            raise RuntimeError("MESH_REDIS_CLUSTER=1 needs MESH_REDIS_URL, a node of the cluster")
        if self.settings.redis_url:
            self._add(Part("redis", "redis", self.settings.redis_url, embedded=False))
            return self.settings.redis_url
        self._redis = EmbeddedRedis(self.state_dir / "redis", self._port(REDIS_PORT_OFFSET))
        log_file = self.logs_dir / "redis.log"
        self._redis.start(log_file)
        assert self._redis.process is not None
        self._add(Part("redis", "redis", self._redis.url, pid=self._redis.process.pid, log=str(log_file)))
        return self._redis.url

    def _start_smtp(self) -> str:
        if self.settings.smtp_url:
            self._add(Part("smtp", "smtp", self.settings.smtp_url, embedded=False))
            return self.settings.smtp_url
        host, port = self.settings.host, self._port(SMTP_PORT_OFFSET)
        mail_dir = self.state_dir / "mail"
        process = self._spawn(
            "smtp",
            [sys.executable, "-m", "meshctl.smtp_sink", "--dir", str(mail_dir), "--host", host, "--port", str(port)],
        )
        wait_for_port(host, port, timeout=20)
        url = f"smtp://{host}:{port}"
        self._add(
            Part(
                "smtp",
                "smtp",
                url,
                pid=process.pid,
                log=str(self._log_of("smtp")),
                details={"mail_dir": str(mail_dir)},
            )
        )
        return url

    def _start_chain(self) -> dict[str, str]:
        """The node chain_svc reads, and the dev token it polls when the node is the embedded one."""
        if self.settings.chain_rpc_url:
            self._add(Part("chain", "chain", self.settings.chain_rpc_url, embedded=False))
            return {"MESH_CHAIN_RPC_URL": self.settings.chain_rpc_url}
        host, port = self.settings.host, self._port(CHAIN_PORT_OFFSET)
        url = f"http://{host}:{port}"

        def deployed() -> str:
            wait_for_port(host, port, timeout=60)
            # From the chain's first account at nonce 0: a chain started again has it at the same
            # address, which chain_svc was told.
            return deploy_dev_token(url)

        command = [sys.executable, "-m", "meshctl.dev_chain", "--host", host, "--port", str(port)]
        process = self._spawn("chain", command, after_start=deployed)
        token = deployed()
        self._add(
            Part("chain", "chain", url, pid=process.pid, log=str(self._log_of("chain")), details={"token": token})
        )
        tokens = {} if "MESH_CHAIN_TOKENS" in os.environ else {"MESH_CHAIN_TOKENS": json.dumps([token])}
        return {"MESH_CHAIN_RPC_URL": url, **tokens}

    def _replicas(self, port_offset: int) -> list[tuple[str, int]]:
        """Each replica's name suffix and port: the first has none (`invite_svc`), the others
        their number (`invite_svc.2`)."""
        return [
            ("" if replica == 0 else f".{replica + 1}", self._port(port_offset + replica * REPLICA_PORT_STRIDE))
            for replica in range(self.settings.replicas)
        ]

    def _addresses(self, port_offset: int) -> list[tuple[str, int]]:
        return [(self.settings.host, port) for _, port in self._replicas(port_offset)]

    def _start_services(self, database_url: str, redis_url: str, smtp_url: str, chain: dict[str, str]) -> None:
        addresses = {
            spec.name: ",".join(f"{host}:{port}" for host, port in self._addresses(spec.port_offset))
            for spec in SERVICES
        }
        shared = {
            "MESH_DATABASE_URL": database_url,
            "MESH_REDIS_URL": redis_url,
            "MESH_SMTP_URL": smtp_url,
            "MESH_STATE_DIR": str(self.state_dir),
            "MESH_SERVICE_ADDRESSES": json.dumps(addresses),
            **chain,
            **self._page_links(),
        }
        for spec in SERVICES:
            replicas = zip(
                self._replicas(spec.port_offset), self._replicas(METRICS_PORT_OFFSET + spec.port_offset), strict=True
            )
            for (suffix, port), (_, metrics_port) in replicas:
                env = {**shared, "MESH_GRPC_PORT": str(port), "MESH_METRICS_PORT": str(metrics_port)}
                process = self._spawn(spec.name + suffix, [sys.executable, "-m", spec.name], env)
                self._add(
                    Part(
                        spec.name + suffix,
                        "service",
                        f"{self.settings.host}:{port}",
                        pid=process.pid,
                        log=str(self._log_of(spec.name + suffix)),
                        details={"grpc_service": spec.grpc_service, "metrics": f"{self.settings.host}:{metrics_port}"},
                    )
                )

    def _page_links(self) -> dict[str, str]:
        """Where mails link to and the console is served: web_svc's pages at the edge, unless set
        otherwise."""
        host = "localhost" if self.settings.host in ("0.0.0.0", "::") else self.settings.host
        origin = f"http://{host}:{self.settings.edge_port}"
        links = {
            "MESH_AUTH_RESET_URL": f"{origin}/reset-password",
            "MESH_AUTH_SIGN_IN_URL": f"{origin}/sign-in",
            "MESH_INVITE_WAITLIST_URL": f"{origin}/waitlist",
            "MESH_INVITE_RESERVE_URL": f"{origin}/",
            # Passkeys need a domain, and localhost is the one a browser allows over plain HTTP.
            "MESH_ADMIN_PASSKEY_ORIGINS": json.dumps([f"http://localhost:{self.settings.edge_port}"]),
            # The site a wallet's Sign-In with Ethereum message names.
            "MESH_CHAIN_SIWE_URI": origin,
        }
        return {name: value for name, value in links.items() if name not in os.environ}

    def _start_web(self, redis_url: str) -> None:
        for suffix, port in self._replicas(WEB.port_offset):
            env = {
                "MESH_REDIS_URL": redis_url,
                "MESH_STATE_DIR": str(self.state_dir),
                "MESH_WEB_PORT": str(port),
                "MESH_WEB_EDGE_ADDRESS": f"{EDGE_ADMIN_HOST}:{self.settings.edge_pages_port}",
            }
            name = WEB.name + suffix
            process = self._spawn(name, [sys.executable, "-m", WEB.name], env)
            address = f"{self.settings.host}:{port}"
            self._add(Part(name, "web", address, pid=process.pid, log=str(self._log_of(name))))

    def _start_edge(self) -> None:
        kek = load_kek(self.settings)
        host = self.settings.host
        config_file = self.state_dir / "envoy.yaml"
        config_file.write_text(
            render_envoy_config(
                host=host,
                port=self.settings.edge_port,
                admin_port=self.settings.edge_admin_port,
                upstreams={spec.name: self._addresses(spec.port_offset) for spec in SERVICES},
                limits=edge_limits(self.settings),
                tls=upstream_tls(self.settings),
                # web_svc knows the edge by its token under TLS too (it serves plain HTTP).
                edge_token=edge_token(kek),
                pages=Pages(
                    upstream=self._addresses(WEB.port_offset),
                    calls_port=self.settings.edge_pages_port,
                    token=web_token(kek),
                ),
            )
        )
        process = self._spawn(
            "envoy",
            [envoy_binary(), "-c", str(config_file), "--disable-hot-restart", "--log-level", "warn"],
        )
        admin = f"{EDGE_ADMIN_HOST}:{self.settings.edge_admin_port}"
        self._add(
            Part(
                "envoy",
                "edge",
                f"{host}:{self.settings.edge_port}",
                pid=process.pid,
                log=str(self._log_of("envoy")),
                details={"admin": admin},
            )
        )

    def _log_of(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def _spawn(
        self,
        name: str,
        command: list[str],
        env: dict[str, str] | None = None,
        after_start: Callable[[], object] | None = None,
    ) -> subprocess.Popen[bytes]:
        env = env or {}
        policy = RestartPolicy(
            self.settings.restart_backoff,
            self.settings.restart_backoff_cap,
            self.settings.restart_limit,
            self.settings.restart_window,
        )
        child = _Child(name, command, env, self._started(name, command, env), policy, after_start)
        self._children[name] = child
        return child.process

    def _started(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with open(self._log_of(name), "ab") as log_file:
            # A session of its own: Ctrl-C reaches the supervisor only, which stops parts in order.
            return subprocess.Popen(
                command,
                stdout=log_file,
                stderr=log_file,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                start_new_session=True,
            )

    async def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            failures = {part.name: failure for part in self.file.parts if (failure := await probe(part, self.settings))}
            if not failures:
                return
            exited = {name: f for name, f in failures.items() if f == "process exited"}
            if exited or time.monotonic() > deadline:
                raise RuntimeError(f"not ready: {failures}")
            await asyncio.sleep(0.25)

    async def supervise(self, stopping: asyncio.Event) -> None:
        """Watches the children until asked to stop, and starts again each one that exits (see
        `meshctl.supervision`); what happened shows in the stack file for `meshctl status`."""
        while not stopping.is_set():
            now = time.monotonic()
            for child in self._children.values():
                part = self.file.part(child.name)
                if part is None or part.given_up:
                    continue
                if child.due is None and (returncode := child.process.poll()) is not None:
                    self._exited(child, part, returncode, now)
                elif child.due is not None and now >= child.due:
                    await self._start_again(child, part)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), 0.2)

    def _exited(self, child: _Child, part: Part, returncode: int, now: float) -> None:
        part.last_exit = exit_reason(returncode)
        delay = child.policy.after_exit(now)
        if delay is None:
            part.given_up = True
            log.error("part keeps exiting; not started again", part=part.name, last_exit=part.last_exit)
        else:
            child.due = now + delay
            log.warning("part exited; starting it again", part=part.name, last_exit=part.last_exit, after=delay)
        self.file.write()

    async def _start_again(self, child: _Child, part: Part) -> None:
        child.due = None
        child.process = self._started(child.name, child.command, child.env)
        part.pid, part.restarts = child.process.pid, part.restarts + 1
        self.file.write()
        if child.after_start is not None:
            try:
                await asyncio.to_thread(child.after_start)
            except Exception as error:
                # Counted as an exit of its own: the policy decides whether to try once more.
                log.error("part started again but not ready", part=part.name, error=str(error))
                stop_process(child.process, timeout=5)

    def down(self) -> None:
        """Stops every part this supervisor started, the edge first and the database last."""
        self.file.status = "stopping"
        self.file.write()
        for child in reversed(list(self._children.values())):
            stop_process(child.process, timeout=self.settings.grace_period + 5)
        if self._redis is not None:
            self._redis.stop()
        if self._postgres is not None:
            self._postgres.stop()
        self.file.path.unlink(missing_ok=True)


def free_port_base() -> int:
    """A `MESH_PORT_BASE` under which every port of a stack is free now (the edge's at the
    offsets of `EDGE_PORT_OFFSETS`, and those of as many replicas as a stack may have), for one
    more stack beside others on this machine."""
    replicated = [
        *(spec.port_offset for spec in SERVICES),
        *(METRICS_PORT_OFFSET + spec.port_offset for spec in SERVICES),
        WEB.port_offset,
    ]
    offsets = [
        *(offset + replica * REPLICA_PORT_STRIDE for offset in replicated for replica in range(MAX_REPLICAS)),
        POSTGRES_PORT_OFFSET,
        REDIS_PORT_OFFSET,
        SMTP_PORT_OFFSET,
        CHAIN_PORT_OFFSET,
        *EDGE_PORT_OFFSETS.values(),
    ]
    for _ in range(50):
        base = random.randrange(20000, 30000, 200)  # noqa: S311 - a port range, not a secret
        if all(bindable("127.0.0.1", base + offset) for offset in offsets):
            return base
    raise RuntimeError("no free port range")


def port_settings(base: int) -> dict[str, str]:
    """The variables that put a stack on `base` (see `free_port_base`)."""
    return {"MESH_PORT_BASE": str(base), **{name: str(base + offset) for name, offset in EDGE_PORT_OFFSETS.items()}}


def prepare_trust(settings: Settings) -> None:
    """Keys for every service (and certificates with MESH_TLS=1) where they are missing."""
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings, create=True))
    if made := keystore.ensure(IDENTITIES):
        log.info("made signing keys", identities=made)
    if settings.tls:
        names = [*IDENTITIES, EDGE_NAME]
        if made := make_dev_certs(settings.resolved_certs_dir, names):
            log.info("made certificates", names=made)


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def stop_pid(pid: int, timeout: float, signum: signal.Signals = signal.SIGTERM) -> None:
    """Stops a process this one did not start (left over from a supervisor that died)."""
    if not process_alive(pid):
        return
    os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)
