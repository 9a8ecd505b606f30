"""Alembic revisions of the `ratelimit` schema (run by `meshctl migrate`)."""
