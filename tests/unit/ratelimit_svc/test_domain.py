"""Rules and windows: which rule a route falls under, and where a window starts and ends."""

from __future__ import annotations

import pytest

from ratelimit_svc.domain import ANY_ROUTE, DEFAULT_RULES, Rule, Unit, rule_for, window, with_defaults


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


@pytest.mark.parametrize(
    ("now", "unit", "index", "left"),
    [
        (0.0, Unit.MINUTE, 0, 60.0),
        (119.5, Unit.MINUTE, 1, 0.5),
        (7200.0, Unit.HOUR, 2, 3600.0),
        (1.25, Unit.SECOND, 1, 0.75),
    ],
)
def test_windows_start_on_unit_boundaries(now: float, unit: Unit, index: int, left: float) -> None:
    assert window(now, unit).index == index
    assert window(now, unit).seconds_left == pytest.approx(left)
