"""Who the client of a served call is, and whether the call came through the edge.

Envoy at the edge sets `x-envoy-external-address` to the client's address (overwriting what a
client sent), and per-client budgets count that address. The header is believed only from the
edge itself: under mutual TLS (`MESH_TLS=1`) from the holder of the edge's certificate, else from
a caller that presents the edge token (`x-mesh-edge`, derived from the KEK, added by Envoy to
every request and never shown to clients). From anyone else the header is ignored, and the
client is the peer's own address.
"""

from __future__ import annotations

import base64
import contextvars
import hmac
from dataclasses import dataclass
from typing import Any

from mesh.sealing import derive_key

EXTERNAL_ADDRESS = "x-envoy-external-address"
EDGE_TOKEN_HEADER = "x-mesh-edge"  # noqa: S105 - the header's name, not a token
WEB_TOKEN_HEADER = "x-mesh-web"  # noqa: S105 - the header's name, not a token
"""What web_svc presents to the edge's listener for its calls on a browser's behalf."""
EDGE_NAME = "envoy"
"""The edge's name among the mesh's certificates (mesh.tls)."""


def edge_token(kek: bytes) -> str:
    return _derived_token(kek, "edge token v1")


def web_token(kek: bytes) -> str:
    return _derived_token(kek, "web token v1")


def _derived_token(kek: bytes, purpose: str) -> str:
    return base64.urlsafe_b64encode(derive_key(kek, purpose)).decode().rstrip("=")


@dataclass(frozen=True)
class Client:
    address: str
    via_edge: bool
    """The call came from the edge (a person's request, or Envoy asking ratelimit_svc)."""


# A frozen dataclass: sharing the default is safe.
current_client: contextvars.ContextVar[Client] = contextvars.ContextVar(
    "current_client",
    default=Client("unknown", via_edge=False),  # noqa: B039
)


def client_address() -> str:
    """The address of the served call's client, as `EdgeRecognition` told it."""
    return current_client.get().address


class EdgeRecognition:
    """Tells a call from the edge from any other; `tls`: by the edge's certificate, else by its
    token (None: no caller is taken for the edge)."""

    def __init__(self, tls: bool, token: str | None) -> None:
        self._tls = tls
        self._token = token.encode() if token else None

    def client_of(self, context: Any) -> Client:
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        via_edge = self._from_edge(context, metadata)
        external = metadata.get(EXTERNAL_ADDRESS, "")
        return Client(external if via_edge and external else _peer_address(context), via_edge)

    def _from_edge(self, context: Any, metadata: dict[str, str]) -> bool:
        if self._tls:
            return list(context.auth_context().get("x509_common_name", ())) == [EDGE_NAME.encode()]
        presented = metadata.get(EDGE_TOKEN_HEADER)
        if self._token is None or presented is None:
            return False
        return hmac.compare_digest(presented.encode(), self._token)


def _peer_address(context: Any) -> str:
    peer: str = context.peer() or "unknown"
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555" → the address without the port
    address = peer.partition(":")[2].rpartition(":")[0]
    return address.strip("[]") or peer
