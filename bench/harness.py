"""What every benchmark here shares: real PostgreSQL and Redis (embedded unless `MESH_*_URL`
says otherwise), service keys, a server in a process of its own, and closed-loop rounds."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import uvloop
from argon2 import PasswordHasher

from mesh.channels import open_channel
from mesh.keys import Keystore, load_kek
from mesh.logs import configure_logging
from mesh.migrate import upgrade_all
from mesh.server import AddServicers, MeshServer
from mesh.services import IDENTITIES, SERVICES, ServiceSpec
from mesh.settings import Settings
from mesh.signing import signer_for
from meshctl.embedded import EmbeddedPostgres, EmbeddedRedis, free_port, wait_for_port
from meshctl.stack import free_port_base, port_settings

Call = Callable[[], Awaitable[object]]
_TICKS = os.sysconf("SC_CLK_TCK")


JSON = {"content-type": "application/json"}


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; small, so the client costs little beside what it
    measures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, address: str) -> HttpConnection:
        host, port = address.rsplit(":", 1)
        return cls(*await asyncio.open_connection(host, int(port)))

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] = {}
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", "host: edge", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status = int((await self._reader.readline()).split()[1])
        answered: dict[str, str] = {}
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            answered[name.strip().lower()] = value.strip()
        if answered.get("transfer-encoding") == "chunked":
            chunks = []
            while (size := int(await self._reader.readline(), 16)) > 0:
                chunks.append((await self._reader.readexactly(size + 2))[:-2])
            await self._reader.readline()
            return status, answered, b"".join(chunks)
        return status, answered, await self._reader.readexactly(int(answered.get("content-length", "0")))

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


@asynccontextmanager
async def http_pool(address: str, size: int) -> AsyncIterator[asyncio.Queue[HttpConnection]]:
    """Open connections; a caller takes one for each call and puts it back."""
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    connections = [await HttpConnection.open(address) for _ in range(size)]
    for connection in connections:
        pool.put_nowait(connection)
    try:
        yield pool
    finally:
        for connection in connections:
            await connection.close()


@dataclass(frozen=True)
class Served:
    address: str
    pid: int

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)


@contextmanager
def meshctl_stack(state: Path, **settings: str) -> Iterator[tuple[dict[str, str], Callable[..., str]]]:
    """`meshctl up` in `state` on free ports with `settings` (and no per-address registration
    budget: a Redis given by MESH_REDIS_URL keeps budgets from run to run), down at the end;
    yields its environment and a `ctl(*command)` answering meshctl's output."""
    env = {
        **os.environ,
        "MESH_STATE_DIR": str(state),
        "MESH_AUTH_REGISTRATIONS_PER_HOUR": "1000000",
        **port_settings(free_port_base()),
        **settings,
    }

    def ctl(*command: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "meshctl.cli", *command], env=env, capture_output=True, text=True, check=True
        ).stdout

    ctl("up", "--detach")
    try:
        yield env, ctl
    finally:
        ctl("down")


def client_address() -> str:
    """A loopback address of its own for one client (all of 127.0.0.0/8 is the machine's), so
    that the edge's per-address limits and the services' budgets see many people."""
    return f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"  # noqa: S311


