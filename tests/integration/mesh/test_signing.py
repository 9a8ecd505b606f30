"""Signed internal calls against a real server and a real Redis: what passes, and every
tampering refused with its own code and reason."""

from __future__ import annotations

import base64
import secrets
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import grpc
import pytest
import structlog
import structlog.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.access import ACTOR
from mesh.channels import open_channel
from mesh.errors import error_info
from mesh.keys import Keystore, TrustStore
from mesh.server import MeshServer
from mesh.signing import CALLER, NONCE, SIGNATURE, TIMESTAMP, CallSigner, acting_for
from mesh.telemetry import TRACEPARENT, continued_trace
from meshctl.embedded import EmbeddedRedis
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import Trust, WhoAmI, make_trust, who_am_i_server

HOLD = "/invitemesh.invite.v1.InviteService/HoldCode"
RELEASE = "/invitemesh.invite.v1.InviteService/ReleaseHold"
REQUEST = invite_service_pb2.HoldCodeRequest(code="ABCD-EFGH-J", email="ada@example.com", request_id="r-1")
OTHER_REQUEST = invite_service_pb2.HoldCodeRequest(code="ABCD-EFGH-K", email="ada@example.com", request_id="r-1")


@pytest.fixture
def trust(tmp_path: Path, migrated_database_url: str, redis_url: str) -> Trust:
    return make_trust(tmp_path, migrated_database_url, redis_url)


@pytest.fixture
async def served(trust: Trust) -> AsyncIterator[tuple[MeshServer, WhoAmI]]:
    async with who_am_i_server(trust.settings) as served:
        yield served


RawHold = Callable[[bytes, Sequence[tuple[str, str]]], Awaitable[invite_service_pb2.HoldCodeResponse]]


@pytest.fixture
async def hold(served: tuple[MeshServer, WhoAmI], trust: Trust) -> AsyncIterator[RawHold]:
    """Sends HoldCode with exactly these request bytes and this metadata, signing nothing itself."""
    async with open_channel(f"127.0.0.1:{served[0].port}", trust.settings) as channel:
        send = channel.unary_unary(HOLD, None, invite_service_pb2.HoldCodeResponse.FromString)

        async def raw_hold(body: bytes, metadata: Sequence[tuple[str, str]]) -> invite_service_pb2.HoldCodeResponse:
            return await send(body, metadata=tuple(metadata))  # type: ignore[no-any-return]

        yield raw_hold


