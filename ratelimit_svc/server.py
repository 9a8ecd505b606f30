"""ratelimit_svc's gRPC surface: Envoy's `RateLimitService.ShouldRateLimit`, and the rules it
applies (`RateLimitRuleService`, for admin_svc and meshctl).

Envoy sends, for each request it routes, descriptors of `route` (the gRPC method the route
reaches) and `remote_address` (the client). Each descriptor is counted against its route's rule
in the client's current window; one over its limit makes the answer OVER_LIMIT, which Envoy
turns into a 429. The statuses carry the limit, what remains and when the window renews, for
Envoy's `x-ratelimit-*` headers.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import grpc
import structlog
from envoy_ratelimit import rls_pb2, rls_pb2_grpc
from google.protobuf.duration_pb2 import Duration
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2_grpc
from redis.exceptions import RedisError

from mesh.access import edge_methods
from mesh.errors import FieldViolation, InvalidArgument
from mesh.ratelimits import CLIENT_KEY, PAGES, ROUTE_KEY
from mesh.redis import KeySpace
from mesh.server import ServiceRuntime
from mesh.windows import Hit, Window, WindowCounters, window
from ratelimit_svc.domain import ANY_ROUTE, Rule, Unit, rule_for, rule_violations, with_defaults
from ratelimit_svc.settings import RateLimitSettings
from ratelimit_svc.store import RuleStore

log = structlog.get_logger("ratelimit_svc.server")
OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
_UNITS = {
    pb.TIME_UNIT_SECOND: Unit.SECOND,
    pb.TIME_UNIT_MINUTE: Unit.MINUTE,
    pb.TIME_UNIT_HOUR: Unit.HOUR,
    pb.TIME_UNIT_DAY: Unit.DAY,
}
_TIME_UNITS = {unit: time_unit for time_unit, unit in _UNITS.items()}


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):
    def __init__(self, rules: RuleStore, counters: WindowCounters, keys: KeySpace) -> None:
        self._rules = rules
        self._counters = counters
        self._keys = keys

    async def ShouldRateLimit(self, request: rls_pb2.RateLimitRequest, context: Any) -> rls_pb2.RateLimitResponse:
        rules = await self._rules.in_force()
        now = time.time()
        counted: list[tuple[Rule, Window]] = []
        hits: list[Hit] = []
        for descriptor in request.descriptors:
            entries = {entry.key: entry.value for entry in descriptor.entries}
            rule = rule_for(entries.get(ROUTE_KEY, ""), rules)
            current = window(now, rule.unit.seconds)
            # Tagged with the client: one request's counts share a Cluster slot.
            key = self._keys.tagged(entries.get(CLIENT_KEY, ""), "hits", rule.route, str(current.index))
            added = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else request.hits_addend
            counted.append((rule, current))
            hits.append(Hit(key, added or 1, current.seconds_left + 1))
        try:
            counts = await self._counters.add(hits)
        except RedisError as error:
            log.warning("rate-limit counters unreachable; each rule fails as it says", error=str(error)[:200])
            return _answer([_unreachable(rule) for rule, _ in counted])
        statuses = [
            _status(rule, count, current.seconds_left) for (rule, current), count in zip(counted, counts, strict=True)
        ]
        return _answer(statuses)


class RateLimitRuleService(ratelimit_service_pb2_grpc.RateLimitRuleServiceServicer):
    def __init__(self, rules: RuleStore) -> None:
        self._rules = rules

    async def ListRateLimitRules(
        self, request: pb.ListRateLimitRulesRequest, context: Any
    ) -> pb.ListRateLimitRulesResponse:
        stored = await self._stored()
        in_force = sorted(with_defaults(stored).values(), key=lambda rule: rule.route)
        return pb.ListRateLimitRulesResponse(rules=[_rule_message(rule, rule.route not in stored) for rule in in_force])

    async def UpdateRateLimitRule(
        self, request: pb.UpdateRateLimitRuleRequest, context: Any
    ) -> pb.UpdateRateLimitRuleResponse:
        given = request.rule
        unit = _UNITS.get(given.unit)
        rule = Rule(given.route, given.requests_per_unit, unit or Unit.MINUTE, given.fail_closed)
        violations = rule_violations(rule, _limited_routes())
        if unit is None:
            violations.append(FieldViolation("rule.unit", "TIME_UNIT_SECOND, _MINUTE, _HOUR or _DAY"))
        if violations:
            raise InvalidArgument(violations)
        await self._rules.put(rule)
        log.info("rate-limit rule set", route=rule.route, requests_per_unit=rule.requests_per_unit, unit=rule.unit.name)
        return pb.UpdateRateLimitRuleResponse(rule=_rule_message(rule, default=False))

    async def DeleteRateLimitRule(
        self, request: pb.DeleteRateLimitRuleRequest, context: Any
    ) -> pb.DeleteRateLimitRuleResponse:
        stored = await self._stored()
        # A stored rule goes whatever its route: one whose method left the contract included.
        if request.route not in stored and request.route != ANY_ROUTE and request.route not in _limited_routes():
            raise InvalidArgument([FieldViolation("route", "a method the edge routes, or *")])
        await self._rules.delete(request.route)
        log.info("rate-limit rule removed", route=request.route)
        stored.pop(request.route, None)
        in_force = rule_for(request.route, with_defaults(stored))
        now = _rule_message(replace(in_force, route=request.route), default=in_force.route not in stored)
        return pb.DeleteRateLimitRuleResponse(rule=now)

    async def _stored(self) -> dict[str, Rule]:
        # Past the cache: whoever just changed a rule sees the change.
        return {rule.route: rule for rule in await self._rules.stored()}


def _limited_routes() -> tuple[str, ...]:
    return (*edge_methods(), PAGES)


def _rule_message(rule: Rule, default: bool) -> pb.RateLimitRule:
    return pb.RateLimitRule(
        route=rule.route,
        requests_per_unit=rule.requests_per_unit,
        unit=_TIME_UNITS[rule.unit],
        fail_closed=rule.fail_closed,
        default=default,
    )


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


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: RateLimitSettings | None = None) -> None:
    """ratelimit_svc's wiring; `own` settings, else `MESH_RATELIMIT_*`."""
    rules = RuleStore(runtime.engine, (own or RateLimitSettings()).rules_cache)
    service = RateLimitService(rules, runtime.counters, runtime.keys)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(service, server)
    ratelimit_service_pb2_grpc.add_RateLimitRuleServiceServicer_to_server(RateLimitRuleService(rules), server)
