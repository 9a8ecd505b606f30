"""The Envoy configuration of the edge, derived from the contracts: REST/JSON is transcoded to
gRPC, and only methods whose access is not internal get a route, so an internal method is
unreachable through the edge over REST and over gRPC alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.errors import DOMAIN
from mesh.services import CONTRACT_SERVICES, RATELIMIT, SERVICES
from mesh.tls import dns_name

DESCRIPTOR_SET = Path(__file__).resolve().parent.parent / "envoy" / "invitemesh.pb"
_UPSTREAM_TIMEOUT = "15s"
RATE_LIMIT_DOMAIN = "invitemesh"


def edge_routes() -> list[dict[str, Any]]:
    """One exact-path route per method callable from outside, to its service's cluster."""
    cluster_of = {spec.grpc_service: spec.name for spec in SERVICES}
    routes: list[dict[str, Any]] = []
    for service in SERVICE_DESCRIPTORS:
        for method in service.methods:
            path = full_method_name(method)
            rule = access_rule(path)
            if rule is None or rule.audience in (Audience.INTERNAL, Audience.UNSPECIFIED):
                continue
            routes.append(
                {
                    "match": {"path": path},
                    "route": {
                        "cluster": cluster_of[service.full_name],
                        "timeout": _UPSTREAM_TIMEOUT,
                        # What ratelimit_svc counts: this method, per client address.
                        "rate_limits": [
                            {
                                "actions": [
                                    {"generic_key": {"descriptor_key": "route", "descriptor_value": path}},
                                    {"remote_address": {}},
                                ]
                            }
                        ],
                    },
                }
            )
    return routes


@dataclass(frozen=True)
class UpstreamTls:
    """Envoy's client certificate towards the services, and the CA it trusts them by."""

    certificate: Path
    private_key: Path
    ca: Path


def envoy_config(
    *,
    host: str,
    port: int,
    admin_port: int,
    upstreams: Mapping[str, tuple[str, int]],
    descriptor_set: Path = DESCRIPTOR_SET,
    tls: UpstreamTls | None = None,
) -> dict[str, Any]:
    """The whole bootstrap; `upstreams` maps service name to its gRPC address."""
    return {
        "admin": {"address": _socket(host, admin_port)},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": _socket(host, port),
                    "filter_chains": [{"filters": [_http_connection_manager(descriptor_set)]}],
                }
            ],
            "clusters": [_cluster(name, address, tls) for name, address in upstreams.items()],
        },
    }


def _http_connection_manager(descriptor_set: Path) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
            ".HttpConnectionManager",
            "stat_prefix": "edge",
            "codec_type": "AUTO",
            "generate_request_id": True,
            # The client's own address, in x-envoy-external-address, for per-client budgets.
            "use_remote_address": True,
            "route_config": {
                "name": "edge",
                "virtual_hosts": [{"name": "invitemesh", "domains": ["*"], "routes": edge_routes()}],
            },
            "local_reply_config": {"mappers": [_rate_limited_reply()]},
            "http_filters": [
                {
                    "name": "envoy.filters.http.grpc_json_transcoder",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_json_transcoder.v3"
                        ".GrpcJsonTranscoder",
                        "proto_descriptor": str(descriptor_set),
                        "services": [spec.grpc_service for spec in CONTRACT_SERVICES],
                        "convert_grpc_status": True,
                        "print_options": {"always_print_primitive_fields": True},
                        "request_validation_options": {"reject_unknown_method": True},
                    },
                },
                {
                    # After the transcoder: a REST request has its gRPC method's route by now.
                    "name": "envoy.filters.http.ratelimit",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                        "domain": RATE_LIMIT_DOMAIN,
                        "timeout": "0.5s",
                        # ratelimit_svc unreachable: requests pass (each rule's own failure mode
                        # applies when the service answers but its counters are away).
                        "failure_mode_deny": False,
                        "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                        "rate_limited_as_resource_exhausted": True,
                        "rate_limit_service": {
                            "grpc_service": {"envoy_grpc": {"cluster_name": RATELIMIT.name}},
                            "transport_api_version": "V3",
                        },
                    },
                },
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                },
            ],
        },
    }


def _rate_limited_reply() -> dict[str, Any]:
    """Envoy's own 429 as a `google.rpc.Status` in JSON, like every refusal a service makes."""
    return {
        "filter": {
            "status_code_filter": {
                "comparison": {"op": "EQ", "value": {"default_value": 429, "runtime_key": "edge.rate_limited_status"}}
            }
        },
        "body_format_override": {
            "json_format": {
                "code": 8,
                "message": "too many requests from this address; see x-ratelimit-reset",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMITED", "domain": DOMAIN}
                ],
            },
            "content_type": "application/json",
        },
    }


def _cluster(name: str, address: tuple[str, int], tls: UpstreamTls | None) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(*address)}}]}],
        },
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


def _socket(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}
