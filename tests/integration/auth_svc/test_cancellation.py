"""A registration whose call is cancelled (its client went away, its deadline passed) leaves no
orphan hold (security issue 14.3): cancelled at each step of the saga, what it held is either
given back or written into the registration, never left to lapse with nothing pointing at it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb

from auth_svc.peers import Invites
from auth_svc.store.registrations import RegistrationStore
from mesh.emails import canonical_email
from mesh.followups import FollowUps
from mesh.passwords import Passwords
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, someone

STEPS = [(Passwords, "hash"), (Invites, "hold"), (RegistrationStore, "register")]
REGISTER = "/invitemesh.auth.v1.AuthService/Register"


def _paused(method: Callable[..., Awaitable[Any]], before: bool, reached: asyncio.Event, resume: asyncio.Event) -> Any:
    """`method`, stopping before it starts or after it ends until `resume` is set."""

    async def paused(*args: Any, **kwargs: Any) -> Any:
        if before:
            reached.set()
            await resume.wait()
        result = await method(*args, **kwargs)
        if not before:
            reached.set()
            await resume.wait()
        return result

    return paused


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
@pytest.mark.parametrize(("owner", "step"), STEPS, ids=[name for _, name in STEPS])
async def test_a_registration_cancelled_at_any_step_leaves_no_orphan_hold(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, owner: type, step: str, before: bool
) -> None:
    (code,) = await stack.mint()
    email = someone()
    reached, resume = asyncio.Event(), asyncio.Event()
    monkeypatch.setattr(owner, step, _paused(getattr(owner, step), before, reached, resume))
    registry = stack.servers["auth_svc"].metrics.registry

    def cancelled() -> float:
        return registry.get_sample_value("mesh_rpcs_total", {"method": REGISTER, "code": "CANCELLED"}) or 0.0

    already = cancelled()
    call = stack.auth.Register(pb.RegisterRequest(email=email, password=PASSWORD, invite_code=code))
    await asyncio.wait_for(reached.wait(), 30)
    call.cancel()

    async def seen_by_the_server() -> bool:
        return cancelled() > already

    await eventually(seen_by_the_server, what="the server's call cancelled")
    monkeypatch.undo()
    resume.set()
    follow_ups = next(w for w in stack.servers["auth_svc"].runtime.workers if isinstance(w, FollowUps))
    await follow_ups.settled()

    live, pending = await _holds_and_registrations(stack, email)
    assert live == pending, "every live hold belongs to a pending registration, and no other hold is live"
    if (step, before) in {("hash", True), ("hash", False), ("hold", True)}:
        assert live == set(), "nothing was held before the hold"
    # The code is usable again at once, or (the registration was written) by that registration.
    retried = await stack.register(email, code)
    assert retried.registration


async def _holds_and_registrations(stack: Stack, email: str) -> tuple[set[object], set[object]]:
    connection = await asyncpg.connect(stack.database_url)
    try:
        canonical = canonical_email(email)
        live = await connection.fetch("SELECT id FROM invite.holds WHERE canonical_email = $1 AND state = 1", canonical)
        pending = await connection.fetch(
            "SELECT hold_id FROM auth.users WHERE canonical_email = $1 AND state = 1", canonical
        )
    finally:
        await connection.close()
    return {row["id"] for row in live}, {row["hold_id"] for row in pending}