async def _refusal(call: Awaitable[object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else ""


BODY = REQUEST.SerializeToString()


UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


async def test_signed_call_reaches_the_handler_as_its_caller(served: tuple[MeshServer, WhoAmI], trust: Trust) -> None:
    server, servicer = served
    async with open_channel(
        f"127.0.0.1:{server.port}", trust.settings, "auth_svc", trust.signer("auth_svc")
    ) as channel:
        answer = await invite_service_pb2_grpc.InviteServiceStub(channel).HoldCode(REQUEST)

    assert answer.hold.id == "auth_svc"
    assert servicer.handled == 1


async def test_a_signed_call_made_while_serving_one_passes_its_trace_on(
    served: tuple[MeshServer, WhoAmI], trust: Trust
) -> None:
    server, servicer = served
    trace_id = secrets.randbits(128) | 1
    async with open_channel(
        f"127.0.0.1:{server.port}", trust.settings, "auth_svc", trust.signer("auth_svc")
    ) as channel:
        with continued_trace([(TRACEPARENT, f"00-{trace_id:032x}-{secrets.randbits(64) | 1:016x}-00")]):
            await invite_service_pb2_grpc.InviteServiceStub(channel).HoldCode(REQUEST)
        await invite_service_pb2_grpc.InviteServiceStub(channel).HoldCode(REQUEST)

    assert servicer.traces[0] == trace_id
    assert servicer.traces[1] not in (0, trace_id)  # outside any call: the server starts a trace


async def test_other_body_is_refused(hold: RawHold, trust: Trust) -> None:
    signed = trust.signer("auth_svc").metadata(HOLD, BODY)

    assert await _refusal(hold(OTHER_REQUEST.SerializeToString(), signed)) == (
        UNAUTHENTICATED,
        "CALL_SIGNATURE_INVALID",
    )


async def test_whom_a_call_acts_for_is_covered_by_its_signature(hold: RawHold, trust: Trust) -> None:
    with acting_for("admin:7"):
        signed = trust.signer("admin_svc").metadata(HOLD, BODY)
    unsigned = trust.signer("admin_svc").metadata(HOLD, BODY)
    swapped = [(k, "admin:8" if k == ACTOR else v) for k, v in signed]
    dropped = [(k, v) for k, v in signed if k != ACTOR]
    added = [*unsigned, (ACTOR, "admin:7")]

    assert ("x-mesh-actor", "admin:7") in signed
    for tampered in (swapped, dropped, added):
        assert await _refusal(hold(BODY, tampered)) == (UNAUTHENTICATED, "CALL_SIGNATURE_INVALID")


async def test_other_method_is_refused(hold: RawHold, trust: Trust) -> None:
    signed = trust.signer("auth_svc").metadata(RELEASE, BODY)

    assert await _refusal(hold(BODY, signed)) == (UNAUTHENTICATED, "CALL_SIGNATURE_INVALID")


async def test_other_caller_name_with_the_same_key_is_refused(hold: RawHold, trust: Trust) -> None:
    signed = dict(trust.signer("admin_svc").metadata(HOLD, BODY))
    signed[CALLER] = "auth_svc"

    assert await _refusal(hold(BODY, list(signed.items()))) == (
        UNAUTHENTICATED,
        "CALL_SIGNATURE_INVALID",
    )


async def test_unknown_caller_is_refused(hold: RawHold, tmp_path: Path) -> None:
    # A key pair in a keys dir of its own: well formed, signed, and trusted by nobody here.
    elsewhere = Keystore(tmp_path / "elsewhere", secrets.token_bytes(32))
    elsewhere.add("evil_svc")
    evil = CallSigner("evil_svc", elsewhere, TrustStore(elsewhere.trust_path, 1.0)).metadata(HOLD, BODY)

    assert await _refusal(hold(BODY, evil)) == (UNAUTHENTICATED, "CALLER_UNKNOWN")


@pytest.mark.parametrize("direction", [-1, 1])
async def test_timestamp_outside_the_window_is_refused(hold: RawHold, trust: Trust, direction: int) -> None:
    # Timestamps travel as whole seconds: a clock one second past the window can truncate onto its edge.
    skew = direction * (trust.settings.clock_skew + 2)
    signed = trust.signer("auth_svc", clock=lambda: time.time() + skew).metadata(HOLD, BODY)

    assert await _refusal(hold(BODY, signed)) == (UNAUTHENTICATED, "CALL_SIGNATURE_STALE")


async def test_a_replayed_call_is_refused(hold: RawHold, trust: Trust, served: tuple[MeshServer, WhoAmI]) -> None:
    signed = trust.signer("auth_svc").metadata(HOLD, BODY)

    first = await hold(BODY, signed)
    again = await _refusal(hold(BODY, signed))

    assert first.hold.id == "auth_svc"
    assert again == (UNAUTHENTICATED, "CALL_REPLAYED")
    assert served[1].handled == 1


async def test_a_caller_not_allowed_for_the_method_is_refused(hold: RawHold, trust: Trust) -> None:
    signed = trust.signer("chain_svc").metadata(HOLD, BODY)

    assert await _refusal(hold(BODY, signed)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )


@pytest.mark.parametrize("missing", [CALLER, TIMESTAMP, NONCE, SIGNATURE])
async def test_a_missing_header_is_refused(hold: RawHold, trust: Trust, missing: str) -> None:
    signed = [(k, v) for k, v in trust.signer("auth_svc").metadata(HOLD, BODY) if k != missing]

    assert await _refusal(hold(BODY, signed)) == (UNAUTHENTICATED, "CALL_SIGNATURE_MISSING")


_PRINTABLE = [chr(c) for c in range(0x21, 0x7F)]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    target=st.sampled_from(["body", CALLER, TIMESTAMP, NONCE, SIGNATURE]), where=st.integers(0, 10_000), data=st.data()
)
async def test_any_single_byte_change_is_refused(
    hold: RawHold, trust: Trust, served: tuple[MeshServer, WhoAmI], target: str, where: int, data: st.DataObject
) -> None:
    body = BODY
    signed = dict(trust.signer("auth_svc").metadata(HOLD, body))
    handled = served[1].handled
    if target == "body":
        index = where % len(body)
        replacement = data.draw(st.integers(0, 255).filter(lambda b: b != body[index]))
        body = body[:index] + bytes([replacement]) + body[index + 1 :]
    else:
        value = signed[target]
        index = where % len(value)
        signed[target] = (
            value[:index]
            + data.draw(st.sampled_from(_PRINTABLE).filter(lambda c: c != value[index]))
            + value[index + 1 :]
        )

    code, _ = await _refusal(hold(body, list(signed.items())))

    assert code is UNAUTHENTICATED
    assert served[1].handled == handled


async def test_a_second_encoding_of_the_same_signature_is_refused(hold: RawHold, trust: Trust) -> None:
    # Base64 leaves unused bits in the last symbol when padding follows; flipping one decodes to the
    # very same bytes, so only a canonical-encoding check can tell the two apart.
    while not (signed := dict(trust.signer("auth_svc").metadata(HOLD, BODY)))[SIGNATURE].endswith("="):
        pass
    kid, _, encoded = signed[SIGNATURE].partition(".")
    data = encoded.rstrip("=")
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    twin = data[:-1] + alphabet[alphabet.index(data[-1]) ^ 1] + encoded[len(data) :]
    assert base64.urlsafe_b64decode(twin) == base64.urlsafe_b64decode(encoded)
    signed[SIGNATURE] = f"{kid}.{twin}"

    assert await _refusal(hold(BODY, list(signed.items()))) == (UNAUTHENTICATED, "CALL_SIGNATURE_INVALID")


async def test_redis_down_refuses_internal_calls_and_health_says_why(
    tmp_path: Path, migrated_database_url: str, own_redis: EmbeddedRedis
) -> None:
    trust = make_trust(tmp_path, migrated_database_url, own_redis.url)
    async with who_am_i_server(trust.settings) as (server, servicer):
        signer = trust.signer("auth_svc")
        async with open_channel(f"127.0.0.1:{server.port}", trust.settings, "auth_svc", signer) as ch:
            stub = invite_service_pb2_grpc.InviteServiceStub(ch)
            assert (await stub.HoldCode(REQUEST)).hold.id == "auth_svc"
            own_redis.stop()

            assert await _refusal(stub.HoldCode(REQUEST)) == (grpc.StatusCode.UNAVAILABLE, "NONCE_STORE_UNAVAILABLE")

            async def redis_reported() -> bool:
                return "redis" in server.health.failures

            await eventually(redis_reported, what="health to name redis")
            assert servicer.handled == 1


async def test_a_signature_header_sent_twice_is_refused(hold: RawHold, trust: Trust) -> None:
    signed = trust.signer("auth_svc").metadata(HOLD, BODY)
    other = trust.signer("auth_svc").metadata(HOLD, BODY)

    assert await _refusal(hold(BODY, [*signed, other[2]])) == (UNAUTHENTICATED, "CALL_SIGNATURE_INVALID")


async def test_refusals_are_logged_with_caller_and_method_but_no_signature_or_body(hold: RawHold, trust: Trust) -> None:
    signed = dict(trust.signer("auth_svc").metadata(HOLD, BODY))

    with structlog.testing.capture_logs() as logged:
        await _refusal(hold(OTHER_REQUEST.SerializeToString(), list(signed.items())))

    refusal = next(event for event in logged if event.get("reason") == "CALL_SIGNATURE_INVALID")
    assert (refusal["caller"], refusal["rpc"]) == ("auth_svc", HOLD)
    everything = repr(logged)
    assert signed[SIGNATURE].partition(".")[2] not in everything
    assert signed[NONCE] not in everything
    assert "ABCD-EFGH-K" not in everything
