from typing import TypeVar

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from mesh.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

M = TypeVar("M", bound=Message)


def _unpack(status: status_pb2.Status, kind: type[M]) -> list[M]:
    found: list[M] = []
    for detail in status.details:
        if detail.Is(kind.DESCRIPTOR):
            message = kind()
            detail.Unpack(message)
            found.append(message)
    return found


def test_domain_error_becomes_status_with_exactly_one_error_info() -> None:
    status = FailedPrecondition("INVITE_CODE_EXHAUSTED", "this code has no uses left", {"max_uses": "5"}).to_status()

    infos = _unpack(status, error_details_pb2.ErrorInfo)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    assert status.message == "this code has no uses left"
    assert len(infos) == 1
    assert infos[0].reason == "INVITE_CODE_EXHAUSTED"
    assert infos[0].domain == "invitemesh"
    assert dict(infos[0].metadata) == {"max_uses": "5"}
    assert len(status.details) == 1


def test_bad_input_carries_field_violations_and_one_error_info() -> None:
    error = InvalidArgument(
        [FieldViolation("email", "not an email address"), FieldViolation("password", "shorter than 12")]
    )

    status = error.to_status()

    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert [info.reason for info in _unpack(status, error_details_pb2.ErrorInfo)] == ["INVALID_ARGUMENT"]
    (bad_request,) = _unpack(status, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("email", "not an email address"),
        ("password", "shorter than 12"),
    ]
    assert "email: not an email address" in status.message


@pytest.mark.parametrize("reason", ["not_upper", "TRAILING_", "", "HAS SPACE", "A" * 64])
def test_reason_must_be_upper_snake_case(reason: str) -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        NotFound(reason, "x")


def test_invalid_argument_needs_a_violation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        InvalidArgument([])
