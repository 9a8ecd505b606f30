"""What Envoy answers by itself (a malformed request, no route, a timeout, a rate limit …), in
the shape the services answer theirs: a `google.rpc.Status` with one `ErrorInfo`, as JSON for
REST clients and in `grpc-status-details-bin` for gRPC and grpc-web ones."""

from __future__ import annotations

import base64
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
    ),
    LocalReply(
        431, grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_HEADERS_TOO_LARGE", "the request headers are too large"
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
    status = {
        "default_value": reply.http_status,
        "runtime_key": f"edge.local_reply_{comparison.lower()}_{reply.http_status}",
    }
    return {"status_code_filter": {"comparison": {"op": comparison, "value": status}}}


def _local_reply_mapper(comparison: str, reply: LocalReply) -> dict[str, Any]:
    return {"filter": _status_filter(comparison, reply), "body_format_override": _status_body(reply)}


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
    if reply.http_status == 429:
        # Both limiters set x-ratelimit-reset (seconds) on their refusals.
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "%RESP(X-RATELIMIT-RESET)%s"}
        )
    return {
        "json_format": {"code": reply.code.value[0], "message": reply.message, "details": details},
        "content_type": "application/json",
    }
