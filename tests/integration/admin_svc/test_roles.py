"""The role matrix: every AdminService method, called by a viewer, an operator, an owner, a user
and nobody, is let through or refused exactly as written here (the contract says the same; this
table is the check of it). A call let through may still be refused for its empty request, but
never for who made it."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb

from mesh.errors import error_info
from tests.integration.admin_svc.conftest import new_admin, signed_in
from tests.integration.auth_svc.conftest import Stack, refusal

_RULE = ratelimit_pb.RateLimitRule(route="*", requests_per_unit=10, unit=ratelimit_pb.TIME_UNIT_MINUTE)
REQUESTS: dict[str, Callable[[], Message]] = {
    "CreateSession": pb.CreateSessionRequest,
    "VerifySessionMfa": pb.VerifySessionMfaRequest,
    "GetAdminJwks": pb.GetAdminJwksRequest,
    "CreateAdmin": pb.CreateAdminRequest,
    "ListAdmins": pb.ListAdminsRequest,
    "UpdateAdmin": pb.UpdateAdminRequest,
    "CreateInviteBatch": pb.CreateInviteBatchRequest,
    "CreateCampaign": pb.CreateCampaignRequest,
    "UpdateCampaign": pb.UpdateCampaignRequest,
    "ListCampaigns": pb.ListCampaignsRequest,
    "ListInvites": pb.ListInvitesRequest,
    "GetInvite": pb.GetInviteRequest,
    "DisableInvite": pb.DisableInviteRequest,
    "ListReferrals": pb.ListReferralsRequest,
    "ListWaitlistEntries": pb.ListWaitlistEntriesRequest,
    "GetWaitlistStats": pb.GetWaitlistStatsRequest,
    "ReleaseWaitlistPlaces": pb.ReleaseWaitlistPlacesRequest,
    "RemoveWaitlistEntry": pb.RemoveWaitlistEntryRequest,
    "MoveWaitlistEntry": pb.MoveWaitlistEntryRequest,
    "GetUserWallet": pb.GetUserWalletRequest,
    "SuspendUser": pb.SuspendUserRequest,
    "ReactivateUser": pb.ReactivateUserRequest,
    "ListEmails": pb.ListEmailsRequest,
    "SendEmail": pb.SendEmailRequest,
    "GetEmailStats": pb.GetEmailStatsRequest,
    "ListRateLimits": pb.ListRateLimitsRequest,
    # Two rules for one route: refused before anything is changed.
    "UpdateRateLimits": lambda: pb.UpdateRateLimitsRequest(rules=[_RULE, _RULE]),
    "ListAuditLogEntries": pb.ListAuditLogEntriesRequest,
    "GetRegistrationStats": pb.GetRegistrationStatsRequest,
    "VerifyAuditLog": pb.VerifyAuditLogRequest,
    "StartPasskeyRegistration": pb.StartPasskeyRegistrationRequest,
    "CreatePasskey": pb.CreatePasskeyRequest,
    "ListPasskeys": pb.ListPasskeysRequest,
    "StartPasskeySignIn": pb.StartPasskeySignInRequest,
    # Last: it ends the caller's session.
    "RevokeSession": pb.RevokeSessionRequest,
}
CALLERS = ("viewer", "operator", "owner", "user", "nobody")
ANYONE = set(CALLERS)
VIEWER_UP = {"viewer", "operator", "owner"}
OPERATOR_UP = {"operator", "owner"}
OWNER = {"owner"}
ALLOWED: dict[str, set[str]] = {
    "CreateSession": ANYONE,
    "VerifySessionMfa": ANYONE,
    "GetAdminJwks": set(),
    "CreateAdmin": OWNER,
    "ListAdmins": OWNER,
    "UpdateAdmin": OWNER,
    "CreateInviteBatch": OPERATOR_UP,
    "CreateCampaign": OPERATOR_UP,
    "UpdateCampaign": OPERATOR_UP,
    "ListCampaigns": VIEWER_UP,
    "ListInvites": VIEWER_UP,
    "GetInvite": VIEWER_UP,
    "DisableInvite": OPERATOR_UP,
    "ListReferrals": VIEWER_UP,
    "ListWaitlistEntries": VIEWER_UP,
    "GetWaitlistStats": VIEWER_UP,
    "ReleaseWaitlistPlaces": OPERATOR_UP,
    "RemoveWaitlistEntry": OPERATOR_UP,
    "MoveWaitlistEntry": OPERATOR_UP,
    "GetUserWallet": VIEWER_UP,
    "SuspendUser": OPERATOR_UP,
    "ReactivateUser": OPERATOR_UP,
    "ListEmails": VIEWER_UP,
    "SendEmail": OPERATOR_UP,
    "GetEmailStats": VIEWER_UP,
    "ListRateLimits": VIEWER_UP,
    "UpdateRateLimits": OPERATOR_UP,
    "ListAuditLogEntries": VIEWER_UP,
    "GetRegistrationStats": VIEWER_UP,
    "VerifyAuditLog": VIEWER_UP,
    "StartPasskeyRegistration": VIEWER_UP,
    "CreatePasskey": VIEWER_UP,
    "ListPasskeys": VIEWER_UP,
    "StartPasskeySignIn": ANYONE,
    "RevokeSession": VIEWER_UP,
}
_WHO_IS_REFUSED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}


def test_the_table_covers_every_method_of_the_contract() -> None:
    methods = {method.name for method in pb.DESCRIPTOR.services_by_name["AdminService"].methods}

    assert set(REQUESTS) == methods == set(ALLOWED)


@pytest.mark.parametrize("caller", CALLERS)
async def test_each_method_lets_through_exactly_the_callers_its_role_allows(stack: Stack, caller: str) -> None:
    token: str | None = None
    if caller in VIEWER_UP:
        token = await signed_in(stack, await new_admin(stack, caller))
    elif caller == "user":
        _, verified = await stack.signed_up()
        token = verified.session.access_token
    stub = stack.admin(token)

    outcomes = {}
    for method, request in REQUESTS.items():
        try:
            await getattr(stub, method)(request())
            outcomes[method] = "allowed"
        except grpc.aio.AioRpcError as error:
            outcomes[method] = "refused" if error.code() in _WHO_IS_REFUSED and _about_the_caller(error) else "allowed"

    expected = {method: "allowed" if caller in allowed else "refused" for method, allowed in ALLOWED.items()}
    assert outcomes == expected


def _about_the_caller(error: grpc.aio.AioRpcError) -> bool:
    """A refusal of who called, not of what they sent (a wrong MFA token is about the request)."""
    info = error_info(error)
    return info is not None and info.reason in {
        "ACCESS_TOKEN_MISSING",
        "ACCESS_TOKEN_INVALID",
        "ADMIN_ROLE_TOO_LOW",
        "CALL_SIGNATURE_MISSING",
    }


async def test_an_admin_token_does_not_open_user_methods_nor_a_user_token_admin_ones(stack: Stack) -> None:
    admin_token = await signed_in(stack, await new_admin(stack))
    _, verified = await stack.signed_up()
    as_admin = stack.auth.GetMe(auth_pb.GetMeRequest(), metadata=(("authorization", f"Bearer {admin_token}"),))
    as_user = stack.admin(verified.session.access_token).ListAdmins(pb.ListAdminsRequest())

    assert await refusal(as_admin) == (grpc.StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
    assert await refusal(as_user) == (grpc.StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_INVALID")
