"""What `meshctl` reads beyond the shared settings: where the local stack listens, and the
edge's limits it renders into Envoy's configuration."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from mesh.settings import Settings

MAX_REPLICAS = 5


class StackSettings(Settings):
    port_base: int = Field(default=50050, ge=1024, le=65000)
    """under `meshctl`: services on base+1…6, web_svc base+7, PostgreSQL base+10, Redis base+11,
    SMTP base+12, the development chain base+13, metrics base+21…26; replica k (from 0) of each
    service and its metrics 30·k above those"""
    edge_port: int = Field(default=8080, ge=1, le=65535)
    """Envoy's listener (REST and gRPC)"""
    edge_admin_port: int = Field(default=9901, ge=1, le=65535)
    """Envoy's admin interface, always on 127.0.0.1"""
    edge_pages_port: int = Field(default=8081, ge=1, le=65535)
    """Envoy's listener for web_svc's calls on a browser's behalf, always on 127.0.0.1"""
    edge_cors_origins: list[str] = Field(default_factory=list)
    """JSON list of origins browsers may call the edge from, e.g. `["https://app.example.com"]`;
    none by default"""
    edge_max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    """larger request bodies get a 413 from Envoy"""
    edge_max_request_headers_kb: int = Field(default=16, ge=1, le=8192)
    """larger request headers get a 431 from Envoy"""
    edge_backstop_per_second: int = Field(default=2000, gt=0)
    """Envoy's own token bucket for the whole edge, which holds even when ratelimit_svc is
    unreachable"""
    edge_headers_timeout: float = Field(default=5.0, gt=0)
    """seconds a client may take to send a request's headers; then Envoy lets it go"""
    edge_request_timeout: float = Field(default=5.0, gt=0)
    """seconds a client may take to send a whole request, body included; then a 408"""
    edge_max_connections: int = Field(default=10_000, gt=0)
    """client connections Envoy holds open at once; past it, new ones are closed at once"""
    edge_max_heap_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024 * 1024)
    """Envoy's heap budget: near it Envoy stops keeping connections alive, then answers new
    requests 503 until it has shrunk"""

    replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    """processes `meshctl up` runs of every service and of web_svc (`--replicas`); the edge and
    the services' channels balance across them"""
    restart_backoff: float = Field(default=0.5, gt=0)
    """seconds `meshctl up` waits before it starts a part again that exited; doubled for each
    further exit within `MESH_RESTART_WINDOW`"""
    restart_backoff_cap: float = Field(default=30.0, gt=0)
    """the longest such wait, in seconds"""
    restart_limit: int = Field(default=5, ge=0)
    """exits within `MESH_RESTART_WINDOW` after which a part is started again; one more and it is
    reported down and left so"""
    restart_window: float = Field(default=120.0, gt=0)
    """seconds over which a part's exits are counted"""

    @field_validator("edge_cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"an origin is a scheme and a host, such as https://app.example.com, not {origin!r}")
        return origins
