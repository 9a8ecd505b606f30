"""Alembic revisions of the `invite` schema (run by `meshctl migrate`)."""
