"""Backoff: full jitter under an exponential ceiling that stops at the cap."""

from __future__ import annotations

import random

import pytest

from mesh.retries import full_jitter


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (6, 60.0), (40, 60.0)])
def test_delays_spread_over_zero_to_the_attempts_ceiling(attempt: int, ceiling: float) -> None:
    rng = random.Random(7)
    delays = [full_jitter(attempt, base=2.0, cap=60.0, rng=rng) for _ in range(2000)]

    assert 0 <= min(delays) < 0.05 * ceiling
    assert 0.95 * ceiling < max(delays) <= ceiling
    assert 0.4 * ceiling < sum(delays) / len(delays) < 0.6 * ceiling
