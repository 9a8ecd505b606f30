"""Pure rules of invites: when a code can be held, how its uses are split into slots, and the
stable reasons for every refusal."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field

SLOTS_PER_COUNTER = 32
DEFAULT_HOLD_TTL = datetime.timedelta(minutes=30)


class CodeState(enum.IntEnum):
    ACTIVE = 1
    DISABLED = 2
    EXPIRED = 3


class HoldState(enum.IntEnum):
    HELD = 1
    CONFIRMED = 2
    RELEASED = 3
    EXPIRED = 4


class Refusal(Exception):
    """A hold or check the rules do not allow, with its stable reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


NOT_FOUND = "INVITE_CODE_NOT_FOUND"
DISABLED = "INVITE_CODE_DISABLED"
EXPIRED = "INVITE_CODE_EXPIRED"
NOT_YET_VALID = "INVITE_CODE_NOT_YET_VALID"
EXHAUSTED = "INVITE_CODE_EXHAUSTED"
CAMPAIGN_FULL = "INVITE_CAMPAIGN_FULL"
CAMPAIGN_CLOSED = "INVITE_CAMPAIGN_CLOSED"
DOMAIN_NOT_ALLOWED = "INVITE_EMAIL_DOMAIN_NOT_ALLOWED"
ALREADY_REDEEMED = "INVITE_EMAIL_ALREADY_REDEEMED"
HOLD_NOT_FOUND = "INVITE_HOLD_NOT_FOUND"
PLACES_GONE = frozenset({"INVITE_CODE_EXHAUSTED", "INVITE_CAMPAIGN_FULL", "INVITE_CAMPAIGN_CLOSED"})
"""Refusals of a real code whose places are taken or whose campaign is over: the answer points
at the waitlist."""
HOLD_EXPIRED = "INVITE_HOLD_EXPIRED"
HOLD_RELEASED = "INVITE_HOLD_RELEASED"
BUSY = "INVITE_CODE_BUSY"
CAMPAIGN_NAME_TAKEN = "INVITE_CAMPAIGN_NAME_TAKEN"
CAMPAIGN_NOT_FOUND = "INVITE_CAMPAIGN_NOT_FOUND"


@dataclass(frozen=True)
class OwnCodes:
    """The codes of their own a newly active user receives to share: as many as the campaign of the
    code they redeemed says, else the default, each with `uses` uses (0: unlimited)."""

    default_count: int
    uses: int

    def count(self, campaign_quota: int) -> int:
        return campaign_quota or self.default_count


def slot_capacities(uses: int, slots: int = SLOTS_PER_COUNTER) -> list[int]:
    """`uses` split as evenly as possible over at most `slots` slots, none empty."""
    count = max(1, min(slots, uses))
    base, extra = divmod(uses, count)
    return [base + (1 if index < extra else 0) for index in range(count)]


@dataclass(frozen=True)
class Window:
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None

    def contains(self, now: datetime.datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.end is None or now < self.end)


@dataclass(frozen=True)
class CodeTerms:
    """What the rules need to know of a code and its campaign to allow a hold."""

    state: CodeState
    window: Window
    campaign_window: Window | None = None
    allowed_email_domains: frozenset[str] = field(default_factory=frozenset)


def refuse_hold(terms: CodeTerms, email_domain: str, now: datetime.datetime) -> None:
    """Raises the Refusal that applies, if any; uses and capacity are checked by the store."""
    if terms.state is CodeState.DISABLED:
        raise Refusal(DISABLED, "this invite code has been disabled")
    if terms.state is CodeState.EXPIRED or (terms.window.end is not None and now >= terms.window.end):
        raise Refusal(EXPIRED, "this invite code has expired")
    if terms.window.start is not None and now < terms.window.start:
        raise Refusal(NOT_YET_VALID, "this invite code is not valid yet")
    if terms.campaign_window is not None and not terms.campaign_window.contains(now):
        raise Refusal(CAMPAIGN_CLOSED, "this invite campaign is not open")
    if terms.allowed_email_domains and email_domain not in terms.allowed_email_domains:
        raise Refusal(DOMAIN_NOT_ALLOWED, "this invite code is not for this email domain")


def masked_email(email: str) -> str:
    """`ada@example.com` → `a•••@example.com`: a friend recognisable, not an address to write to."""
    local, _, domain_name = email.rpartition("@")
    return f"{local[:1]}•••@{domain_name}"


def rank_key_shift(places: int) -> int:
    """What moves an entry `places` up the join order (down when negative; 0: nothing). An entry's
    first rank key is twice its join sequence number, so this odd shift lands it past `places`
    people and on nobody's first key."""
    return 2 * places + (places > 0) - (places < 0)


def waitlist_top_up(target: int, out: int, room: int | None) -> int:
    """How many people a campaign that keeps `target` waitlist invitations out invites next:
    enough to bring its `out` (mailed, not yet redeemed) up to the target, and no more than its
    `room` (capacity less the spots taken; None: unlimited) leaves for invitations not yet out,
    so that every code mailed can still be redeemed."""
    wanted = target - out
    if room is not None:
        wanted = min(wanted, room - out)
    return max(0, wanted)


class EntryState(enum.IntEnum):
    UNCONFIRMED = 1
    WAITING = 2
    INVITED = 3
    REMOVED = 4


WAITLIST_LINK_INVALID = "WAITLIST_LINK_INVALID"
WAITLIST_ENTRY_NOT_FOUND = "WAITLIST_ENTRY_NOT_FOUND"
WAITLIST_ENTRY_NOT_WAITING = "WAITLIST_ENTRY_NOT_WAITING"


@dataclass(frozen=True)
class Referral:
    """What the rules need to know of a confirmed sign-up through someone's referral code."""

    referee_email: str
    """canonical"""
    referrer_email: str
    referrer_referrals: int
    """counted so far"""
    same_client_as_referrer: bool
    """the referee joined from the address its referrer joined from"""
    same_client_counted_lately: bool
    """a referral of the same referrer from the referee's address counted within the window"""


@dataclass(frozen=True)
class ReferralRules:
    """When a referral moves its referrer up, and by how much. A referral counts once (when the
    referee confirms), and not at all when it looks like one person's fake addresses: the same
    canonical email, a disposable domain, or the referrer's own client address or one that
    already counted for them lately."""

    places: int
    cap: int
    disposable_domains: frozenset[str]
    same_client_window: datetime.timedelta

    def not_counted_because(self, referral: Referral) -> str | None:
        """Why the referral does not count, or None when it does."""
        if referral.referee_email == referral.referrer_email:
            return "same email"
        if referral.referrer_referrals >= self.cap:
            return "cap reached"
        if self.disposable(referral.referee_email.rpartition("@")[2]):
            return "disposable domain"
        if referral.same_client_as_referrer or referral.same_client_counted_lately:
            return "same client address"
        return None

    def disposable(self, domain_name: str) -> bool:
        """Whether the domain, or a domain it is under, is on the disposable list."""
        labels = domain_name.split(".")
        return any(".".join(labels[start:]) in self.disposable_domains for start in range(len(labels) - 1))
