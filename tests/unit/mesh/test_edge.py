from typing import Any

from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.edge import DESCRIPTOR_SET, edge_routes, envoy_config
from mesh.services import CONTRACT_SERVICES, RATELIMIT, SERVICES


def test_routes_every_outside_method_and_no_internal_one() -> None:
    routed = {route["match"]["path"] for route in edge_routes()}
    methods = {full_method_name(m) for service in SERVICE_DESCRIPTORS for m in service.methods}
    internal = {m for m in methods if access_rule(m).audience is Audience.INTERNAL}  # type: ignore[union-attr]

    assert routed == methods - internal
    assert "/invitemesh.invite.v1.InviteService/HoldCode" not in routed
    assert "/invitemesh.invite.v1.InviteService/CheckCode" in routed


def test_each_route_goes_to_its_services_cluster() -> None:
    cluster_of = {spec.grpc_service: spec.name for spec in SERVICES}
    for route in edge_routes():
        service = route["match"]["path"].split("/")[1]
        assert route["route"]["cluster"] == cluster_of[service]


def test_config_transcodes_every_service_and_converts_error_details() -> None:
    config = envoy_config(
        host="127.0.0.1", port=8080, admin_port=9901, upstreams={spec.name: ("127.0.0.1", 1) for spec in SERVICES}
    )

    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    transcoder = _filter(manager, "envoy.filters.http.grpc_json_transcoder")
    assert set(transcoder["services"]) == {spec.grpc_service for spec in CONTRACT_SERVICES}
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["proto_descriptor"] == str(DESCRIPTOR_SET)
    assert DESCRIPTOR_SET.exists()
    assert {c["name"] for c in config["static_resources"]["clusters"]} == {spec.name for spec in SERVICES}


def _filter(manager: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [f["typed_config"] for f in manager["http_filters"] if f["name"] == name]
    return dict(found)


def test_every_route_is_counted_per_method_and_client_by_ratelimit_svc() -> None:
    config = envoy_config(
        host="127.0.0.1", port=8080, admin_port=9901, upstreams={spec.name: ("127.0.0.1", 1) for spec in SERVICES}
    )
    manager = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]

    limiter = _filter(manager, "envoy.filters.http.ratelimit")
    assert limiter["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"] == RATELIMIT.name
    assert [f["name"] for f in manager["http_filters"]][-1] == "envoy.filters.http.router"
    for route in edge_routes():
        (limits,) = route["route"]["rate_limits"]
        assert limits["actions"] == [
            {"generic_key": {"descriptor_key": "route", "descriptor_value": route["match"]["path"]}},
            {"remote_address": {}},
        ]
    (mapper,) = manager["local_reply_config"]["mappers"]
    assert mapper["body_format_override"]["json_format"]["details"][0]["reason"] == "RATE_LIMITED"
