"""Moments on the wire: `google.protobuf.Timestamp` from timezone-aware datetimes."""

from __future__ import annotations

import datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(moment: datetime.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def optional_timestamp(moment: datetime.datetime | None) -> Timestamp | None:
    """None for no moment, so the message field stays unset."""
    return None if moment is None else timestamp(moment)
