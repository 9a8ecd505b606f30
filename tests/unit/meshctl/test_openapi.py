"""The OpenAPI document of the REST surface (envoy/openapi.json, made by meshctl/openapi.py): a valid
OpenAPI 3.1 document with exactly the public and user methods, each where its HTTP rule puts it,
with protobuf's JSON mapping for its schemas and google.rpc.Status for every refusal."""

from __future__ import annotations

import json
from typing import Any

from google.api import annotations_pb2
from openapi_spec_validator import validate

from mesh.access import Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from meshctl.edge import OPENAPI_DOCUMENT

DOCUMENT: dict[str, Any] = json.loads(OPENAPI_DOCUMENT.read_text())


def _schema(name: str) -> dict[str, Any]:
    return dict(DOCUMENT["components"]["schemas"][name])


def test_the_document_is_valid_openapi_3_1() -> None:
    validate(DOCUMENT)
    assert DOCUMENT["openapi"] == "3.1.0"


def test_it_has_exactly_the_public_and_user_methods_where_their_rules_put_them() -> None:
    expected = {}
    for service in SERVICE_DESCRIPTORS:
        for method in service.methods:
            rule = access_rule(full_method_name(method))
            options = method.GetOptions()
            if rule is None or rule.audience not in (Audience.PUBLIC, Audience.USER):
                continue
            http = options.Extensions[annotations_pb2.http]
            verb = http.WhichOneof("pattern")
            expected[(getattr(http, verb), verb)] = (method.name, rule.audience)
    documented = {
        (path, verb): operation
        for path, operations in DOCUMENT["paths"].items()
        for verb, operation in operations.items()
    }

    assert documented.keys() == expected.keys()
    for key, (name, audience) in expected.items():
        operation = documented[key]
        assert operation["operationId"].endswith(f"_{name}")
        assert ("security" in operation) == (audience is Audience.USER), key
        assert operation["responses"]["default"] == {"$ref": "#/components/responses/Refusal"}
    assert ("/v1/admin/invites", "get") not in documented  # admin methods are not this surface's


def test_schemas_follow_protobufs_json_mapping() -> None:
    register = _schema("invitemesh.auth.v1.RegisterRequest")["properties"]
    code = _schema("invitemesh.invite.v1.InviteCode")["properties"]
    session = _schema("invitemesh.auth.v1.Session")["properties"]
    user = _schema("invitemesh.auth.v1.User")["properties"]

    assert set(register) == {"email", "password", "inviteCode"}
    assert code["maxUses"]["type"] == ["string", "integer"]  # int64 is written as a string
    assert session["accessTokenExpireTime"] == {"type": "string", "format": "date-time"} | {
        "description": session["accessTokenExpireTime"]["description"]
    }
    assert user["state"]["enum"][0] == "USER_STATE_UNSPECIFIED"
    assert _schema("invitemesh.invite.v1.ListMyCodesResponse")["properties"]["codes"]["type"] == "array"
    assert register["inviteCode"]["description"] == "The invite code as typed."


def test_queries_of_get_methods_are_their_fields_by_json_name() -> None:
    listed = DOCUMENT["paths"]["/v1/users/me/invites"]["get"]

    assert [(p["name"], p["in"]) for p in listed["parameters"]] == [
        ("pageSize", "query"),
        ("pageToken", "query"),
        ("view", "query"),
    ]
    assert "requestBody" not in listed


def test_a_refusal_is_a_google_rpc_status() -> None:
    status = _schema("google.rpc.Status")

    assert set(status["properties"]) == {"code", "message", "details"}
    assert DOCUMENT["components"]["responses"]["Refusal"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/google.rpc.Status"
    }
