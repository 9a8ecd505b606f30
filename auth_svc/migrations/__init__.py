"""Alembic revisions of the `auth` schema (run by `meshctl migrate`)."""
