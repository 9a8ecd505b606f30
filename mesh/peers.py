"""Who is on the other end of a served call."""

from __future__ import annotations

from typing import Any

# Envoy at the edge sets this to the client's address and overwrites whatever a client sent.
EXTERNAL_ADDRESS = "x-envoy-external-address"


def client_address(context: Any) -> str:
    """The calling client's IP: from the edge when the call came through Envoy, else the peer."""
    for key, value in context.invocation_metadata() or ():
        if key == EXTERNAL_ADDRESS and isinstance(value, str) and value:
            return value
    peer: str = context.peer() or "unknown"
    # "ipv4:127.0.0.1:5555" / "ipv6:[::1]:5555" → the address without the port
    address = peer.partition(":")[2].rpartition(":")[0]
    return address.strip("[]") or peer
