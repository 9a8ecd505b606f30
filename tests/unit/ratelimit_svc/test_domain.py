"""Rules: which rule a route falls under, and what a rule to set must be."""

from __future__ import annotations

from ratelimit_svc.domain import ANY_ROUTE, DEFAULT_RULES, Rule, Unit, rule_for, rule_violations, with_defaults


def test_a_stored_rule_replaces_the_default_of_its_route_and_others_fall_under_any_route() -> None:
    stored = Rule("/invitemesh.invite.v1.InviteService/CheckCode", 5, Unit.SECOND)
    rules = with_defaults({stored.route: stored})

    assert rule_for(stored.route, rules) == stored
    assert rule_for("/something/Else", rules).route == ANY_ROUTE
    assert len(rules) == len(DEFAULT_RULES)


def test_the_guessing_target_is_the_one_default_that_fails_closed() -> None:
    assert [rule.route for rule in DEFAULT_RULES if rule.fail_closed] == [
        "/invitemesh.invite.v1.InviteService/CheckCode"
    ]


def test_a_rule_to_set_names_a_routed_method_or_every_other_route_and_counts_from_zero() -> None:
    routes = ["/invitemesh.auth.v1.AuthService/Login"]

    assert rule_violations(Rule(routes[0], 0, Unit.HOUR), routes) == []
    assert rule_violations(Rule(ANY_ROUTE, 5, Unit.SECOND), routes) == []
    assert [v.field for v in rule_violations(Rule("/x.v1.X/Y", -1, Unit.DAY), routes)] == [
        "rule.route",
        "rule.requests_per_unit",
    ]
