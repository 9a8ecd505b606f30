"""Is a part of the stack answering? Each probe returns None when healthy, else why not."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from urllib.parse import urlsplit

import aiosmtplib
import asyncpg
import grpc
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc

_TIMEOUT = 3.0


async def _failure(check: asyncio.Future[object] | asyncio.Task[object] | object) -> str | None:
    try:
        await asyncio.wait_for(check, _TIMEOUT)  # type: ignore[arg-type]
    except Exception as error:  # a probe reports any failure, whatever raised it
        return f"{type(error).__name__}: {error}".strip()[:200]
    return None


async def probe_postgres(url: str) -> str | None:
    async def check() -> None:
        connection = await asyncpg.connect(url, timeout=_TIMEOUT)
        try:
            await connection.fetchval("SELECT 1")
        finally:
            await connection.close()

    return await _failure(check())


async def probe_redis(url: str) -> str | None:
    async def check() -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT)
        try:
            await client.ping()
        finally:
            await client.aclose()

    return await _failure(check())


async def probe_smtp(url: str) -> str | None:
    async def check() -> None:
        parts = urlsplit(url)
        client = aiosmtplib.SMTP(hostname=parts.hostname, port=parts.port, use_tls=parts.scheme == "smtps")
        await client.connect()
        try:
            await client.noop()
        finally:
            await client.quit()

    return await _failure(check())


async def probe_grpc_health(
    address: str,
    service: str = "",
    credentials: grpc.ChannelCredentials | None = None,
    metrics_address: str | None = None,
) -> str | None:
    """gRPC health; when NOT_SERVING, the service's metrics say which dependency is down."""

    async def check() -> None:
        channel = grpc.aio.secure_channel(address, credentials) if credentials else grpc.aio.insecure_channel(address)
        async with channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=_TIMEOUT
            )
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            down = await asyncio.to_thread(_dependencies_down, metrics_address) if metrics_address else []
            raise RuntimeError(f"{status} ({', '.join(down)} unreachable)" if down else status)

    return await _failure(check())


def _dependencies_down(metrics_address: str) -> list[str]:
    return _down_in(_metrics(metrics_address))


def _down_in(exposed: str) -> list[str]:
    return [
        match.group(1) for match in re.finditer(r'^mesh_dependency_up\{dependency="([^"]+)"\} 0\.0$', exposed, re.M)
    ]


async def degraded(metrics_address: str) -> list[str]:
    """What a service's metrics say works in part only: circuit breakers that are not closed, and
    dependencies it serves without (mesh.health's watched ones)."""

    def read() -> list[str]:
        exposed = _metrics(metrics_address)
        states = re.finditer(r'^mesh_breaker_state\{breaker="([^"]+)"\} ([12])\.0$', exposed, re.M)
        breakers = [f"{match.group(1)} breaker {_BREAKER_STATES[match.group(2)]}" for match in states]
        return [*breakers, *(f"{name} unreachable" for name in _down_in(exposed))]

    try:
        return await asyncio.to_thread(read)
    except OSError:
        return []


_BREAKER_STATES = {"1": "half-open", "2": "open"}


def _metrics(metrics_address: str) -> str:
    with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=_TIMEOUT) as answer:
        return str(answer.read().decode())


async def probe_chain(rpc_url: str) -> str | None:
    """An Ethereum node: it answers `eth_chainId` over JSON-RPC."""

    def check() -> None:
        asked = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).encode()
        request = urllib.request.Request(rpc_url, asked, {"content-type": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as answer:  # noqa: S310 - the node's http URL
            if "result" not in json.loads(answer.read()):
                raise RuntimeError("no chain id in its answer")

    return await _failure(asyncio.to_thread(check))


async def probe_envoy(admin_address: str) -> str | None:
    return await probe_http(f"http://{admin_address}/ready")


async def probe_http(url: str) -> str | None:
    """Envoy's readiness, or web_svc's health: a 200 from `url`."""

    def check() -> None:
        with urllib.request.urlopen(url, timeout=_TIMEOUT) as answer:  # noqa: S310 - an http URL the stack made
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status}")

    return await _failure(asyncio.to_thread(check))
