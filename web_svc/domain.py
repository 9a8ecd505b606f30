"""What the pages say and check by themselves, free of I/O: a person's words for the mesh's
reasons, which form field an API field is, and the checks a page makes before any call."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from mesh.invite_codes import InvalidCode, display, normalize

CODE_MESSAGES = {
    "INVITE_CODE_MALFORMED": "Codes look like ABCD-EFGH-J: eight letters or digits and a check symbol.",
    "INVITE_CODE_AMBIGUOUS_SYMBOL": "Codes never contain 0, O, 1 or I. A 0 is probably a Q or D, a 1 an L or 7.",
    "INVITE_CODE_TYPO": "This code has a typo: please check each symbol.",
    "INVITE_CODE_NOT_FOUND": "We don't know this code. Please check it against your invitation.",
    "INVITE_CODE_DISABLED": "This code has been switched off.",
    "INVITE_CODE_EXPIRED": "This code has expired.",
    "INVITE_CODE_NOT_YET_VALID": "This code does not work yet.",
    "INVITE_CODE_EXHAUSTED": "This code has been used up.",
    "INVITE_CAMPAIGN_FULL": "Every spot of this invitation is taken.",
    "INVITE_CAMPAIGN_CLOSED": "This invitation is closed.",
    "INVITE_EMAIL_DOMAIN_NOT_ALLOWED": "This invitation is for other email addresses than this one.",
}
"""Refusals of a code, said beside the code field."""
WAITLIST_INSTEAD = frozenset({"INVITE_CODE_EXHAUSTED", "INVITE_CAMPAIGN_FULL", "INVITE_CAMPAIGN_CLOSED"})
"""Refusals of a code after which the reserve page offers the waitlist: the code was real, its
places are gone."""

MESSAGES = {
    **CODE_MESSAGES,
    "INVITE_CODE_BUSY": "Many people are using this code right now. Please send the form again.",
    "INVALID_CREDENTIALS": "The email or the password is not right.",
    "EMAIL_NOT_VERIFIED": "This email is not verified yet: enter the code we mailed you.",
    "USER_SUSPENDED": "This account is suspended.",
    "VERIFICATION_CODE_INVALID": "This code is not right, has expired or was used up. Ask for a new one.",
    "RESET_TOKEN_INVALID": "This reset link is not valid any more. Ask for a new one.",
    "RATE_LIMITED": "Too many tries from here. Please wait a moment and try again.",
    "OVERLOADED": "Many people are here right now. Please try again in a few seconds.",
    "MFA_TOKEN_INVALID": "Your sign-in took too long. Please sign in with your password again.",
    "TOTP_CODE_INVALID": "This code is not right, or was used already. Please sign in again.",
    "PASSKEY_INVALID": "This passkey did not sign you in. Please sign in with your password again.",
    "PASSKEY_NONE": "You have no passkey yet: use the code from your app.",
    "PASSKEY_CHALLENGE_EXPIRED": "That took too long. Please try again.",
    "PASSKEY_EXISTS": "This passkey is registered already.",
    "WALLET_ADDRESS_INVALID": "Your wallet gave an address we cannot read. Please try again.",
    "WALLET_SIGNATURE_INVALID": "The wallet's signature does not match its address. Please try again.",
    "WALLET_CHALLENGE_EXPIRED": "That took too long. Please link the wallet again.",
    "WALLET_CHALLENGE_USED": "That signature was used already. Please link the wallet again.",
    "WALLET_CHALLENGE_UNKNOWN": "That took too long. Please link the wallet again.",
    "WALLET_ADDRESS_TAKEN": "This wallet is linked to another account.",
    "WALLET_CHAIN_MISMATCH": "Your wallet signed for another network. Switch networks and try again.",
    "CHAIN_UNAVAILABLE": "Wallets cannot be linked right now. Please try again in a moment.",
    "WAITLIST_LINK_INVALID": "This link is not valid. Join again with your email to get a new one.",
}
"""What a person reads for a refusal; any other reason gets `UNEXPECTED`."""
UNEXPECTED = "Something went wrong on our side. Please try again in a moment."
WALLET_NOT_SHOWN = "Your wallet cannot be shown right now. Please reload in a moment."

FORM_FIELDS = {"invite_code": "code", "new_password": "password", "token": "token"}
"""The form field an API field violation belongs beside, where the names differ."""

SIX_DIGITS = re.compile(r"\d{6}")


def message_for(reason: str) -> str:
    return MESSAGES.get(reason, UNEXPECTED)


def form_errors(violations: dict[str, str]) -> dict[str, str]:
    """Field violations keyed by the form field they are shown beside, in a person's words."""
    return {FORM_FIELDS.get(field, field): _sentence(description) for field, description in violations.items()}


def placed(violations: dict[str, str], reason: str) -> tuple[dict[str, str], str | None]:
    """A refusal as messages beside the fields it is about, or else one for the whole form."""
    errors = form_errors(violations)
    return errors, None if errors else message_for(reason)


def in_one_line(violations: dict[str, str], reason: str) -> str:
    """A refusal said once, where there is no field to put it beside."""
    return " ".join(form_errors(violations).values()) or message_for(reason)


def code_problem(typed: str) -> str | None:
    """What is wrong with a typed code that needs no lookup to tell (None: it may exist)."""
    try:
        normalize(typed)
    except InvalidCode as invalid:
        return CODE_MESSAGES[invalid.reason]
    return None


def displayed_code(typed: str) -> str:
    """A code from a link or a form as people read it, when it is well-formed; else as given."""
    try:
        return display(normalize(typed))
    except InvalidCode:
        return typed.strip()[:40]


def verification_code_problem(typed: str) -> str | None:
    return None if SIX_DIGITS.fullmatch(typed.strip()) else "The code from the mail has six digits."


def share_link(origin: str, code: str) -> str:
    """The link a person sends a friend: the reserve page with the code filled in."""
    return f"{origin.rstrip('/')}/?{urlencode({'code': code})}"


def _sentence(description: str) -> str:
    text = description.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


WEI_PER_ETHER = 10**18


def ether(wei: int) -> str:
    """An amount of wei as ether for people: up to six decimals, trailing zeros dropped, and a
    tiny amount said as such rather than as 0."""
    if 0 < wei < WEI_PER_ETHER // 10**6:
        return "less than 0.000001"
    whole, rest = divmod(wei, WEI_PER_ETHER)
    decimals = f"{rest * 10**6 // WEI_PER_ETHER:06d}".rstrip("0")
    return f"{whole:,}.{decimals}" if decimals else f"{whole:,}"


def short_address(address: str) -> str:
    """`0x1234…abcd`: enough of an address to recognise it."""
    return f"{address[:6]}…{address[-4:]}"
