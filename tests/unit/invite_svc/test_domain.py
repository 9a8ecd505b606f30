import datetime
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given
from hypothesis import strategies as st

from invite_svc.domain import (
    CAMPAIGN_CLOSED,
    DISABLED,
    DOMAIN_NOT_ALLOWED,
    EXPIRED,
    NOT_YET_VALID,
    CodeState,
    CodeTerms,
    Refusal,
    Window,
    refuse_hold,
    slot_capacities,
)
from invite_svc.sealing import CodeSealer

NOW = datetime.datetime(2026, 11, 23, 12, tzinfo=datetime.UTC)
HOUR = datetime.timedelta(hours=1)


@given(st.integers(1, 10**9), st.integers(1, 64))
def test_slot_capacities_add_up_and_none_is_empty(uses: int, slots: int) -> None:
    capacities = slot_capacities(uses, slots)

    assert sum(capacities) == uses
    assert len(capacities) == min(uses, slots)
    assert min(capacities) >= 1
    assert max(capacities) - min(capacities) <= 1


@pytest.mark.parametrize(
    ("terms", "domain", "reason"),
    [
        (CodeTerms(CodeState.DISABLED, Window()), "example.com", DISABLED),
        (CodeTerms(CodeState.EXPIRED, Window()), "example.com", EXPIRED),
        (CodeTerms(CodeState.ACTIVE, Window(end=NOW)), "example.com", EXPIRED),
        (CodeTerms(CodeState.ACTIVE, Window(start=NOW + HOUR)), "example.com", NOT_YET_VALID),
        (CodeTerms(CodeState.ACTIVE, Window(), Window(end=NOW - HOUR)), "example.com", CAMPAIGN_CLOSED),
        (CodeTerms(CodeState.ACTIVE, Window(), Window(start=NOW + HOUR)), "example.com", CAMPAIGN_CLOSED),
        (CodeTerms(CodeState.ACTIVE, Window(), None, frozenset({"corp.example"})), "example.com", DOMAIN_NOT_ALLOWED),
    ],
)
def test_refusals(terms: CodeTerms, domain: str, reason: str) -> None:
    with pytest.raises(Refusal) as raised:
        refuse_hold(terms, domain, NOW)

    assert raised.value.reason == reason


def test_an_open_code_in_an_open_campaign_for_an_allowed_domain_passes() -> None:
    terms = CodeTerms(
        CodeState.ACTIVE, Window(NOW - HOUR, NOW + HOUR), Window(NOW - HOUR, NOW + HOUR), frozenset({"corp.example"})
    )

    refuse_hold(terms, "corp.example", NOW)


def test_sealed_codes_open_only_with_their_id_and_key() -> None:
    sealer, code_id = CodeSealer(bytes(32)), uuid.uuid4()
    sealed = sealer.seal(code_id, "ABCDEFGHJ")

    assert sealer.unseal(code_id, sealed) == "ABCDEFGHJ"
    assert b"ABCDEFGHJ" not in sealed
    with pytest.raises(InvalidTag):  # bound to its code's id
        sealer.unseal(uuid.uuid4(), sealed)
    with pytest.raises(InvalidTag):  # and to its key
        CodeSealer(bytes(range(32))).unseal(code_id, sealed)


def test_lookup_is_keyed() -> None:
    assert CodeSealer(bytes(32)).lookup("ABCDEFGHJ") != CodeSealer(bytes(range(32))).lookup("ABCDEFGHJ")
    assert CodeSealer(bytes(32)).lookup("ABCDEFGHJ") == CodeSealer(bytes(32)).lookup("ABCDEFGHJ")
