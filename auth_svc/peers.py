"""auth_svc's calls to other services: holding and releasing invite codes while a registration
runs, and the outbox receivers that deliver what a committed transaction promised (an email, a
hold to confirm or give back, a new user's own codes). Every call is signed, has a deadline, and
goes through its peer's breaker (mesh.channels), shared by the inline calls and the outbox's, so
a peer that is down answers fast instead of piling up calls; the outbox tries those again later."""

from __future__ import annotations

import functools
import uuid

import grpc
import structlog
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from invitemesh.mail.v1 import mail_service_pb2_grpc

from auth_svc.store.records import CONFIRM_HOLD, MINT_CODES, RELEASE_HOLD
from mesh.breakers import AsyncBreaker, BreakerOpen
from mesh.channels import Peers, unreachable
from mesh.errors import FieldViolation, InvalidArgument, PassedOn, Unavailable, error_info, field_violations, status_of
from mesh.mailing import DEADLINE, SEND_EMAIL, delivered, email_receivers
from mesh.outbox import Deliver, DeliverTogether, Message

log = structlog.get_logger("auth_svc.peers")
INVITES, MAIL = "invite_svc", "mail_svc"


class PeerStubs:
    """auth_svc's stubs of its peers, each made once, on first use (a peer's address is only
    needed when it is called), and their breakers."""

    def __init__(self, peers: Peers) -> None:
        self._peers = peers

    def breaker(self, service: str) -> AsyncBreaker:
        return self._peers.breaker(service)

    @functools.cached_property
    def invites(self) -> invite_service_pb2_grpc.InviteServiceAsyncStub:
        return invite_service_pb2_grpc.InviteServiceStub(self._peers.channel(INVITES))

    @functools.cached_property
    def mail(self) -> mail_service_pb2_grpc.MailServiceAsyncStub:
        return mail_service_pb2_grpc.MailServiceStub(self._peers.channel(MAIL))


class Invites:
    """HoldCode and ReleaseHold, inline in a registration."""

    def __init__(self, stubs: PeerStubs) -> None:
        self._stubs = stubs
        self._breaker = stubs.breaker(INVITES)

    async def hold(self, code: str, email: str) -> invite_pb.Hold:
        """One use of `code` held for `email`; invite_svc's refusal is passed on as it was given
        (its bad-input violation named after our field, `invite_code`)."""
        request = invite_pb.HoldCodeRequest(code=code, email=email, request_id=uuid.uuid4().hex)
        try:
            async with self._breaker.guard():
                return (await self._stubs.invites.HoldCode(request, timeout=DEADLINE)).hold
        except BreakerOpen:
            raise _invites_unavailable() from None
        except grpc.aio.AioRpcError as error:
            if unreachable(error):
                raise _invites_unavailable() from None
            if error.code() is grpc.StatusCode.INVALID_ARGUMENT:
                info = error_info(error)
                violations = [FieldViolation("invite_code", v.description) for v in field_violations(error)]
                raise InvalidArgument(
                    violations or [FieldViolation("invite_code", "not a valid invite code")],
                    reason=info.reason if info else "INVALID_ARGUMENT",
                ) from None
            raise PassedOn(status_of(error)) from None

    async def release(self, hold_id: str) -> None:
        """Gives a hold back; if that fails, the hold lapses at its time to live anyway."""
        request = invite_pb.ReleaseHoldRequest(hold_id=hold_id)
        try:
            async with self._breaker.guard():
                await self._stubs.invites.ReleaseHold(request, timeout=DEADLINE)
        except (grpc.aio.AioRpcError, BreakerOpen) as error:
            log.warning("could not release a hold; it lapses on its own", hold_id=hold_id, error=type(error).__name__)


def _invites_unavailable() -> Unavailable:
    return Unavailable("INVITE_SERVICE_UNAVAILABLE", "invite codes cannot be checked right now; try again shortly")


def receivers(stubs: PeerStubs) -> dict[str, Deliver]:
    """The outbox's receivers. Each is idempotent through the message id."""

    invites, mail = stubs.breaker(INVITES), stubs.breaker(MAIL)
    send_email, _ = mailing(stubs)

    async def confirm_hold(message: Message) -> None:
        request = invite_pb.ConfirmHoldRequest(hold_id=message.payload["hold_id"], user_id=message.payload["user_id"])
        await delivered(invites, stubs.invites.ConfirmHold(request, timeout=DEADLINE))

    async def release_hold(message: Message) -> None:
        request = invite_pb.ReleaseHoldRequest(hold_id=message.payload["hold_id"])
        await delivered(invites, stubs.invites.ReleaseHold(request, timeout=DEADLINE))

    async def mint_codes(message: Message) -> None:
        payload = message.payload
        request = invite_pb.MintCodesRequest(
            count=payload["count"],
            # Messages written before codes had a number of uses of their own had one use each.
            max_uses=payload.get("max_uses", 1),
            owner=invite_pb.Owner(user_id=payload["user_id"]),
            campaign_id=payload["campaign_id"],
            request_id=str(message.id),
        )
        minted = await delivered(invites, stubs.invites.MintCodes(request, timeout=DEADLINE))
        codes = "\n".join(code.code for code in minted.codes)
        mail_request = mail_pb.SendEmailRequest(
            template=mail_pb.EMAIL_TEMPLATE_INVITE_CODES,
            to=payload["to"],
            variables={"codes": codes},
            idempotency_key=f"{message.id}:codes",
        )
        await delivered(mail, stubs.mail.SendEmail(mail_request, timeout=DEADLINE))

    return {SEND_EMAIL: send_email, CONFIRM_HOLD: confirm_hold, RELEASE_HOLD: release_hold, MINT_CODES: mint_codes}


def together(stubs: PeerStubs) -> dict[str, DeliverTogether]:
    """The outbox's batch receivers: emails go to mail_svc several in one call."""
    _, send_emails = mailing(stubs)
    return {SEND_EMAIL: send_emails}


def mailing(stubs: PeerStubs) -> tuple[Deliver, DeliverTogether]:
    return email_receivers(
        lambda request: stubs.mail.SendEmail(request, timeout=DEADLINE),
        lambda request: stubs.mail.BatchSendEmails(request, timeout=DEADLINE),
        stubs.breaker(MAIL),
    )
