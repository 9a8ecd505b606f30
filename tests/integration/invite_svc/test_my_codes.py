"""ListMyCodes: a user sees their own codes, with uses, page by page."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from invite_svc.server import add_servicers
from mesh.channels import open_channel
from mesh.errors import field_violations
from mesh.services import INVITE
from tests.integration.mesh.trust_fixtures import BearerIsUserId, make_trust


@pytest.fixture
async def stubs(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> AsyncIterator[
    tuple[invite_service_pb2_grpc.InviteServiceAsyncStub, invite_service_pb2_grpc.InviteServiceAsyncStub]
]:
    trust = make_trust(tmp_path, migrated_database_url, redis_url)
    server = trust.server(INVITE, add_servicers, tokens=BearerIsUserId())
    await server.start()
    target = f"127.0.0.1:{server.port}"
    async with (
        open_channel(target, trust.settings, "auth_svc", trust.signer("auth_svc")) as auth,
        open_channel(target, trust.settings) as user,
    ):
        yield invite_service_pb2_grpc.InviteServiceStub(auth), invite_service_pb2_grpc.InviteServiceStub(user)
    await server.stop(0)


async def test_a_user_pages_through_their_own_codes_with_uses(
    stubs: tuple[invite_service_pb2_grpc.InviteServiceAsyncStub, invite_service_pb2_grpc.InviteServiceAsyncStub],
) -> None:
    auth, user = stubs
    me, someone_else = str(uuid.uuid4()), str(uuid.uuid4())
    mine = (await auth.MintCodes(pb.MintCodesRequest(count=5, max_uses=3, owner=pb.Owner(user_id=me)))).codes
    await auth.MintCodes(pb.MintCodesRequest(count=2, max_uses=3, owner=pb.Owner(user_id=someone_else)))
    held = (
        await auth.HoldCode(
            pb.HoldCodeRequest(code=mine[0].code, email=f"{uuid.uuid4().hex}@example.com", request_id=uuid.uuid4().hex)
        )
    ).hold
    await auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.id, user_id=str(uuid.uuid4())))
    await auth.HoldCode(
        pb.HoldCodeRequest(code=mine[0].code, email=f"{uuid.uuid4().hex}@example.com", request_id=uuid.uuid4().hex)
    )
    bearer = (("authorization", f"Bearer {me}"),)

    first = await user.ListMyCodes(pb.ListMyCodesRequest(page_size=3), metadata=bearer)
    rest = await user.ListMyCodes(pb.ListMyCodesRequest(page_size=3, page_token=first.next_page_token), metadata=bearer)

    listed = [*first.codes, *rest.codes]
    assert sorted(code.code for code in listed) == sorted(code.code for code in mine)
    assert rest.next_page_token == ""
    used = next(code for code in listed if code.code == mine[0].code)
    assert (used.confirmed_uses, used.held_uses, used.max_uses) == (1, 1, 3)


async def test_a_forged_page_token_is_bad_input(
    stubs: tuple[invite_service_pb2_grpc.InviteServiceAsyncStub, invite_service_pb2_grpc.InviteServiceAsyncStub],
) -> None:
    _, user = stubs
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await user.ListMyCodes(
            pb.ListMyCodesRequest(page_token="bm90LWEtdG9rZW4="),
            metadata=(("authorization", f"Bearer {uuid.uuid4()}"),),
        )

    assert [v.field for v in field_violations(refused.value)] == ["page_token"]
