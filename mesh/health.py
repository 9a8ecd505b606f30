"""gRPC health that tells the truth: a service is SERVING only while its database and Redis
answer. A background probe checks both every `MESH_HEALTH_INTERVAL` seconds.

A dependency a service survives in part (chain_svc's Ethereum node: wallets still link while it
is down, only polling waits) is *watched*: probed alike, and its loss logged and exposed in
`mesh_dependency_up` (which `meshctl status` reads), but the service stays SERVING."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence

import structlog
from grpc_health.v1 import health, health_pb2

from mesh.metrics import Metrics

log = structlog.get_logger("mesh.health")
ACCEPTING = "invitemesh.mesh.v1.Accepting"
"""SERVING from the start until the server drains, whatever its dependencies say: what the
services' channels check before they send a replica calls (mesh.channels). Were they to check the
service's own health, a dependency down for every replica would turn each answer into a bare
UNAVAILABLE, and calls that need no such dependency would fail too."""
Probe = Callable[[], Awaitable[object]]
_PROBE_TIMEOUT = 2.0


class DependencyHealth:
    def __init__(
        self,
        services: Sequence[str],
        probes: Mapping[str, Probe],
        metrics: Metrics,
        watched: Mapping[str, Probe] | None = None,
    ) -> None:
        self.servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._services = tuple(services)
        self._probes = dict(probes)
        self._watched = watched if watched is not None else {}
        self._metrics = metrics
        self.failures: dict[str, str] = {}
        """Why each unreachable dependency failed its last probe; empty while SERVING."""
        self.degraded: dict[str, str] = {}
        """Why each unreachable watched dependency failed its last probe."""

    async def probe(self) -> bool:
        everything = {**self._watched, **self._probes}
        results = await asyncio.gather(*(self._run(name, probe) for name, probe in everything.items()))
        degraded = {name: error for name, error in results if error is not None and name not in self._probes}
        if degraded.keys() != self.degraded.keys():
            if degraded:
                log.warning("watched dependencies unreachable", failures=degraded)
            else:
                log.info("watched dependencies reachable again")
        self.degraded = degraded
        failures = {name: error for name, error in results if error is not None and name in self._probes}
        if failures != self.failures:
            if failures:
                log.warning("dependencies unreachable", failures=failures)
            else:
                log.info("dependencies reachable again")
        self.failures = failures
        status = health_pb2.HealthCheckResponse.NOT_SERVING if failures else health_pb2.HealthCheckResponse.SERVING
        for name in ("", *self._services):
            await self.servicer.set(name, status)
        await self.servicer.set(ACCEPTING, health_pb2.HealthCheckResponse.SERVING)
        return not failures

    async def run(self, interval: float, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            await self.probe()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), interval)

    async def _run(self, name: str, probe: Probe) -> tuple[str, str | None]:
        try:
            await asyncio.wait_for(probe(), _PROBE_TIMEOUT)
        except Exception as error:  # any failure means unreachable, whatever the client raised
            self._metrics.dependency_up.labels(name).set(0)
            return name, f"{type(error).__name__}: {error}"[:200]
        self._metrics.dependency_up.labels(name).set(1)
        return name, None
