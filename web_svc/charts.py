"""Small charts drawn on the server as SVG, for the console's dashboard: no script, nothing the
CSP would refuse, and readable without the picture (each bar says its number, and the chart has
a text alternative). This module lays the bars out; `templates/admin/_chart.html.j2` draws them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BAR_HEIGHT = 22
ROW_HEIGHT = 32
LABEL_WIDTH = 130
BAR_SPACE = 260
WIDTH = LABEL_WIDTH + BAR_SPACE + 90


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    of: int | None = None
    """The whole the value is part of (a campaign's capacity); None: bars compare to each other."""

    @property
    def number(self) -> str:
        return f"{self.value} of {self.of}" if self.of else str(self.value)


@dataclass(frozen=True)
class Row:
    label: str
    number: str
    top: int
    whole: float
    """Width of the whole (0: no whole drawn)."""
    filled: float


@dataclass(frozen=True)
class Chart:
    title: str
    summary: str
    """The chart in words, for people who cannot see it."""
    rows: list[Row]
    height: int
    width: int = WIDTH
    label_width: int = LABEL_WIDTH
    bar_height: int = BAR_HEIGHT
    number_x: int = LABEL_WIDTH + BAR_SPACE + 8


def bar_chart(title: str, bars: Sequence[Bar]) -> Chart:
    """Horizontal bars, one per entry: against the largest value, or each against its whole."""
    widest = max([bar.of or bar.value for bar in bars] + [1])
    rows = []
    for index, bar in enumerate(bars):
        whole = (bar.of or widest) / widest * BAR_SPACE
        share = min(1.0, bar.value / bar.of) if bar.of else bar.value / widest
        filled = max(1.0, share * (whole if bar.of else BAR_SPACE))
        rows.append(Row(_clipped(bar.label), bar.number, index * ROW_HEIGHT, whole if bar.of else 0.0, filled))
    summary = "; ".join(f"{bar.label}: {bar.number}" for bar in bars) or "nothing yet"
    return Chart(title, summary, rows, max(1, len(bars)) * ROW_HEIGHT)


def _clipped(label: str, most: int = 18) -> str:
    return label if len(label) <= most else label[: most - 1] + "…"
