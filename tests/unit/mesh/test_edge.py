from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.edge import DESCRIPTOR_SET, edge_routes, envoy_config
from mesh.services import CONTRACT_SERVICES, SERVICES


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
    transcoder = manager["http_filters"][0]["typed_config"]
    assert set(transcoder["services"]) == {spec.grpc_service for spec in CONTRACT_SERVICES}
    assert transcoder["convert_grpc_status"] is True
    assert transcoder["proto_descriptor"] == str(DESCRIPTOR_SET)
    assert DESCRIPTOR_SET.exists()
    assert {c["name"] for c in config["static_resources"]["clusters"]} == {spec.name for spec in SERVICES}
