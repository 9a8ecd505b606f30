"""Signed service-to-service calls (DESIGN §5).

The caller signs `method, caller, timestamp, nonce, sha256(request bytes)` with its ECDSA P-256
key, and, when it acts on someone's behalf (`acting_for`), whom (`x-mesh-actor`). The callee
checks the caller is known, the timestamp is within the clock window, the signature is valid for
this exact method, body and actor, and the nonce was never seen (Redis SET NX).
Which callers may call a method is the access option's business (mesh.access).

The signature check runs on the service's event loop. A helper process for it was measured and
did not pay: bench/signing.py found it saved about 50 µs of the event loop's CPU per signed call
for about 150 µs of its own, with signed calls per second within the noise.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import hashlib
import math
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
import redis.asyncio as aioredis
import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from redis.exceptions import RedisError

from mesh.access import ACTOR
from mesh.errors import Unauthenticated, Unavailable
from mesh.keys import Keystore, TrustStore, load_kek
from mesh.nonces import NonceLedger
from mesh.redis import KeySpace
from mesh.settings import Settings
from mesh.telemetry import trace_header

log = structlog.get_logger("mesh.signing")

CALLER, TIMESTAMP, NONCE, SIGNATURE = "x-mesh-caller", "x-mesh-ts", "x-mesh-nonce", "x-mesh-signature"
_HEADERS = frozenset({CALLER, TIMESTAMP, NONCE, SIGNATURE, ACTOR})
_acting_for: contextvars.ContextVar[str] = contextvars.ContextVar("acting_for", default="")


@contextlib.contextmanager
def acting_for(actor: str) -> Iterator[None]:
    """Signs the calls made inside as made on behalf of `actor` (`admin:<id>`), so the callee
    knows, as surely as it knows the caller, who asked."""
    token = _acting_for.set(actor)
    try:
        yield
    finally:
        _acting_for.reset(token)


_DOMAIN = b"invitemesh-call-v1"
_ECDSA = ec.ECDSA(hashes.SHA256())
_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))
_MAX_SIGNATURE_SIZE = 72
"""A DER-encoded P-256 signature is at most this long; a longer one cannot be valid."""


def signature_valid(key: ec.EllipticCurvePublicKey, signature: bytes, digest: bytes) -> bool:
    """Whether `signature` is `key`'s ECDSA signature of the payload whose SHA-256 is `digest`."""
    if len(signature) > _MAX_SIGNATURE_SIZE or len(digest) != hashlib.sha256().digest_size:
        return False
    try:
        key.verify(signature, digest, _PREHASHED)
    except InvalidSignature:
        return False
    return True


Clock = Callable[[], float]


def signed_payload(method: str, caller: str, timestamp: str, nonce: str, body: bytes, actor: str = "") -> bytes:
    signed = (
        _DOMAIN,
        method.encode(),
        caller.encode(),
        timestamp.encode(),
        nonce.encode(),
        hashlib.sha256(body).digest(),
    )
    # After the fixed-size body digest, so no actor can be read as part of another field.
    return b"\n".join((*signed, actor.encode()) if actor else signed)


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
        actor = _acting_for.get()
        signature = key.sign(signed_payload(method, self.service, timestamp, nonce, body, actor), _ECDSA)
        return [
            (CALLER, self.service),
            (TIMESTAMP, timestamp),
            (NONCE, nonce),
            (SIGNATURE, f"{kid}.{base64.urlsafe_b64encode(signature).decode()}"),
            *([(ACTOR, actor)] if actor else []),
        ]

    def sign_digest(self, digest: bytes) -> tuple[str, bytes]:
        """The key id and DER signature of a SHA-256 `digest` (an audit entry's), made with the
        key this service signs its calls with; `signature_valid` checks it."""
        kid, key = self._signing_key()
        return kid, key.sign(digest, _PREHASHED)


def signer_for(service: str, settings: Settings, trust: TrustStore | None = None) -> CallSigner:
    """Signs as `service` with the keys dir and KEK the settings name (KeyringError without a KEK)."""
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings))
    return CallSigner(service, keystore, trust or TrustStore(keystore.trust_path, settings.trust_reload_interval))


