"""The ECDSA check of a signed call's payload digest."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from mesh.signing import signature_valid

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
PAYLOAD = b"invitemesh-call-v1\n/invitemesh.invite.v1.InviteService/HoldCode\nauth_svc"
DIGEST = hashlib.sha256(PAYLOAD).digest()
SIGNATURE = KEY.sign(PAYLOAD, ec.ECDSA(hashes.SHA256()))


def test_a_signature_over_the_payload_is_valid_for_its_digest_and_its_key_alone() -> None:
    assert signature_valid(KEY.public_key(), SIGNATURE, DIGEST)
    assert not signature_valid(KEY.public_key(), SIGNATURE, hashlib.sha256(PAYLOAD + b"x").digest())
    assert not signature_valid(OTHER_KEY.public_key(), SIGNATURE, DIGEST)


def test_a_cut_or_padded_signature_or_digest_is_invalid() -> None:
    assert not signature_valid(KEY.public_key(), SIGNATURE[:-1], DIGEST)
    assert not signature_valid(KEY.public_key(), SIGNATURE + bytes(80), DIGEST)
    assert not signature_valid(KEY.public_key(), SIGNATURE, DIGEST[:-1])
