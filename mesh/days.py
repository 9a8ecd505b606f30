"""One calendar day in a time zone, as the daily counts (mail, registrations) take it."""

from __future__ import annotations

import datetime
import zoneinfo
from dataclasses import dataclass

from mesh.errors import FieldViolation, InvalidArgument


@dataclass(frozen=True)
class Day:
    day: datetime.date
    start: datetime.datetime
    end: datetime.datetime
    """The next day's start."""


def day_window(day: str, time_zone: str) -> Day:
    """`day` (`YYYY-MM-DD`, empty: today) in `time_zone` (IANA, empty: UTC); a bad one of either
    is refused with its field named."""
    violations: list[FieldViolation] = []
    zone: zoneinfo.ZoneInfo | datetime.timezone = datetime.UTC
    if time_zone:
        try:
            zone = zoneinfo.ZoneInfo(time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            violations.append(FieldViolation("time_zone", "an IANA time zone such as Europe/Berlin"))
    date = datetime.datetime.now(zone).date()
    if day:
        try:
            date = datetime.date.fromisoformat(day)
        except ValueError:
            violations.append(FieldViolation("day", "a date as YYYY-MM-DD"))
    if violations:
        raise InvalidArgument(violations)
    start = datetime.datetime.combine(date, datetime.time(), zone)
    return Day(date, start, datetime.datetime.combine(date + datetime.timedelta(days=1), datetime.time(), zone))
