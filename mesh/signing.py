"""Signed service-to-service calls (DESIGN §5).

The caller signs `method, caller, timestamp, nonce, sha256(request bytes)` with its ECDSA P-256
key; the callee checks the caller is known, the timestamp is within the clock window, the
signature is valid for this exact method and body, and the nonce was never seen (Redis SET NX).
Which callers may call a method is the access option's business (mesh.access).
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from redis.exceptions import RedisError

from mesh.errors import Unauthenticated, Unavailable
from mesh.keys import Keystore, TrustStore
from mesh.redis import KeySpace

log = structlog.get_logger("mesh.signing")

CALLER, TIMESTAMP, NONCE, SIGNATURE = "x-mesh-caller", "x-mesh-ts", "x-mesh-nonce", "x-mesh-signature"
_HEADERS = frozenset({CALLER, TIMESTAMP, NONCE, SIGNATURE})
_DOMAIN = b"invitemesh-call-v1"
_ECDSA = ec.ECDSA(hashes.SHA256())
Clock = Callable[[], float]


def signed_payload(method: str, caller: str, timestamp: str, nonce: str, body: bytes) -> bytes:
    return b"\n".join(
        (_DOMAIN, method.encode(), caller.encode(), timestamp.encode(), nonce.encode(), hashlib.sha256(body).digest())
    )


class CallSigner:
    """Signs as one service with the key the trust file names as its signing key."""

    def __init__(self, service: str, keystore: Keystore, trust: TrustStore, clock: Clock = time.time) -> None:
        self.service = service
        self._keystore = keystore
        self._trust = trust
        self._clock = clock
        self._kid: str | None = None
        self._key: ec.EllipticCurvePrivateKey | None = None

    @property
    def key_id(self) -> str | None:
        """The key id of the last signature made."""
        return self._kid

    def _signing_key(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        wanted = self._trust.signing_kid(self.service)
        if self._key is None or wanted != self._kid:
            self._kid, self._key = self._keystore.signing_key(self.service)
        assert self._kid is not None
        return self._kid, self._key

    def metadata(self, method: str, body: bytes) -> list[tuple[str, str]]:
        kid, key = self._signing_key()
        timestamp = str(int(self._clock()))
        nonce = secrets.token_urlsafe(18)
        signature = key.sign(signed_payload(method, self.service, timestamp, nonce, body), _ECDSA)
        return [
            (CALLER, self.service),
            (TIMESTAMP, timestamp),
            (NONCE, nonce),
            (SIGNATURE, f"{kid}.{base64.urlsafe_b64encode(signature).decode()}"),
        ]


class SigningInterceptor(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, signer: CallSigner) -> None:
        self._signer = signer

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        method = client_call_details.method
        method_name = method.decode() if isinstance(method, bytes) else method
        signed = self._signer.metadata(method_name, request.SerializeToString())
        given = [(key, value) for key, value in (client_call_details.metadata or ()) if key not in _HEADERS]
        details = grpc.aio.ClientCallDetails(
            method,
            client_call_details.timeout,
            grpc.aio.Metadata(*given, *signed),
            client_call_details.credentials,
            client_call_details.wait_for_ready,
        )
        return await continuation(details, request)


class SignatureVerifier:
    """The `CallVerifier` of a service: answers the verified caller or refuses the call."""

    def __init__(
        self, trust: TrustStore, redis: aioredis.Redis, keys: KeySpace, clock_skew: float, clock: Clock = time.time
    ) -> None:
        self._trust = trust
        self._redis = redis
        self._keys = keys
        self._clock_skew = clock_skew
        self._clock = clock
        # A nonce must outlive the window in which its timestamp is accepted, on both sides.
        self._nonce_ttl = math.ceil(2 * clock_skew) + 5

    async def verify_call(self, method: str, metadata: Mapping[str, str], body: bytes) -> str:
        caller, timestamp, nonce = metadata[CALLER], metadata[TIMESTAMP], metadata[NONCE]
        if not self._trust.knows(caller):
            raise _refused("CALLER_UNKNOWN", "unknown calling service", caller, method)
        try:
            stale = abs(self._clock() - int(timestamp)) > self._clock_skew
        except ValueError:
            raise _refused("CALL_SIGNATURE_INVALID", "malformed call timestamp", caller, method) from None
        if stale:
            raise _refused("CALL_SIGNATURE_STALE", "call timestamp outside the accepted window", caller, method)
        kid, _, encoded = metadata[SIGNATURE].partition(".")
        public_key = self._trust.public_key(caller, kid)
        if public_key is None or not 16 <= len(nonce) <= 64:
            raise _refused("CALL_SIGNATURE_INVALID", "call signature does not verify", caller, method)
        try:
            signature = base64.b64decode(encoded, altchars=b"-_", validate=True)
            # Only the canonical encoding: unused trailing bits must not give a second valid form.
            if base64.urlsafe_b64encode(signature).decode() != encoded:
                raise ValueError("non-canonical signature encoding")
            public_key.verify(signature, signed_payload(method, caller, timestamp, nonce, body), _ECDSA)
        except (InvalidSignature, ValueError):
            raise _refused("CALL_SIGNATURE_INVALID", "call signature does not verify", caller, method) from None
        try:
            fresh = await self._redis.set(self._keys.key("nonce", caller, nonce), b"1", nx=True, ex=self._nonce_ttl)
        except RedisError:
            log.warning("internal call refused: nonce store unreachable", caller=caller, method=method)
            raise Unavailable("NONCE_STORE_UNAVAILABLE", "cannot check call freshness now; retry later") from None
        if not fresh:
            raise _refused("CALL_REPLAYED", "this call was already received", caller, method)
        return caller


def _refused(reason: str, message: str, caller: str, method: str) -> Unauthenticated:
    log.warning("internal call refused", reason=reason, caller=caller, rpc=method)
    return Unauthenticated(reason, message)
