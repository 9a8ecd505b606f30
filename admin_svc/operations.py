"""What admins do through the services that own the data: each a signed call to that service's
internal method (never its database), with a deadline and the peer's breaker.

The changes (`CHANGES`) are idempotent with the key the audit entry gives them, so the sweep can
make one again to settle an entry whose process died mid-call; each is a function of the admin's
request alone, which the entry keeps. The reads are plain calls.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.chain.v1 import chain_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from invitemesh.mail.v1 import mail_service_pb2_grpc
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2_grpc

from mesh.breakers import BreakerOpen
from mesh.channels import Peers, unreachable
from mesh.errors import FieldViolation, InvalidArgument, PassedOn, Unavailable, status_of

log = structlog.get_logger("admin_svc.operations")
T = TypeVar("T")
DEADLINE = 5.0
AUTH, INVITES, MAIL, RATELIMIT, CHAIN = "auth_svc", "invite_svc", "mail_svc", "ratelimit_svc", "chain_svc"
_UNAVAILABLE = {
    CHAIN: "CHAIN_SERVICE_UNAVAILABLE",
    AUTH: "AUTH_SERVICE_UNAVAILABLE",
    INVITES: "INVITE_SERVICE_UNAVAILABLE",
    MAIL: "MAIL_SERVICE_UNAVAILABLE",
    RATELIMIT: "RATELIMIT_SERVICE_UNAVAILABLE",
}


class Downstream:
    """admin_svc's stubs of the services it acts through, each made on first use."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    @functools.cached_property
    def auth(self) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        return auth_service_pb2_grpc.AuthServiceStub(self._peers.channel(AUTH))

    @functools.cached_property
    def invites(self) -> invite_service_pb2_grpc.InviteServiceAsyncStub:
        return invite_service_pb2_grpc.InviteServiceStub(self._peers.channel(INVITES))

    @functools.cached_property
    def wallets(self) -> chain_service_pb2_grpc.ChainServiceAsyncStub:
        return chain_service_pb2_grpc.ChainServiceStub(self._peers.channel(CHAIN))

    @functools.cached_property
    def mail(self) -> mail_service_pb2_grpc.MailServiceAsyncStub:
        return mail_service_pb2_grpc.MailServiceStub(self._peers.channel(MAIL))

    @functools.cached_property
    def rules(self) -> ratelimit_service_pb2_grpc.RateLimitRuleServiceAsyncStub:
        return ratelimit_service_pb2_grpc.RateLimitRuleServiceStub(self._peers.channel(RATELIMIT))

    async def call(self, service: str, call: Callable[[], Awaitable[T]]) -> T:
        """The answer of `call` to `service`; its refusal passed on as given, and the service
        unreachable (or its breaker open) as `UNAVAILABLE`."""
        try:
            async with self._peers.breaker(service).guard():
                return await call()
        except LookupError:
            log.error("no address for a peer; set MESH_SERVICE_ADDRESSES", peer=service)
            raise _unavailable(service) from None
        except BreakerOpen:
            raise _unavailable(service) from None
        except grpc.aio.AioRpcError as error:
            if unreachable(error):
                raise _unavailable(service) from None
            raise PassedOn(status_of(error)) from None


def _unavailable(service: str) -> Unavailable:
    return Unavailable(_UNAVAILABLE[service], f"{service} cannot be reached right now; try again shortly")


Change = Callable[[Any, str, str], Awaitable[Message]]
"""A change through another service: the admin's request, the idempotency key and who acts
(`admin:<id>`) → the answer."""


