"""Access tokens and the key ring, without I/O: claims, the key id, what the key set publishes
through a rotation, and that a token verifies with the published key."""

from __future__ import annotations

import datetime
import json
import secrets
import uuid

import jwt
from google.protobuf.json_format import MessageToDict

from mesh.token_keys import KeyRing, SigningKey, new_stored_key, opened
from mesh.tokens import ALGORITHM, AUDIENCE, USER_ISSUER

KEK = secrets.token_bytes(32)
TTL = datetime.timedelta(minutes=15)
CONTEXT = "test access-token key"


def _ring(*retired_ago: datetime.timedelta | None) -> KeyRing:
    now = datetime.datetime.now(datetime.UTC)
    keys = []
    for age, ago in enumerate(retired_ago):
        key = opened(new_stored_key(KEK, CONTEXT), KEK, CONTEXT)
        created = now - datetime.timedelta(days=30 * (len(retired_ago) - age))
        keys.append(SigningKey(key.kid, key.private_key, created, None if ago is None else now - ago))
    ring = KeyRing(USER_ISSUER, TTL)
    ring.replace(keys)
    return ring


def test_an_access_token_verifies_with_the_published_key_and_carries_its_claims() -> None:
    ring = _ring(None)
    user, session = uuid.uuid4(), uuid.uuid4()

    issued = ring.access_token(user, session)
    (published,) = ring.published()
    header = jwt.get_unverified_header(issued.token)
    key = jwt.PyJWK(json.loads(json.dumps(MessageToDict(published, preserving_proto_field_name=True))))
    claims = jwt.decode(issued.token, key.key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=USER_ISSUER)

    assert header == {"alg": "ES256", "typ": "JWT", "kid": published.kid}
    assert (claims["sub"], claims["sid"]) == (str(user), str(session))
    assert claims["exp"] - claims["iat"] == TTL.total_seconds()
    assert len(claims["jti"]) == 32


def test_after_a_rotation_the_retired_key_stays_published_while_its_tokens_live() -> None:
    fresh = _ring(datetime.timedelta(minutes=5), None)
    stale = _ring(datetime.timedelta(hours=2), None)

    assert len(fresh.published()) == 2
    assert len(stale.published()) == 1
    signed_with = jwt.get_unverified_header(fresh.access_token(uuid.uuid4(), uuid.uuid4()).token)["kid"]
    assert signed_with == fresh.published()[-1].kid


def test_further_claims_ride_along() -> None:
    issued = _ring(None).access_token(uuid.uuid4(), uuid.uuid4(), role="operator")

    assert jwt.decode(issued.token, options={"verify_signature": False})["role"] == "operator"
