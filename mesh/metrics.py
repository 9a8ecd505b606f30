"""Prometheus metrics of one process, served on its own port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter(
            "mesh_rpcs",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.rpc_latency = Histogram(
            "mesh_rpc_duration_seconds",
            "RPC handling time, by method.",
            ["method"],
            registry=self.registry,
        )
        self.dependency_up = Gauge(
            "mesh_dependency_up",
            "1 when the dependency answered the last health probe.",
            ["dependency"],
            registry=self.registry,
        )
        self.shed = Counter(
            "mesh_shed_calls",
            "Calls refused at once as OVERLOADED, by cost class.",
            ["cost"],
            registry=self.registry,
        )
        self.admission_limit = Gauge(
            "mesh_admission_limit",
            "Calls of a cost class admitted at once, as the last admission decided.",
            ["cost"],
            registry=self.registry,
        )
        self.breaker_state = Gauge(
            "mesh_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=self.registry,
        )

    def serve(self, host: str, port: int) -> int:
        """Starts the HTTP exporter in a thread; answers the bound port (useful with port 0)."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(server.server_port)
