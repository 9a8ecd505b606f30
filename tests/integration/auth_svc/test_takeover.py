"""A pending registration cannot be taken over (security issue 14.1): V registers an email, an
attacker registers the same email with a code and a password of their own, and V's mailbox holds
two codes. Each code activates only the registration it was mailed for, and only for the client
holding that registration's token (or its password); the first verified wins, and the other
registration lapses and gives its hold back."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb

from mesh.emails import canonical_email
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal, someone
from tests.integration.conftest import fetchval

ATTACKERS_PASSWORD = "the attacker's own passphrase"
WRONG_CODE = (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")


def _verify(email: str, code: str, *, registration: str = "", password: str = "") -> pb.VerifyEmailRequest:
    if registration:
        return pb.VerifyEmailRequest(email=email, code=code, registration=registration)
    return pb.VerifyEmailRequest(email=email, code=code, password=password)


@dataclass(frozen=True)
class TwoRegistrations:
    """V's registration of an email, then the attacker's of the same email, and the two codes in
    V's mailbox, in the order they were mailed."""

    email: str
    victims_code: str
    attackers_code: str
    victim: pb.RegisterResponse
    attacker: pb.RegisterResponse
    first: str
    newest: str


async def _two_registrations(stack: Stack) -> TwoRegistrations:
    victims_code, attackers_code = await stack.mint(count=2)
    email = someone()
    victim = await stack.register(email, victims_code)
    attacker = await stack.register(email, attackers_code, password=ATTACKERS_PASSWORD)
    first = await stack.verification_code(email, nth=1)
    newest = await stack.verification_code(email, nth=2)
    return TwoRegistrations(email, victims_code, attackers_code, victim, attacker, first, newest)


async def _hold_state(stack: Stack, code: str) -> int:
    found = await stack.invites.GetCode(invite_pb.GetCodeRequest(code=code))
    (redemption,) = found.redemptions
    return redemption.hold.state


async def _given_back(stack: Stack, code: str) -> None:
    async def released() -> bool:
        return await _hold_state(stack, code) == invite_pb.HOLD_STATE_RELEASED

    await eventually(released, within=30, what=f"the hold of {code} given back")


async def test_the_newest_code_in_the_mailbox_does_not_activate_the_attackers_registration(stack: Stack) -> None:
    both = await _two_registrations(stack)
    email, first, newest, victim, attacker = both.email, both.first, both.newest, both.victim, both.attacker

    # V types the newest code: it was mailed for the attacker's registration, not V's.
    assert await refusal(stack.auth.VerifyEmail(_verify(email, newest, registration=victim.registration))) == (
        WRONG_CODE
    )
    assert await refusal(stack.auth.VerifyEmail(_verify(email, newest, password=PASSWORD))) == WRONG_CODE
    verified = await stack.auth.VerifyEmail(_verify(email, first, registration=victim.registration))

    assert verified.user.state == pb.USER_STATE_ACTIVE
    assert (await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))).session.access_token
    assert await refusal(stack.auth.Login(pb.LoginRequest(email=email, password=ATTACKERS_PASSWORD))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    # The referrer is the owner of V's code, and the attacker's registration is gone with its hold.
    referrer = "SELECT referrer_admin_id::text FROM auth.users WHERE id = $1::uuid"
    owner = (await stack.invites.GetCode(invite_pb.GetCodeRequest(code=both.victims_code))).code.owner.admin_id
    assert await fetchval(stack.database_url, referrer, verified.user.id) == owner
    assert await refusal(stack.auth.VerifyEmail(_verify(email, newest, registration=attacker.registration))) == (
        WRONG_CODE
    )
    await _given_back(stack, both.attackers_code)
    assert await _hold_state(stack, both.victims_code) in (invite_pb.HOLD_STATE_HELD, invite_pb.HOLD_STATE_CONFIRMED)


async def test_whichever_registration_is_verified_first_wins_and_the_other_lapses(stack: Stack) -> None:
    """The other order: the later registration is verified first (its own code, its own token),
    so the account has its password, and the earlier one can no longer be verified."""
    both = await _two_registrations(stack)
    email = both.email

    verified = await stack.auth.VerifyEmail(_verify(email, both.newest, registration=both.attacker.registration))

    assert verified.user.state == pb.USER_STATE_ACTIVE
    assert (await stack.auth.Login(pb.LoginRequest(email=email, password=ATTACKERS_PASSWORD))).session.access_token
    earlier = _verify(email, both.first, registration=both.victim.registration)
    assert await refusal(stack.auth.VerifyEmail(earlier)) == WRONG_CODE
    assert await refusal(stack.auth.VerifyEmail(_verify(email, both.first, password=PASSWORD))) == WRONG_CODE
    await _given_back(stack, both.victims_code)


async def test_a_later_registration_leaves_the_earlier_ones_password_and_code_working(stack: Stack) -> None:
    """From another device, without the token: the earlier registration's own password and its
    own code; the attacker's password with that code does nothing."""
    both = await _two_registrations(stack)
    email, first = both.email, both.first

    assert await refusal(stack.auth.VerifyEmail(_verify(email, first, password=ATTACKERS_PASSWORD))) == WRONG_CODE
    verified = await stack.auth.VerifyEmail(_verify(email, first, password=PASSWORD))

    assert verified.user.email == email
    assert (await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))).session.access_token
    await _given_back(stack, both.attackers_code)


async def test_a_code_needs_its_registrations_token_or_password(stack: Stack) -> None:
    (code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, code)
    mailed = await stack.verification_code(email)
    other = await stack.register(someone(), (await stack.mint())[0])

    without = await refusal(stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=mailed)))
    foreign_token = await refusal(stack.auth.VerifyEmail(_verify(email, mailed, registration=other.registration)))
    made_up_token = await refusal(stack.auth.VerifyEmail(_verify(email, mailed, registration="x" * 43)))

    assert without[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert foreign_token == made_up_token == WRONG_CODE
    # Those refusals spent attempts of the other registration's code, not of this one.
    assert (await stack.auth.VerifyEmail(_verify(email, mailed, registration=registered.registration))).user.id
    pending = "SELECT count(*) FROM auth.users WHERE canonical_email = $1 AND state = 1"
    assert await fetchval(stack.database_url, pending, canonical_email(email)) == 0
