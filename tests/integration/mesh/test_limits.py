"""Fixed-window budgets against a real Redis: counted per subject and window, refused once spent,
several counted together in order."""

from __future__ import annotations

import uuid

from mesh.limits import FixedWindowLimit, spend_together
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe
from mesh.windows import WindowCounters


def _limit(pipe: RedisPipe, name: str, limit: int) -> FixedWindowLimit:
    return FixedWindowLimit(WindowCounters(pipe), KeySpace(f"limits-{uuid.uuid4().hex[:8]}"), name, limit, 3600)


async def test_a_budget_refuses_past_its_limit_with_the_wait_until_its_window_renews(pipe: RedisPipe) -> None:
    limit = _limit(pipe, "requests", 2)

    waits = [await limit.wait_after("client") for _ in range(3)]

    assert waits[:2] == [0.0, 0.0]
    assert 0 < waits[2] <= 3600
    assert await limit.wait_after("another client") == 0.0


async def test_budgets_spent_together_refuse_at_the_first_spent_and_the_later_keep_their_count(
    pipe: RedisPipe,
) -> None:
    per_client, per_email = _limit(pipe, "requests", 1), _limit(pipe, "mails", 5)

    first = await spend_together([(per_client, "client"), (per_email, "ada@example.com")])
    refused = [await spend_together([(per_client, "client"), (per_email, "ada@example.com")]) for _ in range(10)]

    assert first == [0.0, 0.0]
    assert all(waits[0] > 0 and waits[1] == 0.0 for waits in refused)
    # Ten refusals at the client's budget spent nothing of the email's: four more are allowed.
    assert [await per_email.wait_after("ada@example.com") for _ in range(5)].count(0.0) == 4
