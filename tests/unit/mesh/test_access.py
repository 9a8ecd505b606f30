"""The contracts declare access for every method, and the REST surface matches DESIGN §8."""

from google.api import annotations_pb2
from google.protobuf.descriptor import MethodDescriptor

from mesh.access import AccessRule, AdminRole, Audience, access_rule
from mesh.contracts import SERVICE_DESCRIPTORS, full_method_name
from mesh.services import CONTRACT_SERVICES, OPERATOR, SERVICES

PUBLIC, USER, ADMIN = Audience.PUBLIC, Audience.USER, Audience.ADMIN

# DESIGN §8, row by row: method → (verb, path, who).
DESIGN_REST_SURFACE = {
    "invitemesh.invite.v1.InviteService/CheckCode": ("post", "/v1/invites:check", PUBLIC),
    "invitemesh.invite.v1.InviteService/JoinWaitlist": ("post", "/v1/waitlist", PUBLIC),
    "invitemesh.invite.v1.InviteService/ConfirmWaitlistEntry": ("post", "/v1/waitlist:confirm", PUBLIC),
    "invitemesh.invite.v1.InviteService/GetMyWaitlistEntry": ("get", "/v1/waitlist/me", PUBLIC),
    "invitemesh.auth.v1.AuthService/Register": ("post", "/v1/registrations", PUBLIC),
    "invitemesh.auth.v1.AuthService/VerifyEmail": ("post", "/v1/registrations:verify", PUBLIC),
    "invitemesh.auth.v1.AuthService/ResendVerification": ("post", "/v1/registrations:resend", PUBLIC),
    "invitemesh.auth.v1.AuthService/Login": ("post", "/v1/sessions", PUBLIC),
    "invitemesh.auth.v1.AuthService/Refresh": ("post", "/v1/sessions:refresh", PUBLIC),
    "invitemesh.auth.v1.AuthService/Logout": ("post", "/v1/sessions:revoke", PUBLIC),
    "invitemesh.auth.v1.AuthService/RequestPasswordReset": ("post", "/v1/password-resets", PUBLIC),
    "invitemesh.auth.v1.AuthService/ResetPassword": ("post", "/v1/password-resets:confirm", PUBLIC),
    "invitemesh.auth.v1.AuthService/GetMe": ("get", "/v1/users/me", USER),
    "invitemesh.invite.v1.InviteService/ListMyCodes": ("get", "/v1/users/me/invites", USER),
    "invitemesh.auth.v1.AuthService/GetJwks": ("get", "/.well-known/jwks.json", PUBLIC),
    "invitemesh.chain.v1.ChainService/CreateWalletChallenge": ("post", "/v1/wallets:challenge", USER),
    "invitemesh.chain.v1.ChainService/LinkWallet": ("post", "/v1/wallets:link", USER),
    "invitemesh.chain.v1.ChainService/GetMyWallet": ("get", "/v1/users/me/wallet", USER),
    "invitemesh.mail.v1.MailService/ReportDeliveryEvent": ("post", "/v1/mail/events", PUBLIC),
    "invitemesh.admin.v1.AdminService/CreateSession": ("post", "/v1/admin/sessions", PUBLIC),
    "invitemesh.admin.v1.AdminService/VerifySessionMfa": ("post", "/v1/admin/sessions:mfa", PUBLIC),
    "invitemesh.admin.v1.AdminService/CreateInviteBatch": ("post", "/v1/admin/invite-batches", ADMIN),
    "invitemesh.admin.v1.AdminService/ListInvites": ("get", "/v1/admin/invites", ADMIN),
    "invitemesh.admin.v1.AdminService/GetInvite": ("get", "/v1/admin/invites/{code}", ADMIN),
    "invitemesh.admin.v1.AdminService/DisableInvite": ("post", "/v1/admin/invites/{code}:disable", ADMIN),
    "invitemesh.admin.v1.AdminService/ListReferrals": ("get", "/v1/admin/users/{user_id}/referrals", ADMIN),
    "invitemesh.admin.v1.AdminService/SuspendUser": ("post", "/v1/admin/users/{user_id}:suspend", ADMIN),
    "invitemesh.admin.v1.AdminService/ListWaitlistEntries": ("get", "/v1/admin/waitlist", ADMIN),
    "invitemesh.admin.v1.AdminService/GetWaitlistStats": ("get", "/v1/admin/waitlist:stats", ADMIN),
    "invitemesh.admin.v1.AdminService/ReleaseWaitlistPlaces": ("post", "/v1/admin/waitlist:release", ADMIN),
    "invitemesh.admin.v1.AdminService/RemoveWaitlistEntry": ("post", "/v1/admin/waitlist/{id}:remove", ADMIN),
    "invitemesh.admin.v1.AdminService/MoveWaitlistEntry": ("post", "/v1/admin/waitlist/{id}:move", ADMIN),
    "invitemesh.admin.v1.AdminService/ListEmails": ("get", "/v1/admin/emails", ADMIN),
    "invitemesh.admin.v1.AdminService/GetEmailStats": ("get", "/v1/admin/emails:stats", ADMIN),
    "invitemesh.admin.v1.AdminService/SendEmail": ("post", "/v1/admin/emails", ADMIN),
    "invitemesh.admin.v1.AdminService/ListRateLimits": ("get", "/v1/admin/rate-limits", ADMIN),
    "invitemesh.admin.v1.AdminService/UpdateRateLimits": ("put", "/v1/admin/rate-limits", ADMIN),
    "invitemesh.admin.v1.AdminService/ListAuditLogEntries": ("get", "/v1/admin/audit-log", ADMIN),
}
# DESIGN §4 asks for these too (admin accounts, campaigns, reactivation); §8 does not list them.
BEYOND_DESIGN_TABLE = {
    "invitemesh.admin.v1.AdminService/CreateAdmin": ("post", "/v1/admin/admins", ADMIN),
    "invitemesh.admin.v1.AdminService/ListAdmins": ("get", "/v1/admin/admins", ADMIN),
    "invitemesh.admin.v1.AdminService/CreateCampaign": ("post", "/v1/admin/campaigns", ADMIN),
    "invitemesh.admin.v1.AdminService/ListCampaigns": ("get", "/v1/admin/campaigns", ADMIN),
    "invitemesh.admin.v1.AdminService/UpdateCampaign": ("patch", "/v1/admin/campaigns/{campaign.id}", ADMIN),
    "invitemesh.admin.v1.AdminService/ReactivateUser": ("post", "/v1/admin/users/{user_id}:reactivate", ADMIN),
    "invitemesh.admin.v1.AdminService/UpdateAdmin": ("patch", "/v1/admin/admins/{admin.id}", ADMIN),
    "invitemesh.admin.v1.AdminService/RevokeSession": ("post", "/v1/admin/sessions:revoke", ADMIN),
    "invitemesh.invite.v1.InviteService/ListMyReferrals": ("get", "/v1/users/me/referrals", USER),
    "invitemesh.admin.v1.AdminService/VerifyAuditLog": ("get", "/v1/admin/audit-log:verify", ADMIN),
    "invitemesh.admin.v1.AdminService/GetRegistrationStats": ("get", "/v1/admin/registrations:stats", ADMIN),
    "invitemesh.admin.v1.AdminService/StartPasskeyRegistration": (
        "post",
        "/v1/admin/passkeys:startRegistration",
        ADMIN,
    ),
    "invitemesh.admin.v1.AdminService/CreatePasskey": ("post", "/v1/admin/passkeys", ADMIN),
    "invitemesh.admin.v1.AdminService/ListPasskeys": ("get", "/v1/admin/passkeys", ADMIN),
    "invitemesh.admin.v1.AdminService/StartPasskeySignIn": ("post", "/v1/admin/sessions:startPasskey", PUBLIC),
    "invitemesh.admin.v1.AdminService/GetUserWallet": ("get", "/v1/admin/users/{user_id}/wallet", ADMIN),
    "invitemesh.chain.v1.ChainService/UnlinkWallet": ("delete", "/v1/users/me/wallet", USER),
}


