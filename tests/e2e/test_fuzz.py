"""The REST surface fuzzed through the edge with schemathesis, from the OpenAPI document the edge
serves (issue 15.5): requests made from every public and user operation's schema, user ones with
a real access token. No answer may be a server error; every answer must be what the document
says (status, content type, schema); every refusal must be a JSON `google.rpc.Status` with one
`ErrorInfo`. Operations of services not built yet (admin_svc, chain_svc) answer
METHOD_NOT_IMPLEMENTED and are left out until they are."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err
from schemathesis.schemas import APIOperation

from meshctl.edge import OPENAPI_DOCUMENT, OPENAPI_PATH
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import registered_and_verified

pytestmark = pytest.mark.e2e

NOT_BUILT_YET = ("invitemesh.admin.v1.AdminService", "invitemesh.chain.v1.ChainService")
EXAMPLES = 30
"""Per operation: enough to reach every kind of bad input, few enough to keep CI in its time."""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def access_token(mesh: Mesh) -> str:
    (minted,) = json.loads(mesh.ctl("invites", "mint", "--json").stdout)
    return str(
        registered_and_verified(mesh, f"fuzz.{minted['code'][:4].lower()}@example.com", minted["code"])["accessToken"]
    )


@pytest.fixture(scope="module")
def api(mesh: Mesh) -> schemathesis.BaseSchema:
    """The document as the edge serves it, aimed at the edge."""
    with urllib.request.urlopen(f"http://{mesh.edge}{OPENAPI_PATH}", timeout=10) as answer:
        document = json.loads(answer.read())
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=f"http://{mesh.edge}")
    return schema.exclude(tag=list(NOT_BUILT_YET))


Operation = APIOperation[Any, Any, Any, Any]


def _operations_of(schema: schemathesis.BaseSchema) -> list[Operation]:
    found = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        found.append(result.ok())
    return found


def _operations() -> list[Any]:
    """What to fuzz, from the committed document: each operation (`POST /v1/sessions`) with valid
    inputs, and with invalid ones where it takes any."""
    cases = []
    for operation in _operations_of(schemathesis.openapi.from_path(OPENAPI_DOCUMENT)):
        if set(operation.tags or ()) & set(NOT_BUILT_YET):
            continue
        takes_input = operation.body or any(True for _ in operation.iter_parameters())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if takes_input else (GenerationMode.POSITIVE,):
            cases.append(pytest.param(operation.label, mode, id=f"{operation.label}-{mode.value}"))
    return cases


@pytest.mark.parametrize(("label", "mode"), _operations())
def test_no_generated_request_breaks_the_rest_surface(
    api: schemathesis.BaseSchema, access_token: str, label: str, mode: GenerationMode
) -> None:
    (operation,) = [operation for operation in _operations_of(api) if operation.label == label]
    headers = {"authorization": f"Bearer {access_token}"} if operation.security else {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def answered_as_documented(case: schemathesis.Case[Operation]) -> None:
        response = case.call(headers=headers, timeout=30)
        case.validate_response(
            response,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance],
        )
        if response.status_code >= 400:
            _is_a_status_with_one_error_info(response.json())

    answered_as_documented()


def _is_a_status_with_one_error_info(body: Any) -> None:
    assert isinstance(body, dict) and isinstance(body.get("code"), int) and isinstance(body.get("message"), str), body
    infos = [d for d in body.get("details", []) if d.get("@type") == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert len(infos) == 1 and infos[0]["reason"], body
