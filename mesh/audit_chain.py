"""The audit log's hash chain: the canonical form of an entry and of its outcome, and the walk
that finds the first entry that was edited, deleted, reordered or not signed by its key.

Each entry's digest covers its content and the digest of the entry before it, so changing,
removing or moving one row breaks the link to every later entry; admin_svc signs each digest (and
each outcome) with its service key, so nobody without that key can write a consistent chain
again. admin_svc writes the chain, and `meshctl audit verify` walks it with the public keys of the
trust file, retired ones included.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.timestamp_pb2 import Timestamp
from invitemesh.admin.v1 import admin_service_pb2 as pb

from mesh.signing import signature_valid

GENESIS = bytes(32)
"""The `previous_digest` of the first entry."""
_ENTRY = b"invitemesh-audit-entry-v1\n"
_OUTCOME = b"invitemesh-audit-outcome-v1\n"


def _microseconds(moment: Timestamp) -> int:
    return moment.seconds * 1_000_000 + moment.nanos // 1000


def _canonical(domain: bytes, fields: Mapping[str, object]) -> bytes:
    return hashlib.sha256(domain + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).digest()


def entry_digest(entry: pb.AuditLogEntry) -> bytes:
    """SHA-256 of what an entry says when written, its predecessor's digest included."""
    return _canonical(
        _ENTRY,
        {
            "sequence": entry.sequence,
            "id": entry.id,
            "actor": entry.actor,
            "action": entry.action,
            "target": entry.target,
            "request_json": entry.request_json,
            "request_id": entry.request_id,
            "create_time_us": _microseconds(entry.create_time),
            "previous_digest": entry.previous_digest.hex(),
        },
    )


def outcome_digest(entry: pb.AuditLogEntry) -> bytes:
    """SHA-256 of how the entry ended, bound to the entry's own digest."""
    return _canonical(
        _OUTCOME,
        {
            "digest": entry.digest.hex(),
            "outcome": pb.AuditOutcome.Name(entry.outcome),
            "outcome_reason": entry.outcome_reason,
            "outcome_time_us": _microseconds(entry.outcome_time),
        },
    )


@dataclass(frozen=True)
class ChainBreak:
    """The first entry that does not verify, and why."""

    sequence: int
    entry_id: str
    why: str


class ChainWalk:
    """The chain checked one entry at a time, oldest first from its start, for a log too long to
    hold at once."""

    def __init__(self, keys: Mapping[str, ec.EllipticCurvePublicKey]) -> None:
        self._keys = keys
        self._previous = GENESIS
        self.verified = 0
        """Entries that held so far."""

    def step(self, entry: pb.AuditLogEntry) -> ChainBreak | None:
        """The break `entry` makes, or None when it holds (and the walk moves past it)."""
        why = _fault(entry, self._previous, self.verified + 1, self._keys)
        if why is not None:
            return ChainBreak(entry.sequence, entry.id, why)
        self._previous = entry.digest
        self.verified += 1
        return None


def first_break(
    entries: Iterable[pb.AuditLogEntry], keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> ChainBreak | None:
    """Walks `entries` oldest first from the chain's start; None when every link, digest and
    signature holds."""
    walk = ChainWalk(keys)
    return next((broken for entry in entries if (broken := walk.step(entry)) is not None), None)


def _fault(
    entry: pb.AuditLogEntry, previous: bytes, expected: int, keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> str | None:
    if entry.sequence != expected:
        return f"entry {expected} was expected here: one is missing or out of order"
    if entry.previous_digest != previous:
        return "it does not follow the entry before it"
    if entry_digest(entry) != entry.digest:
        return "its content does not match its digest: it was edited"
    key = keys.get(entry.key_id)
    if key is None or not signature_valid(key, entry.signature, entry.digest):
        return "its signature does not verify with admin_svc's key"
    if entry.outcome == pb.AUDIT_OUTCOME_PENDING:
        return None
    outcome_key = keys.get(entry.outcome_key_id)
    if outcome_key is None or not signature_valid(outcome_key, entry.outcome_signature, outcome_digest(entry)):
        return "its outcome's signature does not verify: the outcome was edited"
    return None