def _all_methods() -> list[MethodDescriptor]:
    return [method for service in SERVICE_DESCRIPTORS for method in service.methods]


def _http_rule(method: MethodDescriptor) -> tuple[str, str] | None:
    options = method.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return None
    rule = options.Extensions[annotations_pb2.http]
    verb = rule.WhichOneof("pattern")
    return verb, getattr(rule, verb)


def test_every_service_of_the_catalogue_has_a_contract() -> None:
    ours = {name for spec in SERVICES for name in spec.grpc_services if name.startswith("invitemesh.")}
    assert {service.full_name for service in SERVICE_DESCRIPTORS} == ours
    assert {spec.grpc_service for spec in CONTRACT_SERVICES} <= ours


def test_every_method_declares_an_audience() -> None:
    undeclared = [
        method.full_name
        for method in _all_methods()
        if access_rule(full_method_name(method)).audience is Audience.UNSPECIFIED  # type: ignore[union-attr]
    ]
    assert undeclared == []


def test_internal_methods_name_known_callers_and_admin_methods_a_role() -> None:
    known = {spec.name for spec in SERVICES} | {OPERATOR}
    for method in _all_methods():
        rule = access_rule(full_method_name(method))
        assert rule is not None
        if rule.audience is Audience.INTERNAL:
            assert rule.callers, method.full_name
            assert rule.callers <= known, method.full_name
        elif rule.audience is Audience.ADMIN:
            # Only the operator tooling may stand in for an admin (to bootstrap the first one).
            assert rule.callers <= {OPERATOR}, method.full_name
        else:
            assert not rule.callers, method.full_name
        if rule.audience is Audience.ADMIN:
            assert rule.min_admin_role is not AdminRole.UNSPECIFIED, method.full_name


def test_rest_surface_is_design_section_8_exactly() -> None:
    declared = {}
    for method in _all_methods():
        rule = _http_rule(method)
        if rule is not None:
            path = full_method_name(method).lstrip("/")
            declared[path] = (*rule, access_rule("/" + path).audience)  # type: ignore[union-attr]

    assert declared == DESIGN_REST_SURFACE | BEYOND_DESIGN_TABLE


def test_only_internal_methods_lack_a_rest_mapping() -> None:
    for method in _all_methods():
        rule = access_rule(full_method_name(method))
        assert rule is not None
        assert (_http_rule(method) is None) == (rule.audience is Audience.INTERNAL), method.full_name


def test_reads_the_declared_rule_of_a_method() -> None:
    assert access_rule("/invitemesh.invite.v1.InviteService/HoldCode") == AccessRule(
        Audience.INTERNAL, frozenset({"auth_svc"})
    )
    assert access_rule("/invitemesh.admin.v1.AdminService/UpdateAdmin") == AccessRule(
        Audience.ADMIN, min_admin_role=AdminRole.OWNER
    )
    assert access_rule("/invitemesh.admin.v1.AdminService/CreateAdmin") == AccessRule(
        Audience.ADMIN, frozenset({"meshctl"}), AdminRole.OWNER
    )
    assert access_rule("/invitemesh.auth.v1.AuthService/Register") == AccessRule(Audience.PUBLIC)


def test_unknown_methods_have_no_rule() -> None:
    assert access_rule("/invitemesh.auth.v1.AuthService/Nope") is None
    assert access_rule("/some.other.Service/Register") is None
