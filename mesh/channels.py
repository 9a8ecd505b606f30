"""Client channels: traced, signed when the caller is a service, and mutually authenticated
over TLS when `MESH_TLS=1`."""

from __future__ import annotations

from typing import Any

import grpc

from mesh.settings import Settings
from mesh.signing import CallSigner, SignedChannel
from mesh.telemetry import client_tracing
from mesh.tls import channel_credentials

# A peer that restarts is called again within seconds, not after gRPC's default backoff of up
# to two minutes.
_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 3000)]


def open_channel(
    target: str, settings: Settings, identity: str = "meshctl", signer: CallSigner | None = None
) -> grpc.aio.Channel:
    """A channel to `target`; `identity` names the TLS certificate presented, `signer` signs."""
    exporting = settings.otlp_endpoint is not None
    interceptors: list[Any] = client_tracing() if exporting else []
    if settings.tls:
        credentials = channel_credentials(settings.resolved_certs_dir, identity)
        channel = grpc.aio.secure_channel(target, credentials, _OPTIONS, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(target, _OPTIONS, interceptors=interceptors)
    return SignedChannel(channel, signer, passes_trace=not exporting) if signer else channel


class Peers:
    """One channel per peer service of a process, opened on first use."""

    def __init__(self, settings: Settings, identity: str, signer: CallSigner | None) -> None:
        self._settings = settings
        self._identity = identity
        self._signer = signer
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            address = self._settings.service_addresses.get(service)
            if address is None:
                raise LookupError(f"no address for {service}: set MESH_SERVICE_ADDRESSES")
            self._channels[service] = open_channel(address, self._settings, self._identity, self._signer)
        return self._channels[service]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
