import base64
import re
from typing import Any

import pytest
from google.rpc import error_details_pb2, status_pb2
from invitemesh.mesh.v1 import edge_pb2

from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name, idempotent, method_descriptor
from mesh.services import CONTRACT_SERVICES, RATELIMIT, SERVICES, WEB
from meshctl.edge import (
    DEFAULT_TIMEOUT,
    DESCRIPTOR_SET,
    NO_ROUTE_CLUSTER,
    WEB_CLUSTER,
    EdgeLimits,
    Pages,
    edge_limits,
    edge_routes,
    envoy_config,
)
from meshctl.settings import StackSettings

UPSTREAMS = {spec.name: [("127.0.0.1", 1)] for spec in SERVICES}


def _method_routes() -> list[dict[str, Any]]:
    return [route for route in edge_routes() if "path" in route["match"] and "route" in route]


def _manager(**arguments: Any) -> dict[str, Any]:
    config = envoy_config(host="127.0.0.1", port=8080, admin_port=9901, upstreams=UPSTREAMS, **arguments)
    return dict(config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"])


def _filter(manager: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f["typed_config"] for f in manager["http_filters"] if f["name"] == name]
    return dict(found)


def test_routes_every_outside_method_and_no_internal_one() -> None:
    routed = {route["match"]["path"] for route in _method_routes()}
    methods = {full_method_name(m) for service in SERVICE_DESCRIPTORS for m in service.methods}
    internal = {m for m in methods if access_rule(m).audience is Audience.INTERNAL}  # type: ignore[union-attr]

    assert routed == methods - internal
    assert "/invitemesh.invite.v1.InviteService/HoldCode" not in routed
    assert "/invitemesh.invite.v1.InviteService/CheckCode" in routed


def test_the_edge_retries_only_methods_the_contracts_call_idempotent_and_only_when_unavailable() -> None:
    retried = {route["match"]["path"]: route["route"].get("retry_policy") for route in _method_routes()}

    assert retried["/invitemesh.auth.v1.AuthService/Register"] is None
    assert retried["/invitemesh.auth.v1.AuthService/Login"] is None
    for path in ("/invitemesh.invite.v1.InviteService/CheckCode", "/invitemesh.auth.v1.AuthService/GetMe"):
        assert retried[path]["retry_on"] == "unavailable,connect-failure,refused-stream"
    # A path is retried exactly when its method is declared idempotent.
    assert {path for path, policy in retried.items() if policy} == {
        path
        for path in retried
        if idempotent(method_descriptor(path))  # type: ignore[arg-type]
    }


def test_each_route_goes_to_its_services_cluster_and_anything_else_nowhere() -> None:
    cluster_of = {service: spec.name for spec in SERVICES for service in spec.grpc_services}
    for route in _method_routes():
        service = route["match"]["path"].split("/")[1]
        assert route["route"]["cluster"] == cluster_of[service]
    last = edge_routes()[-1]
    assert last["match"] == {"prefix": "/"}
    assert last["route"]["cluster"] == NO_ROUTE_CLUSTER not in UPSTREAMS


def test_each_route_waits_as_long_as_its_contract_says_and_tells_the_service_so() -> None:
    routes = {route["match"]["path"]: route for route in _method_routes()}
    declared = {
        path
        for path in routes
        if (method := method_descriptor(path)) is not None and method.GetOptions().HasExtension(edge_pb2.edge)
    }

    # The contracts give the methods that hash a password (or wait on another service) longer.
    assert declared == {
        *(f"/invitemesh.auth.v1.AuthService/{name}" for name in ("Register", "VerifyEmail", "Login", "ResetPassword")),
        *(f"/invitemesh.admin.v1.AdminService/{name}" for name in ("CreateSession", "CreateAdmin", "VerifyAuditLog")),
    }
    for path, route in routes.items():
        seconds = 15 if path in declared else DEFAULT_TIMEOUT
        assert route["route"]["timeout"] == f"{seconds}s", path
        assert route["request_headers_to_add"][0]["header"] == {"key": "grpc-timeout", "value": f"{seconds}S"}


def test_config_transcodes_every_service_and_converts_error_details() -> None:
    manager = _manager()

    transcoder = _filter(manager, "envoy.filters.http.grpc_json_transcoder")
    assert set(transcoder["services"]) == {spec.grpc_service for spec in CONTRACT_SERVICES}
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["proto_descriptor"] == str(DESCRIPTOR_SET)
    assert DESCRIPTOR_SET.exists()


def test_a_cluster_per_service_each_health_checked_over_grpc() -> None:
    config = envoy_config(host="127.0.0.1", port=8080, admin_port=9901, upstreams=UPSTREAMS)

    clusters = config["static_resources"]["clusters"]
    assert {c["name"] for c in clusters} == {spec.name for spec in SERVICES}
    assert all(c["health_checks"][0]["grpc_health_check"] == {} for c in clusters)


def test_every_route_is_counted_per_method_and_client_by_ratelimit_svc() -> None:
    manager = _manager()

    limiter = _filter(manager, "envoy.filters.http.ratelimit")
    assert limiter["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] == RATELIMIT.name
    assert [f["name"] for f in manager["http_filters"]][-1] == "envoy.filters.http.router"
    for route in _method_routes():
        (limits,) = route["route"]["rate_limits"]
        assert limits["actions"] == [
            {"generic_key": {"descriptor_key": "route", "descriptor_value": route["match"]["path"]}},
            {"remote_address": {}},
        ]


def test_every_local_reply_is_a_status_with_an_error_info_as_json_or_as_grpc() -> None:
    mappers = _manager()["local_reply_config"]["mappers"]
    grpc_mappers, json_mappers = mappers[: len(mappers) // 2], mappers[len(mappers) // 2 :]

    assert len(grpc_mappers) == len(json_mappers)
    for mapper in grpc_mappers:
        assert "text_format" in mapper["body_format_override"]
    for mapper in json_mappers:
        body = mapper["body_format_override"]
        assert body["content_type"] == "application/json"
        assert body["json_format"]["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    for grpc_mapper, json_mapper in zip(grpc_mappers, json_mappers, strict=True):
        added = {entry["header"]["key"]: entry["header"]["value"] for entry in grpc_mapper["headers_to_add"]}
        details = status_pb2.Status.FromString(base64.b64decode(added["grpc-status-details-bin"]))
        info = error_details_pb2.ErrorInfo()
        assert details.details[0].Unpack(info)
        json_body = json_mapper["body_format_override"]["json_format"]
        assert info.reason == json_body["details"][0]["reason"]
        assert details.message == json_body["message"] == grpc_mapper["body_format_override"]["text_format"]
        assert grpc_mapper["filter"]["and_filter"]["filters"][-1] == json_mapper["filter"]
    # The last one catches whatever the others do not.
    assert mappers[-1]["filter"]["status_code_filter"]["comparison"]["op"] == "GE"


def test_the_admin_interface_listens_on_loopback_whatever_the_host() -> None:
    config = envoy_config(host="0.0.0.0", port=8080, admin_port=9901, upstreams=UPSTREAMS)

    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    assert config["static_resources"]["listeners"][0]["address"]["socket_address"]["address"] == "0.0.0.0"


def test_cors_allows_the_configured_origins_only() -> None:
    with_origins = _manager(limits=EdgeLimits(cors_origins=("https://app.example.com",)))
    without = _manager()

    (host,) = with_origins["route_config"]["virtual_hosts"]
    policy = host["typed_per_filter_config"]["envoy.filters.http.cors"]
    assert policy["allow_origin_string_match"] == [{"exact": "https://app.example.com"}]
    assert "typed_per_filter_config" not in without["route_config"]["virtual_hosts"][0]


def test_edge_limits_come_from_the_settings() -> None:
    settings = StackSettings(
        edge_cors_origins=["https://a.example"], edge_max_request_bytes=2048, edge_backstop_per_second=9
    )

    assert edge_limits(settings) == EdgeLimits(
        max_request_bytes=2048, max_request_headers_kb=16, backstop_per_second=9, cors_origins=("https://a.example",)
    )
    assert edge_limits(StackSettings(edge_max_connections=7, edge_request_timeout=1.5)) == EdgeLimits(
        max_connections=7, request_timeout=1.5
    )


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/", "ftp://x.example", "*"])
def test_an_origin_must_be_a_scheme_and_a_host(origin: str) -> None:
    with pytest.raises(ValueError, match="an origin"):
        StackSettings(edge_cors_origins=[origin])


PAGES = Pages(upstream=[("127.0.0.1", 2)], calls_port=8081, token="the-web-token")


def _listeners(**arguments: Any) -> dict[str, dict[str, Any]]:
    config = envoy_config(host="0.0.0.0", port=8080, admin_port=9901, upstreams=UPSTREAMS, **arguments)
    return {listener["name"]: listener for listener in config["static_resources"]["listeners"]}


def test_with_pages_every_path_outside_the_api_goes_to_web_svc_as_a_page() -> None:
    routes = edge_routes(pages=True)
    page = routes[-1]
    api_and_grpc = [route for route in routes[len(_method_routes()) + 1 : -1]]

    assert [route["match"].get("prefix") for route in api_and_grpc] == ["/v1/", "/.well-known/", None]
    assert all(route["route"]["cluster"] == NO_ROUTE_CLUSTER for route in api_and_grpc)
    grpc_path = re.compile(api_and_grpc[-1]["match"]["safe_regex"]["regex"])
    assert grpc_path.fullmatch("/invitemesh.invite.v1.InviteService/HoldCode")
    assert grpc_path.fullmatch("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not any(grpc_path.fullmatch(page) for page in ("/", "/me", "/static/site.css", "/reset-password"))
    assert page["match"] == {"prefix": "/"} and page["route"]["cluster"] == WEB_CLUSTER == WEB.name
    # A form is neither JSON nor gRPC: the transcoder and the request-shape filter stay out.
    assert all(config["disabled"] for config in page["typed_per_filter_config"].values())
    assert set(page["typed_per_filter_config"]) == {"envoy.filters.http.grpc_json_transcoder", "envoy.filters.http.lua"}
    (limits,) = page["route"]["rate_limits"]
    assert limits["actions"] == [
        {"generic_key": {"descriptor_key": "route", "descriptor_value": "pages"}},
        {"remote_address": {}},
    ]


def test_web_svc_calls_through_a_loopback_listener_that_believes_its_address_only_with_its_token() -> None:
    without = _listeners()
    listeners = _listeners(pages=PAGES)

    assert set(without) == {"edge"}
    edge, pages = listeners["edge"], listeners["pages"]
    assert pages["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8081}
    edge_manager = edge["filter_chains"][0]["filters"][0]["typed_config"]
    pages_manager = pages["filter_chains"][0]["filters"][0]["typed_config"]
    assert edge_manager["xff_num_trusted_hops"] == 0
    assert pages_manager["xff_num_trusted_hops"] == 1
    (rbac,) = [f["typed_config"] for f in pages_manager["http_filters"] if f["name"] == "envoy.filters.http.rbac"]
    (policy,) = rbac["rules"]["policies"].values()
    assert policy["principals"] == [{"header": {"name": "x-mesh-web", "string_match": {"exact": "the-web-token"}}}]
    assert "envoy.filters.http.rbac" not in [f["name"] for f in edge_manager["http_filters"]]
    # The token goes no further than the edge.
    assert "x-mesh-web" in pages_manager["route_config"]["request_headers_to_remove"]


def test_web_svc_is_a_cluster_checked_on_its_health_path() -> None:
    config = envoy_config(host="127.0.0.1", port=8080, admin_port=9901, upstreams=UPSTREAMS, pages=PAGES)

    (web,) = [c for c in config["static_resources"]["clusters"] if c["name"] == WEB_CLUSTER]
    assert web["health_checks"][0]["http_health_check"] == {"path": WEB.health_path}
    assert web["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": 2,
    }
