"""Admission: past what a service can answer in time, a call from outside the mesh is refused at
once (`RESOURCE_EXHAUSTED`, `OVERLOADED`, with a `RetryInfo` and a `retry-after` header) instead
of waiting in a queue that only grows.

Calls are admitted by the cost their contract declares (`(invitemesh.mesh.v1.edge).cost`), each
cost against a limit of its own, so that a burst of registrations never starves code checks:

- `COST_PASSWORD_HASH` calls wait for the process's hashing pool (mesh.passwords). They are
  admitted while a new one would start hashing within the latency target, as the pool's measured
  time per hash says: the bound follows the machine, its load and the argon2 parameters.
- Every other call is admitted under an adaptive concurrency limit (`AdaptiveLimit`), which
  lowers itself when calls get slower than they were and raises itself while they are not.

Calls between services (audience `INTERNAL`) are never refused here: they are parts of work
already admitted at its start, and refusing one would leave that work half done.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import grpc
from invitemesh.mesh.v1 import edge_pb2

from mesh.access import Audience, access_rule
from mesh.contracts import method_descriptor
from mesh.errors import Overloaded
from mesh.handlers import with_behavior
from mesh.metrics import Metrics
from mesh.passwords import HashingPool

if TYPE_CHECKING:
    from mesh.handlers import Behavior, Context, Continuation, Handler


class Cost(IntEnum):
    CHEAP = edge_pb2.COST_CHEAP
    PASSWORD_HASH = edge_pb2.COST_PASSWORD_HASH


@functools.lru_cache(maxsize=1024)
def cost_of(full_method: str) -> Cost | None:
    """The declared cost of a method called from outside the mesh; None for a call admission
    leaves alone (between services, infrastructure, or a method the contracts do not know)."""
    rule = access_rule(full_method)
    method = method_descriptor(full_method)
    if rule is None or method is None or rule.audience in (Audience.INTERNAL, Audience.UNSPECIFIED):
        return None
    declared = method.GetOptions().Extensions[edge_pb2.edge].cost
    return Cost.PASSWORD_HASH if declared == edge_pb2.COST_PASSWORD_HASH else Cost.CHEAP


class AdaptiveLimit:
    """How many cheap calls may be in flight at once: a gradient limit after Netflix's
    concurrency-limits (Gradient2). Call times are averaged over short windows; the limit is
    scaled by how the long-run average time compares with the last window's (never by less than
    half at once), plus a little headroom for growth, and smoothed. A limit that calls do not
    fill is not raised. The long run catches up in about a hundred windows, so calls slowed for
    a reason that lasts (a machine busy hashing) are let in again at their new pace. Written here
    because no maintained Python library implements one."""

    def __init__(
        self,
        maximum: int = 1000,
        minimum: int = 16,
        *,
        tolerance: float = 2.0,
        smoothing: float = 0.2,
        window: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Starts at `maximum`: until calls slow down, nothing says to admit fewer.
        `tolerance`: how much slower than the long run calls may get before the limit falls.
        `window`: seconds of calls averaged into one sample (at least ten calls)."""
        self.limit = float(maximum)
        self._minimum, self._maximum = minimum, maximum
        self._tolerance, self._smoothing = tolerance, smoothing
        self._window, self._clock = window, clock
        self._long_run: float | None = None
        self._window_start = clock()
        self._window_seconds = 0.0
        self._window_calls = 0
        self._window_most_in_flight = 0
        self._in_flight = 0

    def admits(self, in_flight: int) -> bool:
        return in_flight < int(self.limit)

    def admit(self) -> Callable[[], None]:
        """Admits a call or raises `Overloaded`; answers what to call when it has ended."""
        if not self.admits(self._in_flight):
            raise _overloaded()
        self._in_flight += 1
        in_flight = self._in_flight
        started = self._clock()

        def ended() -> None:
            self._in_flight -= 1
            self.record(self._clock() - started, in_flight)

        return ended

    def record(self, seconds: float, in_flight: int) -> None:
        """One admitted call took `seconds`, with `in_flight` calls (itself included) at its start."""
        self._window_seconds += seconds
        self._window_calls += 1
        self._window_most_in_flight = max(self._window_most_in_flight, in_flight)
        now = self._clock()
        if self._window_calls < 10 or now - self._window_start < self._window:
            return
        self._update(self._window_seconds / self._window_calls, self._window_most_in_flight)
        self._window_start, self._window_seconds, self._window_calls, self._window_most_in_flight = now, 0.0, 0, 0

    def _update(self, recent: float, most_in_flight: int) -> None:
        # About the last hundred windows: what calls took before any load came.
        long_run = recent if self._long_run is None else self._long_run + 0.01 * (recent - self._long_run)
        # Calls got much faster than the long run remembers: let it catch up sooner.
        self._long_run = long_run * 0.95 if long_run > 2 * recent else long_run
        if most_in_flight < self.limit / 2:
            return
        gradient = max(0.5, min(1.0, self._tolerance * long_run / recent)) if recent > 0 else 1.0
        wanted = self.limit * gradient + math.sqrt(self.limit)
        smoothed = self.limit * (1 - self._smoothing) + wanted * self._smoothing
        self.limit = min(float(self._maximum), max(float(self._minimum), smoothed))


class HashingLimit:
    """How many calls that hash a password may wait for the pool at once (from their admission
    to their hash given to the threads, and while it runs): as many as the threads hash at a
    time, plus as many as they can start within `wait_target` seconds."""

    def __init__(self, pool: HashingPool, wait_target: float) -> None:
        self._pool = pool
        self._wait_target = wait_target

    @property
    def limit(self) -> int:
        seconds = self._pool.seconds_per_hash
        if seconds is None:
            # Nothing has been hashed yet to measure by: the threads alone.
            return self._pool.threads
        return self._pool.threads + math.floor(self._pool.threads * self._wait_target / seconds)

    def admits(self, waiting: int) -> bool:
        return waiting < self.limit

    def admit(self) -> Callable[[], None]:
        """Admits a call or raises `Overloaded`; answers what to call when it has ended."""
        if not self.admits(self._pool.waiting):
            raise _overloaded()
        return self._pool.reserve()


def _overloaded() -> Overloaded:
    # Whole seconds (what a Retry-After header can say); clients add jitter of their own.
    return Overloaded("the service is at capacity; try again shortly", retry_after=1)


class AdmissionInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, metrics: Metrics, pool: HashingPool, hash_wait_target: float, cheap_calls_limit: int) -> None:
        self._metrics = metrics
        self._limits: dict[Cost, AdaptiveLimit | HashingLimit] = {
            Cost.CHEAP: AdaptiveLimit(cheap_calls_limit),
            Cost.PASSWORD_HASH: HashingLimit(pool, hash_wait_target),
        }
        for cost in Cost:
            metrics.admission_limit.labels(cost.name.lower()).set_function(functools.partial(self.limit, cost))

    def limit(self, cost: Cost) -> int:
        """How many calls of `cost` are admitted at once, as things stand."""
        return int(self._limits[cost].limit)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        cost = cost_of(handler_call_details.method)
        if handler is None or handler.unary_unary is None or cost is None:
            return handler
        limit = self._limits[cost]
        behavior: Behavior = handler.unary_unary  # type: ignore[assignment]
        shed = self._metrics.shed.labels(cost.name.lower())

        async def admission(request: Any, context: Context) -> Any:
            try:
                ended = limit.admit()
            except Overloaded:
                shed.inc()
                raise
            try:
                return await behavior(request, context)
            finally:
                ended()

        return with_behavior(handler, admission)
