"""The audit chain without I/O: a chain made with a key verifies with its public half, and any
edit, removal, reordering, forged signature or edited outcome is named at the first entry it
breaks."""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed
from invitemesh.admin.v1 import admin_service_pb2 as pb

from mesh.audit_chain import GENESIS, entry_digest, first_break, outcome_digest

KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {"k1": KEY.public_key()}
OTHER = ec.generate_private_key(ec.SECP256R1())


def _sign(digest: bytes, key: ec.EllipticCurvePrivateKey = KEY) -> bytes:
    return key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))


def _chain(length: int) -> list[pb.AuditLogEntry]:
    entries, previous = [], GENESIS
    for sequence in range(1, length + 1):
        entry = pb.AuditLogEntry(
            sequence=sequence,
            id=str(uuid.uuid4()),
            actor="admin:1",
            action="DisableInvite",
            target=f"CODE-{sequence}",
            request_json='{"code":"X"}',
            previous_digest=previous,
            key_id="k1",
            outcome=pb.AUDIT_OUTCOME_SUCCEEDED,
            outcome_key_id="k1",
        )
        entry.create_time.FromMicroseconds(1_800_000_000_000_000 + sequence)
        entry.outcome_time.FromMicroseconds(1_800_000_000_000_100 + sequence)
        entry.digest = entry_digest(entry)
        entry.signature = _sign(entry.digest)
        entry.outcome_signature = _sign(outcome_digest(entry))
        entries.append(entry)
        previous = entry.digest
    return entries


def test_an_untouched_chain_verifies() -> None:
    assert first_break(_chain(5), KEYS) is None


def test_a_digest_covers_every_field_written_with_the_entry() -> None:
    (entry,) = _chain(1)
    for field, value in (("actor", "admin:2"), ("action", "X"), ("target", "Y"), ("request_json", "{}"), ("id", "z")):
        edited = pb.AuditLogEntry()
        edited.CopyFrom(entry)
        setattr(edited, field, value)
        assert entry_digest(edited) != entry.digest, field


@pytest.mark.parametrize(
    ("tamper", "at", "why"),
    [
        (lambda c: setattr(c[2], "target", "someone else"), 3, "edited"),
        (lambda c: c.pop(1), 3, "missing or out of order"),
        (lambda c: c.insert(1, c.pop(2)), 3, "missing or out of order"),
        (lambda c: setattr(c[3], "outcome_reason", "NOTHING"), 4, "outcome"),
        (
            lambda c: setattr(c[0], "signature", _sign(c[0].digest, OTHER)),
            1,
            "signature",
        ),
        (lambda c: setattr(c[4], "key_id", "k2"), 5, "signature"),
    ],
    ids=["edited", "deleted", "reordered", "outcome edited", "signed by another key", "unknown key"],
)
def test_tampering_is_named_at_the_first_entry_it_breaks(tamper: object, at: int, why: str) -> None:
    chain = _chain(5)
    tamper(chain)  # type: ignore[operator]

    broken = first_break(chain, KEYS)

    assert broken is not None and broken.sequence == at and why in broken.why


def test_a_rewritten_entry_with_a_fresh_digest_still_breaks_the_next_link() -> None:
    chain = _chain(3)
    chain[1].target = "rewritten"
    chain[1].digest = entry_digest(chain[1])

    broken = first_break(chain, KEYS)

    assert broken is not None and broken.sequence == 2 and "signature" in broken.why
