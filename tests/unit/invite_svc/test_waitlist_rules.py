"""The waitlist's pure rules: which referrals count, how far a move goes, and private links."""

from __future__ import annotations

import dataclasses
import datetime
import string
import uuid

from hypothesis import assume, given
from hypothesis import strategies as st

from invite_svc.domain import Referral, ReferralRules, rank_key_shift, waitlist_top_up
from invite_svc.sealing import WaitlistLinks

RULES = ReferralRules(
    places=5, cap=3, disposable_domains=frozenset({"mailinator.com"}), same_client_window=datetime.timedelta(hours=1)
)
FAIR = Referral(
    referee_email="bob@example.com",
    referrer_email="ada@example.com",
    referrer_referrals=0,
    same_client_as_referrer=False,
    same_client_counted_lately=False,
)


def test_a_fair_referral_counts_and_each_kind_of_fake_one_does_not() -> None:
    def why(**different: object) -> str | None:
        return RULES.not_counted_because(dataclasses.replace(FAIR, **different))  # type: ignore[arg-type]

    assert why() is None
    assert why(referee_email="ada@example.com") == "same email"
    assert why(referrer_referrals=3) == "cap reached"
    assert why(referee_email="bob@mailinator.com") == "disposable domain"
    assert why(referee_email="bob@eu.mailinator.com") == "disposable domain"
    assert why(referee_email="bob@notmailinator.com") is None
    assert why(same_client_as_referrer=True) == "same client address"
    assert why(same_client_counted_lately=True) == "same client address"


@given(st.integers(1, 10_000), st.integers(-1000, 1000).filter(bool), st.integers(1, 10_000))
def test_a_move_passes_exactly_the_places_asked_and_lands_on_no_first_key(seq: int, places: int, other: int) -> None:
    assume(other != seq)
    moved = 2 * seq - rank_key_shift(places)
    assert moved % 2 == 1
    # Another entry that joined `other`th (never moved) is passed exactly when it is within reach.
    passed = (2 * other < 2 * seq) != (2 * other < moved)
    assert passed == (0 < (seq - other if places > 0 else other - seq) <= abs(places))


def test_a_private_link_names_its_entry_and_nothing_else_passes() -> None:
    links, entry = WaitlistLinks(b"k" * 32), uuid.uuid4()
    token = links.token(entry)

    assert links.entry_of(token) == entry
    assert WaitlistLinks(b"o" * 32).entry_of(token) is None
    for at, char in enumerate(token):
        # The last character's spare bits included: a token that decodes to the same bytes but
        # is not the one mailed is refused too.
        for other in set(string.ascii_letters + string.digits + "-_") - {char}:
            assert links.entry_of(token[:at] + other + token[at + 1 :]) is None
    assert links.entry_of(f" {token}\n") == entry
    assert links.entry_of("") is None and links.entry_of("!!!") is None and links.entry_of(token + "AAAA") is None


def test_a_top_up_fills_the_invitations_out_up_to_the_target_and_never_past_the_room() -> None:
    assert waitlist_top_up(target=3, out=0, room=None) == 3
    assert waitlist_top_up(target=3, out=1, room=None) == 2
    assert waitlist_top_up(target=3, out=3, room=None) == 0
    assert waitlist_top_up(target=3, out=5, room=None) == 0  # more out than asked (a lapsed hold)
    assert waitlist_top_up(target=3, out=0, room=2) == 2
    assert waitlist_top_up(target=3, out=1, room=2) == 1
    assert waitlist_top_up(target=3, out=1, room=1) == 0
    assert waitlist_top_up(target=3, out=0, room=-1) == 0  # over capacity already
    assert waitlist_top_up(target=0, out=0, room=None) == 0


@given(st.integers(0, 100), st.integers(0, 100), st.none() | st.integers(-10, 100))
def test_a_top_up_never_invites_past_its_target_or_its_room(target: int, out: int, room: int | None) -> None:
    invited = waitlist_top_up(target, out, room)
    assert invited >= 0
    assert invited == 0 or out + invited <= target
    assert room is None or invited == 0 or out + invited <= room