class SignedChannel(grpc.aio.Channel):
    """A channel whose unary calls carry its service's signature over the exact bytes sent.

    A wrapper rather than a client interceptor: the request is serialized once, hashed and sent as
    those bytes, and no interceptor machinery runs per call. Every invitemesh method is unary, so
    streaming calls pass through unsigned (and an internal streaming method would refuse them).
    """

    def __init__(
        self,
        inner: grpc.aio.Channel,
        signer: CallSigner,
        passes_trace: bool = False,
        retried: frozenset[str] = frozenset(),
    ) -> None:
        """`passes_trace`: add the current trace to each call (mesh.telemetry), where no
        OpenTelemetry interceptor on `inner` does. `retried`: the methods (full paths) whose calls
        are sent again when UNAVAILABLE, each attempt signed anew: gRPC's own retries would send
        the same nonce, which a callee that saw the first attempt refuses as a replay."""
        self._inner = inner
        self._signer = signer
        self._passes_trace = passes_trace
        self._retried = retried

    def unary_unary(
        self,
        method: str,
        request_serializer: Callable[[Any], bytes] | None = None,
        response_deserializer: Callable[[bytes], Any] | None = None,
        _registered_method: bool | None = False,
    ) -> grpc.aio.UnaryUnaryMultiCallable:  # type: ignore[type-arg]
        raw = self._inner.unary_unary(method, None, response_deserializer, _registered_method)  # type: ignore[call-arg]
        signed = _SignedUnaryUnary(raw, method, request_serializer or bytes, self._signer, self._passes_trace)
        return _Retried(signed) if method in self._retried else signed

    def unary_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.unary_stream(*args, **kwargs)

    def stream_unary(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_unary(*args, **kwargs)

    def stream_stream(self, *args: Any, **kwargs: Any) -> Any:
        return self._inner.stream_stream(*args, **kwargs)

    async def close(self, grace: float | None = None) -> None:
        await self._inner.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._inner.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._inner.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._inner.channel_ready()

    async def __aenter__(self) -> SignedChannel:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(None)


class _SignedUnaryUnary(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    def __init__(
        self, raw: Any, method: str, serialize: Callable[[Any], bytes], signer: CallSigner, passes_trace: bool
    ) -> None:
        self._raw = raw
        self._method = method
        self._serialize = serialize
        self._signer = signer
        self._passes_trace = passes_trace

    def __call__(  # type: ignore[override]
        self,
        request: Any,
        *,
        timeout: float | None = None,
        metadata: Any = None,
        credentials: grpc.CallCredentials | None = None,
        wait_for_ready: bool | None = None,
        compression: grpc.Compression | None = None,
    ) -> Any:
        body = self._serialize(request)
        given = [(key, value) for key, value in (metadata or ()) if key not in _HEADERS]
        return self._raw(
            body,
            timeout=timeout,
            metadata=(
                *given,
                *(trace_header() if self._passes_trace else ()),
                *self._signer.metadata(self._method, body),
            ),
            credentials=credentials,
            wait_for_ready=wait_for_ready,
            compression=compression,
        )


RETRY_ATTEMPTS = 3
RETRY_BACKOFF = 0.05
"""Seconds before the second attempt, doubled before each further one."""


class _Retried(grpc.aio.UnaryUnaryMultiCallable):  # type: ignore[type-arg]
    """An idempotent method's calls, sent again (newly signed, to whichever replica the channel
    picks next) while they fail UNAVAILABLE, within the first attempt's deadline."""

    def __init__(self, signed: _SignedUnaryUnary) -> None:
        self._signed = signed

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._attempts(request, deadline, kwargs)

    async def _attempts(self, request: Any, deadline: float | None, kwargs: dict[str, Any]) -> Any:
        attempt = 0
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            try:
                return await self._signed(request, timeout=left, **kwargs)
            except grpc.aio.AioRpcError as error:
                attempt += 1
                pause = RETRY_BACKOFF * 2 ** (attempt - 1)
                out_of_time = deadline is not None and time.monotonic() + pause >= deadline
                if error.code() is not grpc.StatusCode.UNAVAILABLE or attempt == RETRY_ATTEMPTS or out_of_time:
                    raise
                await asyncio.sleep(pause)


class SignatureVerifier:
    """The `CallVerifier` of a service: answers the verified caller or refuses the call."""

    def __init__(
        self,
        trust: TrustStore,
        redis: aioredis.Redis,
        keys: KeySpace,
        clock_skew: float,
        flush_interval: float,
        clock: Clock = time.time,
    ) -> None:
        self._trust = trust
        self._keys = keys
        self._clock_skew = clock_skew
        self._clock = clock
        # A nonce must outlive the window in which its timestamp is accepted, on both sides.
        self._nonces = NonceLedger(redis, math.ceil(2 * clock_skew) + 5, flush_interval=flush_interval)

    async def close(self) -> None:
        await self._nonces.close()

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
        trusted = self._trust.trusted_key(caller, kid)
        if trusted is None or not 16 <= len(nonce) <= 64:
            raise _refused("CALL_SIGNATURE_INVALID", "call signature does not verify", caller, method)
        try:
            signature = base64.b64decode(encoded, altchars=b"-_", validate=True)
        except ValueError:
            signature = b""
        actor = metadata.get(ACTOR, "")
        digest = hashlib.sha256(signed_payload(method, caller, timestamp, nonce, body, actor)).digest()
        # Only the canonical encoding: unused trailing bits must not give a second valid form.
        canonical = base64.urlsafe_b64encode(signature).decode() == encoded
        if not canonical or not signature_valid(trusted, signature, digest):
            raise _refused("CALL_SIGNATURE_INVALID", "call signature does not verify", caller, method)
        try:
            fresh = await self._nonces.first_sighting(self._keys.key("nonce", caller, nonce))
        except RedisError:
            log.warning("internal call refused: nonce store unreachable", caller=caller, method=method)
            raise Unavailable("NONCE_STORE_UNAVAILABLE", "cannot check call freshness now; retry later") from None
        if not fresh:
            raise _refused("CALL_REPLAYED", "this call was already received", caller, method)
        return caller


def _refused(reason: str, message: str, caller: str, method: str) -> Unauthenticated:
    log.warning("internal call refused", reason=reason, caller=caller, rpc=method)
    return Unauthenticated(reason, message)
