"""How failed sign-ins slow down."""

from __future__ import annotations

from mesh.sign_ins import sign_in_delay


def test_sign_ins_slow_down_after_a_few_failures_up_to_a_cap() -> None:
    delays = [sign_in_delay(failures) for failures in range(12)]

    assert delays[:3] == [0.0, 0.0, 0.0]
    assert delays[3:7] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 4.0 and delays == sorted(delays)
