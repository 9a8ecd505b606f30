"""Recovery: a password reset link mailed to an account's owner, then spent once for a new
password, which ends every session of the account.

A reset request spends the same budgets for every email and answers before it looks: its mail
is queued after the answer, so neither the answer nor its timing tells whether the email has
an account.
"""

from __future__ import annotations

import datetime

import structlog
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb

from auth_svc.domain import UserState
from auth_svc.requests import MAX_TOKEN, Emails, now
from auth_svc.revocations import SessionRevocations
from auth_svc.store.records import NewToken
from auth_svc.store.recovery import RecoveryStore
from auth_svc.store.users import UserStore
from auth_svc.throttle import RequestBudgets
from auth_svc.tokens import new_opaque_token, token_digest
from mesh.errors import FieldViolation, InvalidArgument, Unauthenticated
from mesh.followups import FollowUps
from mesh.mailing import Mail
from mesh.passwords import Passwords, password_problem

log = structlog.get_logger("auth_svc.recovery")


class Recovery:
    def __init__(
        self,
        store: RecoveryStore,
        users: UserStore,
        passwords: Passwords,
        budgets: RequestBudgets,
        emails: Emails,
        follow_ups: FollowUps,
        revoked: SessionRevocations,
        reset_url: str,
        lifetime: datetime.timedelta,
    ) -> None:
        self._store = store
        self._users = users
        self._passwords = passwords
        self._budgets = budgets
        self._emails = emails
        self._follow_ups = follow_ups
        self._revoked = revoked
        self._reset_url = reset_url
        self._lifetime = lifetime

    async def request_password_reset(self, request: pb.RequestPasswordResetRequest) -> pb.RequestPasswordResetResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._emails.read(request.email, violations)
        if canonical is None:
            raise InvalidArgument(violations)
        if not await self._budgets.spend(canonical):
            self._follow_ups.start(self._mail_link(canonical))
        return pb.RequestPasswordResetResponse()

    async def _mail_link(self, canonical: str) -> None:
        user = await self._users.account(canonical)
        if user is None or user.state is not UserState.ACTIVE:
            return
        token = new_opaque_token()
        expire = now() + self._lifetime
        variables = {
            "reset_url": f"{self._reset_url}#token={token}",
            "expires_in_minutes": str(round(self._lifetime.total_seconds() / 60)),
        }
        mail = Mail(mail_pb.EMAIL_TEMPLATE_PASSWORD_RESET, user.email, variables, expire_time=expire)
        await self._store.add_reset(user, NewToken(token_digest(token), expire), mail)

    async def reset_password(self, request: pb.ResetPasswordRequest) -> pb.ResetPasswordResponse:
        violations: list[FieldViolation] = []
        if not 0 < len(request.token) <= MAX_TOKEN:
            violations.append(FieldViolation("token", "required, as the reset link carries it"))
        if (problem := password_problem(request.new_password)) is not None:
            violations.append(FieldViolation("new_password", problem))
        if violations:
            raise InvalidArgument(violations)
        password_hash = await self._passwords.hash(request.new_password)
        user_id, revoked = await self._store.reset_password(token_digest(request.token), password_hash)
        if user_id is None:
            raise Unauthenticated(
                "RESET_TOKEN_INVALID", "the reset link is unknown, used or expired; ask for a new one"
            )
        await self._revoked.now(revoked)
        log.info("password reset; sessions revoked", user_id=str(user_id))
        return pb.ResetPasswordResponse()
