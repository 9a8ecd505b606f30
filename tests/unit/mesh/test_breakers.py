"""The asyncio breaker: failures of awaited work count, refusals about one request do not, an open
breaker refuses without running anything, and a trial after the reset timeout closes it again."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, Gauge

from mesh.breakers import AsyncBreaker, BreakerOpen


class Down(Exception):
    pass


class Refused(Exception):
    pass


def _breaker(reset: float = 60.0) -> tuple[AsyncBreaker, Gauge]:
    states = Gauge("mesh_breaker_state", "state", ["breaker"], registry=CollectorRegistry())
    return AsyncBreaker("smtp", 3, reset, counts=lambda error: isinstance(error, Down), states=states), states


async def _fail(breaker: AsyncBreaker, error: Exception) -> None:
    with pytest.raises(type(error)):
        async with breaker.guard():
            await asyncio.sleep(0)
            raise error


async def test_awaited_failures_count_and_open_the_breaker() -> None:
    breaker, states = _breaker()
    for _ in range(2):
        await _fail(breaker, Down())
    assert breaker.state == "closed"

    await _fail(breaker, Down())  # the third raises itself, not a breaker error

    assert breaker.state == "open"
    assert states.labels("smtp")._value.get() == 2
    assert breaker.seconds_until_trial() > 59


async def test_an_open_breaker_refuses_without_running_the_block() -> None:
    breaker, _ = _breaker()
    for _ in range(3):
        await _fail(breaker, Down())
    ran = False

    with pytest.raises(BreakerOpen):
        async with breaker.guard():
            ran = True

    assert not ran


async def test_refusals_about_one_request_do_not_count_and_a_success_resets_the_count() -> None:
    breaker, _ = _breaker()
    for _ in range(2):
        await _fail(breaker, Down())
    await _fail(breaker, Refused())
    for _ in range(2):
        await _fail(breaker, Down())
    async with breaker.guard():
        await asyncio.sleep(0)
    await _fail(breaker, Down())

    assert breaker.state == "closed"


async def test_after_the_reset_timeout_one_success_closes_it_and_one_failure_reopens_it() -> None:
    breaker, states = _breaker(reset=0.05)
    for _ in range(3):
        await _fail(breaker, Down())
    await asyncio.sleep(0.06)
    assert breaker.seconds_until_trial() == 0

    async with breaker.guard():
        await asyncio.sleep(0)

    assert breaker.state == "closed" and states.labels("smtp")._value.get() == 0
    for _ in range(3):
        await _fail(breaker, Down())
    await asyncio.sleep(0.06)
    await _fail(breaker, Down())
    assert breaker.state == "open"


async def _reset_timeout_over(breaker: AsyncBreaker) -> None:
    """The breaker says when a trial may run; waits that long."""
    await asyncio.sleep(breaker.seconds_until_trial() + 0.005)
    assert breaker.seconds_until_trial() == 0


async def test_half_open_lets_exactly_one_of_many_concurrent_callers_try() -> None:
    breaker, _ = _breaker(reset=0.05)
    for _ in range(3):
        await _fail(breaker, Down())
    await _reset_timeout_over(breaker)
    trial_running, trial_may_end = asyncio.Event(), asyncio.Event()
    ran = 0

    async def caller() -> str:
        nonlocal ran
        try:
            async with breaker.guard():
                ran += 1
                trial_running.set()
                await trial_may_end.wait()
        except BreakerOpen:
            return "refused"
        return "ran"

    callers = [asyncio.ensure_future(caller()) for _ in range(20)]
    await trial_running.wait()
    refused = [task for task in callers if task.done()]
    trial_may_end.set()
    outcomes = await asyncio.gather(*callers)

    assert sorted(outcomes) == ["ran"] + ["refused"] * 19
    assert len(refused) == 19 and ran == 1, "the others failed fast, while the trial was in flight"
    assert breaker.state == "closed"
    async with breaker.guard():
        pass


async def test_a_failed_trial_opens_the_breaker_again_and_the_next_trial_may_run() -> None:
    breaker, _ = _breaker(reset=0.05)
    for _ in range(3):
        await _fail(breaker, Down())
    await _reset_timeout_over(breaker)

    await _fail(breaker, Down())

    assert breaker.state == "open" and breaker.seconds_until_trial() > 0
    await _reset_timeout_over(breaker)
    async with breaker.guard():
        pass
    assert breaker.state == "closed"
