"""`serve()` for any invitemesh service: a grpc.aio server with tracing, request context,
access control, truthful health, reflection, metrics and a graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import grpc
import redis.asyncio as aioredis
import structlog
import uvloop
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.access import AccessInterceptor, CallVerifier, TokenVerifier
from mesh.admission import AdmissionInterceptor
from mesh.calls import CallInterceptor
from mesh.channels import Peers
from mesh.clients import EdgeRecognition, edge_token
from mesh.db import DriverPool, create_engine, ping
from mesh.health import DependencyHealth, Probe
from mesh.jobs import PeriodicJob, Worker, run_periodically
from mesh.keys import KeyringError, TrustStore, load_kek
from mesh.logs import configure_logging
from mesh.metrics import Metrics
from mesh.passwords import HASHING
from mesh.redis import KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.services import ServiceSpec
from mesh.settings import Settings
from mesh.signing import CallSigner, SignatureVerifier, signer_for
from mesh.telemetry import configure_tracing, otlp_exporter, server_tracing
from mesh.tls import server_credentials
from mesh.tokens import FetchKeys, verifier_for
from mesh.windows import WindowCounters

log = structlog.get_logger("mesh.server")


@dataclass(frozen=True)
class ServiceRuntime:
    """What a service's servicers are built with."""

    spec: ServiceSpec
    settings: Settings
    engine: AsyncEngine
    driver: DriverPool
    """Straight asyncpg connections for the few statements on a service's busiest path (mesh.db)."""
    redis: aioredis.Redis
    pipe: RedisPipe
    """Redis without redis-py's per-command cost, for the commands on a service's busiest paths."""
    counters: WindowCounters
    """Fixed-window counts over `pipe`: request budgets, throttles, rate limits."""
    keys: KeySpace
    metrics: Metrics
    peers: Peers
    """Signed channels to the other services."""
    jobs: list[PeriodicJob] = field(default_factory=list)
    """Periodic work to run while serving; servicers add theirs when built."""
    workers: list[Worker] = field(default_factory=list)
    """Long-running work to run while serving (mail senders); stopped before the server."""
    closing: list[Callable[[], Awaitable[object]]] = field(default_factory=list)
    """What a service's servicers opened and the server closes when it has stopped (clients of
    other dependencies)."""
    watched: dict[str, Probe] = field(default_factory=dict)
    """Dependencies a service survives in part, probed and reported by health (mesh.health)."""
    published_keys: list[FetchKeys] = field(default_factory=list)
    """Filled by a service that issues tokens (its contract publishes their key set): the keys,
    read in process rather than by a call to itself."""


AddServicers = Callable[[grpc.aio.Server, ServiceRuntime], None]


