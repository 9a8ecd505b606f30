"""What Envoy answers by itself (a malformed request, no route, a timeout, a rate limit …), in
the shape the services answer theirs: a `google.rpc.Status` with one `ErrorInfo`, as JSON for
REST clients and in `grpc-status-details-bin` for gRPC and grpc-web ones."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2

from mesh.errors import DOMAIN


@dataclass(frozen=True)
class LocalReply:
    http_status: int
    code: grpc.StatusCode
    reason: str
    message: str
    code_details: str | None = None
    """Only for a reply Envoy gives these response code details (`%RESPONSE_CODE_DETAILS%`);
    listed before the reply for every other answer of its status."""
    retry_after: str | None = None
    """The seconds of its `RetryInfo` (an Envoy command such as `%RESP(X-RATELIMIT-RESET)%`)."""


OVERLOADED_RETRY_AFTER = "1"
"""Seconds the edge tells a client it refused for load to wait, as the services do: it checks
its heap four times a second, and refuses calls that hash by what the services answered in the
last two seconds."""

MALFORMED = LocalReply(
    400, grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST",
    "the request does not fit this method: check its JSON body and query",
)  # fmt: skip
# Every answer Envoy makes by itself, as the `google.rpc.Status` a service would have sent.
LOCAL_REPLIES = (
    MALFORMED,
    LocalReply(404, grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND", "no such route"),
    LocalReply(
        408, grpc.StatusCode.DEADLINE_EXCEEDED, "REQUEST_TIMEOUT",
        "the request did not arrive in time; send it whole at once",
    ),
    LocalReply(413, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_TOO_LARGE", "the request body is too large"),
    LocalReply(
        415, grpc.StatusCode.INVALID_ARGUMENT, "UNSUPPORTED_MEDIA_TYPE",
        "send the body as application/json (or gRPC, or grpc-web)",
    ),
    LocalReply(
        429, grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED",
        "too many requests from this address; see x-ratelimit-reset",
        # Both limiters set x-ratelimit-reset (seconds) on their refusals.
        retry_after="%RESP(X-RATELIMIT-RESET)%",
    ),
    LocalReply(
        431, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_HEADERS_TOO_LARGE", "the request headers are too large"
    ),
    # The overload manager's refusal, and calls that hash refused before they reach a service
    # that refuses most of them (envoy/edge.yaml): as the services refuse a call for load.
    *(
        LocalReply(
            503, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", "the edge is at capacity; try again shortly",
            code_details=details,
            retry_after=OVERLOADED_RETRY_AFTER,
        )
        for details in ("overload", "denied_by_admission_control")
    ),
    LocalReply(503, grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE", "the service is unavailable; try again later"),
    LocalReply(504, grpc.StatusCode.DEADLINE_EXCEEDED, "SERVICE_TIMEOUT", "the service did not answer in time"),
)  # fmt: skip
# Whatever else Envoy answers by itself (any status from 400 up): still JSON, never a text/plain page.
OTHER_LOCAL_REPLY = LocalReply(400, grpc.StatusCode.UNKNOWN, "EDGE_REFUSED", "%RESPONSE_CODE_DETAILS%")


def local_reply_mappers() -> list[dict[str, Any]]:
    """gRPC and grpc-web clients first: their answer is a status in headers, whose code Envoy
    would otherwise derive from the HTTP status (a 504 as UNAVAILABLE) with the JSON body for its
    message; REST clients get the JSON."""
    replies = [*((reply, "EQ") for reply in LOCAL_REPLIES), (OTHER_LOCAL_REPLY, "GE")]
    return [
        *(_grpc_reply_mapper(comparison, reply) for reply, comparison in replies),
        *(_local_reply_mapper(comparison, reply) for reply, comparison in replies),
    ]


def _status_filter(comparison: str, reply: LocalReply) -> dict[str, Any]:
    details = f"_{reply.code_details}" if reply.code_details else ""
    status = {
        "default_value": reply.http_status,
        "runtime_key": f"edge.local_reply_{comparison.lower()}_{reply.http_status}{details}",
    }
    by_status = {"status_code_filter": {"comparison": {"op": comparison, "value": status}}}
    if reply.code_details is None:
        return by_status
    # The overload manager sets no response flag; its refusal is told apart by its details.
    by_details = {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": f"response.code_details == {json.dumps(reply.code_details)}",
            },
        }
    }
    return {"and_filter": {"filters": [by_status, by_details]}}


def _local_reply_mapper(comparison: str, reply: LocalReply) -> dict[str, Any]:
    mapper: dict[str, Any] = {"filter": _status_filter(comparison, reply), "body_format_override": _status_body(reply)}
    if reply.retry_after is not None and reply.retry_after.isdigit():
        # A fixed delay goes in a Retry-After header too (the rate limiters say theirs in
        # x-ratelimit-reset).
        mapper["headers_to_add"] = [
            {"header": {"key": "retry-after", "value": reply.retry_after}, "append_action": "ADD_IF_ABSENT"}
        ]
    return mapper


# Envoy gives a gRPC client's local reply the status the official HTTP-to-gRPC mapping makes of
# its HTTP status (Envoy's httpToGrpcStatus), which no mapper can change (envoyproxy/envoy#14484).
_ENVOYS_GRPC_STATUS = {
    400: grpc.StatusCode.INTERNAL,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.UNAVAILABLE,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}


@dataclass(frozen=True)
class GrpcStatus:
    code: int
    message: str
    details: str
    """The serialized `google.rpc.Status`, base64: `grpc-status-details-bin`."""


def grpc_status(reply: LocalReply, code: grpc.StatusCode) -> GrpcStatus:
    status = status_pb2.Status(code=code.value[0], message=reply.message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(reason=reply.reason, domain=DOMAIN))
    return GrpcStatus(code.value[0], reply.message, base64.b64encode(status.SerializeToString()).decode())


def _grpc_reply_mapper(comparison: str, reply: LocalReply) -> dict[str, Any]:
    """The same refusal for a gRPC or grpc-web client: the status Envoy gives it, its message
    without any JSON, and the `google.rpc.Status` with the `ErrorInfo` in `grpc-status-details-bin`,
    as the services send theirs."""
    grpc_request = {
        "header_filter": {
            "header": {"name": "content-type", "string_match": {"prefix": "application/grpc", "ignore_case": True}}
        }
    }
    # A REST request the transcoder turned into gRPC says application/grpc too; it keeps its path.
    not_transcoded = {
        "header_filter": {"header": {"name": "x-envoy-original-path", "present_match": True, "invert_match": True}}
    }
    status = grpc_status(reply, _ENVOYS_GRPC_STATUS.get(reply.http_status, grpc.StatusCode.UNKNOWN))
    return {
        "filter": {"and_filter": {"filters": [grpc_request, not_transcoded, _status_filter(comparison, reply)]}},
        "headers_to_add": [
            {
                "header": {"key": "grpc-status-details-bin", "value": status.details},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }
        ],
        "body_format_override": {"text_format": reply.message},
    }


def _status_body(reply: LocalReply) -> dict[str, Any]:
    details: list[dict[str, Any]] = [
        {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reply.reason, "domain": DOMAIN}
    ]
    if reply.retry_after is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{reply.retry_after}s"})
    return {
        "json_format": {"code": reply.code.value[0], "message": reply.message, "details": details},
        "content_type": "application/json",
    }
