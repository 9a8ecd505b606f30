"""The admission rules on their own: which calls are admitted by which limit, and how the limits
move (tests/integration/mesh/test_admission.py has them in a real server)."""

from __future__ import annotations

import asyncio

import pytest
from google.rpc import error_details_pb2

from mesh.admission import AdaptiveLimit, Cost, HashingLimit, cost_of
from mesh.errors import OVERLOADED_HEADER, Overloaded
from mesh.passwords import HashingPool


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_windows(limit: AdaptiveLimit, clock: Clock, seconds: float, windows: int, in_flight: int | None = None) -> None:
    """`windows` windows of twenty calls, each taking `seconds`, with `in_flight` calls at once
    (unsaid: as many as the limit admits)."""
    for _ in range(windows):
        for _ in range(20):
            clock.now += 0.01
            limit.record(seconds, int(limit.limit) if in_flight is None else in_flight)


@pytest.mark.parametrize(
    ("method", "cost"),
    [
        ("/invitemesh.auth.v1.AuthService/Register", Cost.PASSWORD_HASH),
        ("/invitemesh.auth.v1.AuthService/Login", Cost.PASSWORD_HASH),
        ("/invitemesh.auth.v1.AuthService/ResetPassword", Cost.PASSWORD_HASH),
        ("/invitemesh.admin.v1.AdminService/CreateSession", Cost.PASSWORD_HASH),
        ("/invitemesh.auth.v1.AuthService/Refresh", Cost.CHEAP),
        ("/invitemesh.invite.v1.InviteService/CheckCode", Cost.CHEAP),
        ("/invitemesh.invite.v1.InviteService/ListMyCodes", Cost.CHEAP),
        ("/invitemesh.invite.v1.InviteService/HoldCode", None),
        ("/grpc.health.v1.Health/Check", None),
        ("/invitemesh.invite.v1.InviteService/NoSuchMethod", None),
    ],
)
def test_calls_from_outside_are_admitted_by_their_declared_cost_and_calls_between_services_never(
    method: str, cost: Cost | None
) -> None:
    assert cost_of(method) is cost


def test_the_hashing_limit_follows_the_measured_time_per_hash() -> None:
    pool = HashingPool(threads=2)
    limit = HashingLimit(pool, wait_target=0.25)
    assert limit.limit == 2  # nothing measured: only what the threads hash at once

    pool.observe(0.0625)
    # Two threads start 2 * 0.25 / 0.0625 = 8 more hashes within 0.25 s.
    assert limit.limit == 10
    assert limit.admits(9) and not limit.admits(10)

    for _ in range(200):
        pool.observe(0.125)  # the machine got busier: each hash takes twice as long
    assert limit.limit == 6


def test_the_adaptive_limit_falls_when_calls_slow_down_and_never_below_its_minimum() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=128, minimum=16, clock=clock)
    run_windows(limit, clock, seconds=0.005, windows=50)
    assert limit.limit == 128  # it starts at its most, and fast calls keep it there

    run_windows(limit, clock, seconds=0.05, windows=10)
    assert limit.limit < 64

    run_windows(limit, clock, seconds=0.5, windows=10)
    assert limit.limit == 16
    assert not limit.admits(16) and limit.admits(15)


def test_a_slowdown_that_lasts_becomes_the_new_normal() -> None:
    """What the long run remembers catches up (about a hundred windows): calls that stay slow
    for a reason other than their own number (a busy machine) are let in again."""
    clock = Clock()
    limit = AdaptiveLimit(maximum=128, minimum=16, clock=clock)
    run_windows(limit, clock, seconds=0.005, windows=50)
    run_windows(limit, clock, seconds=0.05, windows=10)
    fallen = limit.limit

    run_windows(limit, clock, seconds=0.05, windows=200)
    assert limit.limit > fallen


def test_the_adaptive_limit_grows_back_once_calls_are_fast_again_and_not_past_its_maximum() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=200, minimum=16, clock=clock)
    run_windows(limit, clock, seconds=0.005, windows=20)
    run_windows(limit, clock, seconds=0.05, windows=20)
    fallen = limit.limit
    assert fallen < 100

    run_windows(limit, clock, seconds=0.005, windows=200)
    assert limit.limit == 200


def test_a_limit_its_calls_do_not_fill_is_not_raised() -> None:
    clock = Clock()
    limit = AdaptiveLimit(maximum=128, clock=clock)
    run_windows(limit, clock, seconds=0.005, windows=20)
    run_windows(limit, clock, seconds=0.05, windows=20)
    run_windows(limit, clock, seconds=0.005, windows=1, in_flight=3)  # the window the slow calls end in
    fallen = limit.limit
    assert fallen < 64

    run_windows(limit, clock, seconds=0.005, windows=200, in_flight=3)
    assert limit.limit == fallen


def test_an_overloaded_refusal_says_when_to_come_back_and_marks_itself_for_the_edge() -> None:
    refusal = Overloaded("busy", 0.2)
    status = refusal.to_status()

    retry = error_details_pb2.RetryInfo()
    assert [detail.Unpack(retry) for detail in status.details].count(True) == 1
    assert retry.retry_delay.seconds == 1  # at least a whole second, as Retry-After says it
    assert refusal.reason == "OVERLOADED"
    assert dict(refusal.headers()) == {"retry-after": "1", OVERLOADED_HEADER: "1"}
    assert dict(Overloaded("busy", 2.5).headers())["retry-after"] == "3"


async def test_a_call_admitted_to_hash_waits_for_the_pool_until_its_hash_is_given_to_the_threads() -> None:
    pool = HashingPool(threads=1)
    release = pool.reserve()
    assert pool.waiting == 1

    async def hash_once() -> str:
        return await pool.run(lambda: "hashed")

    # Hashed in a task the call started (as a registration's saga does): counted as queued from
    # the moment it was given to the threads, and no longer once done.
    assert await asyncio.create_task(hash_once()) == "hashed"
    assert pool.waiting == 0
    await pool.run(lambda: "hashed again")
    assert pool.waiting == 0  # only the first hash was promised
    release()
    assert pool.waiting == 0


async def test_a_call_that_ends_without_hashing_gives_its_place_back() -> None:
    pool = HashingPool(threads=1)
    limit = HashingLimit(pool, wait_target=1.0)
    ends = [limit.admit()]
    with pytest.raises(Overloaded):
        limit.admit()  # one thread, nothing measured: one at a time
    ends.pop()()
    limit.admit()
