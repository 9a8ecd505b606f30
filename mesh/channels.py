"""Client channels: traced, signed when the caller is a service, and mutually authenticated
over TLS when `MESH_TLS=1`; and one circuit breaker per peer, which every call of a process to
that peer goes through (inline calls, outbox deliveries, key set fetches alike)."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import grpc
from prometheus_client import Gauge

from mesh.breakers import AsyncBreaker
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name, idempotent
from mesh.health import ACCEPTING
from mesh.services import SERVICES, ServiceSpec
from mesh.settings import Settings
from mesh.signing import CallSigner, SignedChannel
from mesh.telemetry import client_tracing
from mesh.tls import channel_credentials

# A peer that restarts is called again within seconds, not after gRPC's default backoff of up
# to two minutes.
_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 3000)]


def endpoints(addresses: str) -> list[tuple[str, int]]:
    """A `MESH_SERVICE_ADDRESSES` value as (host, port) pairs: `host:port`, or several joined by
    commas (one per replica; a DNS name may itself stand for several)."""
    found = []
    for address in addresses.split(","):
        host, colon, port = address.strip().rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"a service address is host:port, not {address.strip()!r}")
        found.append((host.strip("[]"), int(port)))
    return found


def channel_target(addresses: str) -> str:
    """The gRPC target of a `MESH_SERVICE_ADDRESSES` value: one address as it is (a DNS name
    resolves to every replica it stands for), several as one target of IP literals."""
    found = endpoints(addresses)
    if len(found) == 1:
        return addresses.strip()
    if all(isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address) for host, _ in found):
        return "ipv4:" + ",".join(f"{host}:{port}" for host, port in found)
    return "ipv6:" + ",".join(f"[{ipaddress.IPv6Address(host)}]:{port}" for host, port in found)


def open_channel(
    target: str,
    settings: Settings,
    identity: str = "meshctl",
    signer: CallSigner | None = None,
    peer: ServiceSpec | None = None,
) -> grpc.aio.Channel:
    """A channel to `target` (one or several addresses, see `channel_target`), balanced round
    robin over what it resolves to; `identity` names the TLS certificate presented, `signer` signs.
    To a `peer` service, only its replicas that accept calls (not draining) get them, and calls of its
    idempotent methods that fail UNAVAILABLE are signed and sent again (mesh.signing)."""
    found = endpoints(target)
    # One address stays with gRPC's default (pick_first), whose call after the peer restarted
    # waits for the connection rather than failing while round robin's would back off.
    balanced = len(found) > 1 or not is_ip_address(found[0][0])
    options = [*_OPTIONS, *([("grpc.service_config", _balanced(peer))] if balanced else [])]
    target = channel_target(target)
    exporting = settings.otlp_endpoint is not None
    interceptors: list[Any] = client_tracing() if exporting else []
    if settings.tls:
        credentials = channel_credentials(settings.resolved_certs_dir, identity)
        channel = grpc.aio.secure_channel(target, credentials, options, interceptors=interceptors)
    else:
        channel = grpc.aio.insecure_channel(target, options, interceptors=interceptors)
    if signer is None:
        return channel
    return SignedChannel(channel, signer, passes_trace=not exporting, retried=_idempotent_methods(peer))


def _balanced(peer: ServiceSpec | None) -> str:
    # Health is checked by round robin alone, and only a peer's servers report ACCEPTING.
    checked = {"healthCheckConfig": {"serviceName": ACCEPTING}} if peer else {}
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], **checked})


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _idempotent_methods(peer: ServiceSpec | None) -> frozenset[str]:
    if peer is None:
        return frozenset()
    return frozenset(
        full_method_name(method)
        for service in SERVICE_DESCRIPTORS
        if service.full_name in peer.grpc_services
        for method in service.methods
        if idempotent(method)
    )


PEER_BREAKER_FAILURES = 5
PEER_BREAKER_RESET = 10.0
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def unreachable(error: BaseException) -> bool:
    """A failure of the peer itself, which its breaker counts (not a refusal of one request)."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in _UNREACHABLE


class Peers:
    """One channel and one breaker per peer service of a process, made on first use."""

    def __init__(
        self, settings: Settings, identity: str, signer: CallSigner | None, breaker_states: Gauge | None = None
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._signer = signer
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._breakers: dict[str, AsyncBreaker] = {}
        self._breaker_states = breaker_states

    @property
    def identity(self) -> str:
        """Who this process calls as."""
        return self._identity

    def breaker(self, service: str) -> AsyncBreaker:
        if service not in self._breakers:
            self._breakers[service] = AsyncBreaker(
                service, PEER_BREAKER_FAILURES, PEER_BREAKER_RESET, counts=unreachable, states=self._breaker_states
            )
        return self._breakers[service]

    def channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            address = self._settings.service_addresses.get(service)
            if address is None:
                raise LookupError(f"no address for {service}: set MESH_SERVICE_ADDRESSES")
            peer = next((spec for spec in SERVICES if spec.name == service), None)
            self._channels[service] = open_channel(address, self._settings, self._identity, self._signer, peer)
        return self._channels[service]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()
