"""The methods other services call: a user by id, users page by page, and suspending and
reactivating an account (which ends and then allows its sessions)."""

from __future__ import annotations

import uuid

import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb

from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal


async def test_a_user_is_found_by_id_and_an_unknown_or_malformed_id_is_refused(stack: Stack) -> None:
    email, verified = await stack.signed_up()
    chain = stack.auth_as("chain_svc")

    found = await chain.GetUser(pb.GetUserRequest(user_id=verified.user.id))

    assert (found.user.email, found.user.state) == (email, pb.USER_STATE_ACTIVE)
    assert found.user.HasField("verify_time")
    assert await refusal(chain.GetUser(pb.GetUserRequest(user_id=str(uuid.uuid4())))) == (
        grpc.StatusCode.NOT_FOUND,
        "USER_NOT_FOUND",
    )
    assert (await refusal(chain.GetUser(pb.GetUserRequest(user_id="nope"))))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert await refusal(chain.SuspendUser(pb.SuspendUserRequest(user_id=verified.user.id))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CALLER_NOT_ALLOWED",
    )


async def test_users_page_newest_first_without_gaps_or_repeats(stack: Stack) -> None:
    for _ in range(5):
        await stack.signed_up()
    admin = stack.auth_as("admin_svc")

    seen: list[str] = []
    tokens: list[str] = []
    token = ""
    while True:
        page = await admin.ListUsers(pb.ListUsersRequest(page_size=2, page_token=token, state=pb.USER_STATE_ACTIVE))
        seen += [user.id for user in page.users]
        assert all(user.state == pb.USER_STATE_ACTIVE for user in page.users)
        token = page.next_page_token
        if not token:
            break
        tokens.append(token)
    created = [
        (await admin.GetUser(pb.GetUserRequest(user_id=user_id))).user.create_time.ToDatetime() for user_id in seen
    ]

    assert len(seen) == len(set(seen)) >= 5
    assert created == sorted(created, reverse=True)
    # A token belongs to its filter.
    with pytest.raises(grpc.aio.AioRpcError) as other_filter:
        await admin.ListUsers(pb.ListUsersRequest(page_size=2, page_token=tokens[0], state=pb.USER_STATE_SUSPENDED))
    assert other_filter.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_suspended_user_cannot_sign_in_or_refresh_until_reactivated(stack: Stack) -> None:
    email, verified = await stack.signed_up()
    admin = stack.auth_as("admin_svc")

    suspended = await admin.SuspendUser(pb.SuspendUserRequest(user_id=verified.user.id, reason="abuse report"))
    again = await admin.SuspendUser(pb.SuspendUserRequest(user_id=verified.user.id))

    assert suspended.user.state == again.user.state == pb.USER_STATE_SUSPENDED
    assert await refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=verified.session.refresh_token))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    assert await refusal(stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "USER_SUSPENDED",
    )

    reactivated = await admin.ReactivateUser(pb.ReactivateUserRequest(user_id=verified.user.id))

    assert reactivated.user.state == pb.USER_STATE_ACTIVE
    assert (await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))).session.access_token


async def test_a_pending_account_is_neither_suspended_nor_reactivated(stack: Stack) -> None:
    (code,) = await stack.mint()
    email = f"pending.{uuid.uuid4().hex[:8]}@example.com"
    await stack.register(email, code)
    admin = stack.auth_as("admin_svc")
    listed = await admin.ListUsers(pb.ListUsersRequest(page_size=50, state=pb.USER_STATE_PENDING_VERIFICATION))
    (pending,) = [user for user in listed.users if user.email == email]

    assert await refusal(admin.SuspendUser(pb.SuspendUserRequest(user_id=pending.id))) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "USER_NOT_VERIFIED",
    )