def changes(downstream: Downstream) -> dict[str, Change]:
    """Every audited change made through another service, by the AdminService method it serves."""
    # Stubs are taken inside each call: a peer's address is needed only when it is called.
    call = downstream.call

    async def create_invite_batch(
        request: pb.CreateInviteBatchRequest, key: str, actor: str
    ) -> pb.CreateInviteBatchResponse:
        mint = invite_pb.MintCodesRequest(
            count=request.count,
            max_uses=request.max_uses,
            owner=invite_pb.Owner(admin_id=actor.removeprefix("admin:")),
            campaign_id=request.campaign_id,
            request_id=key,
        )
        if request.HasField("expire_time"):
            mint.expire_time.CopyFrom(request.expire_time)
        minted = await call(INVITES, lambda: downstream.invites.MintCodes(mint, timeout=DEADLINE))
        return pb.CreateInviteBatchResponse(codes=minted.codes)

    async def create_campaign(request: pb.CreateCampaignRequest, key: str, actor: str) -> pb.CreateCampaignResponse:
        made = invite_pb.CreateCampaignRequest(campaign=request.campaign, request_id=key)
        created = await call(INVITES, lambda: downstream.invites.CreateCampaign(made, timeout=DEADLINE))
        return pb.CreateCampaignResponse(campaign=created.campaign)

    async def update_campaign(request: pb.UpdateCampaignRequest, key: str, actor: str) -> pb.UpdateCampaignResponse:
        update = invite_pb.UpdateCampaignRequest(campaign=request.campaign, update_mask=request.update_mask)
        updated = await call(INVITES, lambda: downstream.invites.UpdateCampaign(update, timeout=DEADLINE))
        return pb.UpdateCampaignResponse(campaign=updated.campaign)

    async def disable_invite(request: pb.DisableInviteRequest, key: str, actor: str) -> pb.DisableInviteResponse:
        disable = invite_pb.DisableCodeRequest(code=request.code)
        disabled = await call(INVITES, lambda: downstream.invites.DisableCode(disable, timeout=DEADLINE))
        return pb.DisableInviteResponse(code=disabled.code)

    async def release_waitlist_places(
        request: pb.ReleaseWaitlistPlacesRequest, key: str, actor: str
    ) -> pb.ReleaseWaitlistPlacesResponse:
        release = invite_pb.ReleaseWaitlistPlacesRequest(
            count=request.count, campaign_id=request.campaign_id, admin_id=actor.removeprefix("admin:"), request_id=key
        )
        released = await call(INVITES, lambda: downstream.invites.ReleaseWaitlistPlaces(release, timeout=DEADLINE))
        return pb.ReleaseWaitlistPlacesResponse(entries=released.entries)

    async def remove_waitlist_entry(
        request: pb.RemoveWaitlistEntryRequest, key: str, actor: str
    ) -> pb.RemoveWaitlistEntryResponse:
        remove = invite_pb.RemoveWaitlistEntryRequest(id=request.id)
        removed = await call(INVITES, lambda: downstream.invites.RemoveWaitlistEntry(remove, timeout=DEADLINE))
        return pb.RemoveWaitlistEntryResponse(entry=removed.entry)

    async def move_waitlist_entry(
        request: pb.MoveWaitlistEntryRequest, key: str, actor: str
    ) -> pb.MoveWaitlistEntryResponse:
        move = invite_pb.MoveWaitlistEntryRequest(id=request.id, places=request.places)
        moved = await call(INVITES, lambda: downstream.invites.MoveWaitlistEntry(move, timeout=DEADLINE))
        return pb.MoveWaitlistEntryResponse(entry=moved.entry)

    async def suspend_user(request: pb.SuspendUserRequest, key: str, actor: str) -> pb.SuspendUserResponse:
        suspend = auth_pb.SuspendUserRequest(user_id=request.user_id, reason=request.reason)
        suspended = await call(AUTH, lambda: downstream.auth.SuspendUser(suspend, timeout=DEADLINE))
        return pb.SuspendUserResponse(user=suspended.user)

    async def reactivate_user(request: pb.ReactivateUserRequest, key: str, actor: str) -> pb.ReactivateUserResponse:
        reactivate = auth_pb.ReactivateUserRequest(user_id=request.user_id)
        reactivated = await call(AUTH, lambda: downstream.auth.ReactivateUser(reactivate, timeout=DEADLINE))
        return pb.ReactivateUserResponse(user=reactivated.user)

    async def send_email(request: pb.SendEmailRequest, key: str, actor: str) -> pb.SendEmailResponse:
        to = request.to
        if request.WhichOneof("recipient") == "user_id":
            asked = auth_pb.GetUserRequest(user_id=request.user_id)
            to = (await call(AUTH, lambda: downstream.auth.GetUser(asked, timeout=DEADLINE))).user.email
        send = mail_pb.SendEmailRequest(
            template=mail_pb.EMAIL_TEMPLATE_PLAIN_TEXT,
            to=to,
            variables={"subject": request.subject, "text": request.text},
            idempotency_key=key,
        )
        sent = await call(MAIL, lambda: downstream.mail.SendEmail(send, timeout=DEADLINE))
        return pb.SendEmailResponse(email=sent.email)

    async def update_rate_limits(
        request: pb.UpdateRateLimitsRequest, key: str, actor: str
    ) -> pb.UpdateRateLimitsResponse:
        routes = [rule.route for rule in request.rules]
        if len(set(routes)) != len(routes):
            raise InvalidArgument([FieldViolation("rules", "one rule per route")])
        listed = ratelimit_pb.ListRateLimitRulesRequest()
        before = await call(RATELIMIT, lambda: downstream.rules.ListRateLimitRules(listed, timeout=DEADLINE))

        async def put(update: ratelimit_pb.UpdateRateLimitRuleRequest) -> None:
            await call(RATELIMIT, lambda: downstream.rules.UpdateRateLimitRule(update, timeout=DEADLINE))

        async def reset(delete: ratelimit_pb.DeleteRateLimitRuleRequest) -> None:
            await call(RATELIMIT, lambda: downstream.rules.DeleteRateLimitRule(delete, timeout=DEADLINE))

        stored = {_terms(rule) for rule in before.rules if not rule.default}
        for rule in request.rules:
            # A rule given back as it is stays untouched: one stored before its route left the
            # contract could not be set again, and need not be.
            if _terms(rule) not in stored:
                await put(ratelimit_pb.UpdateRateLimitRuleRequest(rule=rule))
        for route in {rule.route for rule in before.rules if not rule.default} - set(routes):
            await reset(ratelimit_pb.DeleteRateLimitRuleRequest(route=route))
        after = await call(RATELIMIT, lambda: downstream.rules.ListRateLimitRules(listed, timeout=DEADLINE))
        return pb.UpdateRateLimitsResponse(rules=after.rules)

    return {
        "CreateInviteBatch": create_invite_batch,
        "CreateCampaign": create_campaign,
        "UpdateCampaign": update_campaign,
        "DisableInvite": disable_invite,
        "ReleaseWaitlistPlaces": release_waitlist_places,
        "RemoveWaitlistEntry": remove_waitlist_entry,
        "MoveWaitlistEntry": move_waitlist_entry,
        "SuspendUser": suspend_user,
        "ReactivateUser": reactivate_user,
        "SendEmail": send_email,
        "UpdateRateLimits": update_rate_limits,
    }


def _terms(rule: ratelimit_pb.RateLimitRule) -> tuple[str, int, int, bool]:
    return rule.route, rule.requests_per_unit, rule.unit, rule.fail_closed
