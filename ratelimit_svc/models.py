"""Tables of the `ratelimit` schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, SmallInteger, Table, Text, func

metadata = MetaData(schema="ratelimit")

rules = Table(
    "rules",
    metadata,
    Column("route", Text, primary_key=True),
    Column("requests_per_unit", Integer, nullable=False),
    Column("unit", SmallInteger, nullable=False),
    Column("fail_closed", Boolean, nullable=False, server_default="false"),
    Column("update_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
