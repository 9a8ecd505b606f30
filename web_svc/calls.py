"""The mesh's public and user methods, called through the edge on behalf of one browser.

web_svc holds no key the services know and is named in no contract: its calls go in through the
edge's listener for pages (meshctl.edge), which believes the browser address web_svc names in
`x-forwarded-for` because web_svc presents its token there. So the edge's rate limits and every
service's per-client budget count the browser, not web_svc."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from invitemesh.admin.v1 import admin_service_pb2_grpc
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.chain.v1 import chain_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2_grpc

from mesh.clients import WEB_TOKEN_HEADER
from mesh.errors import error_info, field_violations, retry_info

Response = TypeVar("Response")


@dataclass(frozen=True)
class Browser:
    """Whom a call is made for: the browser's address, and its user's access token when signed in."""

    address: str
    access_token: str | None = None


@dataclass
class Refused(Exception):
    """A call the mesh answered with an error: its code, `ErrorInfo.reason` and field violations."""

    code: grpc.StatusCode
    reason: str
    message: str
    violations: dict[str, str] = field(default_factory=dict)
    retry_after: int | None = None
    """Seconds to wait before trying again, whole and at least one (what a Retry-After header says)."""

    @property
    def overloaded(self) -> bool:
        """Refused for load: the same call later may go through."""
        return self.reason == "OVERLOADED"

    def http_status(self, otherwise: int) -> int:
        """The page's status for this refusal: 503 when the mesh is too busy, 429 for a spent
        budget, else `otherwise`."""
        if self.overloaded:
            return 503
        return 429 if self.code is grpc.StatusCode.RESOURCE_EXHAUSTED else otherwise

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> Refused:
        info, retry = error_info(error), retry_info(error)
        return cls(
            code=error.code(),
            reason=info.reason if info else "",
            message=error.details() or "",
            violations={violation.field: violation.description for violation in field_violations(error)},
            retry_after=max(1, math.ceil(retry.retry_delay.ToTimedelta().total_seconds())) if retry else None,
        )


class Mesh:
    """Stubs over one channel to the edge, and `call` to use them for a browser."""

    def __init__(self, edge_address: str, web_token: str, timeout: float) -> None:
        self._channel = grpc.aio.insecure_channel(edge_address)
        self._token = web_token
        self._timeout = timeout
        self.auth = auth_service_pb2_grpc.AuthServiceStub(self._channel)
        self.invite = invite_service_pb2_grpc.InviteServiceStub(self._channel)
        self.admin = admin_service_pb2_grpc.AdminServiceStub(self._channel)
        self.chain = chain_service_pb2_grpc.ChainServiceStub(self._channel)

    async def call(self, method: Callable[..., Awaitable[Response]], request: Any, browser: Browser) -> Response:
        """`method(request)` for `browser`; an error answer raises `Refused`."""
        metadata = [("x-forwarded-for", browser.address), (WEB_TOKEN_HEADER, self._token)]
        if browser.access_token:
            metadata.append(("authorization", f"Bearer {browser.access_token}"))
        try:
            return await method(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as error:
            raise Refused.of(error) from None

    async def close(self) -> None:
        await self._channel.close(None)
