"""Domain errors and their wire form: a `google.rpc.Status` with exactly one `ErrorInfo`.

Handlers raise a `MeshError`; the call interceptor turns it into the status. Bad input adds a
`BadRequest` with one field violation per offending field. Messages are for people and must
never carry a secret: they are returned to callers and logged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

DOMAIN = "invitemesh"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"
D = TypeVar("D", bound=Message)
_REASON = re.compile(r"^[A-Z][A-Z0-9_]{0,61}[A-Z0-9]$")


@dataclass(frozen=True)
class FieldViolation:
    field: str
    """Path of the field in the request, in proto names, for example `email`."""
    description: str


class MeshError(Exception):
    """A refusal with a stable machine-readable reason (UPPER_SNAKE_CASE, AIP-193)."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, reason: str, message: str, metadata: Mapping[str, str] | None = None):
        if not _REASON.match(reason):
            raise ValueError(f"error reason {reason!r} is not UPPER_SNAKE_CASE")
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.metadata = dict(metadata or {})

    def details(self) -> list[any_pb2.Any]:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata))
        return [info]

    def to_status(self) -> status_pb2.Status:
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=self.details())

    def headers(self) -> tuple[tuple[str, str], ...]:
        """Metadata sent beside the status (the edge passes it to REST clients as headers)."""
        return ()


class InvalidArgument(MeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self,
        violations: list[FieldViolation],
        reason: str = "INVALID_ARGUMENT",
        message: str | None = None,
    ):
        if not violations:
            raise ValueError("InvalidArgument needs at least one field violation")
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        super().__init__(reason, message or f"invalid request: {summary}")
        self.violations = violations

    def details(self) -> list[any_pb2.Any]:
        bad_request = any_pb2.Any()
        bad_request.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                    for v in self.violations
                ]
            )
        )
        return [*super().details(), bad_request]


class Unauthenticated(MeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(MeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(MeshError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(MeshError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(MeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(MeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class TryAgainLater(ResourceExhausted):
    """A refusal for now, not for good: a `RetryInfo` says in how many seconds to try again, and
    a `retry-after` header says the same to REST clients (the edge passes it on)."""

    def __init__(self, reason: str, message: str, retry_after: float) -> None:
        super().__init__(reason, message)
        # Whole seconds, at least one: what a Retry-After header can say.
        self.retry_after = max(1, math.ceil(retry_after))

    def details(self) -> list[any_pb2.Any]:
        retry = any_pb2.Any()
        delay = duration_pb2.Duration(seconds=self.retry_after)
        retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        return [*super().details(), retry]

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("retry-after", str(self.retry_after)),)


class RateLimited(TryAgainLater):
    """Too many requests from one caller (an address, an email): `RATE_LIMITED`."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__("RATE_LIMITED", message, retry_after)


OVERLOADED_HEADER = "x-mesh-overloaded"
"""Marks an `OVERLOADED` answer for the edge, which answers REST clients 503 instead of the 429 a
RESOURCE_EXHAUSTED status is transcoded to, and drops the mark."""


class Overloaded(TryAgainLater):
    """More calls than the service can answer in time: `OVERLOADED`, refused before any work."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__("OVERLOADED", message, retry_after)

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (*super().headers(), (OVERLOADED_HEADER, "1"))


class PassedOn(MeshError):
    """A refusal answered as someone else first answered it: a peer service's status passed to
    our caller, or the first answer to a request given again to its double submit."""

    def __init__(self, status: status_pb2.Status) -> None:
        info = _unpacked(status.details, error_details_pb2.ErrorInfo)
        super().__init__(info.reason if info and _REASON.match(info.reason) else "UNKNOWN", status.message)
        self.code = grpc.StatusCode(next(c.value for c in grpc.StatusCode if c.value[0] == status.code))  # type: ignore[misc]
        self._status = status

    def to_status(self) -> status_pb2.Status:
        return self._status


def status_of(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The `google.rpc.Status` a failed call carries (its code and message when it has none)."""
    trailing: tuple[tuple[str, str | bytes], ...] = tuple(error.trailing_metadata() or ())  # type: ignore[arg-type]
    for key, value in trailing:
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=error.code().value[0], message=error.details() or "")


class Unavailable(MeshError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(MeshError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(MeshError):
    code = grpc.StatusCode.INTERNAL


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The `ErrorInfo` a failed call carries, for clients and tests."""
    return _unpacked(_details_of(error), error_details_pb2.ErrorInfo)


def retry_info(error: grpc.aio.AioRpcError) -> error_details_pb2.RetryInfo | None:
    """The `RetryInfo` a failed call carries, for clients and tests."""
    return _unpacked(_details_of(error), error_details_pb2.RetryInfo)


def _unpacked(details: Iterable[any_pb2.Any], kind: type[D]) -> D | None:
    for detail in details:
        found = kind()
        if detail.Unpack(found):  # False for a detail of another type
            return found
    return None


def field_violations(error: grpc.aio.AioRpcError) -> list[FieldViolation]:
    """The field violations a failed call carries, for clients and tests."""
    found: list[FieldViolation] = []
    for detail in _details_of(error):
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            found.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
    return found


def _details_of(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    return list(status_of(error).details)