def turn_rate_limiting(edge_admin: str, on: bool) -> None:
    """Envoy's rate-limit filter on or off at run time (its `edge.rate_limit_enabled` runtime key)."""
    request = urllib.request.Request(
        f"http://{edge_admin}/runtime_modify?edge.rate_limit_enabled={100 if on else 0}", method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
        assert answer.status == 200


def cpu_seconds(pid: int) -> float:
    """CPU seconds process `pid` has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    # After the command: state, ppid, …; utime and stime are the 12th and 13th.
    return (int(fields[11]) + int(fields[12])) / _TICKS


@contextmanager
def backends() -> Iterator[Settings]:
    """Settings pointing at a migrated PostgreSQL, a Redis and a keys dir, for one run."""
    with tempfile.TemporaryDirectory() as state:
        state_dir = Path(state)
        postgres = redis = None
        database_url, redis_url = os.environ.get("MESH_DATABASE_URL"), os.environ.get("MESH_REDIS_URL")
        if not database_url:
            postgres = EmbeddedPostgres(state_dir / "postgres", free_port())
            postgres.start()
            database_url = postgres.url
        if not redis_url:
            redis = EmbeddedRedis(state_dir / "redis", free_port())
            redis.start()
            redis_url = redis.url
        try:
            settings = Settings(
                state_dir=state_dir, database_url=database_url, redis_url=redis_url, log_level="WARNING"
            )
            Keystore(settings.resolved_keys_dir, load_kek(settings, create=True)).ensure(IDENTITIES)
            asyncio.run(upgrade_all(SERVICES, database_url))
            yield settings
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None:
                postgres.discard()


Measure = Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, None]]


def run(
    description: str | None,
    defaults: tuple[int, float, int],
    spec: ServiceSpec,
    add_servicers: AddServicers,
    measure: Measure,
    more_arguments: Callable[[argparse.ArgumentParser], object] | None = None,
) -> None:
    """A benchmark's command line: `--serve` is the server side, anything else the load (with
    the arguments `more_arguments` adds)."""
    parser = _closed_loop_arguments(description, defaults)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    if more_arguments is not None:
        more_arguments(parser)
    args = parser.parse_args()
    if args.serve:
        serve_here(spec, add_servicers)
        return
    with backends() as settings:
        uvloop.run(measure(args, settings))


def run_rounds(description: str | None, defaults: tuple[int, float, int], measure: Measure) -> None:
    """The command line of a benchmark that starts its servers by itself."""
    args = _closed_loop_arguments(description, defaults).parse_args()
    with backends() as settings:
        uvloop.run(measure(args, settings))


def _closed_loop_arguments(description: str | None, defaults: tuple[int, float, int]) -> argparse.ArgumentParser:
    rounds, seconds, concurrency = defaults
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--seconds", type=float, default=seconds)
    parser.add_argument("--concurrency", type=int, default=concurrency)
    return parser


def serve_here(spec: ServiceSpec, add_servicers: AddServicers) -> None:
    """The `--serve` side: serve, print the port, stop when stdin closes."""
    settings = Settings()
    configure_logging("bench", settings.log_level)

    async def serve() -> None:
        server = MeshServer(spec, add_servicers, settings)
        await server.start()
        print(json.dumps({"port": server.port}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop(0)

    uvloop.run(serve())


@asynccontextmanager
async def running_services(
    settings: Settings, names: Sequence[str], variables: Mapping[str, str]
) -> AsyncIterator[Settings]:
    """Each service `python -m <name>` in its own process, as deployed, with the environment
    `variables` beside `settings`; answers the shared settings that reach them."""
    addresses = {name: f"127.0.0.1:{free_port()}" for name in names}
    deployed = settings.model_copy(update={"service_addresses": addresses})
    processes = []
    try:
        for name in names:
            port = addresses[name].rpartition(":")[2]
            environment = {**os.environ, **deployed.environment(), **variables, "MESH_GRPC_PORT": port}
            processes.append(await asyncio.create_subprocess_exec(sys.executable, "-m", name, env=environment))
            await asyncio.to_thread(wait_for_port, "127.0.0.1", int(port), 60)
        yield deployed
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            await process.wait()


@asynccontextmanager
async def server_process(
    module: str, settings: Settings, env: Mapping[str, str] | None = None
) -> AsyncIterator[Served]:
    """`python -m <module> --serve` with these settings (and `env`); answers where it serves."""
    env = {**os.environ, **(env or {}), **settings.environment(), "MESH_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--serve", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        port = json.loads(await process.stdout.readline())["port"]
        yield Served(f"127.0.0.1:{port}", process.pid)
    finally:
        process.stdin.close()
        await process.wait()


async def calls_per_second(call: Call, seconds: float, concurrency: int) -> float:
    """Closed loop: `concurrency` callers call back to back for `seconds`."""
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def timed_calls(call: Call, seconds: float, concurrency: int) -> tuple[float, list[float]]:
    """Closed loop as `calls_per_second`, answering the rate and every call's seconds."""
    took: list[float] = []
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        while (started := time.perf_counter()) < deadline:
            await call()
            took.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(took) / (time.perf_counter() - started), took


def percentile(values: list[float], share: float) -> float:
    """The value `share` (0…1) of `values` lie at or below."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def median(values: list[float]) -> float:
    return statistics.median(values)


def listed(values: list[float], digits: int = 0) -> str:
    return " ".join(f"{value:.{digits}f}" for value in values)


def signed_channel(target: str, settings: Settings, service: str) -> grpc.aio.Channel:
    return open_channel(target, settings, service, signer_for(service, settings))


def hashes_per_second(hasher: PasswordHasher, seconds: float) -> float:
    """`hasher`'s hashes per second with one thread per core for `seconds` (argon2's C code
    releases the GIL): the physical limit of any flow that hashes or checks one password."""
    done = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def hash_until_deadline() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            hasher.hash("a long passphrase for the benchmark")
            with lock:
                done += 1

    threads = [threading.Thread(target=hash_until_deadline) for _ in range(os.cpu_count() or 1)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done / (time.perf_counter() - started)
