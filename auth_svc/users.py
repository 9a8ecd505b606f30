"""Users: the signed-in user's own account, and accounts as other services see and change
them (admin_svc suspends and reactivates; leaving ACTIVE ends every session)."""

from __future__ import annotations

import uuid

import structlog
from invitemesh.auth.v1 import auth_service_pb2 as pb

from auth_svc.domain import UserState
from auth_svc.requests import MAX_REASON, user_id
from auth_svc.revocations import SessionRevocations
from auth_svc.store.records import UserRecord
from auth_svc.store.users import UserStore
from mesh.access import current_principal
from mesh.cursors import PageTokens, page_size
from mesh.days import day_window
from mesh.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, Unauthenticated
from mesh.timestamps import optional_timestamp, timestamp

log = structlog.get_logger("auth_svc.users")
_VERIFIED = frozenset({UserState.ACTIVE, UserState.SUSPENDED})


class Users:
    def __init__(self, store: UserStore, pages: PageTokens, revoked: SessionRevocations) -> None:
        self._store = store
        self._pages = pages
        self._revoked = revoked

    async def get_me(self, request: pb.GetMeRequest) -> pb.GetMeResponse:
        user = await self._store.user(uuid.UUID(current_principal.get().id))
        if user is None or user.state is not UserState.ACTIVE:
            raise Unauthenticated("ACCESS_TOKEN_INVALID", "this account is no longer active")
        return pb.GetMeResponse(user=user_message(user))

    async def get_user(self, request: pb.GetUserRequest) -> pb.GetUserResponse:
        user = await self._store.user(user_id(request.user_id))
        if user is None:
            raise _no_such_user()
        return pb.GetUserResponse(user=user_message(user))

    async def list_users(self, request: pb.ListUsersRequest) -> pb.ListUsersResponse:
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        state = None
        if request.state:
            try:
                state = UserState(request.state)
            except ValueError:
                violations.append(FieldViolation("state", "not a user state"))
        query = f"state={state}"
        after = self._pages.keyset_after(request.page_token, query, violations)
        if violations:
            raise InvalidArgument(violations)
        page = await self._store.page(size, after, state)
        return pb.ListUsersResponse(
            users=[user_message(user) for user in page],
            next_page_token=self._pages.keyset_next([(user.create_time, user.id) for user in page], size, query),
        )

    async def registration_stats(self, request: pb.GetRegistrationStatsRequest) -> pb.GetRegistrationStatsResponse:
        window = day_window(request.day, request.time_zone)
        started, verified = await self._store.registrations(window.start, window.end)
        stats = pb.RegistrationStats(day=window.day.isoformat(), started=started, verified=verified)
        return pb.GetRegistrationStatsResponse(stats=stats)

    async def suspend_user(self, request: pb.SuspendUserRequest) -> pb.SuspendUserResponse:
        if len(request.reason) > MAX_REASON:
            raise InvalidArgument([FieldViolation("reason", f"at most {MAX_REASON} characters")])
        user = await self._changed(request.user_id, UserState.SUSPENDED)
        log.info("user suspended; sessions revoked", user_id=str(user.id))
        return pb.SuspendUserResponse(user=user_message(user))

    async def reactivate_user(self, request: pb.ReactivateUserRequest) -> pb.ReactivateUserResponse:
        user = await self._changed(request.user_id, UserState.ACTIVE)
        log.info("user reactivated", user_id=str(user.id))
        return pb.ReactivateUserResponse(user=user_message(user))

    async def _changed(self, wanted: str, to: UserState) -> UserRecord:
        """Suspends or reactivates (doing it twice answers the same); a pending account is neither."""
        account = user_id(wanted)
        changed, revoked = await self._store.change_state(account, _VERIFIED, to)
        await self._revoked.now(revoked)
        if changed is not None:
            return changed
        if await self._store.user(account) is None:
            raise _no_such_user()
        raise FailedPrecondition("USER_NOT_VERIFIED", "the account has not proven its email yet")


def user_message(user: UserRecord) -> pb.User:
    referrer = user.referrer_user_id or user.referrer_admin_id
    return pb.User(
        id=str(user.id),
        email=user.email,
        state=int(user.state),  # type: ignore[arg-type]
        referrer_id=str(referrer) if referrer else "",
        create_time=timestamp(user.create_time),
        verify_time=optional_timestamp(user.verify_time),
    )


def _no_such_user() -> NotFound:
    return NotFound("USER_NOT_FOUND", "no such user")
