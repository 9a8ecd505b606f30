"""Rotating a caller's key while signed calls flow, by the procedure in mesh/keys.py: no call fails."""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.channels import open_channel
from mesh.errors import error_info
from mesh.signing import CALLER, NONCE, SIGNATURE, TIMESTAMP, signed_payload
from tests.conftest import eventually
from tests.integration.mesh.trust_fixtures import make_trust, who_am_i_server

HOLD = "/invitemesh.invite.v1.InviteService/HoldCode"
REQUEST = invite_service_pb2.HoldCodeRequest(code="ABCD-EFGH-J", email="ada@example.com", request_id="r-1")
WORKERS = 4


def _signed_with(kid: str, key: ec.EllipticCurvePrivateKey, body: bytes) -> list[tuple[str, str]]:
    timestamp, nonce = str(int(time.time())), secrets.token_urlsafe(18)
    signature = key.sign(signed_payload(HOLD, "auth_svc", timestamp, nonce, body), ec.ECDSA(hashes.SHA256()))
    encoded = base64.urlsafe_b64encode(signature).decode()
    return [(CALLER, "auth_svc"), (TIMESTAMP, timestamp), (NONCE, nonce), (SIGNATURE, f"{kid}.{encoded}")]


async def test_rotating_a_callers_key_under_load_fails_no_call(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> None:
    trust = make_trust(tmp_path, migrated_database_url, redis_url)
    signer = trust.signer("auth_svc")
    old_kid, old_key = trust.keystore.signing_key("auth_svc")
    failures: list[str] = []
    kids_used: set[str] = set()
    last_call_began_with: list[str | None] = [None] * WORKERS
    calls = 0
    stopping = asyncio.Event()

    async with (
        who_am_i_server(trust.settings) as (server, _),
        open_channel(f"127.0.0.1:{server.port}", trust.settings, "auth_svc", signer) as channel,
    ):
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)

        async def keep_calling(worker: int) -> None:
            nonlocal calls
            while not stopping.is_set():
                began_with = signer.key_id
                try:
                    await stub.HoldCode(REQUEST, timeout=10)
                    calls += 1
                    kids_used.add(signer.key_id or "")
                    last_call_began_with[worker] = began_with
                except grpc.aio.AioRpcError as error:
                    info = error_info(error)
                    failures.append(f"{error.code().name} {info.reason if info else ''}")

        workers = [asyncio.create_task(keep_calling(worker)) for worker in range(WORKERS)]

        async def calls_beyond(count: int) -> bool:
            return calls >= count

        await eventually(lambda: calls_beyond(50), what="calls flowing")
        new_kid = trust.keystore.add("auth_svc")

        async def server_trusts_new_key() -> bool:
            return server.trust.trusted_key("auth_svc", new_kid) is not None

        await eventually(server_trusts_new_key, what="verifier reloading the trust file")
        trust.keystore.activate("auth_svc", new_kid)

        async def signer_switched() -> bool:
            return signer.key_id == new_kid

        await eventually(signer_switched, what="signer switching keys")

        async def no_call_signed_with_the_old_key_in_flight() -> bool:
            # Step 3's wait: a call signed just before the switch may still be on its way.
            return all(kid == new_kid for kid in last_call_began_with)

        await eventually(no_call_signed_with_the_old_key_in_flight, what="old-key calls landing")
        trust.keystore.retire("auth_svc", old_kid)

        async def server_forgot_old_key() -> bool:
            return server.trust.trusted_key("auth_svc", old_kid) is None

        await eventually(server_forgot_old_key, what="verifier dropping the old key")
        settled = calls
        await eventually(lambda: calls_beyond(settled + 50), what="calls flowing after rotation")
        stopping.set()
        await asyncio.gather(*workers)

        stale_metadata = _signed_with(old_kid, old_key, REQUEST.SerializeToString())
        async with open_channel(f"127.0.0.1:{server.port}", trust.settings) as unsigned:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await invite_service_pb2_grpc.InviteServiceStub(unsigned).HoldCode(REQUEST, metadata=stale_metadata)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    assert failures == []
    assert calls >= 100
    assert kids_used == {old_kid, new_kid}
