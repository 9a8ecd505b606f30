"""Circuit breakers around outbound dependencies: pybreaker's state machine, guarding coroutines.

pybreaker guards plain calls (and Tornado coroutines); its `calling()` context manager, however,
records the outcome of whatever runs inside it, so an `await` inside the block counts like any
call: an exception leaving the block is a failure, a clean exit a success. Only the exceptions
`counts` accepts are failures of the dependency; others (a refusal about one request, say) pass
through and count as successes, since the dependency answered. The error that trips the breaker
is raised as itself, not replaced, so callers can still tell what happened.

pybreaker lets every caller through while half-open, which under asyncio means every coroutine
that arrives while the trial call is awaited. Here exactly one call is the trial; the others fail
fast (`BreakerOpen`) until it has ended, closing the breaker or opening it again.

The state goes to the `mesh_breaker_state{breaker}` gauge (mesh.metrics): 0 closed, 1 half-open,
2 open.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pybreaker
from prometheus_client import Gauge

BreakerOpen = pybreaker.CircuitBreakerError
_STATE_VALUES = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_HALF_OPEN: 1, pybreaker.STATE_OPEN: 2}


class AsyncBreaker:
    def __init__(
        self,
        name: str,
        failures: int,
        reset_timeout: float,
        counts: Callable[[BaseException], bool],
        states: Gauge | None = None,
    ) -> None:
        self.name = name
        self._trial_in_flight = False
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failures,
            reset_timeout=reset_timeout,
            exclude=[lambda error: not counts(error)],
            name=name,
            throw_new_error_on_trip=False,
        )
        if states is not None:
            states.labels(name).set(0)
            self._breaker.add_listener(_StateGauge(states.labels(name)))

    @property
    def state(self) -> str:
        """`closed`, `open` or `half-open`."""
        return self._breaker.current_state

    def seconds_until_trial(self) -> float:
        """While open: how long until a call may try the dependency again; otherwise 0."""
        if self.state != pybreaker.STATE_OPEN:
            return 0.0
        opened_at = self._breaker._state_storage.opened_at  # pybreaker keeps it nowhere public
        if opened_at is None:
            return 0.0
        elapsed = (datetime.datetime.now(datetime.UTC) - opened_at).total_seconds()
        return max(0.0, self._breaker.reset_timeout - elapsed)

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[None]:
        """Runs the block if the breaker lets it (else raises `BreakerOpen`) and records how it ended."""
        trial = self.state == pybreaker.STATE_HALF_OPEN or (
            self.state == pybreaker.STATE_OPEN and self.seconds_until_trial() == 0
        )
        if trial:
            if self._trial_in_flight:
                raise BreakerOpen(f"{self.name}: a trial call is in flight")
            self._trial_in_flight = True
        try:
            with self._breaker.calling():
                yield
        finally:
            if trial:
                self._trial_in_flight = False


class _StateGauge(pybreaker.CircuitBreakerListener):
    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._gauge.set(_STATE_VALUES.get(new_state.name, 2))
