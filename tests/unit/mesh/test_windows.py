"""Aligned windows: where one starts and ends."""

from __future__ import annotations

import pytest

from mesh.windows import window


@pytest.mark.parametrize(
    ("now", "seconds", "index", "left"),
    [
        (0.0, 60, 0, 60.0),
        (119.5, 60, 1, 0.5),
        (7200.0, 3600, 2, 3600.0),
        (1.25, 1, 1, 0.75),
    ],
)
def test_windows_start_on_boundaries_of_their_length(now: float, seconds: int, index: int, left: float) -> None:
    assert window(now, seconds).index == index
    assert window(now, seconds).seconds_left == pytest.approx(left)