class MeshServer:
    def __init__(
        self,
        spec: ServiceSpec,
        add_servicers: AddServicers,
        settings: Settings,
        *,
        calls: CallVerifier | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = Metrics()
        self.trust = trust = TrustStore(settings.resolved_keys_dir / "trust.json", settings.trust_reload_interval)
        self.runtime = ServiceRuntime(
            spec=spec,
            settings=settings,
            engine=create_engine(settings, spec.schema, spec.name),
            driver=DriverPool(settings, spec.schema, spec.name),
            redis=(redis := create_redis(settings)),
            pipe=(pipe := RedisPipe(redis)),
            counters=WindowCounters(pipe),
            keys=KeySpace(spec.redis_prefix),
            metrics=self.metrics,
            peers=Peers(settings, spec.name, _signer(spec, settings, trust), self.metrics.breaker_state),
        )
        self.health = DependencyHealth(
            spec.grpc_services,
            {"postgres": lambda: ping(self.runtime.engine), "redis": self.runtime.redis.ping},
            self.metrics,
            self.runtime.watched,
        )
        # A verifier made here holds a Redis connection of its own, closed with the server.
        self._signatures: SignatureVerifier | None = None
        if calls is None:
            calls = self._signatures = SignatureVerifier(
                trust,
                self.runtime.redis,
                self.runtime.keys,
                settings.clock_skew,
                settings.signature_flush_interval,
            )
        exporting = settings.otlp_endpoint is not None
        self._server = grpc.aio.server(
            interceptors=[
                *([server_tracing()] if exporting else []),
                CallInterceptor(self.metrics, _edge_recognition(settings), continues_traces=not exporting),
                # Before access: a call refused for load costs no token or signature check.
                AdmissionInterceptor(self.metrics, HASHING, settings.hash_wait_target, settings.cheap_calls_limit),
                AccessInterceptor(
                    calls,
                    tokens
                    or verifier_for(
                        self.runtime.peers,
                        self.runtime.pipe,
                        settings.jwks_refresh_interval,
                        self._published_keys,
                    ),
                ),
            ]
        )
        add_servicers(self._server, self.runtime)
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self._server)
        reflection.enable_server_reflection(
            (*spec.grpc_services, health.SERVICE_NAME, reflection.SERVICE_NAME), self._server
        )
        self.port = 0
        self.metrics_port = 0
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._worker_tasks: list[asyncio.Task[None]] = []

    def _published_keys(self) -> FetchKeys | None:
        return next(iter(self.runtime.published_keys), None)

    async def start(self) -> None:
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        if self.settings.tls:
            credentials = server_credentials(self.settings.resolved_certs_dir, self.spec.name)
            self.port = self._server.add_secure_port(address, credentials)
        else:
            self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {self.settings.host}:{self.settings.grpc_port}")
        await self._server.start()
        self.metrics_port = self.metrics.serve(self.settings.host, self.settings.metrics_port)
        await self.health.probe()
        self._background = [
            asyncio.create_task(self.health.run(self.settings.health_interval, self._stopping)),
            *(asyncio.create_task(run_periodically(job, self._stopping)) for job in self.runtime.jobs),
        ]
        self._worker_tasks = [asyncio.create_task(worker.run()) for worker in self.runtime.workers]

    async def stop(self, grace: float | None = None) -> None:
        """Refuses new calls at once and lets in-flight ones finish within `grace` seconds."""
        self._stopping.set()
        for task in self._background:
            task.cancel()
        winding_down = asyncio.ensure_future(self._wind_down())
        # Awaited here, not scheduled: its first step, which refuses every new call, runs before
        # this coroutine yields to anything else.
        await self._server.stop(self.settings.grace_period if grace is None else grace)
        await winding_down
        await self.runtime.peers.close()
        for close in self.runtime.closing:
            await close()
        if self._signatures is not None:
            await self._signatures.close()
        await self.runtime.driver.close()
        await self.runtime.engine.dispose()
        await self.runtime.pipe.close()
        await self.runtime.redis.aclose()

    async def _wind_down(self) -> None:
        """Health says NOT_SERVING, workers finish what they hold, background tasks end."""
        await self.health.servicer.enter_graceful_shutdown()
        for worker in self.runtime.workers:
            await worker.stop()
        await asyncio.gather(*self._worker_tasks, *self._background, return_exceptions=True)


def _edge_recognition(settings: Settings) -> EdgeRecognition:
    if settings.tls:
        return EdgeRecognition(tls=True, token=None)
    try:
        return EdgeRecognition(tls=False, token=edge_token(load_kek(settings)))
    except KeyringError as error:
        log.warning("no call will be taken for the edge's", why=str(error))
        return EdgeRecognition(tls=False, token=None)


def _signer(spec: ServiceSpec, settings: Settings, trust: TrustStore) -> CallSigner | None:
    try:
        return signer_for(spec.name, settings, trust)
    except KeyringError as error:
        log.warning("outgoing internal calls will be unsigned, so refused", why=str(error))
        return None


async def serve(spec: ServiceSpec, add_servicers: AddServicers, settings: Settings | None = None) -> None:
    """Serves until SIGTERM or SIGINT, then drains in-flight calls for `MESH_GRACE_PERIOD` seconds."""
    settings = settings or Settings()
    configure_logging(spec.name, settings.log_level)
    configure_tracing(spec.name, otlp_exporter(settings.otlp_endpoint))
    server = MeshServer(spec, add_servicers, settings)
    await server.start()
    log.info("serving", port=server.port, metrics_port=server.metrics_port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    stopped = asyncio.ensure_future(server.stop())
    # Said once its first step has run, which refuses every new call: whoever reads "draining"
    # may count on a call made after it being refused.
    await asyncio.sleep(0)
    log.info("draining", grace_period=settings.grace_period)
    await stopped
    log.info("stopped")


def run(spec: ServiceSpec, add_servicers: AddServicers) -> None:
    uvloop.run(serve(spec, add_servicers))
