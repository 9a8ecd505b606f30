"""ratelimit_svc's gRPC surface: Envoy's `RateLimitService.ShouldRateLimit`.

Envoy sends, for each request it routes, descriptors of `route` (the gRPC method the route
reaches) and `remote_address` (the client). Each descriptor is counted against its route's rule
in the client's current window; one over its limit makes the answer OVER_LIMIT, which Envoy
turns into a 429. The statuses carry the limit, what remains and when the window renews, for
Envoy's `x-ratelimit-*` headers.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
import structlog
from envoy_ratelimit import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from mesh.server import ServiceRuntime
from ratelimit_svc.counters import Counters
from ratelimit_svc.domain import CLIENT_KEY, ROUTE_KEY, Rule, rule_for, window
from ratelimit_svc.store import RuleStore

log = structlog.get_logger("ratelimit_svc.server")
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, rules: RuleStore, counters: Counters) -> None:
        self._rules = rules
        self._counters = counters

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        rules = await self._rules.in_force()
        now = time.time()
        counted: list[tuple[Rule, float, str, int]] = []
        for descriptor in request.descriptors:
            entries = {entry.key: entry.value for entry in descriptor.entries}
            rule = rule_for(entries.get(ROUTE_KEY, ""), rules)
            current = window(now, rule.unit)
            key = self._counters.key(entries.get(CLIENT_KEY, ""), rule.route, current.index)
            hits = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else request.hits_addend
            counted.append((rule, current.seconds_left, key, hits or 1))
        try:
            counts = await self._counters.add(
                [(key, hits, int(seconds_left * 1000) + 1000) for _, seconds_left, key, hits in counted]
            )
        except (RedisConnectionError, RedisTimeoutError) as error:
            log.warning("rate-limit counters unreachable; each rule fails as it says", error=str(error)[:200])
            return _answer([_unreachable(rule) for rule, *_ in counted])
        statuses = [
            _status(rule, count, seconds_left)
            for (rule, seconds_left, _, _), count in zip(counted, counts, strict=True)
        ]
        return _answer(statuses)


def _answer(statuses: list[rls_pb2.RateLimitResponse.DescriptorStatus]) -> rls_pb2.RateLimitResponse:
    over = any(status.code == OVER_LIMIT for status in statuses)
    return rls_pb2.RateLimitResponse(overall_code=OVER_LIMIT if over else OK, statuses=statuses)


def _limit(rule: Rule) -> rls_pb2.RateLimitResponse.RateLimit:
    return rls_pb2.RateLimitResponse.RateLimit(
        name=rule.route,
        requests_per_unit=rule.requests_per_unit,
        unit=int(rule.unit),  # type: ignore[arg-type]
    )


def _status(rule: Rule, count: int, seconds_left: float) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    reset = Duration()
    reset.FromMilliseconds(int(seconds_left * 1000))
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=OVER_LIMIT if count > rule.requests_per_unit else OK,
        current_limit=_limit(rule),
        limit_remaining=max(0, rule.requests_per_unit - count),
        duration_until_reset=reset,
    )


def _unreachable(rule: Rule) -> rls_pb2.RateLimitResponse.DescriptorStatus:
    return rls_pb2.RateLimitResponse.DescriptorStatus(
        code=OVER_LIMIT if rule.fail_closed else OK, current_limit=_limit(rule)
    )


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    rules = RuleStore(runtime.engine, runtime.settings.ratelimit_rules_cache)
    service = RateLimitService(rules, Counters(runtime.redis, runtime.keys))
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
