"""The helper's side of signature checks: its record framing and its verdicts, over real pipes."""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.keys import TrustedKey
from mesh.signature_checks import _record_at, record, serve_checks, signature_valid

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
PAYLOAD = b"invitemesh-call-v1\n/invitemesh.invite.v1.InviteService/HoldCode\nauth_svc"
DIGEST = hashlib.sha256(PAYLOAD).digest()
SIGNATURE = KEY.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))
POINT = TrustedKey.of(KEY.public_key()).point


def verdicts(records: bytes) -> bytes:
    requests_read, requests_write = os.pipe()
    verdicts_read, verdicts_write = os.pipe()
    os.write(requests_write, records)
    os.close(requests_write)
    serve_checks(requests_read, verdicts_write)
    os.close(verdicts_write)
    answer = os.read(verdicts_read, 1 << 16)
    os.close(requests_read)
    os.close(verdicts_read)
    return answer


def test_a_signature_over_the_payload_is_valid_for_its_digest() -> None:
    assert signature_valid(KEY.public_key(), SIGNATURE, DIGEST)
    assert not signature_valid(KEY.public_key(), SIGNATURE, hashlib.sha256(PAYLOAD + b"x").digest())
    assert not signature_valid(OTHER_KEY.public_key(), SIGNATURE, DIGEST)


def test_the_helper_answers_one_verdict_per_record_in_order() -> None:
    other_point = TrustedKey.of(OTHER_KEY.public_key()).point
    records = [
        record(POINT, SIGNATURE, DIGEST),
        record(POINT, SIGNATURE, hashlib.sha256(b"another payload").digest()),
        record(other_point, SIGNATURE, DIGEST),
        record(POINT, SIGNATURE[:-1], DIGEST),
        record(b"\x04" + bytes(64), SIGNATURE, DIGEST),  # not a point on the curve
        record(POINT, SIGNATURE, DIGEST),
    ]

    assert verdicts(b"".join(records)) == bytes([1, 0, 0, 0, 0, 1])


def test_a_record_is_read_only_once_whole() -> None:
    whole = record(POINT, SIGNATURE, DIGEST)

    for cut in range(len(whole)):
        assert _record_at(whole[:cut], 0) is None
    assert _record_at(whole + whole[:10], 0) == (POINT, SIGNATURE, DIGEST, len(whole))
    assert _record_at(whole + whole[:10], len(whole)) is None


def test_the_helper_ends_when_its_requests_close() -> None:
    assert verdicts(b"") == b""
