"""How long to wait before trying again."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds before attempt `attempt + 1`: exponential with full jitter (uniform in 0…base·2^(n-1),
    capped), so the retries of many failed deliveries spread out instead of arriving together."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return (rng or random).uniform(0, ceiling)
