"""Rate-limit rules and fixed windows, free of I/O.

A rule limits one route (a gRPC method, the same for its REST form, since Envoy names the route
by the method it reaches) per client address, in requests per unit of time; `*` is the rule of
every route without its own. A rule also says what happens while the counters are unreachable:
most routes stay open, a guessing target such as CheckCode closes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import IntEnum

from envoy_ratelimit import rls_pb2

from mesh.errors import FieldViolation

ANY_ROUTE = "*"


class Unit(IntEnum):
    SECOND = rls_pb2.RateLimitResponse.RateLimit.SECOND
    MINUTE = rls_pb2.RateLimitResponse.RateLimit.MINUTE
    HOUR = rls_pb2.RateLimitResponse.RateLimit.HOUR
    DAY = rls_pb2.RateLimitResponse.RateLimit.DAY

    @property
    def seconds(self) -> int:
        return {Unit.SECOND: 1, Unit.MINUTE: 60, Unit.HOUR: 3600, Unit.DAY: 86400}[self]


@dataclass(frozen=True)
class Rule:
    route: str
    requests_per_unit: int
    unit: Unit
    fail_closed: bool = False
    """Refuse while the counters are unreachable (else let requests through)."""


DEFAULT_RULES: tuple[Rule, ...] = (
    Rule("/invitemesh.invite.v1.InviteService/CheckCode", 30, Unit.MINUTE, fail_closed=True),
    Rule("/invitemesh.auth.v1.AuthService/Register", 10, Unit.MINUTE),
    Rule("/invitemesh.auth.v1.AuthService/Login", 20, Unit.MINUTE),
    Rule(ANY_ROUTE, 600, Unit.MINUTE),
)


def with_defaults(stored: Mapping[str, Rule]) -> dict[str, Rule]:
    """The rules in force: the defaults, each replaced by a stored rule of the same route."""
    return {**{rule.route: rule for rule in DEFAULT_RULES}, **stored}


def rule_violations(rule: Rule, routes: Collection[str]) -> list[FieldViolation]:
    """What is wrong with a rule to set, given the routes the edge has."""
    violations = []
    if rule.route != ANY_ROUTE and rule.route not in routes:
        example = "/invitemesh.auth.v1.AuthService/Login"
        violations.append(FieldViolation("rule.route", f"a method the edge routes, such as {example}, or *"))
    if rule.requests_per_unit < 0:
        violations.append(FieldViolation("rule.requests_per_unit", "0 (refuse every request) or more"))
    return violations


def rule_for(route: str, rules: Mapping[str, Rule]) -> Rule:
    return rules.get(route) or rules[ANY_ROUTE]
